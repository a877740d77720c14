"""A read's heartbeat round goes to a majority's worth of followers, not to all (actors/read_rounds.py)."""
from __future__ import annotations

from raftkv.actors.read_rounds import RESEND_TICKS, ReadRoundPeers
from raftkv.wire.messages import Heartbeat, HeartbeatReply

from .test_core import HB, leader_with_committed_noop, sent


def first_round(c, first: str, *rest: str) -> None:
    """A read confirmed by a round to everyone, ``first`` acknowledging it before ``rest``."""
    c.read_index(["r0"])
    hbs = sent(c.take_ready(), Heartbeat)
    assert len(hbs) == len(c.progress), "no round confirmed yet this term: the read round goes to all"
    for p in (first, *rest):
        c.step(p, HeartbeatReply(c.term, hbs[0].round, c.log.last_index()))
    assert c.take_ready().reads == [(c.commit, ["r0"])]


def test_a_read_round_goes_to_the_follower_that_answered_the_last_round_first():
    c = leader_with_committed_noop()
    first_round(c, "n3", "n2")
    c.read_index(["r1"])
    rd = c.take_ready()
    assert [t for t, m in rd.send if type(m) is Heartbeat] == ["n3"]
    c.step("n3", HeartbeatReply(c.term, c.round, c.log.last_index()))
    assert c.take_ready().reads == [(c.commit, ["r1"])], "the leader and n3 are a majority"


def test_five_nodes_send_a_read_round_to_the_two_fastest():
    c = leader_with_committed_noop(n=5)
    first_round(c, "n4", "n2", "n5", "n3")
    c.read_index(["r1"])
    assert sorted(t for t, m in c.take_ready().send if type(m) is Heartbeat) == ["n2", "n4"]
    c.step("n4", HeartbeatReply(c.term, c.round, c.log.last_index()))
    assert not c.take_ready().reads, "the leader and one follower are not a majority of five"
    c.step("n2", HeartbeatReply(c.term, c.round, c.log.last_index()))
    assert c.take_ready().reads == [(c.commit, ["r1"])]


def test_an_unanswered_read_round_is_sent_again_to_every_follower():
    c = leader_with_committed_noop()
    first_round(c, "n2", "n3")
    c.read_index(["r1"])
    targeted = c.round
    assert [t for t, m in c.take_ready().send if type(m) is Heartbeat] == ["n2"]  # n2 is slow from now on
    assert RESEND_TICKS < HB, "otherwise the periodic heartbeat would come first"
    for _ in range(RESEND_TICKS):
        c.tick()
    rd = c.take_ready()
    assert sorted(t for t, m in rd.send if type(m) is Heartbeat) == ["n2", "n3"]
    assert c.round == targeted + 1 and not rd.reads
    c.step("n3", HeartbeatReply(c.term, c.round, c.log.last_index()))
    assert c.take_ready().reads == [(c.commit, ["r1"])]
    c.read_index(["r2"])
    assert [t for t, m in c.take_ready().send if type(m) is Heartbeat] == ["n3"], "n3 answered first"


def test_an_answer_from_a_follower_the_round_was_not_sent_to_still_confirms_nothing_older():
    c = leader_with_committed_noop()
    first_round(c, "n2", "n3")
    before = c.round
    c.read_index(["r1"])
    c.take_ready()
    c.step("n3", HeartbeatReply(c.term, before, c.log.last_index()))  # a late ack of the earlier round
    assert not c.take_ready().reads, "a round started before the read registered confirms nothing"


def test_no_targets_when_the_fast_followers_are_no_longer_enough_voters():
    p = ReadRoundPeers()
    p.started(1, False)
    p.acked("n2", 1)
    p.confirmed(1, ["n1", "n2", "n3"])
    assert p.targets("n1", ["n1", "n2", "n3"], ["n2", "n3"]) == ["n2"]
    assert p.targets("n1", ["n1", "n3", "n4"], ["n3", "n4"]) is None  # n2 was removed
    assert p.targets("n1", ["n2", "n3", "n4"], ["n2", "n3", "n4"]) is None  # we are not a voter: need 2
    p.reset()
    assert p.targets("n1", ["n1", "n2", "n3"], ["n2", "n3"]) is None  # a new term: to all first
