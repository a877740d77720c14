"""The Follower role: replicates the leader's log; serves reads through the leader's read index."""
from __future__ import annotations

from raftkv.wire.messages import ClientReply

from .core import NotLeader
from .role import Role


class Follower(Role):
    """A follower (also a learner, and a joining node before it is a member).

    Besides the base behaviour (step peer messages into the core, redirect writes, serve stale
    reads and status locally, forward joins) it serves linearizable reads itself: the core asks
    the leader for a read index (one request per batch of reads), and once its answer comes out
    of the core the reads are served when the FSM has applied that index (Raft thesis 6.4.1), so
    read load spreads over the cluster. Reads the leader does not confirm in time come out as
    failed and their clients are sent to the leader.
    """

    persist_inline = True  # nothing else to do while the log syncs: write it here, ack at once

    def on_client(self, items: list) -> None:
        ctx = self.ctx
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
        if reads:
            try:
                ctx.core.read_index(reads)
            except NotLeader:
                replies.extend((r, ctx.redirect()) for r, _ in reads)
        if replies:
            ctx.frontdoor.reply_many(replies)
