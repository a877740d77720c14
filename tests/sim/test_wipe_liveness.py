"""Liveness around a wiped member (issue 13 item 1), seeds found outside CI's 0-999.

* 1384, 1708, 1748: a leader logged its own removal (a 2-voter configuration), crashed, and then
  another member of that configuration was wiped: a lost quorum of a configuration a node comes
  back with. The fault model (NodeModel.maybe_wipe) now counts a crashed node's disk too.
* 1732: four voters, one wiped; a lagging voter (its configuration predates the fourth voter's
  addition) refused the vote request of the only candidate that could win, the added voter whose
  log is more up-to-date, so no leader could ever be elected (RaftCore._maybe_unknown_voter).
* 4095 (5 nodes): n2 was wiped and re-admitted as n2.1, but the entry recording n2.1 was truncated
  when n1 won term 7 with a shorter log; n1 still listed n2.0, n2 (its own log listing n2.1)
  ignored every message to n2.0 and never asked again: a dead voter slot. A node addressed as
  another incarnation of its id by a leader now asks it to admit it again (actors/readmission.py).
* 47064 (3 nodes; broken by that rule at first): a node, paused, got its leader's messages to its
  old incarnation late, after its replacement entry, asked again, and the join arrived after an
  operator removed it: the leader added it anew and it stopped for good. It now asks only a
  leader of a later term than its configuration's entry, which is not known committed.
* 921613 (5 nodes, neither pre-vote nor check-quorum; found by a soak of 10,000 seeds): n5 was
  wiped and its admission as n5.1 reached it alone, so its own log made it a voter while the
  others listed n5.0. It heard no leader (every message was addressed to n5.0) and campaigned
  every election timeout; each campaign deposed the leader before the replacement guard let that
  leader re-admit it: 28 terms without a lasting leader. A leader's message to the old
  incarnation now restarts the election timer of a node that would campaign.
* 922195 (5 nodes; and 913961 of the lease simulation, tests/sim/test_lease_sim.py): a wiped
  node's admission reached it, unsynced, and it crashed: it came back with an empty disk, but the
  model's join loop had stopped at the admission and was never run again, so the node waited for
  good. kvnode runs the loop at every start that its disk does not admit (Node.needs_join); the
  model now does too (NodeModel.restart).
* 987039 (5 nodes): a wiped node was admitted, the join loop stopped, the admitting entries were
  truncated and the node installed a snapshot of a leader that never had them: every node,
  itself included, listed the old incarnation again, and nothing asked (the core's re-admission
  request needs the node's own log to admit it). kvnode's join loop now keeps watching and asks
  again (Node._join_loop); the model too (NodeModel.watch_admissions).
* 1013156 (3 nodes; a fault-model fix): the leader sent the removal of n3 ({n1, n2}) to n1 alone
  and crashed before syncing it; n2 was wiped, and the append reached n1 only after. n1 could
  never win without n2, nor vote for n3, whose log was behind; whether the entry was committed n1
  cannot tell, so it is a lost quorum that needs an operator. NodeModel.maybe_wipe now counts
  configurations still in flight too.
"""
from __future__ import annotations

import random

import pytest

from raftkv.actors.core import UNKNOWN_CANDIDATE_MAX_JUMP, CoreConfig, RaftCore
from raftkv.actors.memlog import MemLog
from raftkv.records import INDEX_LIMIT
from raftkv.wire.messages import Entry, EntryKind, Member, RequestVote, VoteReply
from tests.sim.cluster import default_nodes, run_seed


@pytest.mark.parametrize("seed", [1384, 1708, 1732, 1748, 4095, 47064, 921613, 922195, 987039, 1013156])
def test_a_wiped_member_rejoins_and_the_cluster_stays_live(seed: int) -> None:
    st = run_seed(seed, default_nodes(seed))
    assert st.committed > 0


def _lagging_voter(pre_vote: bool = True) -> RaftCore:
    """n1 of {n1, n2, n3} at term 6 with a log to (12, term 3): it lacks the entries that added n4."""
    ms = [Member(f"n{i}", f"127.0.0.1:{9000 + i}") for i in (1, 2, 3)]
    cfg = CoreConfig(election_ticks_min=10, election_ticks_max=20, heartbeat_ticks=3, pre_vote=pre_vote)
    log = MemLog(0, 0, [Entry(3, EntryKind.NOOP, b"") for _ in range(12)])
    c = RaftCore("n1", cfg, term=6, log=log, members=ms, commit=12, rng=random.Random(1))
    for _ in range(40):  # past any lease: no leader heard
        c.tick()
    c.take_ready()
    return c


def _replies(c: RaftCore) -> list:
    r = c.take_ready()
    return [m for _, m in list(r.send) + list(r.send_after_persist) if isinstance(m, VoteReply)]


def test_a_lagging_voter_votes_for_a_more_up_to_date_voter_it_does_not_know_yet() -> None:
    c = _lagging_voter()
    c.step("n4", RequestVote(c.term + 1, 23, 5, pre_vote=True))
    assert [(m.granted, m.pre_vote) for m in _replies(c)] == [(True, True)] and c.term == 6
    c.step("n4", RequestVote(7, 23, 5))
    assert [m.granted for m in _replies(c)] == [True] and c.term == 7 and c.vote == "n4"


def test_an_unknown_candidate_still_cannot_jump_terms_or_win_with_a_stale_log() -> None:
    c = _lagging_voter()
    c.step("evil", RequestVote(INDEX_LIMIT - 1, 10**6, INDEX_LIMIT - 1))
    c.step("evil", RequestVote(7 + UNKNOWN_CANDIDATE_MAX_JUMP, 10**6, 8))  # too many terms ahead
    c.step("evil", RequestVote(7, 12, 3))  # not more up-to-date than ours
    c.step("evil", RequestVote(7, 5, 8))  # a last term past its own term
    assert c.term == 6 and c.vote is None and not _replies(c)
    # A lagging voter admits a candidate a bounded number of terms ahead: without pre-vote its
    # term rises every timeout (seed 2722), and with pre-vote the voters that could tell us the
    # term may be gone (seed 8512; tests/unit/test_core_election_liveness.py).
    d = _lagging_voter(pre_vote=False)
    t = d.term  # it campaigned itself meanwhile (no pre-vote)
    d.step("evil", RequestVote(INDEX_LIMIT - 1, 10**6, INDEX_LIMIT - 1))
    d.step("evil", RequestVote(t + 1, 12, 3))
    assert d.term == t and d.vote == "n1" and not _replies(d)
    d.step("n4", RequestVote(t + 3, 23, 5))
    assert d.term == t + 3 and d.vote == "n4"
