"""RaftCore, rule by rule, against Figure 2 of the Raft paper (and the thesis' extensions).

Each test drives one or two cores with hand-made messages and inspects the Ready they produce.
"""
from __future__ import annotations

import random

import pytest

from raftkv.actors.core import (CANDIDATE, FOLLOWER, LEADER, PRE_CANDIDATE, CoreConfig, NotLeader, RaftCore,
                         encode_config)
from raftkv.actors.memlog import MemLog
from raftkv.wire.messages import (AppendEntries, AppendReply, Entry, EntryKind, Heartbeat, HeartbeatReply,
                           Member, RequestVote, TimeoutNow, VoteReply)

EMIN, EMAX, HB = 10, 20, 3


def members(n: int = 3, learners: int = 0) -> list:
    ms = [Member(f"n{i}", f"127.0.0.1:{9000 + i}") for i in range(1, n + 1)]
    ms += [Member(f"n{i}", f"127.0.0.1:{9000 + i}", voter=False) for i in range(n + 1, n + learners + 1)]
    return ms


def E(term: int, data: bytes = b"x") -> Entry:
    return Entry(term, EntryKind.COMMAND, data)


def mklog(*terms: int) -> MemLog:
    return MemLog(entries=[E(t, b"%d" % i) for i, t in enumerate(terms, start=1)])


def core(node: str = "n1", n: int = 3, *, learners: int = 0, pre_vote: bool = True, check_quorum: bool = True,
         term: int = 0, vote=None, log: MemLog = None, commit: int = 0, ms: list = None) -> RaftCore:
    cfg = CoreConfig(election_ticks_min=EMIN, election_ticks_max=EMAX, heartbeat_ticks=HB,
                     pre_vote=pre_vote, check_quorum=check_quorum)
    return RaftCore(node, cfg, term=term, vote=vote, log=log, members=ms or members(n, learners),
                    commit=commit, rng=random.Random(7))


def peers(c: RaftCore) -> list:
    return [v for v in c.voters() if v != c.id]


def elect(c: RaftCore):
    """Make ``c`` leader through (pre-)vote; returns the Ready of the election."""
    c.campaign()
    if c.role == PRE_CANDIDATE:
        for p in peers(c):
            c.step(p, VoteReply(c.term + 1, True, pre_vote=True))
    assert c.role == CANDIDATE
    for p in peers(c):
        c.step(p, VoteReply(c.term, True))
    assert c.role == LEADER
    return c.take_ready()


def commit_noop(c: RaftCore) -> None:
    """Sync the leader's log and have every follower acknowledge it."""
    last = c.log.last_index()
    c.on_persisted(last, c.log.last_term())
    for p in list(c.progress):
        c.step(p, AppendReply(c.term, True, match_index=last))
    assert c.commit == last


def sent(ready, kind=None, to=None) -> list:
    return [m for t, m in ready.send if (kind is None or type(m) is kind) and (to is None or t == to)]


def sent_after(ready, kind=None, to=None) -> list:
    return [m for t, m in ready.send_after_persist if (kind is None or type(m) is kind) and (to is None or t == to)]


def terms(c: RaftCore) -> list:
    return [e.term for e in c.log.entries]


# ---------------------------------------------------------------- all servers: terms


def test_higher_term_in_append_makes_follower_and_persists_term():
    c = core(term=2, vote="n1")
    c.step("n2", AppendEntries(5, 0, 0, [], 0))
    r = c.take_ready()
    assert (c.term, c.vote, c.role, c.leader_id) == (5, None, FOLLOWER, "n2")
    assert (r.persist.term, r.persist.vote) == (5, None)


def test_higher_term_in_a_reply_deposes_a_leader():
    c = core()
    elect(c)
    c.step("n2", HeartbeatReply(c.term + 3, 0, 0))
    assert c.role == FOLLOWER and c.term == 4 and c.leader_id is None


def test_candidate_yields_to_a_leader_of_its_own_term():
    c = core(pre_vote=False)
    c.campaign()
    assert c.role == CANDIDATE
    c.step("n2", AppendEntries(c.term, 0, 0, [], 0))
    assert c.role == FOLLOWER and c.leader_id == "n2" and c.term == 1


# ---------------------------------------------------------------- AppendEntries (receiver)


def test_append_from_an_older_term_is_rejected_with_our_term():
    c = core(term=5, log=mklog(1, 2))
    c.step("n2", AppendEntries(3, 2, 2, [E(3)], 2))
    r = c.take_ready()
    replies = sent(r, AppendReply, "n2")
    assert len(replies) == 1 and not replies[0].success and replies[0].term == 5
    assert terms(c) == [1, 2] and c.term == 5 and c.commit == 0 and r.persist.empty()


def test_consistency_check_log_too_short_hints_our_end():
    c = core(term=1, log=mklog(1, 1))
    c.step("n2", AppendEntries(1, 5, 1, [E(1)], 0))
    (rep,) = sent(c.take_ready(), AppendReply)
    assert not rep.success and rep.reject_index == 5 and rep.conflict_index == 3 and rep.conflict_term == 0
    assert terms(c) == [1, 1]


def test_consistency_check_term_mismatch_hints_the_first_index_of_that_term():
    c = core(term=3, log=mklog(1, 2, 2, 2))
    c.step("n2", AppendEntries(3, 4, 3, [E(3)], 0))
    (rep,) = sent(c.take_ready(), AppendReply)
    assert not rep.success and rep.reject_index == 4
    assert rep.conflict_term == 2 and rep.conflict_index == 2
    assert terms(c) == [1, 2, 2, 2], "a rejected append changes nothing"


def test_leader_uses_conflict_hints_to_skip_a_term():
    c = core(term=4, log=mklog(1, 2, 2, 4, 4))
    elect(c)  # term 5, no-op at 6
    # the follower has term 3 at the probe's prev index 5, its term-3 run starting at 3
    c.step("n2", AppendReply(5, False, reject_index=5, conflict_index=3, conflict_term=3))
    (ae,) = sent(c.take_ready(), AppendEntries, "n2")
    assert ae.prev_index == 2, "no term 3 here: back up to the follower's first index of it"
    # a hint naming a term the leader has resumes right after the leader's last entry of it
    c.step("n3", AppendReply(5, False, reject_index=5, conflict_index=2, conflict_term=2))
    (ae,) = sent(c.take_ready(), AppendEntries, "n3")
    assert ae.prev_index == 3 and ae.prev_term == 2


def test_conflicting_suffix_is_truncated_and_replaced():
    c = core(term=1, log=mklog(1, 1, 1, 1), commit=1)
    c.step("n2", AppendEntries(2, 2, 1, [E(2, b"a"), E(2, b"b")], 1))
    r = c.take_ready()
    assert terms(c) == [1, 1, 2, 2]
    assert r.persist.truncate_from == 3 and r.persist.first == 3 and [e.data for e in r.persist.entries] == [b"a", b"b"]


def test_the_whole_conflicting_suffix_goes_even_past_the_new_entries():
    c = core(term=1, log=mklog(1, 1, 1, 1, 1))
    c.step("n2", AppendEntries(2, 2, 1, [E(2, b"a")], 0))
    r = c.take_ready()
    assert terms(c) == [1, 1, 2], "entries 4 and 5 followed a conflicting entry: they go too"
    assert r.persist.truncate_from == 3


def test_matching_entries_are_not_truncated_by_a_shorter_stale_append():
    c = core(term=1, log=mklog(1, 1, 1, 1))
    c.step("n2", AppendEntries(1, 1, 1, [c.log.entry(2)], 0))
    r = c.take_ready()
    assert len(c.log.entries) == 4 and r.persist.truncate_from is None and not r.persist.entries


def test_committed_entries_are_never_truncated():
    c = core(term=1, log=mklog(1, 1, 1, 1), commit=3)
    # a reordered old append of the same leader, covering the committed prefix
    c.step("n2", AppendEntries(1, 0, 0, [c.log.entry(1), c.log.entry(2)], 3))
    r = c.take_ready()
    assert len(c.log.entries) == 4 and r.persist.truncate_from is None
    assert [m.match_index for m in sent_after(r, AppendReply)] == [2]
    # a new leader whose entries diverge only above the commit index truncates only there
    c.step("n3", AppendEntries(2, 3, 1, [E(2)], 3))
    r = c.take_ready()
    assert terms(c) == [1, 1, 1, 2] and r.persist.truncate_from == 4 and c.commit == 3


def test_commit_is_min_of_leader_commit_and_last_new_entry():
    c = core(term=1)
    c.step("n2", AppendEntries(1, 0, 0, [E(1), E(1)], 5))
    assert c.commit == 2
    # the follower holds more (matching) entries than this append covers: its index of the
    # last *new* entry is 1, not its last log index
    d = core(term=1, log=mklog(1, 1, 1))
    d.step("n2", AppendEntries(1, 0, 0, [d.log.entry(1)], 5))
    assert d.commit == 1
    committed = d.take_ready().committed
    assert [i for i, _ in committed] == [1]


def test_append_reply_confirms_prev_index_plus_entries_not_last_index():
    c = core(term=1, log=mklog(1, 1, 1, 1, 1))
    c.step("n2", AppendEntries(1, 1, 1, [c.log.entry(2)], 0))
    (rep,) = sent_after(c.take_ready(), AppendReply)
    assert rep.success and rep.match_index == 2
    # also when the whole append is below our commit index
    d = core(term=1, log=mklog(1, 1, 1, 1, 1), commit=4)
    d.step("n2", AppendEntries(1, 1, 1, [d.log.entry(2)], 4))
    (rep,) = sent_after(d.take_ready(), AppendReply)
    assert rep.success and rep.match_index == 2


def test_append_acknowledged_only_after_persist():
    c = core(term=1)
    c.step("n2", AppendEntries(1, 0, 0, [E(1)], 0))
    r = c.take_ready()
    assert not sent(r, AppendReply) and sent_after(r, AppendReply)
    assert r.persist.entries == [E(1)]


# ---------------------------------------------------------------- RequestVote (receiver)
# The vote rules of Figure 2 are tested without check-quorum: with it, a node ignores candidates
# while it may still be in a leader's lease (tested further down).


def test_vote_granted_once_per_term():
    c = core(term=1, check_quorum=False)
    c.step("n2", RequestVote(2, 0, 0))
    assert sent_after(c.take_ready(), VoteReply)[0].granted and c.vote == "n2"
    c.step("n3", RequestVote(2, 0, 0))
    r = c.take_ready()
    (rep,) = sent(r, VoteReply)
    assert not rep.granted and c.vote == "n2" and r.persist.empty()
    c.step("n2", RequestVote(2, 0, 0))  # a retransmission gets the same answer
    assert sent_after(c.take_ready(), VoteReply)[0].granted


def test_a_stale_candidate_is_told_the_newer_term_and_stops_campaigning_in_the_past():
    """Found by the simulation (seed 34 after the membership queue moved into the core): a
    candidate whose only voters were a peer of a newer term never heard that term and fell
    behind it forever (liveness)."""
    c = core(term=5, check_quorum=False)
    c.step("n2", RequestVote(3, 9, 3))
    (rep,) = sent(c.take_ready(), VoteReply)
    assert rep == VoteReply(5, False) and c.term == 5 and c.vote is None
    d = core("n2", term=3, check_quorum=False, pre_vote=False)
    d.campaign()
    d.step("n1", rep)
    assert d.role == FOLLOWER and d.term == 5


@pytest.mark.parametrize("last_index,last_term,granted", [
    (5, 1, False),  # longer, but its last term is older
    (1, 2, False),  # same last term, shorter
    (2, 2, True),  # equal
    (1, 3, True),  # newer last term wins even if shorter
])
def test_vote_requires_an_up_to_date_log(last_index, last_term, granted):
    c = core(term=2, log=mklog(1, 2), check_quorum=False)
    c.step("n2", RequestVote(3, last_index, last_term))
    r = c.take_ready()
    replies = sent(r, VoteReply) + sent_after(r, VoteReply)
    assert [m.granted for m in replies] == [granted]
    assert c.vote == ("n2" if granted else None) and c.term == 3


def test_vote_is_persisted_before_the_reply_leaves():
    c = core(term=1, check_quorum=False)
    c.step("n2", RequestVote(3, 0, 0))
    r = c.take_ready()
    assert not sent(r, VoteReply), "a granted vote must not leave before it is synced"
    assert [m.granted for m in sent_after(r, VoteReply)] == [True]
    assert (r.persist.term, r.persist.vote) == (3, "n2")


def test_candidate_persists_its_own_vote_before_asking():
    c = core(pre_vote=False)
    c.campaign()
    r = c.take_ready()
    assert (r.persist.term, r.persist.vote) == (1, "n1")
    assert not sent(r, RequestVote) and len(sent_after(r, RequestVote)) == 2


# ---------------------------------------------------------------- leaders


def test_leader_appends_a_noop_of_its_term_on_election():
    c = core(term=2, log=mklog(1, 2))
    r = elect(c)
    assert c.log.last_index() == 3 and c.log.entry(3) == Entry(3, EntryKind.NOOP, b"")
    assert r.persist.first == 3 and r.persist.entries == [Entry(3, EntryKind.NOOP, b"")]
    for p in ("n2", "n3"):
        (ae,) = sent(r, AppendEntries, p)
        assert ae.prev_index == 2 and ae.entries == [Entry(3, EntryKind.NOOP, b"")]


def test_figure8_earlier_term_entry_not_committed_by_counting():
    # n1 led term 2 and wrote entry 2 (term 2) on a minority; it is leader again in term 4
    c = core(n=5, term=3, log=mklog(1, 2), pre_vote=False)
    elect(c)  # term 4, no-op at 3, not yet synced (entries 1..2 came from disk)
    assert c.term == 4 and terms(c) == [1, 2, 4]
    c.step("n2", AppendReply(4, True, match_index=2))
    c.step("n3", AppendReply(4, True, match_index=2))
    assert c.commit == 0, "entry 2 is on 3 of 5 but from term 2: counting must not commit it"
    c.step("n2", AppendReply(4, True, match_index=3))
    c.step("n3", AppendReply(4, True, match_index=3))
    assert c.commit == 0, "the leader counts itself only for what it has synced"
    c.on_persisted(3, 4)
    assert c.commit == 3
    assert [i for i, _ in c.take_ready().committed] == [1, 2, 3], "entry 2 commits along with the no-op"


def test_stale_or_reordered_append_reply_does_not_move_match_back():
    c = core(log=mklog(1, 1, 1, 1), term=1)
    elect(c)
    c.step("n2", AppendReply(c.term, True, match_index=5))
    pr = c.progress["n2"]
    assert pr.match == 5 and pr.next == 6
    c.step("n2", AppendReply(c.term, True, match_index=3))
    assert pr.match == 5 and pr.next == 6
    # a stale rejection at or below match changes nothing either
    c.take_ready()
    c.step("n2", AppendReply(c.term, False, reject_index=4, conflict_index=2))
    assert pr.match == 5 and pr.next == 6 and not sent(c.take_ready(), AppendEntries)


def test_learners_do_not_count_for_quorum():
    c = core(n=3, learners=2)
    r = elect(c)
    assert {t for t, m in r.send if type(m) is AppendEntries} == {"n2", "n3", "n4", "n5"}
    c.on_persisted(1, c.term)
    c.step("n4", AppendReply(c.term, True, match_index=1))
    c.step("n5", AppendReply(c.term, True, match_index=1))
    assert c.commit == 0, "two learners and the leader are not a majority of the 3 voters"
    c.step("n2", AppendReply(c.term, True, match_index=1))
    assert c.commit == 1


def test_learners_never_campaign_nor_are_asked_for_votes():
    learner = core("n4", n=3, learners=1)
    for _ in range(EMAX * 3):
        learner.tick()
    r = learner.take_ready()
    assert learner.role == FOLLOWER and not r.send and not r.send_after_persist
    c = core(n=3, learners=1, pre_vote=False)
    c.campaign()
    assert {t for t, _ in c.take_ready().send_after_persist} == {"n2", "n3"}


# ---------------------------------------------------------------- pre-vote, lease, check-quorum, transfer


def test_pre_vote_changes_no_term():
    c = core(term=2)
    c.campaign()
    r = c.take_ready()
    assert c.role == PRE_CANDIDATE and c.term == 2 and c.vote is None and r.persist.empty()
    reqs = sent(r, RequestVote)
    assert len(reqs) == 2 and all(m.pre_vote and m.term == 3 for m in reqs)
    voter = core("n2", term=2, check_quorum=False)
    voter.step("n1", reqs[0])
    r = voter.take_ready()
    (rep,) = sent(r, VoteReply)
    assert rep.granted and rep.pre_vote and voter.term == 2 and voter.vote is None and r.persist.empty()
    # a rejected pre-candidate stays in its term
    c.step("n2", VoteReply(2, False, pre_vote=True))
    c.step("n3", VoteReply(2, False, pre_vote=True))
    assert c.term == 2 and c.role == FOLLOWER


def test_follower_in_leader_lease_ignores_votes_and_pre_votes():
    c = core(term=2)
    c.step("n2", Heartbeat(2, 0, 1))
    c.take_ready()
    for req in (RequestVote(3, 9, 9), RequestVote(3, 9, 9, pre_vote=True)):
        c.step("n3", req)
        r = c.take_ready()
        assert not r.send and not r.send_after_persist and c.term == 2 and c.vote is None
    for _ in range(EMIN):
        c.tick()
    c.take_ready()
    c.step("n3", RequestVote(3, 9, 9))
    assert c.term == 3 and sent_after(c.take_ready(), VoteReply)[0].granted


def _following(lease_reads: bool = False) -> RaftCore:
    c = core(term=3)
    c.cfg.lease_reads = lease_reads
    for _ in range(EMIN):  # past the just-started rule
        c.tick()
    c.step("n2", Heartbeat(3, 0, 1))
    c.take_ready()
    return c


def test_a_dropped_connection_to_the_leader_ends_its_stickiness_at_once():
    c = _following()
    c.peer_unreachable("n2")
    c.step("n3", RequestVote(4, 0, 0, pre_vote=True))
    assert sent(c.take_ready(), VoteReply, "n3")[0].granted
    for _ in range(c.timeout - EMIN):  # the random rest of its timeout, not all of it
        c.tick()
    assert c.role == PRE_CANDIDATE


def test_a_dropped_connection_to_another_peer_or_with_lease_reads_changes_nothing():
    for c, peer in ((_following(), "n3"), (_following(lease_reads=True), "n2")):
        c.peer_unreachable(peer)
        c.step("n3", RequestVote(4, 0, 0, pre_vote=True))
        assert not c.take_ready().send
        for _ in range(c.timeout - EMIN):
            c.tick()
        assert c.role == FOLLOWER


def test_a_live_leader_after_a_false_hint_keeps_its_follower():
    c = _following()
    c.peer_unreachable("n2")
    for i in range(EMAX * 3):
        if i % HB == 0:
            c.step("n2", Heartbeat(3, 0, 1))
        c.tick()
    assert c.role == FOLLOWER and c.term == 3 and c.leader_id == "n2"


def test_node_just_started_ignores_votes_for_an_election_timeout():
    # It may have heard from a leader just before a restart (and that leader's lease counts on it).
    c = core(term=2)
    for req in (RequestVote(3, 0, 0), RequestVote(3, 0, 0, pre_vote=True)):
        c.step("n2", req)
        r = c.take_ready()
        assert not r.send and not r.send_after_persist and c.term == 2 and c.vote is None
    for _ in range(EMIN):
        c.tick()
    c.take_ready()
    c.step("n2", RequestVote(c.term + 1, 0, 0))
    assert c.vote == "n2" and sent_after(c.take_ready(), VoteReply)[0].granted


def test_leader_ignores_votes_while_its_lease_holds():
    c = core()
    elect(c)
    t = c.term
    c.step("n3", RequestVote(t + 1, 99, 99))
    assert c.role == LEADER and c.term == t


def test_check_quorum_leader_hearing_from_no_one_steps_down():
    c = core()
    elect(c)
    for _ in range(EMIN):
        c.tick()
    assert c.role == FOLLOWER and c.term == 1


def test_check_quorum_leader_hearing_from_a_majority_stays():
    c = core()
    elect(c)
    for i in range(EMIN * 4):
        if i % HB == 0:
            c.step("n2", HeartbeatReply(c.term, c.round, 1))
        c.tick()
    assert c.role == LEADER


def test_timeout_now_starts_an_election_at_once_without_pre_vote():
    c = core(term=3)
    c.step("n2", Heartbeat(3, 0, 1))
    c.take_ready()
    c.step("n2", TimeoutNow(3))
    r = c.take_ready()
    assert c.role == CANDIDATE and c.term == 4 and c.vote == "n1"
    reqs = sent_after(r, RequestVote)
    assert len(reqs) == 2 and all(m.transfer and not m.pre_vote and m.term == 4 for m in reqs)
    # a follower still in the old leader's lease votes for a transfer candidate
    voter = core("n3", term=3)
    voter.step("n2", Heartbeat(3, 0, 1))
    voter.take_ready()
    voter.step("n1", reqs[0])
    assert voter.term == 4 and sent_after(voter.take_ready(), VoteReply)[0].granted


def test_transfer_leadership_sends_timeout_now_to_a_caught_up_target():
    c = core()
    elect(c)
    commit_noop(c)
    c.take_ready()
    c.transfer_leadership("n2")
    assert sent(c.take_ready(), TimeoutNow, "n2")
    with pytest.raises(NotLeader):
        c.propose([(EntryKind.COMMAND, b"x")])


# ---------------------------------------------------------------- ReadIndex


def leader_with_committed_noop(n: int = 3) -> RaftCore:
    c = core(n=n)
    elect(c)
    commit_noop(c)
    c.take_ready()
    return c


def test_read_confirmed_only_by_a_round_started_after_registration():
    c = leader_with_committed_noop()
    old_round = c.round
    c.read_index(["r1"])
    r = c.take_ready()
    hbs = sent(r, Heartbeat)
    assert len(hbs) == 2 and all(h.round == old_round + 1 for h in hbs) and not r.reads
    # an ack of an earlier round (queued before the read, e.g. across a pause) confirms nothing
    c.step("n2", HeartbeatReply(c.term, old_round, 1))
    c.step("n3", HeartbeatReply(c.term, old_round, 1))
    assert not c.take_ready().reads
    c.step("n2", HeartbeatReply(c.term, old_round + 1, 1))
    assert c.take_ready().reads == [(1, ["r1"])]


def test_new_leader_defers_reads_until_its_noop_commits():
    c = core(log=mklog(1, 1), term=1)
    elect(c)
    c.take_ready()
    c.read_index(["r1"])
    r = c.take_ready()
    assert not sent(r, Heartbeat) and not r.reads and not r.reads_failed
    commit_noop(c)
    r = c.take_ready()
    hbs = sent(r, Heartbeat)
    assert hbs and not r.reads, "registered once the no-op commits, then confirmed by a new round"
    c.step("n3", HeartbeatReply(c.term, hbs[0].round, 3))
    assert c.take_ready().reads == [(3, ["r1"])]


def test_reads_fail_when_the_leader_steps_down():
    c = leader_with_committed_noop()
    c.read_index(["r1"])
    c.take_ready()
    d = core(log=mklog(1), term=1)
    elect(d)
    d.read_index(["r2"])  # waiting for the no-op
    for x, handle in ((c, "r1"), (d, "r2")):
        x.step("n3", AppendEntries(x.term + 1, 0, 0, [], 0))
        assert x.role == FOLLOWER and x.take_ready().reads_failed == [handle]


def test_read_index_refused_by_a_follower():
    c = core()
    with pytest.raises(NotLeader):
        c.read_index(["r"])


# ---------------------------------------------------------------- membership


def test_config_entry_effective_when_appended_and_reverted_when_truncated():
    c = core(term=1, log=mklog(1))
    new = members(4)
    cfg_entry = Entry(1, EntryKind.CONFIG, encode_config(new))
    c.step("n2", AppendEntries(1, 1, 1, [cfg_entry], 1))
    assert [m.id for m in c.members] == ["n1", "n2", "n3", "n4"], "in force once appended, before commit"
    c.step("n3", AppendEntries(2, 1, 1, [E(2)], 1))
    assert terms(c) == [1, 2]
    assert [m.id for m in c.members] == ["n1", "n2", "n3"], "truncated: back to the previous configuration"


def test_can_change_config_only_after_an_entry_of_this_term_commits():
    c = core()
    assert not c.can_change_config()
    elect(c)
    assert not c.can_change_config()
    with pytest.raises(NotLeader):
        c.propose_config(members(4))
    commit_noop(c)
    assert c.can_change_config()
    idx = c.propose_config(members(4))
    assert "n4" in c.progress and not c.can_change_config(), "one change at a time"
    c.on_persisted(idx, c.term)
    c.step("n2", AppendReply(c.term, True, match_index=idx))
    c.step("n3", AppendReply(c.term, True, match_index=idx))
    assert c.commit == idx and c.can_change_config()
