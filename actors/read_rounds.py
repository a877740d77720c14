"""Which followers a read's heartbeat round goes to (ReadIndex, thesis 6.4; docs/architecture.md 5).

A read is confirmed by a heartbeat round that a majority acknowledged and that started after
the read was registered. A majority is the leader and ``quorum - 1`` followers, so a round
started for reads goes only to the followers that answered the latest confirmed round first
(those that made it a majority), not to every follower. Nothing about what confirms a read
changes: an acknowledgement of round r still counts only for reads registered for a round at
most r, whoever it was sent to. What changes is the cost: on a three-node cluster a read round
is one heartbeat and one reply instead of two of each, and the follower that would only have
answered after the read was confirmed does no work for it (docs/performance.md, "Linearizable
reads, round 5": on the 2-core machine that second follower's wake-up competed for a core with
the read's own path).

Liveness does not rest on the chosen followers. The periodic heartbeat still goes to every
follower and starts a round of its own, which confirms every read registered before it; a read
round still unconfirmed ``RESEND_TICKS`` after it started is sent again to all; and whenever the
followers of the last confirmed round are no longer enough voters (a membership change, a new
term) the round goes to all, whose first answers choose the next ones.

Pure bookkeeping, owned by the core (no threads, clock or randomness).
"""
from __future__ import annotations

from typing import Iterable, Optional

__all__ = ["ReadRoundPeers", "RESEND_TICKS"]

# A targeted read round unconfirmed for this many ticks is started again towards every follower
# (2 ticks: 10-20 ms; a healthy follower answers in well under 1 ms).
RESEND_TICKS = 2


class ReadRoundPeers:
    """The leader's choice of followers for its next read round (module docstring)."""

    __slots__ = ("fast", "acks", "round", "targeted")

    def __init__(self) -> None:
        self.fast: tuple = ()  # followers whose acks made the last confirmed round a majority, first first
        self.acks: list = []  # followers that acknowledged the current round, in order of arrival
        self.round = 0  # the round ``acks`` is about
        self.targeted = False  # whether the current round went to ``fast`` only

    def reset(self) -> None:
        """Forget everything (a new leadership: the first read round goes to all)."""
        self.fast = ()
        self.acks = []
        self.round = 0
        self.targeted = False

    def started(self, rnd: int, targeted: bool) -> None:
        """Round ``rnd`` was sent, to the chosen followers only when ``targeted``."""
        self.round = rnd
        self.acks = []
        self.targeted = targeted

    def acked(self, sender: str, rnd: int) -> None:
        """``sender`` acknowledged round ``rnd`` (its first acknowledgement of it)."""
        if rnd == self.round and sender not in self.acks:
            self.acks.append(sender)

    def confirmed(self, rnd: int, voters: Iterable[str]) -> None:
        """Round ``rnd`` is now acknowledged by a majority: its voter ackers so far are the
        followers the next read rounds go to."""
        if rnd == self.round and self.acks:
            vs = set(voters)
            fast = tuple(p for p in self.acks if p in vs)
            if fast:
                self.fast = fast

    def targets(self, self_id: str, voters: list, peers: Iterable[str]) -> Optional[list]:
        """The followers the next read round goes to, or None for every follower: ``quorum - 1``
        (``quorum`` when we are not a voter) of the last confirmed round's fastest voters, all
        still voters and peers; None when there are not enough of them."""
        need = len(voters) // 2 + 1 - (1 if self_id in voters else 0)
        if need <= 0 or not self.fast:
            return None
        vs = set(voters)
        ps = set(peers)
        out = [p for p in self.fast if p in vs and p in ps][:need]
        return out if len(out) == need else None

    def overdue(self, now: int, started_at: Optional[int]) -> bool:
        """Whether the current (targeted) round has waited long enough to be sent to all."""
        return self.targeted and started_at is not None and now - started_at >= RESEND_TICKS
