"""WARNING lines about the cluster's health, derived from the core's public state.

One line per state change, never per tick, each naming the node and the term:

* a peer becomes unreachable (leader side: silent longer than ``unreachable_s``), and returns;
* quorum is lost (the leader hears from fewer than a quorum of voters, or check-quorum made it
  step down) and regained (this node leads with a quorum again, or another leader is known);
* elections keep failing: after ELECTION_WARN_ROUNDS campaigns without a leader, then at most
  once per ELECTION_REPEAT_S while it lasts, and once when a leader is finally known.

:class:`HealthWatch` runs in the role actor's thread, every PEER_EVERY_TICKS ticks and on role
changes; it keeps its own state and never touches the core.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Optional

from .core import CANDIDATE, LEADER, PRE_CANDIDATE

log = logging.getLogger("actors.health")

ELECTION_WARN_ROUNDS = 10  # campaigns without a leader before the first warning (~3-6 s by default)
ELECTION_REPEAT_S = 60.0  # then at most one reminder a minute


class HealthWatch:
    """Tracks peer reachability, quorum and failing elections of one node; logs the changes."""

    def __init__(self, node_id: str, unreachable_s: float) -> None:
        self.node_id = node_id
        self.unreachable_s = unreachable_s
        self.unreachable: set = set()  # peers this leader has warned about
        self.reachable: dict[str, bool] = {}  # leader only: verdict per peer, for the metrics
        self.quorum_ok: Optional[bool] = None  # leader only; None off the leader
        self.quorum_lost = False  # a "quorum lost" line is out and no "regained" yet
        # Leader only: since when each peer counts as silent at most: the leadership's start for
        # the members then, its joining for a peer added later (not the leadership's age).
        self._member_since: dict[str, float] = {}
        self._was_leader_term: Optional[int] = None
        self._campaigns = 0  # campaigns since a leader was last known
        self._election_warned_at: Optional[float] = None

    # ------------------------------------------------------------------ on role changes

    def on_role_change(self, core: Any) -> None:
        """The core's role changed, or a (pre-)candidate started another round."""
        role = core.role
        if role in (PRE_CANDIDATE, CANDIDATE):
            self._campaigns += 1
            self._check_elections(core)
        if role == LEADER:
            now = time.monotonic()
            self._member_since = {m.id: now for m in core.members}
            self._was_leader_term = core.term
            self._leader_known(core)
            return
        if self._was_leader_term is not None:
            if core.term == self._was_leader_term and core.leader_id is None and not self.quorum_lost:
                # Stepped down in its own term with no successor: check-quorum found too few voters.
                self.quorum_lost = True
                log.warning("%s: quorum lost in term %d: as leader it heard from fewer than a quorum of voters "
                            "and stepped down", self.node_id, core.term)
            self._was_leader_term = None
        # Off the leader, the per-peer verdicts mean nothing: forget them quietly.
        self._member_since.clear()
        self.unreachable.clear()
        self.reachable.clear()
        self.quorum_ok = None
        if core.leader_id is not None:
            self._leader_known(core)

    # ------------------------------------------------------------------ every few ticks

    def on_tick(self, core: Any, last_contact: dict) -> None:
        """Re-check peers and quorum (leader), and whether a leader became known."""
        if core.role != LEADER:
            if core.leader_id is not None:
                self._leader_known(core)
            elif self._campaigns >= ELECTION_WARN_ROUNDS:
                self._check_elections(core)
            return
        now = time.monotonic()
        me = self.node_id
        reachable_voters = 0
        voters = 0
        for m in core.members:
            if m.id == me:
                if m.voter:
                    voters += 1
                    reachable_voters += 1
                continue
            seen = last_contact.get(m.id)
            silent = now - max(seen or 0.0, self._member_since.setdefault(m.id, now))
            up = silent <= self.unreachable_s
            self.reachable[m.id] = up
            if not up and m.id not in self.unreachable:
                self.unreachable.add(m.id)
                log.warning("%s: peer %s unreachable in term %d: no answer for %.1fs (%s)", me, m.id, core.term,
                            silent, m.addr)
            elif up and m.id in self.unreachable:
                self.unreachable.discard(m.id)
                log.warning("%s: peer %s returned in term %d (%s)", me, m.id, core.term, m.addr)
            if m.voter:
                voters += 1
                reachable_voters += up
        for gone in [p for p in self.reachable if core.member(p) is None]:
            del self.reachable[gone]
            self._member_since.pop(gone, None)
            self.unreachable.discard(gone)
        ok = reachable_voters >= voters // 2 + 1
        if not ok and not self.quorum_lost:
            self.quorum_lost = True
            log.warning("%s: quorum lost in term %d: %d of %d voters reachable", me, core.term, reachable_voters,
                        voters)
        elif ok and self.quorum_lost:
            self._regained(core)
        self.quorum_ok = ok

    # ------------------------------------------------------------------ helpers

    def _leader_known(self, core: Any) -> None:
        if self._election_warned_at is not None:
            log.warning("%s: leader %s elected in term %d after %d election rounds", self.node_id, core.leader_id,
                        core.term, self._campaigns)
            self._election_warned_at = None
        self._campaigns = 0
        if self.quorum_lost and core.role != LEADER:
            self._regained(core)

    def _regained(self, core: Any) -> None:
        self.quorum_lost = False
        log.warning("%s: quorum regained in term %d (leader: %s)", self.node_id, core.term, core.leader_id)

    def _check_elections(self, core: Any) -> None:
        if self._campaigns < ELECTION_WARN_ROUNDS:
            return
        now = time.monotonic()
        at = self._election_warned_at
        if at is None or now - at >= ELECTION_REPEAT_S:
            self._election_warned_at = now
            voters = ", ".join(m.id for m in core.members if m.voter) or "none known"
            log.warning("%s: no leader after %d election rounds (term %d); a quorum of the voters (%s) must be "
                        "running and reachable", self.node_id, self._campaigns, core.term, voters)
