"""Re-admission in the simulation, on purpose (actors/readmission.py; the scenario of
tests/integration/test_readmission.py, over the real core with every invariant of
tests/sim/cluster.py checked along the way).

The random schedules reach it rarely: a wiped member's admission must reach it while the leader
that appended it dies before the entry commits, and a leader of a later term must win without
it. Here that is scripted. Of five members, the wiped node W restarts as a new incarnation while
the three others are down, so the leader L's entry replacing W's old record reaches W alone
(``check_quorum`` off keeps L leading alone, as in the integration test). W is then cut off and L
crashes: the entry dies uncommitted. The three others restart and elect M, whose configuration
still lists W's old incarnation, and commit writes of its term. When W is reachable again, M
addresses it as the old incarnation, which W ignores; W must ask M to admit it again (a
JoinRequest over the simulated network, as the role actor of a node without --secure sends it),
and be admitted, caught up and promoted. Then L comes back. Safety is checked throughout (Election
Safety, Log Matching, Leader Completeness, State Machine Safety, commit safety, membership rules);
at the end the cluster must be live and converged, with every acknowledged write, and W a voter
of its new incarnation in the committed configuration.

Without the rule (a node that never asks) W stays out for good: the test fails.
"""
from __future__ import annotations

from typing import Any, Callable

import pytest

from raftkv.wire.messages import EntryKind

from tests.sim.cluster import Sim, Stats, default_nodes, run_seed
from tests.sim.model import Node

# Only the scripted faults: no random crash, pause, partition, wipe, transfer or membership change.
QUIET = dict(crash_rate=0.0, leader_crash_rate=0.0, pause_rate=0.0, transfer_rate=0.0, member_rate=0.0,
             wipe_rate=0.0, strand_rate=0.0, hint_false=0.0, admin_snap_rate=0.0, hunt_crash=0.0, hunt_isolate=0.0,
             spares=0, check_quorum=False)
BUDGET = 1000  # ticks each stage of the script may take (an election with many split votes takes long)


class TruncatedAdmission(Sim):
    """The scenario of the module docstring; ``run`` returns the Stats and the facts to check."""

    def __init__(self, seed: int, verbose: bool = False) -> None:
        super().__init__(seed, 5, verbose=verbose, overrides=QUIET)
        self.facts: dict = {}

    def chaos_events(self) -> None:
        """Clients only: writes to every node that believes it leads, and some reads."""
        rng = self.rng
        for nd in self.leader_nodes():
            if rng.random() < self.propose_rate and len(nd.props) < self.client_window:
                self.propose(nd, rng.randint(1, 3))
        if rng.random() < self.read_rate:
            ls = self.leader_nodes()
            if ls:
                self.read(rng.choice(ls))

    def until(self, cond: Callable[[], Any], what: str) -> Any:
        deadline = self.tick_no + BUDGET
        while True:
            v = cond()
            if v:
                return v
            if self.tick_no >= deadline:
                self.fail(f"scenario: no {what} within {BUDGET} ticks")
            self.step()

    def settled(self) -> Any:
        """The leader, once writes are committed and every node is its follower in its term (no
        candidacy of a term above it is under way, which could unseat it while the others are
        down: its own election, not the scenario's)."""
        ld = self.current_leader()
        if ld is None or len(self.committed) < 10 or not self.stats.acked:
            return None
        if any(nd.core.term != ld.core.term or nd.core.leader_id != ld.id for nd in self.nodes):
            return None
        return ld

    def cut_off(self, nd: Node, cut: bool) -> None:
        links = {(nd.i, o.i) for o in self.nodes if o is not nd} | {(o.i, nd.i) for o in self.nodes if o is not nd}
        self.blocked = (self.blocked | links) if cut else (self.blocked - links)
        if self.verbose:
            self.trace(f"!!! {nd.id} {'cut off' if cut else 'reachable again'}")

    def run(self) -> Stats:
        ld: Node = self.until(self.settled, "leader followed by all, with writes committed")
        w = next(nd for nd in self.nodes if nd is not ld)
        others = [nd for nd in self.nodes if nd is not ld and nd is not w]
        # W's disk is replaced while the others are down: L's entry admitting W's new incarnation
        # reaches W alone.
        for nd in others + [w]:
            self.crash(nd)
        self.wipe(w)
        self.restart(w)
        self.until(lambda: not w.joining and ld.alive and ld.core.role == "leader",
                   "admission of W's new incarnation in W's own log")
        ci = w.core.config_index()
        admission = w.core.log.entry(ci)
        assert admission.kind == EntryKind.CONFIG and ld.core.commit < ci
        self.facts.update(w=w.id, new_inc=w.inc, admission_index=ci, admission=admission, term_l=ld.core.term)
        # L dies with the entry uncommitted; the others elect a leader of a later term without it.
        self.cut_off(w, True)
        self.crash(ld)
        for nd in others:
            self.restart(nd)
        m = self.until(lambda: next((nd for nd in others if nd.alive and nd.core.role == "leader"
                                     and nd.core.term > self.facts["term_l"]
                                     and len(self.committed) > ci), None),
                       "leader of a later term committing past the admission's index")
        assert m.core.member(w.id).incarnation != w.inc, "M lists W's old incarnation"
        acked = self.stats.acked
        self.until(lambda: self.stats.acked > acked, "write acknowledged by the later leader")
        # W hears M again: addressed as its old incarnation, it must ask to be admitted again.
        self.cut_off(w, False)
        self.until(lambda: self.stats.readmissions, "re-admission request at the leader")
        self.until(lambda: any(nd.alive and nd.core.role == "leader" and nd.core.member(w.id).incarnation == w.inc
                               for nd in others), "W re-admitted by the later leader")
        # L comes back with the admission on its disk, in a term the others' logs replaced: it
        # is truncated there too. Healing stops the clients; the cluster must then converge with
        # W caught up and promoted (Sim.check_converged).
        self.restart(ld)
        return self.finish()


@pytest.mark.parametrize("seed", range(8))
def test_a_node_whose_admission_was_truncated_is_admitted_again(seed: int) -> None:
    sim = TruncatedAdmission(seed)
    st = sim.run()
    f = sim.facts
    assert st.readmissions >= 1 and st.wipes == 1
    # The entry that admitted W the first time was truncated: another entry committed at its index.
    assert sim.committed[f["admission_index"] - 1] != f["admission"]
    final = sim.config_as_of(len(sim.committed))
    assert [(x.incarnation, x.voter) for x in final if x.id == f["w"]] == [(f["new_inc"], True)]
    assert st.acked > 0 and st.promotions >= 1


def test_random_schedules_reach_it_too() -> None:
    """The random fault (NodeModel.maybe_strand_admission) in seed 139 (5 nodes): a wiped member's
    admission reaches it alone, a leader of a later term lacks it, and the member asks again.
    (If a change of schedule moves this, the coverage totals of test_sim.py print readmissions:
    pick another seed.)"""
    st = run_seed(139, default_nodes(139))
    assert st.readmissions >= 1 and st.committed > 0 and st.acked > 0


@pytest.mark.parametrize("seed", [2615])
def test_a_node_whose_campaigns_raised_its_term_past_the_leaders_asks_it_all_the_same(seed: int) -> None:
    """Seeds 1519 and 2233 at first (5 nodes, found with the random fault above outside CI's
    0-999): the stranded member, a learner of its own log whose log was ahead, campaigned until
    its term ran past the later leader's; it then ignored that leader as stale, the leader never
    heard its term (nothing addressed to the old incarnation is answered) and its voters ignored
    its campaigns within the lease: it stayed out for good and the cluster never converged. It now
    asks a leader of a lower term too (actors/readmission.py). Round 14's election-timer rule
    (a stale candidate does not restart a voter's wait) moved those two schedules off the case;
    2615 reaches it, and fails with the old rule planted (only leaders of our term or later asked)."""
    st = run_seed(seed, default_nodes(seed))
    assert st.readmissions >= 1 and st.committed > 0 and st.acked > 0
