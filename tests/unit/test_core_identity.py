"""RaftCore's identity rules (docs/architecture.md 8, "Identity"): a node answers only messages addressed
to its own incarnation; a join by a member's id with another incarnation replaces the record by
a learner; a learner that stays one says so in the configuration; a higher term from a non-voter
is refused; no campaign past the largest term."""
from __future__ import annotations

import logging
import random

import pytest

from raftkv.actors.core import CANDIDATE, FOLLOWER, LEADER, CoreConfig, RaftCore
from raftkv.actors.membership import ChangeOrigin, MembershipChange
from raftkv.actors.replacement_guard import MemberLive
from raftkv.records import INDEX_LIMIT
from raftkv.wire.messages import (AppendEntries, AppendReply, Entry, EntryKind, Heartbeat, HeartbeatReply, Member,
                                  RequestVote, TimeoutNow, VoteReply)

from tests.unit.test_core import EMAX, EMIN, HB, commit_noop, elect, sent, sent_after
from tests.unit.test_core_membership import ack_all, config_proposed


def incs_members(**incs):
    return [Member(f"n{i}", f"127.0.0.1:{9000 + i}", incarnation=incs.get(f"n{i}", "")) for i in (1, 2, 3)]


def icore(node="n1", inc="", ms=None, term=0, log=None, commit=0):
    cfg = CoreConfig(election_ticks_min=EMIN, election_ticks_max=EMAX, heartbeat_ticks=HB)
    return RaftCore(node, cfg, term=term, log=log, members=ms if ms is not None else incs_members(n1="a1", n2="a2",
                                                                                                   n3="a3"),
                    commit=commit, rng=random.Random(7), incarnation=inc)


def silence(c, dead):
    """Run the leader ``c`` for one election timeout in which ``dead`` never answers while the
    other members answer every heartbeat: ``dead`` is no longer live (replacement_guard)."""
    for _ in range(EMAX):
        c.tick()
        r = c.take_ready()
        for to, m in r.send:
            if to != dead and type(m) is Heartbeat:
                c.step(to, HeartbeatReply(c.term, m.round, c.log.last_index()))
    c.take_ready()
    assert c.role == LEADER


def ileader():
    c = icore("n1", "a1")
    elect(c)
    commit_noop(c)
    c.take_ready()
    return c


# ---------------------------------------------------------------- addressing


def test_requests_carry_the_addressees_incarnation_and_replies_the_senders():
    c = icore("n1", "a1")
    c.campaign()
    r = c.take_ready()
    assert {m.to_incarnation for m in sent(r, RequestVote, "n2")} == {"a2"}
    assert {m.to_incarnation for m in sent(r, RequestVote, "n3")} == {"a3"}
    f = icore("n2", "a2")
    f.step("n1", AppendEntries(1, 0, 0, [], 0, to_incarnation="a2"))
    (reply,) = sent_after(f.take_ready(), AppendReply)
    assert reply.success and reply.from_incarnation == "a2"


def test_a_node_drops_messages_addressed_to_another_incarnation_of_its_id_and_warns_once(caplog):
    new = icore("n2", "b2", ms=[], term=0)  # a wiped node2: new incarnation, empty directory
    with caplog.at_level(logging.WARNING):
        new.step("n1", AppendEntries(5, 0, 0, [Entry(5, EntryKind.NOOP, b"")], 0, to_incarnation="a2"))
        new.step("n3", RequestVote(6, 9, 5, to_incarnation="a2"))
        new.step("n1", Heartbeat(5, 9, 1, to_incarnation="a2"))
        new.step("n1", TimeoutNow(5, to_incarnation="a2"))
    assert new.term == 0 and new.vote is None and new.log.last_index() == 0 and new.leader_id is None
    r = new.take_ready()
    assert not r.send and not r.send_after_persist and r.persist.empty()
    warnings = [rec.getMessage() for rec in caplog.records if rec.levelno == logging.WARNING]
    assert len(warnings) == 1 and "data directory was replaced" in warnings[0] and "re-admitted" in warnings[0]


def test_unaddressed_and_legacy_messages_are_accepted_as_before():
    f = icore("n2", "a2")
    f.step("n1", AppendEntries(1, 0, 0, [], 0))  # "" = unchecked (an older sender)
    assert f.leader_id == "n1" and f.term == 1
    legacy = icore("n2", "")  # a core that knows no incarnation checks nothing
    legacy.step("n1", AppendEntries(1, 0, 0, [], 0, to_incarnation="zz"))
    assert legacy.leader_id == "n1"


def test_a_leader_ignores_replies_from_another_incarnation_of_a_member():
    c = ileader()
    last = c.log.last_index()
    c.propose([(EntryKind.COMMAND, b"x")])
    c.on_persisted(c.log.last_index(), c.log.last_term())
    c.step("n2", AppendReply(c.term, True, match_index=last + 1, from_incarnation="old"))
    assert c.progress["n2"].match == last and c.commit == last
    c.step("n2", AppendReply(c.term, True, match_index=last + 1, from_incarnation="a2"))
    assert c.commit == last + 1


def test_a_node_listed_under_another_incarnation_never_campaigns():
    c = icore("n2", "b2")  # the configuration (say, from a snapshot) lists n2 as a2
    for _ in range(EMAX * 3):
        c.tick()
    assert c.role == FOLLOWER and c.term == 0


# ---------------------------------------------------------------- replacement join


def test_a_join_with_another_incarnation_replaces_the_voter_by_a_learner_in_one_entry():
    c = ileader()
    voters_before = set(c.voters())
    silence(c, "n2")  # the old node2 is dead (its disk was replaced)
    assert not c.join(Member("n2", "127.0.0.1:9002"), "route", "b2")
    (change, index), = config_proposed(c)
    assert change.origin is ChangeOrigin.JOIN and change.replaces.incarnation == "a2"
    assert "replacing n2" in change.describe()
    n2 = c.member("n2")
    assert n2.incarnation == "b2" and not n2.voter and n2.promote
    assert set(c.voters()) == voters_before - {"n2"}  # a single-voter removal
    # The old incarnation's progress is not the new one's: it starts over.
    assert c.progress["n2"].match == 0 and c.progress["n2"].inc == "b2"
    # The change commits with n1 and n3 alone (2 of the 2 voters); stale acks of a2 count nothing.
    c.step("n2", AppendReply(c.term, True, match_index=index, from_incarnation="a2"))
    assert c.commit < index
    ack_all(c, peers=["n3"])
    assert c.commit == index and not config_proposed(c), "not promoted before it is caught up"
    r = c.take_ready()
    c.tick()
    r = c.take_ready()
    assert all(m.to_incarnation == "b2" for m in sent(r, Heartbeat, "n2") + sent(r, AppendEntries, "n2"))
    c.step("n2", AppendReply(c.term, True, match_index=index, from_incarnation="b2"))
    (promo, _), = config_proposed(c)
    assert promo.origin is ChangeOrigin.PROMOTION and c.member("n2").voter and c.member("n2").incarnation == "b2"


def test_a_join_as_the_same_incarnation_or_a_legacy_record_is_already_a_member():
    c = ileader()
    assert c.join(Member("n2", "127.0.0.1:9002"), "route", "a2")
    legacy = icore("n1", "a1", ms=incs_members(n1="a1"))
    elect(legacy)
    commit_noop(legacy)
    assert legacy.join(Member("n2", "127.0.0.1:9002"), "route", "whatever")


def test_a_replaced_stay_learner_stays_a_learner():
    ms = incs_members(n1="a1", n2="a2", n3="a3") + [Member("n4", "127.0.0.1:9004", voter=False, incarnation="a4",
                                                           promote=False)]
    c = icore("n1", "a1", ms=ms)
    elect(c)
    commit_noop(c)
    c.take_ready()
    silence(c, "n4")
    assert not c.join(Member("n4", "127.0.0.1:9004"), "route", "b4")
    config_proposed(c)
    assert c.member("n4").incarnation == "b4" and not c.member("n4").promote


# ---------------------------------------------------------------- learners that stay learners


def test_a_learner_that_stays_one_is_recorded_so_and_a_later_leader_honours_it():
    c = ileader()
    c.request_change(MembershipChange(Member("n4", "127.0.0.1:9004", voter=False), None, "r", ChangeOrigin.CLIENT))
    config_proposed(c)
    assert c.member("n4").promote is False
    ack_all(c)
    # Another node elected later, with this configuration and n4 fully caught up: no promotion.
    d = icore("n2", "a2", ms=c.members)
    elect(d)
    commit_noop(d)
    for _ in range(3):
        d.tick()
        assert not config_proposed(d)
        commit_noop(d)
    assert not d.member("n4").voter


# ---------------------------------------------------------------- term safety


def test_a_huge_term_from_an_outsider_is_refused():
    f = icore("n2", "a2", term=3)
    f.step("evil", RequestVote(INDEX_LIMIT - 1, 10**6, INDEX_LIMIT - 1, transfer=True))
    f.step("evil", AppendEntries(INDEX_LIMIT - 1, 0, 0, [], 0))
    f.step("evil", TimeoutNow(INDEX_LIMIT - 1))
    assert f.term == 3 and f.vote is None and f.leader_id is None


def test_a_higher_term_from_a_learner_is_refused_but_a_joiner_accepts_its_leader():
    ms = incs_members() + [Member("n4", "127.0.0.1:9004", voter=False)]
    f = icore("n2", "", ms=ms, term=3)
    f.step("n4", RequestVote(9, 0, 0, transfer=True))
    assert f.term == 3
    joiner = icore("n5", "x5", ms=[])
    joiner.step("n1", AppendEntries(7, 0, 0, [], 0))
    assert joiner.term == 7 and joiner.leader_id == "n1"


def test_no_campaign_past_the_largest_term(caplog):
    c = icore("n1", "a1", term=INDEX_LIMIT - 1)
    with caplog.at_level(logging.CRITICAL):
        c.campaign(transfer=True)
        for _ in range(EMAX * 2):
            c.tick()
    assert c.role == FOLLOWER and c.term == INDEX_LIMIT - 1
    assert any(r.levelno == logging.CRITICAL and "refusing to campaign" in r.getMessage() for r in caplog.records)
    assert c.role not in (CANDIDATE, LEADER)


def test_voter_messages_with_higher_terms_still_work():
    f = icore("n2", "a2", term=1)
    f.step("n3", RequestVote(2, 0, 0, transfer=True, to_incarnation="a2"))  # transfer: past stickiness
    assert f.term == 2 and f.vote == "n3"
    (reply,) = sent_after(f.take_ready(), VoteReply)
    assert reply.granted
    f.step("n1", Heartbeat(3, 0, 1, to_incarnation="a2"))
    assert f.term == 3 and f.leader_id == "n1"
    assert sent(f.take_ready(), HeartbeatReply)


# ---------------------------------------------------------------- learning unrecorded incarnations


def test_a_leader_records_the_incarnations_a_whole_cluster_bootstrap_left_unknown():
    c = icore("n1", "a1", ms=incs_members())  # every record without an incarnation
    elect(c)
    last = c.log.last_index()
    c.on_persisted(last, c.log.last_term())
    c.step("n2", AppendReply(c.term, True, match_index=last, from_incarnation="a2"))
    c.step("n3", AppendReply(c.term, True, match_index=last, from_incarnation="a3"))
    voters = c.voters()
    (change, index), = config_proposed(c)
    assert change.origin is ChangeOrigin.IDENTITY
    assert {m.id: m.incarnation for m in c.members} == {"n1": "a1", "n2": "a2", "n3": "a3"}
    assert c.voters() == voters
    assert c.progress["n2"].match == last, "the same follower: its progress stands"
    # From now on a wiped n2 (another incarnation) is told apart.
    c.step("n2", AppendReply(c.term, True, match_index=index, from_incarnation="b2"))
    assert c.progress["n2"].match == last


# ---------------------------------------------------------------- add-node, then kvnode --join


def test_a_join_of_a_member_added_by_add_node_admits_it_and_records_its_incarnation_once():
    """``kvclient add-node n4 ADDR [--learner]`` records n4 with no incarnation; n4 then started
    with ``--join`` is that member: answered at once, its incarnation recorded in one IDENTITY
    entry, its learner or voter-to-be status kept, no second record; a repeated join changes
    nothing more, and another incarnation afterwards is the replacement path."""
    for stay_learner in (True, False):
        c = ileader()
        c.request_change(MembershipChange(Member("n4", "127.0.0.1:9004", voter=not stay_learner), None, "r",
                                          ChangeOrigin.CLIENT))
        config_proposed(c)
        ack_all(c, peers=["n2", "n3"])
        before = c.member("n4")
        assert before.incarnation == "" and not before.voter and before.promote is (not stay_learner)
        assert c.join(Member("n4", "127.0.0.1:9004"), "join-route", "x4")
        (change, _), = config_proposed(c)
        assert change.origin is ChangeOrigin.IDENTITY and change.member_ids == ("n4",)
        assert [m for m in c.members if m.id == "n4"] == [before._replace(incarnation="x4")]
        ack_all(c, peers=["n2", "n3"])
        assert c.join(Member("n4", "127.0.0.1:9004"), "join-route", "x4")
        assert not config_proposed(c), "a repeated join is answered with no change"
        silence(c, "n4")  # the old process is dead: a live member is never replaced
        assert not c.join(Member("n4", "127.0.0.1:9004"), "join-route", "y4")  # its disk wiped since
        (change, _), = config_proposed(c)
        assert change.origin is ChangeOrigin.JOIN and change.replaces.incarnation == "x4"
        assert [(m.incarnation, m.voter, m.promote) for m in c.members if m.id == "n4"] == [
            ("y4", False, not stay_learner)]
# ---------------------------------------------------------------- a live member is not replaced


def test_a_join_cannot_replace_a_member_the_leader_still_hears_from():
    """A join-token holder sending a JoinRequest under a running member's id with a new
    incarnation: refused while the member answered within the last election timeout."""
    c = ileader()
    before = list(c.members)
    for _ in range(EMAX - 1):  # node2 keeps answering heartbeats
        c.tick()
        for to, m in c.take_ready().send:
            if type(m) is Heartbeat:
                c.step(to, HeartbeatReply(c.term, m.round, c.log.last_index(), from_incarnation="a2"))
    with pytest.raises(MemberLive, match="refused: the member is live: n2"):
        c.join(Member("n2", "127.0.0.1:9999"), "route", "evil")
    assert c.members == before and not c.changes.queued("n2")
    assert not config_proposed(c)
    assert c.progress["n2"].inc == "a2"


def test_a_reply_from_another_incarnation_does_not_keep_a_member_live():
    c = ileader()
    for _ in range(EMAX):
        c.tick()
        for to, m in c.take_ready().send:
            if type(m) is Heartbeat:
                inc = "b2" if to == "n2" else ""  # the wiped node2 answers as its new incarnation
                c.step(to, HeartbeatReply(c.term, m.round, c.log.last_index(), from_incarnation=inc))
    assert not c.join(Member("n2", "127.0.0.1:9002"), "route", "b2")
    (change, _), = config_proposed(c)
    assert change.replaces.incarnation == "a2"


def test_the_leaders_own_id_is_never_replaced():
    c = ileader()
    silence(c, "n2")
    with pytest.raises(MemberLive, match="the leader itself"):
        c.join(Member("n1", "127.0.0.1:9001"), "route", "b1")
    assert c.member("n1").incarnation == "a1"


def test_a_new_leader_counts_every_member_as_just_heard():
    """A leader elected a moment ago has not had time to hear from anyone: it waits one election
    timeout before it believes a member dead."""
    c = icore("n1", "a1")
    elect(c)  # votes only: no reply from n3 yet
    with pytest.raises(MemberLive):
        c.join(Member("n3", "127.0.0.1:9003"), "route", "b3")
    commit_noop(c)
    silence(c, "n3")
    assert not c.join(Member("n3", "127.0.0.1:9003"), "route", "b3")
    config_proposed(c)
    assert c.member("n3").incarnation == "b3" and not c.member("n3").voter
