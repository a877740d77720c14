"""When leases expire: the leader's decision, as plain code driven by explicit ``now`` inputs.

Leases follow etcd's lessor (server/lease/lessor.go), reduced to what raftkv needs:

- Only the leader keeps deadlines. Followers hold the lease table (replicated state:
  actors/lease_state.py) but no clock for it: an expiry is the leader's decision, proposed as
  one ``lease_revoke`` log entry, so every replica deletes the lease's keys at the same log
  position whatever its own clock says.
- A keepalive is not replicated: it only moves the leader's deadline (``now + ttl``). This is
  what makes keepalives cheap (no disk write, no round trip to followers).
- A new leader first *promotes*: every lease it knows gets ``now + ttl + extend``, ``extend``
  being one (maximum) election timeout. The old leader's deadlines died with it; the lease's
  holder was kept alive on the old leader until at most about an election timeout before this
  leader was elected (it had lost its quorum by then), so ``ttl + extend`` from now is later
  than any deadline the old leader could have honoured: a failover never expires a live lease.
  It only delays the expiry of a dead one (by at most ``ttl + extend``).
- A lease whose revoke has been proposed is *revoking*: keepalives are refused (the desk tells
  the holder to retry until the revoke is applied, then "not found", as etcd's Renew waits for
  the revoke) and the revoke is proposed again after ``retry`` seconds if it has not been
  applied (it may have been lost in a leader change).

Times are seconds on one node's monotonic clock; only differences on one node are used, so
clocks of different nodes never need to agree (their rates must, roughly: the same assumption as
leader election's timeouts). No threads, no wall clock: ``actors/lease_leader.py`` feeds
``time.monotonic()``; the simulation (tests/sim/lease_model.py) feeds its ticks.
"""
from __future__ import annotations

from typing import Mapping, Optional

DUE_BATCH = 64  # leases expired per decision at most (one entry each; bounds a burst)


class LeaseClock:
    """The leader's deadlines for the leases of the replicated table.

    ``extend`` is added to every lease's TTL when the clock is promoted (a new leader); ``retry``
    is how long a proposed expiry may stay unapplied before it is proposed again."""

    def __init__(self, extend: float, retry: float = 2.0) -> None:
        self.extend = extend
        self.retry = retry
        self.promoted = False
        self.deadline: dict[int, float] = {}  # lease id -> when it expires (leader's clock)
        self.revoking: dict[int, float] = {}  # lease id -> when its expiry was last proposed
        # No lease is due before this time (a lower bound: deadlines only move later, except
        # for new leases, which lower it): due() scans the table only once it has passed.
        self.next_due = float("inf")

    def promote(self, now: float, leases: Mapping[int, int]) -> None:
        """This node became leader and has applied every entry of earlier terms: give every lease
        of ``leases`` (id -> ttl seconds) its full TTL plus one election timeout from ``now``."""
        self.promoted = True
        self.revoking = {}
        self.deadline = {lid: now + ttl + self.extend for lid, ttl in leases.items()}
        self.next_due = min(self.deadline.values(), default=float("inf"))

    def sync(self, now: float, leases: Mapping[int, int]) -> None:
        """Follow the replicated table: a lease granted since gets ``now + ttl``; a lease no
        longer in it (revoked, expired) is forgotten."""
        if not self.promoted:
            return
        dl = self.deadline
        if len(dl) == len(leases) and all(lid in dl for lid in leases):
            return
        for lid in [lid for lid in dl if lid not in leases]:
            del dl[lid]
            self.revoking.pop(lid, None)
        for lid, ttl in leases.items():
            if lid not in dl:
                dl[lid] = now + ttl
                self.next_due = min(self.next_due, now + ttl)
        for lid in [lid for lid in self.revoking if lid not in leases]:
            del self.revoking[lid]

    def keepalive(self, now: float, lease_id: int, ttl: int) -> bool:
        """Renew a lease for ``ttl`` seconds from ``now``. False when the lease is unknown here or
        its expiry is already proposed (then the holder must consider it gone)."""
        if not self.promoted or lease_id not in self.deadline or lease_id in self.revoking:
            return False
        self.deadline[lease_id] = now + ttl
        return True

    def remaining(self, now: float, lease_id: int) -> Optional[float]:
        """Seconds left before the lease expires (0 when due or revoking), None if unknown."""
        d = self.deadline.get(lease_id)
        if d is None or not self.promoted:
            return None
        if lease_id in self.revoking:
            return 0.0
        return max(0.0, d - now)

    def due(self, now: float, limit: int = DUE_BATCH) -> list[int]:
        """The leases to expire now (in id order, at most ``limit``): past their deadline and not
        being revoked, or revoking for longer than ``retry`` (the proposal was probably lost).
        Each one returned is marked revoking at ``now``."""
        if not self.promoted or now < self.next_due:
            return []
        out: list[int] = []
        nxt = float("inf")
        for lid in sorted(self.deadline):
            d = self.deadline[lid]
            since = self.revoking.get(lid)
            if since is not None:
                d = max(d, since + self.retry)  # proposed already: due again only after retry
            if d > now or len(out) >= limit:
                nxt = min(nxt, d)
                continue
            out.append(lid)
            self.revoking[lid] = now
            nxt = min(nxt, now + self.retry)
        self.next_due = nxt
        return out
