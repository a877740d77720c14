"""The node's role actor and the role behaviours it hosts: feeding inputs to the pure core and
carrying its outputs out.

The role actor is a shell around :class:`actors.core.RaftCore` (docs/architecture.md 3): it turns actor
messages into core inputs, then executes the core's Ready: messages to the peer transport,
log changes to the LogManager (one PersistRequest in flight; the rest merges into the next:
group commit; a follower writes them itself, see actors/log_manager.py), committed entries to
the FSM.

One :class:`RoleActor` lives as long as the node, so every input has one address for the
node's whole life and none is ever forwarded, reordered or lost across a role change. What
changes with the role is the :class:`Role` object it hosts (Follower, Candidate or Leader). On
a role change the old Role cleans up (``on_retire``: its waiting clients are answered) and is
marked retired inside the same message handling, before the next input is taken from the inbox:
queued inputs and timer ticks then act on the new Role only (docs/architecture.md 3). Ticks are
the core's logical clock, not a role's timer, so a queued one drives the new role's core as
it would have driven the old one.
"""
from __future__ import annotations

import logging
import time
import traceback
from typing import Any, Optional

from raftkv.wire.messages import ClientReply, JoinReply, JoinRequest
from raftkv.records import Op

from .backup_serving import BackupRead
from .core import CANDIDATE, COMMIT_FLUSH_TICKS, FOLLOWER, LEADER, PRE_CANDIDATE, PersistBatch
from .health import HealthWatch
from .messages import (Apply, ClientBatch, DiskState, HandOff, PeerBatch, PeerLost, Persisted, PersistRequest, Read,
                       Restore, StatusQuery, TakeSnapshot, Tick)
from .snapshot_transfer import SnapshotRef
from .metrics import PEER_EVERY_TICKS
from .snapshotter import SnapshotReceived, SnapshotSaved, SnapshotSendFailed
from .role_door import RoleDoor
from .supervision import SupervisedActor, die
from .watch_serving import take_watches

log = logging.getLogger("actors.role")

MAX_DEFERRED = 64  # inputs folded into one Ready at most


class RoleActor(SupervisedActor):
    """The node's one role actor, alive as long as the node. It owns the core and every field of
    the NodeContext that is not wiring (see NodeContext), and hosts the current :class:`Role`,
    which it swaps when the core's role changes (module docstring).

    ``StatusQuery`` is answered here (through ``ask``) from the state this actor owns, so other
    threads (the HTTP gateway) never read the core.
    """

    def __init__(self, ctx: Any) -> None:
        super().__init__()
        self.ctx = ctx
        ctx.more_input = self._more_input
        # Observability, shared by every Role of this actor: the node's metrics and the health
        # watch (WARNING lines), both run only with the door's lock held (see below).
        ctx.metrics = ctx.node.metrics
        ctx.metrics.bind(ctx.frontdoor, ctx.log_writer, lambda: getattr(ctx.node, "gateway", None))
        ctx.health = HealthWatch(ctx.node_id, 2 * ctx.tuning.election_timeout_ms[1] / 1000.0)
        self.role: Role = ctx.role_classes[ctx.core.role](ctx)
        # Inputs reach us through the node's RoleDoor, which may run a read-path input in its
        # sender's thread while we are idle (actors/role_door.py): the door's lock is what makes
        # one thread at a time the core's owner.
        self.door: RoleDoor = getattr(ctx, "role_door", None) or RoleDoor()
        self.door.actor = self

    def _more_input(self) -> bool:
        # ``actor_inbox`` is Pykka's documented attribute; only peeked at, never drained.
        return not self.actor_inbox.empty()

    def on_receive(self, msg: Any) -> Any:
        door = self.door
        with door.lock:
            door.begin()
            return self.handle(msg)

    def handle(self, msg: Any) -> Any:
        """Handle one input (with the door's lock held: in this actor's thread, or in the
        thread of a read-path input's sender while this actor is idle)."""
        role = self.role
        result = None
        if type(msg) is StatusQuery:
            # Asked, not told: Pykka hands an exception raised here to the asker and keeps the
            # actor running, so supervise it ourselves (docs/architecture.md 3: a crash, never a zombie).
            try:
                result = self.ctx.status()
                role.after_query()
            except Exception:  # any failure of the role actor ends the process
                die(f"actor {type(self).__name__} failed: {traceback.format_exc().strip()}")
        else:
            role.on_receive(msg)
        if role.successor is not None:
            # The old role retired while handling ``msg``: from the next input on, only its
            # successor acts.
            self.role = role.successor
        return result


class Role:
    """What Follower, Candidate and Leader share; one instance per stretch of one role class.

    A plain object hosted by the :class:`RoleActor` and run only with its door's lock held (in
    its thread, or a read-path sender's: actors/role_door.py). ``ctx`` is the node's NodeContext
    (owned by the same lock holder, apart from its wiring and published views).
    Once ``retired`` it receives no further input; ``successor`` is the Role that replaced it.
    """

    # Write the log in this actor's thread instead of the LogManager's (see actors/log_manager.py).
    persist_inline = False

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.retired = False
        self.successor: Optional[Role] = None
        self._deferred = 0

    # ------------------------------------------------------------------ message dispatch

    def on_receive(self, msg: Any) -> None:
        """Handle one input of the role actor; a Ready is executed unless more input is queued."""
        t = type(msg)
        ctx = self.ctx
        core = ctx.core
        if t is PeerBatch:
            self._on_peers(msg.items)
        elif t is Tick:
            core.tick()
            self.on_tick()
            ctx.ticks += 1
            if ctx.ticks % COMMIT_FLUSH_TICKS == 0:
                self.flush_persist(force=True)
            if ctx.ticks % PEER_EVERY_TICKS == 0:
                self._watch_health()
        elif t is Persisted:
            ctx.persist_in_flight = False
            if msg.last is not None:
                core.on_persisted(*msg.last)
        elif t is ClientBatch:
            items = take_watches(ctx, msg.items)  # any role serves watches (actors/watch_serving.py)
            if items:
                self.on_client(items)
        elif t is HandOff:
            self.on_hand_off()
        elif t is DiskState:
            ctx.disk_error = msg.error
        elif t is SnapshotSaved:
            ctx.snapshot_index = max(ctx.snapshot_index, msg.index)
            ctx.metrics.on_snapshot_saved(msg.size, msg.seconds)
            core.set_snapshot(SnapshotRef(msg.index, msg.term, msg.size))
            core.compact(msg.index - ctx.tuning.trailing_logs)
        elif t is SnapshotReceived:
            self._install(msg)
        elif t is SnapshotSendFailed:
            ctx.metrics.on_snapshot_transfer("failed")
            core.snapshot_failed(msg.peer)
        elif t is PeerLost:
            core.peer_unreachable(msg.peer)
        # Run at our own pace and batch (TigerStyle): while more input is queued, fold it into the
        # same Ready, so that under load one AppendEntries, one synced write and one FSM batch
        # carry many requests. Bounded, so a steady stream cannot starve the output.
        if self._deferred < MAX_DEFERRED and not core.ready.role_changed and ctx.more_input():
            self._deferred += 1
            return
        self._deferred = 0
        self._process_ready()

    def after_query(self) -> None:
        """After an input that changed nothing (a StatusQuery): it may be what kept a Ready
        deferred, and nothing else may follow it for a while."""
        if self._deferred and not self.ctx.more_input():
            self._deferred = 0
            self._process_ready()

    def _install(self, msg: SnapshotReceived) -> None:
        """A snapshot from the leader is durable: restore the FSM from it, then the core."""
        ctx = self.ctx
        meta = msg.meta
        # Not read again here: the snapshotter checked every file's size and CRC-32, and that
        # the DB opens at the index, before telling us (StreamReceiver.adopt). Reading it all
        # again held this thread (heartbeats, the log) for a full pass over the checkpoint.
        body = meta.path
        ctx.fsm.tell(Restore(body, meta.last_index, meta.last_term, list(meta.members)))
        # The core acknowledges it once the log's compaction to it is durable too.
        ctx.core.install_snapshot(meta.last_index, meta.last_term, list(meta.members), leader=msg.leader,
                                  size=meta.size)
        ctx.snapshot_index = max(ctx.snapshot_index, meta.last_index)
        ctx.metrics.on_snapshot_installed(meta.size)
        log.info("%s: installed snapshot at index %d (term %d) from %s", ctx.node_id, meta.last_index,
                 meta.last_term, msg.leader)

    def _watch_health(self) -> None:
        """Every PEER_EVERY_TICKS ticks: per-peer gauges, and WARNING lines on health changes."""
        ctx = self.ctx
        core = ctx.core
        health = ctx.health
        health.on_tick(core, ctx.last_contact)
        kv = ctx.applied_view.state
        ctx.metrics.on_tick(core, ctx.last_contact, health.reachable, health.quorum_ok,
                            len(kv.sessions) if kv is not None else 0)

    def _on_peers(self, items: list) -> None:
        ctx = self.ctx
        core = ctx.core
        now = time.monotonic()
        contact = ctx.last_contact
        # Last contact is kept for members only: senders are the peers' to choose (issue 11).
        members = core.member_ids()
        for sender, m, route, offered_cid in items:
            if sender in members:
                contact[sender] = now
            if offered_cid and ctx.cluster_id is None:
                ctx.adopt_cluster_id(offered_cid)
            tm = type(m)
            if tm is JoinRequest:
                if offered_cid == "":  # no cluster id: not acted on, answered with ours (wire/peer.py)
                    ctx.peer.reply_route(route, JoinReply(False, ctx.cluster_id or "",
                                                          error="a join request must name the cluster id"))
                    continue
                self.on_join(m, route, sender)
            elif tm is JoinReply:
                ctx.on_join_reply(m)
            else:
                core.step(sender, m)
        gone = [k for k in contact if k not in members]  # members removed since: no use now
        for k in gone:
            del contact[k]

    # ------------------------------------------------------------------ role-specific hooks

    def on_client(self, items: list) -> None:
        """Answer client requests; the default (used while no leader is known) serves stale
        reads and status locally and redirects or refuses the rest."""
        ctx = self.ctx
        replies = []
        stale = []
        for route, req in items:
            op = req.op
            if op == "status":
                replies.append((route, ClientReply("ok", info=ctx.status())))
            elif op == "snapshot":
                ctx.fsm.tell(TakeSnapshot(route))
            elif op == Op.BACKUP and req.key:  # the chunks of a backup this node started (backup_serving.py)
                ctx.snapshotter.tell(BackupRead(route, req.key, req.seq, req.limit))
            elif op in ("get", "list") and req.consistency == "stale":
                stale.append((route, req))
            else:
                replies.append((route, ctx.redirect()))
        if stale:
            ctx.fsm.tell(Read(0, stale))
        ctx.frontdoor.reply_many(replies)

    def on_join(self, req: JoinRequest, route: bytes, sender: str) -> None:
        """Followers and candidates forward a join to the leader and point the joiner at it."""
        ctx = self.ctx
        leader = ctx.core.member(ctx.core.leader_id) if ctx.core.leader_id else None
        if leader is not None and leader.id != ctx.node_id:
            ctx.peer.send(leader.id, req)
            ctx.peer.reply_route(route, JoinReply(False, ctx.cluster_id or "", leader_addr=leader.addr))
        else:
            ctx.peer.reply_route(route, JoinReply(False, ctx.cluster_id or "", error="no leader yet; retry"))

    def on_config_changes(self, proposed: list, dropped: list) -> None:
        """Only a leader proposes membership changes."""

    def on_hand_off(self) -> None:
        """Only a leader has something to hand off."""

    def on_tick(self) -> None:
        """Role-specific timers."""

    def on_committed(self, entries: list) -> dict:
        """Waiters for these committed entries (the leader overrides)."""
        return {}

    def on_reads(self, reads: list, failed: list) -> None:
        """Serve confirmed reads once applied; send the failed ones' clients to the leader."""
        for index, handles in reads:
            self.ctx.serve_reads(index, handles)
        if failed:
            self.ctx.frontdoor.reply_many([(route, self.ctx.redirect()) for route, _ in failed])

    # ------------------------------------------------------------------ executing the Ready

    def _process_ready(self) -> None:
        ctx = self.ctx
        core = ctx.core
        if not core.has_ready():
            # Entries buffered while a commit-only persist was in flight must still go out now
            # that it is done, even though this input produced nothing new.
            self.flush_persist()
            return
        rd = core.take_ready()
        if rd.send:
            ctx.peer.send_many(rd.send)
        if rd.readmission is not None:
            self._ask_readmission(*rd.readmission)
        if rd.committed and not self.persist_inline:
            # A leader's commit is what the waiting clients wait for: apply before anything else.
            ctx.fsm.tell(Apply(rd.committed, self.on_committed(rd.committed)))
            rd.committed = None
        pb = ctx.persist_buffer
        if not rd.persist.empty():
            pb.merge(rd.persist)
        if rd.send_after_persist:
            ctx.persist_after.extend(rd.send_after_persist)
        self.flush_persist()
        if rd.committed:
            waiters = self.on_committed(rd.committed)
            ctx.fsm.tell(Apply(rd.committed, waiters))
        if rd.reads or rd.reads_failed:
            ctx.metrics.on_reads(len(rd.reads), len(rd.reads_failed))
            self.on_reads(rd.reads, rd.reads_failed)
        if rd.config_proposed or rd.config_dropped:
            self.on_config_changes(rd.config_proposed, rd.config_dropped)
        for c in rd.chunks_to_send:
            if c.offset == 0:
                ctx.metrics.on_snapshot_transfer("sent")
            ctx.snapshotter.tell(c)
        for c in rd.chunks_to_store:
            ctx.snapshotter.tell(c)
        ctx.after_ready()
        ctx.publish_role_view()
        if rd.removed:
            ctx.node.on_removed()
        if rd.role_changed:
            self._swap()

    def _ask_readmission(self, to: str, req: JoinRequest) -> None:
        """The core's request to be admitted again (actors/readmission.py): a peer message like
        any other, but on a secure node the leader's door would not hear this incarnation's key,
        so it goes with the join token (actors/secure_readmission.py)."""
        ctx = self.ctx
        if ctx.readmit is None:
            ctx.peer.send(to, req)
        else:
            ctx.readmit.ask(to, req)

    def flush_persist(self, force: bool = False) -> None:
        """Start the next group commit unless one is in flight. A commit index alone waits (up
        to COMMIT_FLUSH_TICKS, ``force``) to ride with the next batch: writing it costs two
        thread hand-offs per client write for nothing that needs to be on disk at once."""
        ctx = self.ctx
        if ctx.persist_in_flight:
            return
        pb = ctx.persist_buffer
        if not ctx.persist_after and (pb.empty() or (pb.commit_only() and not force)):
            return
        last = None
        if pb.entries:
            li = pb.first + len(pb.entries) - 1
            last = (li, pb.entries[-1].term)
        req = PersistRequest(pb, ctx.persist_after, last)
        ctx.persist_buffer = PersistBatch()
        ctx.persist_after = []
        if self.persist_inline and ctx.log_writer.try_persist(req):
            if last is not None:
                ctx.core.on_persisted(*last)
            return
        ctx.persist_in_flight = True
        ctx.log_manager.tell(req)

    def _swap(self) -> None:
        ctx = self.ctx
        role = ctx.core.role
        cls = ctx.role_classes[role]
        core = ctx.core
        log.info("%s: %s in term %d (leader: %s)", ctx.node_id,
                 "pre-candidate" if role == PRE_CANDIDATE else role, core.term, core.leader_id)
        ctx.metrics.on_role_change(core)
        ctx.health.on_role_change(core)
        self.on_retire()
        if cls is type(self):
            return
        # The RoleActor hosts the successor from the next input on; this object acts no more.
        self.retired = True
        self.successor = cls(ctx)

    def on_retire(self) -> None:
        """Clean up role-specific state when the role changes."""


__all__ = ["Role", "RoleActor", "FOLLOWER", "CANDIDATE", "LEADER", "PRE_CANDIDATE"]
