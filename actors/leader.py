"""The Leader role: turns client requests into log entries, ReadIndex reads and membership changes."""
from __future__ import annotations

import logging
from typing import Optional

from raftkv.wire.messages import (WRITE_OPS, ClientReply, Command, EntryKind, JoinReply, JoinRequest, Member,
                           ReadIndexReply, encode_record)

from .core import NotLeader, RemoteRead
from .messages import Read, TakeSnapshot
from .role import Role

log = logging.getLogger("actors.leader")


class Leader(Role):
    """Proposes every write of a client batch as one append (one synced write, one AppendEntries per
    follower), registers the batch's reads as one ReadIndex round, and applies membership changes
    one at a time (Raft thesis 4.1)."""


    def __init__(self, ctx) -> None:  # noqa: ANN001
        super().__init__(ctx)
        self.waiters: dict = {}  # log index -> (term, route) of the client waiting for it
        self.changes: list = []  # queued membership changes: (new member or None, removed id, route, kind)
        self._learners_of: tuple = (None, False)  # (configuration, whether it has learners)

    def on_receive(self, msg):  # noqa: ANN001, ANN201
        super().on_receive(msg)
        core = self.ctx.core
        if not self.retired and (self.changes or self._has_learners(core)) and core.can_change_config():
            # a change may have waited for the previous one to commit
            if self._next_change() or self._promote_caught_up_learner():
                self._process_ready()

    def _has_learners(self, core) -> bool:  # noqa: ANN001
        # Cached per configuration object: this runs for every message the leader handles.
        members = core.members
        if members is not self._learners_of[0]:
            self._learners_of = (members, any(not m.voter for m in members))
        return self._learners_of[1]

    # ------------------------------------------------------------------ clients

    def validate_write(self, req) -> Optional[str]:  # noqa: ANN001
        tun = self.ctx.tuning
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
        return None

    def on_client(self, items: list) -> None:
        ctx = self.ctx
        core = ctx.core
        replies: list = []
        props: list = []
        routes: list = []
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
                cmd = Command(op, req.key, req.value, req.expected, req.expect_absent, req.client_id, req.seq)
                props.append((EntryKind.COMMAND, encode_record(cmd)))
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
                else:
                    self.changes.append((req.member, None, route, "client"))
            elif op == "remove_node":
                if core.member(req.key) is None:
                    replies.append((route, ClientReply("invalid", error=f"no member {req.key!r}")))
                else:
                    self.changes.append((None, req.key, route, "client"))
            elif op == "transfer_leader":
                replies.append((route, self._transfer(req.key)))
            elif op == "snapshot":
                ctx.fsm.tell(TakeSnapshot(route))
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
                    w[first + i] = (term, r)
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
        self._next_change()

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

    def on_reads(self, reads: list, failed: list) -> None:
        ctx = self.ctx
        remote = []
        for index, handles in reads:
            local = [h for h in handles if type(h) is not RemoteRead]
            if len(local) != len(handles):
                remote.extend((h.peer, ReadIndexReply(ctx.core.term, h.req_id, index, True))
                              for h in handles if type(h) is RemoteRead)
            if local:
                ctx.serve_reads(index, local)
        if failed:
            remote.extend((h.peer, ReadIndexReply(ctx.core.term, h.req_id, 0, False))
                          for h in failed if type(h) is RemoteRead)
            failed = [h for h in failed if type(h) is not RemoteRead]
        if remote:
            ctx.peer.send_many(remote)
        super().on_reads(reads, failed)

    # ------------------------------------------------------------------ membership

    def on_join(self, req: JoinRequest, route: bytes, sender: str) -> None:
        ctx = self.ctx
        cur = ctx.core.member(req.member.id)
        if cur is not None and cur.addr == req.member.addr:
            ctx.peer.reply_route(route, JoinReply(True, ctx.cluster_id or ""))
            return
        if any(c[0] is not None and c[0].id == req.member.id for c in self.changes):
            return  # already queued; the joiner keeps retrying until it sees itself a member
        self.changes.append((req.member, None, route, "join"))
        self._next_change()

    def _promote_caught_up_learner(self) -> bool:
        """A node joins as a learner and becomes a voter once it holds everything committed, so a
        slow join never costs the cluster its quorum (as etcd's learners and hashicorp's non-voters)."""
        core = self.ctx.core
        for m in core.members:
            pr = core.progress.get(m.id)
            if not m.voter and pr is not None and pr.match >= core.commit:
                members = [x._replace(voter=True) if x.id == m.id else x for x in core.members]
                index = core.propose_config(members)
                log.info("%s: membership change at index %d in term %d: promoting %s to voter",
                         self.ctx.node_id, index, core.term, m.id)
                return True
        return False

    def _next_change(self) -> bool:
        core = self.ctx.core
        while self.changes and core.can_change_config():
            member, removed, route, kind = self.changes.pop(0)
            members = [m for m in core.members if m.id != (member.id if member else removed)]
            if member is not None:
                # Always a learner first; promoted once caught up (see _promote_caught_up_learner).
                members.append(Member(member.id, member.addr, member.client, member.http, False))
            try:
                index = core.propose_config(members)
            except NotLeader:
                self.changes.clear()
                return
            what = f"adding {member.id} ({member.addr}) as a learner" if member else f"removing {removed}"
            log.info("%s: membership change at index %d in term %d: %s", self.ctx.node_id, index, core.term, what)
            if kind == "join":
                self.ctx.peer.reply_route(route, JoinReply(True, self.ctx.cluster_id or ""))
            else:
                self.ctx.frontdoor.reply_many([(route, ClientReply("ok", info={"index": index}))])
            return True  # one change at a time: the next waits until this one commits
        return False

    def on_retire(self) -> None:
        ctx = self.ctx
        if self.waiters:
            # These may still commit under the next leader: the client retries with the same
            # (client id, sequence), which the FSM deduplicates.
            ctx.frontdoor.reply_many([(r, ClientReply("timeout", error="leadership lost; retry"))
                                      for _, r in self.waiters.values()])
            self.waiters = {}
        for member, removed, route, kind in self.changes:
            if kind == "client":
                ctx.frontdoor.reply_many([(route, ctx.redirect())])
        self.changes = []
