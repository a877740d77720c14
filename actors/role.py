"""What the three role actors share: feeding inputs to the pure core and carrying its outputs out.

A role actor is a shell around :class:`actors.core.RaftCore` (DESIGN.md 3): it turns actor
messages into core inputs, then executes the core's Ready: messages to the peer transport,
log changes to the LogManager (one PersistRequest in flight; the rest merges into the next:
group commit; a follower writes them itself, see actors/log_manager.py), committed entries to
the FSM. When the core's role changes the actor hands the node to an actor of the new role and
retires: messages still queued for it are forwarded, ticks are dropped (they belong to the old
role's epoch).
"""
from __future__ import annotations

import logging
from typing import Any

import pykka

from raftkv.wire.messages import ClientReply, JoinReply, JoinRequest

from .core import CANDIDATE, COMMIT_FLUSH_TICKS, FOLLOWER, LEADER, PRE_CANDIDATE, PersistBatch
from .messages import (Apply, ClientBatch, HandOff, PeerBatch, PeerLost, Persisted, PersistRequest, Read, Restore,
                       TakeSnapshot, Tick)
from .snapshot_transfer import SnapshotRef
from .snapshotter import SnapshotReceived, SnapshotSaved, SnapshotSendFailed
from .supervision import SupervisedActor

log = logging.getLogger("actors.role")

MAX_DEFERRED = 64  # inputs folded into one Ready at most


class RoleActor(SupervisedActor):
    """Base of Follower, Candidate and Leader. ``ctx`` is the node's shared NodeContext."""


    # Write the log in this actor's thread instead of the LogManager's (see actors/log_manager.py).
    persist_inline = False

    def __init__(self, ctx: Any) -> None:
        super().__init__()
        self.ctx = ctx
        self.retired = False
        self._deferred = 0

    # ------------------------------------------------------------------ message dispatch

    def on_receive(self, msg: Any) -> Any:
        if self.retired:
            if type(msg) is not Tick:
                self.ctx.tell_role(msg)
            return None
        t = type(msg)
        core = self.ctx.core
        if t is PeerBatch:
            self._on_peers(msg.items)
        elif t is Tick:
            core.tick()
            self.on_tick()
            self.ctx.ticks += 1
            if self.ctx.ticks % COMMIT_FLUSH_TICKS == 0:
                self.flush_persist(force=True)
        elif t is Persisted:
            self.ctx.persist_in_flight = False
            if msg.last is not None:
                core.on_persisted(*msg.last)
        elif t is ClientBatch:
            self.on_client(msg.items)
        elif t is HandOff:
            self.on_hand_off()
        elif t is SnapshotSaved:
            self.ctx.snapshot_index = max(self.ctx.snapshot_index, msg.index)
            core.set_snapshot(SnapshotRef(msg.index, msg.term, msg.size))
            core.compact(msg.index - self.ctx.tuning.trailing_logs)
        elif t is SnapshotReceived:
            self._install(msg)
        elif t is SnapshotSendFailed:
            core.snapshot_failed(msg.peer)
        elif t is PeerLost:
            core.peer_unreachable(msg.peer)
        # Run at our own pace and batch (TigerStyle): while more input is queued, fold it into the
        # same Ready, so that under load one AppendEntries, one synced write and one FSM batch
        # carry many requests. Bounded, so a steady stream cannot starve the output.
        if self._deferred < MAX_DEFERRED and not core.ready.role_changed and not self.actor_inbox.empty():
            self._deferred += 1
            return None
        self._deferred = 0
        self._process_ready()
        return None

    def on_stop(self) -> None:
        # Messages that raced with the hand-over sit behind our stop marker: pass them on.
        inbox = self.actor_inbox
        while not inbox.empty():
            try:
                env = inbox.get_nowait()
            except Exception:
                break
            if type(env.message) not in (Tick, pykka.messages._ActorStop):  # noqa: SLF001
                self.ctx.tell_role(env.message)

    def _install(self, msg: SnapshotReceived) -> None:
        """A snapshot from the leader is durable: restore the FSM from it, then the core."""
        ctx = self.ctx
        meta = msg.meta
        body = ctx.snapshot_store.open_verified(meta)
        ctx.fsm.tell(Restore(body, meta.last_index, meta.last_term, list(meta.members)))
        # The core acknowledges it once the log's compaction to it is durable too.
        ctx.core.install_snapshot(meta.last_index, meta.last_term, list(meta.members), leader=msg.leader,
                                  size=meta.size)
        ctx.snapshot_index = max(ctx.snapshot_index, meta.last_index)
        log.info("%s: installed snapshot at index %d (term %d) from %s", ctx.node_id, meta.last_index,
                 meta.last_term, msg.leader)

    def _on_peers(self, items: list) -> None:
        ctx = self.ctx
        core = ctx.core
        for sender, m, route, offered_cid in items:
            if offered_cid is not None and ctx.cluster_id is None:
                ctx.adopt_cluster_id(offered_cid)
            tm = type(m)
            if tm is JoinRequest:
                self.on_join(m, route, sender)
            elif tm is JoinReply:
                ctx.on_join_reply(m)
            else:
                core.step(sender, m)

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
            self.on_reads(rd.reads, rd.reads_failed)
        if rd.config_proposed or rd.config_dropped:
            self.on_config_changes(rd.config_proposed, rd.config_dropped)
        for c in rd.chunks_to_send:
            ctx.snapshotter.tell(c)
        for c in rd.chunks_to_store:
            ctx.snapshotter.tell(c)
        ctx.after_ready()
        if rd.removed:
            ctx.node.on_removed()
        if rd.role_changed:
            self._swap()

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
        self.on_retire()
        if cls is type(self):
            return
        new_ref = cls.start(ctx)
        ctx.set_role_ref(new_ref)
        self.retired = True
        self.actor_ref.stop(block=False)

    def on_retire(self) -> None:
        """Clean up role-specific state when the role changes."""


__all__ = ["RoleActor", "FOLLOWER", "CANDIDATE", "LEADER", "PRE_CANDIDATE"]
