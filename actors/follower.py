"""The Follower role: replicates the leader's log; serves reads through the leader's read index."""
from __future__ import annotations

from raftkv.wire.messages import ClientReply, ReadIndexRequest

from .role import Role


class Follower(Role):
    """A follower (also a learner, and a joining node before it is a member).

    Besides the base behaviour (step peer messages into the core, redirect writes, serve stale
    reads and status locally, forward joins) it serves linearizable reads itself: it asks the
    leader for a read index (one request per batch of reads), waits until its FSM has applied
    that index, then reads locally (Raft thesis 6.4.1), so read load spreads over the cluster.
    """


    persist_inline = True  # nothing else to do while the log syncs: write it here, ack at once

    def __init__(self, ctx) -> None:  # noqa: ANN001
        super().__init__(ctx)
        self.pending: dict = {}  # req_id -> (deadline tick, handles)

    def on_client(self, items: list) -> None:
        ctx = self.ctx
        core = ctx.core
        reads, rest, replies = [], [], []
        for route, req in items:
            if req.op in ("get", "list") and req.consistency != "stale":
                err = ctx.validate_key(req.key) if req.op == "get" else None
                if err:
                    replies.append((route, ClientReply("invalid", error=err)))
                else:
                    reads.append((route, req))
            else:
                rest.append((route, req))
        if rest:
            super().on_client(rest)
        leader = core.leader_id
        if reads:
            if leader is None or leader == ctx.node_id or core.member(leader) is None:
                replies.extend((r, ctx.redirect()) for r, _ in reads)
            else:
                # Ids come from the node, not this actor: a late reply to a request of an
                # earlier Follower actor must never match a new request.
                ctx.read_ids += 1
                self.pending[ctx.read_ids] = (core.now + core.cfg.election_ticks_max, reads)
                ctx.peer.send(leader, ReadIndexRequest(core.term, ctx.read_ids))
        if replies:
            ctx.frontdoor.reply_many(replies)

    def on_read_index_replies(self, replies: list) -> None:
        ctx = self.ctx
        failed = []
        for m in replies:
            p = self.pending.pop(m.req_id, None)
            if p is None:
                continue
            if m.ok:
                ctx.serve_reads(m.index, p[1])
            else:
                failed.extend(p[1])
        if failed:
            ctx.frontdoor.reply_many([(r, ctx.redirect()) for r, _ in failed])

    def on_tick(self) -> None:
        if not self.pending:
            return
        now = self.ctx.core.now
        late = [i for i, (deadline, _) in self.pending.items() if deadline <= now]
        if late:
            ctx = self.ctx
            # No answer from the leader: let the clients go to the leader (or elsewhere) themselves.
            ctx.frontdoor.reply_many([(r, ctx.redirect()) for i in late for r, _ in self.pending.pop(i)[1]])

    def on_retire(self) -> None:
        ctx = self.ctx
        if self.pending:
            ctx.frontdoor.reply_many([(r, ctx.redirect()) for _, hs in self.pending.values() for r, _ in hs])
            self.pending = {}
