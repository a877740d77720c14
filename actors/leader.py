"""The Leader role: turns client requests into log entries, ReadIndex reads and membership changes."""
from __future__ import annotations

import logging
from typing import Optional

from raftkv.records import Op
from raftkv.wire.messages import WRITE_OPS, ClientReply, Command, EntryKind, JoinReply, JoinRequest, encode_record
from raftkv.wire.ratelog import RateLimitedLog

from .backup_serving import BackupRead
from .core import NotLeader
from .lease_leader import LeaseDesk
from .lease_state import LEASE_LEADER_OPS, LEASE_WRITE_OPS
from .membership import ChangeOrigin, MembershipChange
from .own_commands import round_trips
from .replacement_guard import MemberLive
from .messages import Read, TakeSnapshot
from .role import Role
from .txn_check import validate_txn

TOKEN_OPS = frozenset({"token_create", "token_list", "token_revoke"})

log = logging.getLogger("actors.leader")
_ratelog = RateLimitedLog(log)  # refusals a join-token holder can trigger at will


class Leader(Role):
    """Proposes every write of a client batch as one append (one synced write, one AppendEntries per
    follower), registers the batch's reads as one ReadIndex round, and hands membership changes to
    the core, which queues them and applies them one at a time (Raft thesis 4.1)."""

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        # log index -> (term, route) of the client waiting for it, or (term, route, cmd, payload)
        # when the FSM may apply ``cmd`` instead of decoding ``payload`` (actors/own_commands.py)
        self.waiters: dict = {}
        self.leases = LeaseDesk(ctx)  # lease requests and expiry (actors/lease_leader.py)

    # ------------------------------------------------------------------ clients

    def validate_write(self, req) -> Optional[str]:
        tun = self.ctx.tuning
        if req.op == "txn":
            return validate_txn(req.txn, self.ctx.validate_key, tun.max_value_bytes)
        err = self.ctx.validate_key(req.key)
        if err:
            return err
        if req.op in ("put", "cas"):
            if req.value is None:
                return f"{req.op} needs a value"
            if len(req.value) > tun.max_value_bytes:
                return f"value too large: {len(req.value)} bytes (max_value_bytes is {tun.max_value_bytes})"
        if req.op == "cas" and req.expected is None and not req.expect_absent:
            return "cas needs an expected value (or expect_absent)"
        if req.lease and req.op == "delete":
            return "delete takes no lease"
        return None

    def on_client(self, items: list) -> None:
        ctx = self.ctx
        core = ctx.core
        replies: list = []
        props: list = []
        routes: list = []
        own: dict = {}  # position in props -> the Command encoded there, if it round-trips
        reads: list = []
        lease: list = []
        stale: list = []
        for route, req in items:
            op = req.op
            if op in WRITE_OPS:
                if ctx.disk_error:
                    replies.append((route, ClientReply("unavailable", error=f"{ctx.node_id}: {ctx.disk_error}")))
                    continue
                err = self.validate_write(req)
                if err:
                    replies.append((route, ClientReply("invalid", error=err)))
                    continue
                # every field by position, in Command's order (keywords cost ~0.3 us more per write)
                cmd = Command(op, req.key, req.value, req.expected, req.expect_absent, req.client_id, req.seq,
                              req.lease, req.txn)
                payload = encode_record(cmd)
                if round_trips(cmd):
                    own[len(props)] = (cmd, payload)
                props.append((EntryKind.COMMAND, payload))
                routes.append(route)
            elif op in LEASE_WRITE_OPS or op in LEASE_LEADER_OPS:
                err = self.leases.validate(req) if op in LEASE_WRITE_OPS else None
                if err:
                    replies.append((route, ClientReply("invalid", error=err)))
                elif op == Op.LEASE_KEEPALIVE.value and req.lease > 0:
                    # confirmed by a ReadIndex round first, like a read (actors/lease_leader.py)
                    refusal = self.leases.not_ready()
                    if refusal is not None:
                        replies.append((route, refusal))
                    else:
                        reads.append((route, req))
                elif op in LEASE_LEADER_OPS:
                    replies.append((route, self.leases.answer(req)))
                elif ctx.disk_error:
                    replies.append((route, ClientReply("unavailable", error=f"{ctx.node_id}: {ctx.disk_error}")))
                else:
                    props.append((EntryKind.COMMAND, encode_record(self.leases.command(req))))
                    routes.append(route)
            elif op in ("get", "list"):
                err = ctx.validate_key(req.key) if op == "get" else None
                if err:
                    replies.append((route, ClientReply("invalid", error=err)))
                elif req.consistency == "stale":
                    stale.append((route, req))
                elif req.consistency == "lease" and ctx.tuning.lease_reads:
                    lease.append((route, req))
                elif req.consistency in ("linearizable", "lease"):
                    reads.append((route, req))
                else:
                    replies.append((route, ClientReply("invalid", error=f"unknown consistency {req.consistency!r}")))
            elif op == "status":
                replies.append((route, ClientReply("ok", info=ctx.status())))
            elif op == "members":
                replies.append((route, ClientReply("ok", info=ctx.members_info())))
            elif op == "add_node":
                if req.member is None or not req.member.id or not req.member.addr:
                    replies.append((route, ClientReply("invalid", error="add_node needs an id and an address")))
                elif ctx.secure and not req.member.curve_key:
                    # A member without a key could never connect to a secure cluster's peer door.
                    replies.append((route, ClientReply("invalid", error=(
                        "this cluster is secure: start the new node with kvnode --join ADDR --token "
                        "JOIN_TOKEN instead of add-node"))))
                else:
                    self._request_change(MembershipChange(req.member, None, route, ChangeOrigin.CLIENT), replies)
            elif op == "remove_node":
                gone = core.member(req.key)
                if gone is None:
                    replies.append((route, ClientReply("invalid", error=f"no member {req.key!r}")))
                elif gone.voter and sum(1 for m in core.members if m.voter) == 1:
                    # A cluster with no voter can never elect a leader again (issue 11).
                    replies.append((route, ClientReply("cas_failed", error=(
                        f"refusing to remove {req.key}: it is the last voter of the cluster (add another "
                        f"node first, then remove this one)"))))
                else:
                    self._request_change(MembershipChange(None, req.key, route, ChangeOrigin.CLIENT), replies)
            elif op == "transfer_leader":
                replies.append((route, self._transfer(req.key)))
            elif op == "snapshot":
                ctx.fsm.tell(TakeSnapshot(route))
            elif op == Op.BACKUP:  # start: a read at a confirmed index; then its chunks (actors/backup_serving.py)
                if req.key:
                    ctx.snapshotter.tell(BackupRead(route, req.key, req.seq, req.limit))
                else:
                    reads.append((route, req))
            elif op in TOKEN_OPS:
                self._token_op(route, req, replies, props, routes)
            else:
                replies.append((route, ClientReply("invalid", error=f"unknown operation {op!r}")))
        if props:
            try:
                first, _ = core.propose(props)
            except NotLeader:
                replies.extend((r, ctx.redirect()) for r in routes)
            else:
                term = core.term
                w = self.waiters
                for i, r in enumerate(routes):
                    o = own.get(i) if own else None
                    w[first + i] = (term, r) if o is None else (term, r, o[0], o[1])
        if reads:
            try:
                core.read_index(reads)
            except NotLeader:
                replies.extend((r, ctx.redirect()) for r, _ in reads)
        if lease:
            core.sync_clock(ctx.clock_ticks())
            try:
                core.lease_read(lease)
            except NotLeader:
                replies.extend((r, ctx.redirect()) for r, _ in lease)
        if stale:
            ctx.fsm.tell(Read(0, stale))
        if replies:
            ctx.frontdoor.reply_many(replies)

    def _token_op(self, route, req, replies: list, props: list, routes: list) -> None:
        """token_create / token_revoke become Commands (checked against the applied table first, for
        a clear error); token_list answers from it (names and roles only). Issue 11."""
        ctx = self.ctx
        if not ctx.secure:
            replies.append((route, ClientReply("invalid", error=(
                "tokens need a secure cluster (made with kvnode --bootstrap --secure)"))))
            return
        table = ctx.token_state()
        if req.op == "token_list":
            replies.append((route, ClientReply("ok", info=table.listing())))
            return
        if req.op == "token_create":
            if req.key in table.tokens:
                replies.append((route, ClientReply("cas_failed", error=(
                    f"a token named {req.key!r} exists already (revoke it first, or pick another name)"))))
                return
            err = table.check_create(req.key, req.value)
            if err:
                replies.append((route, ClientReply("invalid", error=err)))
                return
        else:
            if req.key not in table.tokens:
                replies.append((route, ClientReply("not_found", error=f"no token named {req.key!r}")))
                return
            err = table.check_revoke(req.key)
            if err:
                replies.append((route, ClientReply("cas_failed", error=err)))
                return
        cmd = Command(req.op, req.key, req.value, None, False, req.client_id, req.seq)
        props.append((EntryKind.COMMAND, encode_record(cmd)))
        routes.append(route)

    def _join_reply(self) -> JoinReply:
        """An accepting JoinReply; on a secure cluster with the cluster key and the members (it
        only ever goes back on the route the JoinRequest came on: a joiner's CURVE connection
        that proved the join token, or a member's)."""
        ctx = self.ctx
        key = ctx.cluster_key
        if key is None:
            return JoinReply(True, ctx.cluster_id or "")
        return JoinReply(True, ctx.cluster_id or "", cluster_key=key.secret, members=list(ctx.core.members))

    def _request_change(self, change: MembershipChange, replies: list) -> None:
        try:
            self.ctx.core.request_change(change)
        except NotLeader:
            replies.append((change.handle, self.ctx.redirect()))

    def _transfer(self, target: str) -> ClientReply:
        core = self.ctx.core
        if not target:
            best = max(((pr.match, pid) for pid, pr in core.progress.items()
                        if core.member(pid) is not None and core.member(pid).voter), default=None)
            if best is None:
                return ClientReply("invalid", error="no other voter to transfer leadership to")
            target = best[1]
        try:
            core.transfer_leadership(target)
        except ValueError as e:
            return ClientReply("invalid", error=str(e))
        except NotLeader:
            return self.ctx.redirect()
        log.info("%s: transferring leadership to %s in term %d", self.ctx.node_id, target, core.term)
        return ClientReply("ok", info={"target": target})

    def on_reads(self, reads: list, failed: list) -> None:
        super().on_reads(self.leases.split_keepalives(reads) if reads else reads, failed)

    def on_tick(self) -> None:
        # Leases due to expire become revoke entries (the decision: actors/lease_clock.py).
        due = self.leases.on_tick()
        if due:
            try:
                self.ctx.core.propose(due)
            except NotLeader:
                pass

    def on_hand_off(self) -> None:
        if any(m.voter and m.id != self.ctx.node_id for m in self.ctx.core.members):
            self._transfer("")

    def on_committed(self, entries: list) -> dict:
        w = self.waiters
        if not w:
            return {}
        out = {}
        for index, _ in entries:
            x = w.pop(index, None)
            if x is not None:
                out[index] = x
        return out

    # ------------------------------------------------------------------ membership

    def on_join(self, req: JoinRequest, route: bytes, sender: str) -> None:
        ctx = self.ctx
        if ctx.secure and not req.member.curve_key:
            ctx.peer.reply_route(route, JoinReply(False, ctx.cluster_id or "", error=(
                "this cluster is secure: a joining node must send its CURVE key (kvnode --join ADDR --token)")))
            return
        try:
            member_already = ctx.core.join(req.member, route, req.incarnation)
        except NotLeader:
            super().on_join(req, route, sender)
            return
        except MemberLive as e:
            _ratelog.warn(f"live:{req.member.id}", "%s: term %d: refused a join as %s (incarnation %s) from %s: %s",
                          ctx.node_id, ctx.core.term, req.member.id, req.incarnation or "?", req.member.addr, e)
            ctx.peer.reply_route(route, JoinReply(False, ctx.cluster_id or "", error=str(e)))
            return
        if member_already:
            ctx.peer.reply_route(route, self._join_reply())

    def on_config_changes(self, proposed: list, dropped: list) -> None:
        """Answer the requesters of the changes the core proposed (or dropped on losing leadership)."""
        ctx = self.ctx
        for change, index in proposed:
            log.info("%s: membership change at index %d in term %d: %s", ctx.node_id, index, ctx.core.term,
                     change.describe())
            if change.origin is ChangeOrigin.JOIN:
                ctx.peer.reply_route(change.handle, self._join_reply())
            elif change.origin is ChangeOrigin.CLIENT:
                ctx.frontdoor.reply_many([(change.handle, ClientReply("ok", info={"index": index}))])
        redirect = [(c.handle, ctx.redirect()) for c in dropped if c.origin is ChangeOrigin.CLIENT]
        if redirect:
            ctx.frontdoor.reply_many(redirect)

    def on_retire(self) -> None:
        ctx = self.ctx
        if self.waiters:
            # These may still commit under the next leader: the client retries with the same
            # (client id, sequence), which the FSM deduplicates.
            ctx.frontdoor.reply_many([(w[1], ClientReply("timeout", error="leadership lost; retry"))
                                      for w in self.waiters.values()])
            self.waiters = {}
