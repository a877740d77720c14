"""RaftCore's rules for who may campaign and whose vote request counts when configurations
diverge, each found by the simulation as a cluster that could never elect a leader again
(tests/sim/test_election_liveness.py replays the seeds)."""
from __future__ import annotations

import random

from raftkv.actors.core import (CANDIDATE, FOLLOWER, LEADER, PRE_CANDIDATE, UNKNOWN_CANDIDATE_MAX_JUMP, CoreConfig,
                                RaftCore, encode_config)
from raftkv.actors.memlog import MemLog
from raftkv.wire.messages import (AppendEntries, AppendReply, Entry, EntryKind, Heartbeat, Member, ReadIndexReply,
                                  ReadIndexRequest, RequestVote, VoteReply)

from tests.unit.test_core import E, EMAX, EMIN, core, elect, members, mklog, sent, sent_after


def _conf(ms: list, term: int = 1) -> Entry:
    return Entry(term, EntryKind.CONFIG, encode_config(ms))


def _time_out(c) -> None:
    for _ in range(EMAX + 1):
        c.tick()


def _vote_requests(rd) -> dict:
    return {t: m for t, m in list(rd.send) + list(rd.send_after_persist) if type(m) is RequestVote}


# ------------------------------------------------- a voter whose removal is not committed yet

def _removed_leader_after_restart(pre_vote: bool = False):
    """n3 led {n1, n2, n3}, logged its own removal at 3 and a command at 4, and restarted: the
    removal is not committed (commit 2), and n1 and n2 lag it."""
    log = MemLog(0, 0, [_conf(members(3)), E(2), _conf(members(2), 2), E(2)])
    c = core("n3", pre_vote=pre_vote, term=2, vote="n3", log=log, commit=2, ms=[])
    c.take_ready()
    return c


def test_a_voter_whose_removal_is_uncommitted_campaigns_without_counting_itself():
    """Dissertation 4.2.2: it may still be needed until C_new commits (sim seeds 2819, 3333: the
    leader that removed itself crashed; one of the remaining voters was wiped; the others lag)."""
    c = _removed_leader_after_restart()
    _time_out(c)
    rd = c.take_ready()
    assert c.role == CANDIDATE and set(_vote_requests(rd)) == {"n1", "n2"}, "it asks C_new's voters"
    c.step("n1", VoteReply(c.term, True))
    assert c.role == CANDIDATE, "one of C_new's two voters is no quorum: its own vote does not count"
    c.step("n2", VoteReply(c.term, True))
    assert c.role == LEADER
    c.take_ready()
    c.on_persisted(c.log.last_index(), c.log.last_term())
    c.step("n1", AppendReply(c.term, True, match_index=c.log.last_index()))
    assert c.role == LEADER, "n1 alone is no quorum of C_new"
    c.step("n2", AppendReply(c.term, True, match_index=c.log.last_index()))
    rd = c.take_ready()
    assert c.role == FOLLOWER and c.commit == 5, "it steps down once its removal commits"
    assert {t for t, m in rd.send if type(m) is Heartbeat} == {"n1", "n2"}


def test_a_voter_whose_removal_is_uncommitted_campaigns_with_pre_vote_too():
    c = _removed_leader_after_restart(pre_vote=True)
    _time_out(c)
    assert c.role == PRE_CANDIDATE and set(_vote_requests(c.take_ready())) == {"n1", "n2"}


def test_a_removed_node_does_not_campaign_once_its_removal_is_committed_or_if_never_a_voter():
    c = _removed_leader_after_restart()
    c.step("n1", Heartbeat(3, 4, 1))  # the removal (3) is committed: nothing left to do here
    c.take_ready()
    for _ in range(5):
        _time_out(c)
    assert c.role == FOLLOWER and not _vote_requests(c.take_ready())
    # a learner removed before it was promoted was never needed
    log = MemLog(0, 0, [_conf(members(3, learners=1)), _conf(members(3), 2)])
    d = core("n4", pre_vote=False, term=2, log=log, commit=1, ms=[])
    _time_out(d)
    assert d.role == FOLLOWER and not _vote_requests(d.take_ready())


# ------------------------------------------------- a learner holding the only electable log

def _learner_ahead():
    """n4, a learner of {n1, n2, n3} (committed), holds entries 3-4 of term 3 that n1 (now wiped)
    replicated to it before it crashed; n3 holds its own term-2 promotion of n4 at 3 instead, so
    n3 needs n4's vote, and n2 lags both."""
    log = MemLog(0, 0, [_conf(members(3, learners=1)), E(2), E(3), E(3)])
    c = core("n4", term=3, log=log, commit=2, ms=[])
    c.take_ready()
    return c


def test_a_learner_campaigns_only_after_refusing_a_candidate_its_log_is_ahead_of():
    """Sim seed 3699: n3 could not win without n4, n4 refused it (its log is ahead) and, a learner,
    never campaigned: no leader ever again."""
    c = _learner_ahead()
    for _ in range(5):
        _time_out(c)
    assert c.role == FOLLOWER and not _vote_requests(c.take_ready()), "a learner does not campaign by itself"
    c.step("n3", RequestVote(4, 3, 2, pre_vote=True))
    assert [m.granted for m in sent(c.take_ready(), VoteReply)] == [False]
    _time_out(c)
    assert c.role == PRE_CANDIDATE and set(_vote_requests(c.take_ready())) == {"n1", "n2", "n3"}
    c.step("n2", VoteReply(4, True, pre_vote=True))
    assert c.role == PRE_CANDIDATE, "its own (learner's) pre-vote does not count"
    c.step("n3", VoteReply(4, True, pre_vote=True))
    assert c.role == CANDIDATE and c.term == 4
    c.step("n2", VoteReply(4, True))
    assert c.role == CANDIDATE
    c.step("n3", VoteReply(4, True))
    assert c.role == LEADER
    c.take_ready()
    noop = c.log.last_index()
    c.on_persisted(noop, 4)
    c.step("n3", AppendReply(4, True, match_index=noop))
    assert c.role == LEADER and c.commit == 2, "the learner's own entries never count"
    c.step("n2", AppendReply(4, True, match_index=noop))
    rd = c.take_ready()
    assert c.role == FOLLOWER and c.commit == noop and not rd.removed, "it hands over once the voters hold its log"
    assert {t for t, m in rd.send if type(m) is Heartbeat} >= {"n2", "n3"}
    c.step("n2", Heartbeat(5, noop, 1))  # a voter leads: the learner is not needed any more
    for _ in range(5):
        _time_out(c)
    assert c.role == FOLLOWER and not _vote_requests(c.take_ready())


def test_a_learner_that_refused_a_candidate_stops_being_needed_when_a_leader_speaks():
    c = _learner_ahead()
    c.step("n3", RequestVote(4, 3, 2, pre_vote=True))
    c.step("n1", Heartbeat(3, 2, 1))
    c.take_ready()
    for _ in range(5):
        _time_out(c)
    assert c.role == FOLLOWER and not _vote_requests(c.take_ready())


# ------------------------------------------------- a lagging voter, without pre-vote

def _lagging_voter():
    """n1 of {n1, n2, n3} without pre-vote, with a log to (4, term 3), past any lease and
    campaigning in vain: it lacks the entries that added n4, whose log is ahead."""
    log = MemLog(0, 0, [_conf(members(3))] + [E(3) for _ in range(3)])
    c = core("n1", pre_vote=False, term=6, log=log, commit=4, ms=[])
    _time_out(c)
    c.take_ready()
    assert c.role == CANDIDATE and c.vote == "n1"
    return c


def test_without_pre_vote_a_lagging_voter_votes_for_an_unknown_candidate_several_terms_ahead():
    """Sim seed 2722: without pre-vote the unknown candidate's term ran ahead of the lagging
    voter's every timeout, so the one-term rule of the pre-vote case never admitted it."""
    c = _lagging_voter()
    t = c.term + 5
    c.step("n4", RequestVote(t, 9, 5))
    assert c.term == t and c.vote == "n4" and c.role == FOLLOWER
    assert [m.granted for m in sent_after(c.take_ready(), VoteReply)] == [True]


def test_without_pre_vote_an_unknown_candidate_still_needs_a_more_up_to_date_log_and_a_bounded_jump():
    c = _lagging_voter()
    t = c.term
    c.step("n4", RequestVote(t + 3, 4, 3))  # as up-to-date as ours, not more
    c.step("n4", RequestVote(t + 3, 9, t + 4))  # a last log term past its own term
    c.step("n4", RequestVote(t + 1 + UNKNOWN_CANDIDATE_MAX_JUMP, 9, 5))  # too far ahead
    c.step("n4", RequestVote(t + 3, 9, 5, pre_vote=True))  # pre-vote is off here: not a request we know
    assert c.term == t and c.vote == "n1"
    rd = c.take_ready()
    assert not sent(rd, VoteReply) and not sent_after(rd, VoteReply)
    c.step("n4", RequestVote(t + UNKNOWN_CANDIDATE_MAX_JUMP, 9, 5))  # the bound itself is allowed
    assert c.term == t + UNKNOWN_CANDIDATE_MAX_JUMP and c.vote == "n4"


# ------------------------------------------------- a lagging voter, with pre-vote, that cannot learn the term

def _stranded_voter():
    """n2 of {n1, n2, n3, n4 (learner)} with pre-vote, at term 4 with a log to (4, term 3), past any
    lease: n3 was removed and n1 wiped in entries it lacks, so no voter it knows answers it, and
    n4, promoted in those entries, holds the newest log two elections ahead (sim seed 8512)."""
    log = MemLog(0, 0, [_conf(members(3, learners=1))] + [E(3) for _ in range(3)])
    c = core("n2", term=4, log=log, commit=4, ms=[])
    _time_out(c)
    c.take_ready()
    return c


def test_with_pre_vote_a_lagging_voter_votes_for_an_unknown_candidate_terms_ahead_when_no_voter_tells_it_the_term():
    """Sim seed 8512: the one-term rule admitted n4 only in n2's term + 1, but n4 campaigned in
    term 6 (term 5 had been elected without n2) and n2 had no voter left to learn term 5 from
    (n4's replies are a learner's in its log: they cannot raise its term): no leader, ever."""
    c = _stranded_voter()
    c.step("n4", RequestVote(6, 9, 5, pre_vote=True))
    rd = c.take_ready()
    assert [(m.term, m.granted, m.pre_vote) for m in sent(rd, VoteReply)] == [(6, True, True)]
    assert c.term == 4 and c.vote is None, "a pre-vote changes nothing"
    c.step("n4", RequestVote(6, 9, 5))
    assert c.term == 6 and c.vote == "n4" and c.role == FOLLOWER
    assert [m.granted for m in sent_after(c.take_ready(), VoteReply)] == [True]


def test_with_pre_vote_an_unknown_candidate_still_needs_a_more_up_to_date_log_a_bounded_jump_and_no_lease():
    c = _stranded_voter()
    c.step("n4", RequestVote(6, 4, 3, pre_vote=True))  # as up-to-date as ours, not more
    c.step("n4", RequestVote(6, 9, 7))  # a last log term past its own term
    c.step("n4", RequestVote(5 + UNKNOWN_CANDIDATE_MAX_JUMP, 9, 5))  # too far ahead
    assert c.term == 4 and c.vote is None
    rd = c.take_ready()
    assert not sent(rd, VoteReply) and not sent_after(rd, VoteReply)
    c.step("n1", Heartbeat(4, 4, 1))  # a leader of our term speaks: its lease holds
    c.take_ready()
    c.step("n4", RequestVote(6, 9, 5, pre_vote=True))
    c.step("n4", RequestVote(6, 9, 5))
    assert c.term == 4 and c.vote is None and not sent(c.take_ready(), VoteReply)


def test_a_learner_member_is_still_not_made_a_voter_by_any_of_this():
    c = _learner_ahead()
    assert not c.promotable() and Member("n4", "127.0.0.1:9004", voter=False) in c.members


# ------------------------------------------------- a learner whose term ran past the leader's

def test_a_leader_takes_the_higher_term_of_a_learners_reply_and_no_strangers():
    """Sim seed 1546: a learner whose log still held its (overwritten) promotion campaigned
    without pre-vote, its term ran past the leader's, and it refused every append of a leader
    that ignored its replies: it never caught up."""
    c = core(learners=1)
    c.step("n9", AppendReply(50, False, reject_index=1))  # no member: noise, or hostile
    assert c.term == 0
    elect(c)
    c.take_ready()
    t = c.term
    c.step("n9", AppendReply(t + 50, False, reject_index=1))
    c.step("n2", VoteReply(t + 50, True, pre_vote=True))  # a granted pre-vote carries no newer leader
    assert c.role == LEADER and c.term == t
    c.step("n4", AppendReply(t + 50, False, reject_index=1))
    assert c.role == FOLLOWER and c.term == t + 50
    d = core("n2", learners=1)
    for _ in range(3):
        _time_out(d)  # past any lease
    d.take_ready()
    u = d.term
    # A learner's election is still refused unless it may be a voter added in entries we lack
    # (its log strictly ahead of ours, a bounded jump: RaftCore._maybe_unknown_voter).
    d.step("n4", RequestVote(u + 5, 0, 0))
    d.step("n4", RequestVote(u + 1 + UNKNOWN_CANDIDATE_MAX_JUMP, 1, u + 5))
    assert d.term == u


# ------------------------------------------------- forwarded reads across a restart

def test_a_reply_to_the_previous_boots_forwarded_read_does_not_answer_the_new_boots():
    """Sim seed 6494 (a safety bug, not liveness): a follower forwarded read request 1, restarted,
    forwarded its new boot's request 1, and the leader's late reply to the old one (a stale
    read index) confirmed the new read."""
    def follower(boot: int) -> RaftCore:
        cfg = core().cfg
        c = RaftCore("n2", cfg, term=2, members=members(3), rng=random.Random(f"n2:{boot}"))  # a boot's randomness
        c.step("n1", Heartbeat(2, 0, 1))
        c.take_ready()
        return c

    old = follower(0)
    old.read_index(["old read"])
    (req_old,) = sent(old.take_ready(), ReadIndexRequest)
    new = follower(1)
    new.read_index(["new read"])
    (req_new,) = sent(new.take_ready(), ReadIndexRequest)
    assert req_new.req_id != req_old.req_id
    new.step("n1", ReadIndexReply(2, req_old.req_id, 3, True))
    assert not new.take_ready().reads, "the previous boot's answer confirms nothing now"


# ------------------------------------------------- a replaced member, a learner in its own log only

def _replacement_ahead():
    """n3 as incarnation b3, whose log replaced a3 by the learner b3 (uncommitted) and goes on
    past the others' logs; they still list a3 as a voter (sim seed 10517)."""
    old = [Member(f"n{i}", f"127.0.0.1:{9000 + i}", incarnation=f"a{i}") for i in (1, 2, 3, 4)]
    new = [m if m.id != "n3" else m._replace(incarnation="b3", voter=False) for m in old]
    log = MemLog(0, 0, [_conf(old), E(2), _conf(new, 2), E(2)])
    c = RaftCore("n3", CoreConfig(election_ticks_min=10, election_ticks_max=20, heartbeat_ticks=3), term=2, log=log,
                 members=[], commit=2, rng=random.Random(7), incarnation="b3")
    _time_out(c)
    assert c.role == FOLLOWER and not _vote_requests(c.take_ready()), "a learner: it does not campaign by itself"
    return c


def test_a_learner_refusing_a_request_addressed_to_its_old_incarnation_from_a_shorter_log_may_campaign():
    """Sim seed 10517: the others needed a3 for a quorum, b3 dropped their requests (addressed to
    a3) unanswered, and so never refused one as _on_request_vote would: nobody could win."""
    c = _replacement_ahead()
    c.step("n1", RequestVote(3, 2, 2, pre_vote=True, to_incarnation="a3"))
    assert not c.take_ready().send, "still no answer as a3"
    _time_out(c)
    assert c.role == PRE_CANDIDATE and set(_vote_requests(c.take_ready())) == {"n1", "n2", "n4"}


def test_a_request_to_its_old_incarnation_from_a_log_as_long_does_not_make_it_campaign():
    c = _replacement_ahead()
    c.step("n1", RequestVote(3, 4, 2, pre_vote=True, to_incarnation="a3"))
    _time_out(c)
    assert c.role == FOLLOWER and not _vote_requests(c.take_ready())


# ------------------------------------------------- a learner whose leader fell silent

def test_a_learner_that_hears_no_leader_for_an_election_timeout_forgets_it_and_grants_votes():
    """Sim seed 14260: a learner in its own log (its promotion in entries it lacked) kept the
    last leader for good; its elapsed time restarted every timeout, so it refused, as within the
    leader's lease, every vote request arriving in the first minimum election timeout of each
    restart, and a pre-vote and its vote a sync later seldom both missed that window."""
    log = MemLog(0, 0, [_conf(members(3, learners=1))] + [E(2) for _ in range(3)])
    c = core("n4", term=2, log=log, commit=4, ms=[])
    c.step("n2", Heartbeat(2, 4, 1))
    assert c.leader_id == "n2"
    for _ in range(EMAX):
        c.tick()
    assert c.leader_id is None and c.role == FOLLOWER
    c.take_ready()
    c.step("n1", RequestVote(3, 5, 2, pre_vote=True))
    c.step("n1", RequestVote(3, 5, 2))
    rd = c.take_ready()
    assert [m.granted for m in sent(rd, VoteReply)] == [True]
    assert [m.granted for m in sent_after(rd, VoteReply)] == [True]
    assert c.vote == "n1" and c.term == 3


# ------------------------------------------------- a leader our uncommitted configuration removed

def _removed_leader_follower(commit: int):
    """n1, whose log removes n2 at 3 (commit ``commit``): n2 may have won without that entry."""
    log = MemLog(0, 0, [_conf(members(3)), E(2), _conf(members(3)[::2], 2)])
    c = core("n1", term=2, log=log, commit=commit, ms=[])
    _time_out(c)
    c.take_ready()
    return c


def test_a_voter_of_the_configuration_an_uncommitted_change_would_revert_to_may_raise_our_term():
    """Sim seed 15342: n1 logged the removal of n2 and lost leadership before it committed; n2
    won the next term without it, and n1 dropped its appends as an outsider's (the only voter
    it knew besides was removed for good later): it never learned the term or caught up."""
    c = _removed_leader_follower(commit=2)
    c.step("n2", AppendEntries(5, 2, 2, [E(5)], 2))
    assert c.term == 5 and c.leader_id == "n2"
    assert c.members == members(3), "the removal is truncated: the configuration reverts"


def test_a_stranger_or_a_voter_whose_removal_committed_still_may_not():
    c = _removed_leader_follower(commit=2)
    c.step("n9", AppendEntries(5, 2, 2, [E(5)], 2))
    assert c.term < 5
    d = _removed_leader_follower(commit=3)
    d.step("n2", AppendEntries(5, 2, 2, [E(5)], 2))
    assert d.term < 5


# ------------------------------------------------- a voter voting for a needed learner

def _voter_with_learner(pre_vote: bool = False):
    """n2 of {n2, n3} (n1 a learner: a wiped member's replacement), log to (4, term 3); no
    check-quorum, so no start-up lease delays the requests."""
    ms = [Member("n1", "127.0.0.1:9001", voter=False), Member("n2", "127.0.0.1:9002"),
          Member("n3", "127.0.0.1:9003")]
    log = MemLog(0, 0, [_conf(ms)] + [E(3) for _ in range(3)])
    c = core("n2", pre_vote=pre_vote, check_quorum=False, term=3, log=log, commit=4, ms=[])
    c.take_ready()
    return c


def test_a_voter_that_votes_for_a_needed_learner_still_campaigns_on_its_own_timeout():
    """Sim seed 40844 (no pre-vote): n2 granted the learner n1 its vote every term, each grant
    restarting its election timeout, so it never campaigned though it could win; n1 lost every
    term to n3, whose log was behind but which voted for itself a few ticks earlier each time."""
    c = _voter_with_learner()
    c.step("n3", RequestVote(c.term + 1, 2, 1))  # n3 campaigns (its log is behind): refused
    t = c.term
    for _ in range(EMAX):
        c.step("n1", RequestVote(t, 4, 3))  # the learner, in that term (and its duplicates): granted
        assert c.vote == "n1"
        c.tick()
        if c.role == CANDIDATE:
            break
    assert c.role == CANDIDATE and c.term == t + 1 and set(_vote_requests(c.take_ready())) == {"n3"}


def test_a_vote_for_a_voter_still_restarts_the_election_timeout():
    c = _voter_with_learner()
    c.step("n3", RequestVote(c.term + 1, 4, 3))
    for _ in range(3 * EMAX):
        c.step("n3", RequestVote(c.term, 4, 3))
        assert c.vote == "n3"
        c.tick()
        assert c.role == FOLLOWER


# ------------------------------------------------- a stale candidate does not restart our wait

def _ticks_to_campaign(c) -> int:
    """Ticks until ``c`` campaigns (its term rises)."""
    term = c.term
    for n in range(1, 10 * EMAX):
        c.tick()
        if c.term > term:
            return n
    raise AssertionError("never campaigned")


def test_a_candidate_whose_log_is_behind_does_not_restart_the_election_timeout():
    """Figure 2: a follower's wait restarts on a granted vote or a leader's message, not on any
    higher term. Sim seeds 980757 and 1008968 (no pre-vote): each stale campaign restarted the
    wait of the one voter whose log could win, so it always campaigned a delay after the stale
    candidates and found them voted for themselves: no leader for hundreds of ticks."""
    def follower():
        c = core("n1", n=5, pre_vote=False, term=3, log=mklog(1, 2, 3, 3), commit=2)
        c.take_ready()
        return c

    alone = follower()
    deadline = _ticks_to_campaign(alone)
    assert deadline >= EMIN

    c = follower()
    for _ in range(deadline - 2):
        c.tick()
    c.step("n2", RequestVote(5, 3, 3))  # its log ends at (3, term 3): behind ours at (4, term 3)
    rd = c.take_ready()
    assert c.term == 5 and c.vote is None and c.role == FOLLOWER
    assert [m.granted for m in sent(rd, VoteReply)] == [False]
    assert _ticks_to_campaign(c) == 2, "the refused candidate moved our term but not our deadline"

    g = follower()
    for _ in range(deadline - 2):
        g.tick()
    g.step("n2", RequestVote(5, 4, 3))  # as up-to-date as ours: granted, and we wait for it
    assert g.vote == "n2"
    assert _ticks_to_campaign(g) >= EMIN


# ------------------------------------------------- a leader promoted in entries we lack

def _voter_lacking_a_promotion():
    """n2 of {n1, n2} with n3 a learner, its log ending before entries it lacks (n3 promoted,
    n1 removed)."""
    log = MemLog(0, 0, [_conf(members(2, learners=1)), E(2)])
    c = core("n2", check_quorum=False, term=2, log=log, commit=2, ms=[])
    c.take_ready()
    return c


def test_a_lagging_voter_follows_a_leader_its_log_still_lists_as_a_learner():
    """Sim seed 1084818 (check-quorum off): n2's log ended just before n3's promotion, the old
    leader removed itself, and n3, leading {n2, n3}, sent heartbeats n2 dropped as an
    outsider's for good: no leader could ever commit again."""
    c = _voter_lacking_a_promotion()
    c.step("n3", Heartbeat(3, 0, 1))
    assert c.term == 3 and c.leader_id == "n3"
    rd = c.take_ready()
    assert any(t == "n3" for t, _ in list(rd.send) + list(rd.send_after_persist)), "it answers its leader"


def test_a_stranger_or_a_learner_jumping_past_the_bound_still_may_not_raise_our_term():
    c = _voter_lacking_a_promotion()
    c.step("n9", Heartbeat(3, 0, 1))
    c.step("n3", Heartbeat(3 + UNKNOWN_CANDIDATE_MAX_JUMP, 0, 1))
    c.step("n3", RequestVote(3, 0, 0, transfer=True))  # a learner's election: its log is behind ours
    assert c.term == 2 and c.leader_id is None
