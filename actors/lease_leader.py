"""The leader's lease desk: client lease requests and the expiry decision, in the role actor.

The decision itself is the pure :class:`actors.lease_clock.LeaseClock`; this shell feeds it the
node's monotonic clock and the applied lease table (actors/lease_state.py, read through the
FSM's published AppliedView), turns grants, revokes and due expiries into log entries, and
answers keepalives, TTL and list requests itself (they change nothing replicated).

A keepalive is confirmed like a linearizable read before it moves a deadline: it rides the
next ReadIndex heartbeat round (shared with the reads waiting then), and only a round that a
quorum acknowledged, started after the keepalive arrived, renews the lease. A deposed leader that
does not know it yet can therefore never acknowledge a keepalive: every acknowledged keepalive
was received while its leader still led, before any successor was elected, so the successor's
promotion (``now + ttl + extend``) covers it, whatever check-quorum or the timeouts are.
Nor does a keepalive hear "not found" from this leader's clock alone: a lease whose expiry is
proposed answers "retry" until the revoke is applied, since the confirming round proves this
node led when the round started, not when the answer is made (a leader paused past the TTL
answers after its successor took the lease over).

The clock is promoted only once this leader has applied every entry of earlier terms (its no-op
committed and applied): before that its table may miss grants, and a keepalive for a lease it
does not know yet must be retried ("unavailable"), not answered "not found".
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Optional

from raftkv.records import Op
from raftkv.wire.messages import ClientReply, Command, EntryKind, encode_record

from .lease_clock import LeaseClock
from .lease_state import ttl_problem

log = logging.getLogger("actors.lease")

CHECK_EVERY_TICKS = 5  # how often (in ticks of 10 ms) the leader looks for due leases


class LeaseDesk:
    """One per Leader role object (a new leader starts with an unpromoted clock)."""

    def __init__(self, ctx: Any, now: Callable[[], float] = time.monotonic) -> None:
        self.ctx = ctx
        self.now = now
        extend = ctx.tuning.election_timeout_ms[1] / 1000.0
        self.clock = LeaseClock(extend=extend, retry=max(1.0, 4 * extend))
        self.ready_at: Optional[int] = None  # the commit index to apply before promoting
        self.version = -1  # the table version the clock last synced with
        self.ticks = 0
        self.check_every = CHECK_EVERY_TICKS  # the simulation checks every tick

    def _table(self) -> Any:
        st = self.ctx.applied_view.state
        return None if st is None else getattr(st, "leases", None)

    def _try_promote(self) -> bool:
        clock = self.clock
        if clock.promoted:
            return True
        core = self.ctx.core
        if self.ready_at is None:
            if core.log.term(core.commit) != core.term:
                return False  # our no-op is not committed yet
            self.ready_at = core.commit
        table = self._table()
        if table is None or self.ctx.applied_view.index < self.ready_at:
            return False
        clock.promote(self.now(), table.view)
        self.version = table.version
        log.info("%s: lease clock promoted in term %d: %d lease(s) extended by %.2fs", self.ctx.node_id, core.term,
                 len(table.view), clock.extend)
        return True

    # ------------------------------------------------------------------ ticks

    def on_tick(self) -> list:
        """Every few ticks: promote once ready, follow the table, and return the proposals
        (kind, data) of the leases due to expire."""
        self.ticks += 1
        if self.ticks % self.check_every or not self._try_promote():
            return []
        table = self._table()
        if table is None:
            return []
        now = self.now()
        if table.version != self.version:
            self.clock.sync(now, table.view)
            self.version = table.version
        due = self.clock.due(now)
        if not due:
            return []
        log.info("%s: lease(s) %s expired in term %d; revoking", self.ctx.node_id,
                 ", ".join(str(d) for d in due), self.ctx.core.term)
        return [(EntryKind.COMMAND, encode_record(Command(Op.LEASE_REVOKE.value, "", lease=lid))) for lid in due]

    # ------------------------------------------------------------------ clients

    def validate(self, req: Any) -> Optional[str]:
        """Why a logged lease request (grant, revoke) is bad, or None."""
        if req.op == Op.LEASE_GRANT.value:
            return ttl_problem(req.lease)
        if req.lease <= 0:
            return "a lease id is a positive integer"
        return None

    def command(self, req: Any) -> Command:
        """The log entry of a grant or revoke request."""
        return Command(req.op, "", client_id=req.client_id, seq=req.seq, lease=req.lease)

    def not_ready(self) -> Optional[ClientReply]:
        """The answer while this leader cannot serve lease requests yet (None once it can)."""
        if self._try_promote() and self._table() is not None:
            return None
        return ClientReply("unavailable", error=f"{self.ctx.node_id}: new leader not ready for leases yet; retry")

    def split_keepalives(self, reads: list) -> list:
        """Answer the keepalives among confirmed reads (``[(index, [(route, req), ...])]``, from the
        core's ReadIndex round) and return the other reads."""
        rest = []
        answers = []
        for index, handles in reads:
            others = []
            for h in handles:
                if h[1].op == Op.LEASE_KEEPALIVE.value:
                    answers.append((h[0], self.answer(h[1])))
                else:
                    others.append(h)
            if others:
                rest.append((index, others))
        if answers:
            self.ctx.frontdoor.reply_many(answers)
        return rest

    def answer(self, req: Any) -> ClientReply:
        """Answer a (confirmed) keepalive, a TTL or a list request from the clock and the applied
        table."""
        table = self._table()
        refusal = self.not_ready()
        if refusal is not None or table is None:
            return refusal or ClientReply("unavailable", error="no state yet; retry")
        now = self.now()
        if table.version != self.version:
            self.clock.sync(now, table.view)
            self.version = table.version
        op = req.op
        if op == Op.LEASE_LIST.value:
            view = table.view
            return ClientReply("ok", info={"leases": [
                {"id": lid, "ttl": ttl, "remaining": _secs(self.clock.remaining(now, lid))} for lid, ttl in
                sorted(view.items())]})
        lid = req.lease
        ttl = table.view.get(lid)
        if ttl is None:
            return ClientReply("not_found", error=f"lease {lid} not found (expired or revoked)")
        if op == Op.LEASE_KEEPALIVE.value:
            if not self.clock.keepalive(now, lid, ttl):
                # Its expiry is proposed but not applied: "retry", not "not found". The round
                # that confirmed this keepalive proves we led when it started, not now; a leader
                # paused past the TTL may have been replaced meanwhile, and the lease kept alive
                # by its successor, so its own clock's expiry may never commit. Once the revoke
                # is applied, the table answers "not found" above (etcd's Renew waits likewise).
                return ClientReply("unavailable", error=f"lease {lid} expired; its revoke is not applied yet; retry")
            return ClientReply("ok", info={"id": lid, "ttl": ttl})
        return ClientReply("ok", info={"id": lid, "ttl": ttl, "remaining": _secs(self.clock.remaining(now, lid)),
                                       "keys": table.keys_of(lid)})


def _secs(x: Optional[float]) -> float:
    return round(x, 3) if x is not None else 0.0
