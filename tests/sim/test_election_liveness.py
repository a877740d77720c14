"""Liveness when configurations diverge, seeds found outside CI's 0-999 (each once left the
healed cluster without a leader for good; the rules are tested one by one in
tests/unit/test_core_election_liveness.py).

* 2722 (3 nodes, no pre-vote): a lagging voter, whose log still removes the leader-to-be, dropped
  the vote requests of the only candidate that could win: without pre-vote its term ran ahead
  of the voter's, past the one-term rule of the pre-vote case (RaftCore._maybe_unknown_voter).
* 2819, 3333 (5 nodes): a leader logged its own removal and crashed before it committed; another
  voter was wiped; the removed leader held the newest log, so the remaining voters refused each
  other and it never campaigned (RaftCore._removal_pending, dissertation 4.2.2).
* 3699 (5 nodes): a learner held entries of the last leader, whose disk was then wiped; the only
  voter that could win needed the learner's vote (its log promoted the learner), the learner
  refused it (its log is ahead) and never campaigned (RaftCore.needed_learner). With the rule of
  2819 the seed's history changes before that state; the unit tests pin the learner rule.
* 1546 (3 nodes, no pre-vote; broken by the rules above, reachable before them): a learner whose
  log still held its overwritten promotion campaigned, its term ran past the leader's, and the
  leader ignored its higher-term replies (a non-voter's): it refused every append and never
  caught up (RaftCore._outsider now lets a learner's reply raise a leader's term).
* 8512 (3 nodes, pre-vote): n3 was removed and n1 wiped in entries a lagging voter n2 lacked; n4,
  a learner in n2's log and a voter in its own, held the newest log and campaigned two terms
  ahead of n2, which admitted an unknown candidate only one term ahead (the voters it knew, to
  learn the term from, were gone): RaftCore._maybe_unknown_voter now takes a bounded jump with
  pre-vote too.
* 10517 (5 nodes): a wiped member's replacement, a learner in its own log only, held the newest
  log; the others listed its old incarnation as a voter they needed for a quorum, and it dropped
  their requests (addressed to the old incarnation) without refusing them as a learner whose log
  is ahead does: it now may campaign (RaftCore._refused_as_misaddressed).
* 14260 (3 nodes): a learner kept its last leader for good and refused, as within that leader's
  lease, most vote requests of the only candidate that could win (RaftCore._leader_silent).
  24680 (3 nodes) again, with a wiped member's replacement as the learner.
* 40844 (3 nodes, no pre-vote): a voter granted a needed learner its vote every term, each grant
  restarting its election timeout, so it never campaigned though it could win, and the learner
  lost every term to a voter with a stale log that voted for itself first (RaftCore._defers_to).
* 15342 (3 nodes): a leader logged the removal of another voter and lost leadership before it
  committed; that voter won the next term, and the old leader dropped its appends as an
  outsider's for good (RaftCore._voter_of_an_uncommitted_past).
* 980757 (5 nodes), 1008968 (3 nodes), both without pre-vote (found by soaks of 10,000 seeds): a
  wiped voter left a configuration whose every live voter was needed, and only one of them had a
  log that could win. Each campaign of the others (logs behind) restarted its election timeout
  when it took their term, so it always campaigned a delay after them and found them voted for
  themselves: split terms for hundreds of ticks. A refused candidate's term no longer restarts
  the wait (RaftCore.step; Figure 2 restarts it on a granted vote or a leader's message only).
* 1084818 (3 nodes, pre-vote, check-quorum off; found by a soak): a voter's log ended just before
  the promotion of a learner, the old leader removed itself, and the promoted learner, leading a
  configuration that needed that voter, sent heartbeats it dropped as an outsider's for good
  (without check-quorum the leader never stepped down to send a vote request, which gets
  through): RaftCore._maybe_promoted_leader now lets a learner of our configuration's leader
  messages raise our term, by the same bounded jump.
"""
from __future__ import annotations

import pytest

from tests.sim.cluster import default_nodes, run_seed


@pytest.mark.parametrize("seed", [1546, 2722, 2819, 3333, 3699, 8512, 10517, 14260, 15342, 24680, 40844, 980757, 1008968, 1084818])
def test_the_healed_cluster_elects_a_leader_and_commits(seed: int) -> None:
    st = run_seed(seed, default_nodes(seed))
    assert st.committed > 0 and st.acked > 0


def test_a_restarted_followers_forwarded_reads_stay_linearizable() -> None:
    """Seed 6494 (found while running 6000-7999 for the seeds above; safety, not liveness): a
    reply to a follower's forwarded read from before its restart, still in flight, confirmed the
    new boot's read of the same id with a stale index (ids now start at random per boot)."""
    st = run_seed(6494, default_nodes(6494))
    assert st.committed > 0 and st.acked > 0


def test_a_replaced_incarnations_acknowledgements_do_not_commit() -> None:
    """Seed 15879 (safety): a leader admitted the join of a wiped member's new incarnation and
    then committed an entry with the old incarnation's acknowledgement (RaftCore.join now stops
    counting them; tests/unit/test_core_replacement_commit.py)."""
    st = run_seed(15879, default_nodes(15879))
    assert st.committed > 0 and st.acked > 0


def test_a_learner_that_refused_a_candidate_campaigns_and_leads_in_the_simulation() -> None:
    """The rule of seed 3699 (RaftCore.needed_learner, _may_campaign) on the simulation's real
    path: in seed 370 (3 nodes; seed 78 until read rounds went to a majority only, which moved
    its schedule) a learner refuses a candidate whose log is behind its own,
    campaigns, and wins an election, and the run stays safe and live. (If a change of schedule
    moves this, the coverage totals of test_sim.py print learner_leads: pick another seed.)"""
    st = run_seed(370, default_nodes(370))
    assert st.learner_campaigns >= 1 and st.learner_leads >= 1
    assert st.committed > 0 and st.acked > 0
