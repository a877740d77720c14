"""RaftCore's membership rules (actors/membership.py): the change queue, learner promotion, the
removal rule. Once in the Leader and NodeContext actors; now decided by the core."""
from __future__ import annotations

import pytest

from raftkv.actors.core import FOLLOWER, LEADER, NotLeader
from raftkv.actors.membership import ChangeOrigin, MembershipChange
from raftkv.actors.memlog import MemLog
from raftkv.wire.messages import AppendEntries, AppendReply, Entry, EntryKind, Heartbeat, Member

from tests.unit.test_core import core, elect, encode_config, members

NEW = Member("n4", "127.0.0.1:9004")


def leader():
    c = core()
    elect(c)
    ack_all(c)
    c.take_ready()
    return c


def ack_all(c, upto=None, peers=None):
    """Sync the leader's log and have ``peers`` (default: all) acknowledge it up to ``upto``."""
    last = c.log.last_index() if upto is None else upto
    c.on_persisted(c.log.last_index(), c.log.last_term())
    for p in (list(c.progress) if peers is None else peers):
        c.step(p, AppendReply(c.term, True, match_index=last))


def config_proposed(c):
    return c.take_ready().config_proposed


def test_an_added_voter_joins_as_a_learner_and_is_promoted_once_caught_up():
    c = leader()
    c.request_change(MembershipChange(NEW, None, "route", ChangeOrigin.CLIENT))
    (change, index), = config_proposed(c)
    assert change.handle == "route" and c.member("n4") == Member("n4", NEW.addr, voter=False)
    ack_all(c, peers=["n2", "n3"])  # the change commits without the learner
    assert c.commit == index and not config_proposed(c), "not promoted before it is caught up"
    c.step("n4", AppendReply(c.term, True, match_index=index))
    (change, pindex), = config_proposed(c)
    assert change.origin is ChangeOrigin.PROMOTION and pindex == index + 1
    assert c.member("n4").voter and "n4" in c.voters()


def test_a_learner_added_with_voter_false_stays_a_learner():
    c = leader()
    c.request_change(MembershipChange(NEW._replace(voter=False), None, "route", ChangeOrigin.CLIENT))
    (change, index), = config_proposed(c)
    ack_all(c)  # everyone, the learner too, holds everything committed
    for _ in range(3):
        c.tick()
        c.take_ready()
        ack_all(c)
    assert c.commit == c.log.last_index() >= index
    assert c.member("n4") is not None and not c.member("n4").voter
    assert "n4" not in c.voters()


def test_changes_are_proposed_one_at_a_time_in_order():
    c = leader()
    c.request_change(MembershipChange(NEW, None, "a"))
    c.request_change(MembershipChange(None, "n3", "b"))
    (first, i1), = config_proposed(c)
    assert first.handle == "a" and not config_proposed(c), "the second waits for the first to commit"
    ack_all(c, peers=["n2", "n3"])
    (second, i2), = config_proposed(c)
    assert second.handle == "b" and i2 > i1 and c.member("n3") is None


def test_queued_changes_are_dropped_when_leadership_is_lost():
    c = leader()
    c.request_change(MembershipChange(NEW, None, "a"))
    c.request_change(MembershipChange(None, "n3", "b"))
    c.take_ready()
    c.step("n2", AppendEntries(c.term + 1, 0, 0, [], 0))
    rd = c.take_ready()
    assert c.role == FOLLOWER and [x.handle for x in rd.config_dropped] == ["b"]
    with pytest.raises(NotLeader):
        c.request_change(MembershipChange(NEW, None, "c"))


def test_a_join_is_queued_once_and_a_member_is_answered_at_once():
    c = leader()
    assert c.join(Member("n2", members()[1].addr), "r") is True, "already a member at that address"
    assert c.join(NEW, "r1") is False
    assert c.join(NEW, "r2") is False  # a retry: not queued twice
    rd = c.take_ready()
    (change, index), = rd.config_proposed
    assert change.origin is ChangeOrigin.JOIN and change.handle == "r1" and not c.changes.pending


# ---------------------------------------------------------------- the removal rule


def follower_with(entries, commit, node="n3"):
    c = core(node, log=MemLog(0, 0, entries), commit=commit)
    c.take_ready()
    return c


CONF3 = Entry(1, EntryKind.CONFIG, encode_config(members(3)))


def test_a_node_whose_removal_commits_is_told_to_stop_once():
    c = follower_with([CONF3], 1)
    assert c.was_member
    two = Entry(2, EntryKind.CONFIG, encode_config(members(2)))
    c.step("n1", AppendEntries(2, 1, 1, [two], 1))
    assert not c.take_ready().removed, "not before the removal commits"
    c.step("n1", Heartbeat(2, 2, 1))
    assert c.take_ready().removed
    c.step("n1", Heartbeat(2, 2, 2))
    assert not c.take_ready().removed, "reported once"


def test_an_uncommitted_addition_that_is_truncated_does_not_make_a_removed_node():
    """The bug the simulation found in NodeContext.after_ready (seeds 55, 74, ...): a node that
    saw itself only in an uncommitted configuration stopped as removed once that entry was
    truncated and a configuration without it committed."""
    c = core("n4", log=MemLog(0, 0, [CONF3]), commit=1, ms=[])
    c.take_ready()
    add = Entry(2, EntryKind.CONFIG, encode_config(members(3) + [Member("n4", "127.0.0.1:9004", voter=False)]))
    c.step("n1", AppendEntries(2, 1, 1, [add], 1))
    c.take_ready()
    other = Entry(3, EntryKind.COMMAND, b"y")
    c.step("n2", AppendEntries(3, 1, 1, [other], 2))  # a new leader truncates the addition
    rd = c.take_ready()
    assert c.member("n4") is None and c.commit == 2 and not rd.removed and not c.was_member


def test_a_leader_that_removes_itself_steps_down_once_that_commits_and_keeps_replicating_until_then():
    c = leader()
    c.request_change(MembershipChange(None, "n1", "r"))
    (_, index), = config_proposed(c)
    assert c.role == LEADER and "n1" not in c.voters()
    ack_all(c, peers=["n2"])  # n2 and n3 are the voters now: one is not a quorum
    assert c.role == LEADER
    ack_all(c, peers=["n3"])
    rd = c.take_ready()
    assert c.role == FOLLOWER and c.commit == index and rd.removed
    assert {t for t, m in rd.send if type(m) is Heartbeat} == {"n2", "n3"}, "the others learn the commit first"


def test_a_removed_follower_gets_appends_until_it_holds_its_removal():
    c = leader()
    c.request_change(MembershipChange(None, "n3", "r"))
    (_, index), = config_proposed(c)
    ack_all(c, peers=["n2"])
    assert c.commit == index and "n3" in c.progress, "still replicated to: it must learn of its removal"
    c.step("n3", AppendReply(c.term, True, match_index=index))
    assert "n3" not in c.progress
