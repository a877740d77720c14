"""A follower's linearizable reads, forwarded to the leader by the core (thesis 6.4.1).

Once in the Follower actor; now the core forwards them, matches the leader's answer, and fails
them on a timeout or a change of term or role."""
from __future__ import annotations

import pytest

from raftkv.actors.core import NotLeader
from raftkv.wire.messages import Heartbeat, ReadIndexReply, ReadIndexRequest

from tests.unit.test_core import EMAX, core, sent


def following():
    c = core("n2", term=2)
    c.step("n1", Heartbeat(2, 0, 1))
    c.take_ready()
    return c


def test_reads_are_forwarded_as_one_request_and_served_at_the_leaders_index():
    c = following()
    c.read_index(["r1", "r2"])
    req, = sent(c.take_ready(), ReadIndexRequest, to="n1")
    c.step("n1", ReadIndexReply(2, req.req_id, 7, True))
    rd = c.take_ready()
    assert rd.reads == [(7, ["r1", "r2"])] and not rd.reads_failed


def test_a_refused_request_fails_its_reads():
    c = following()
    c.read_index(["r"])
    req, = sent(c.take_ready(), ReadIndexRequest)
    c.step("n1", ReadIndexReply(2, req.req_id, 0, False))
    assert c.take_ready().reads_failed == ["r"]


def test_request_ids_are_never_reused_so_a_late_reply_cannot_answer_a_newer_read():
    """The bug the simulation found in the Follower actor (seed 2651): each actor numbered its
    requests from 1, so a late reply to a previous actor's request answered a new read."""
    c = following()
    c.read_index(["old"])
    old, = sent(c.take_ready(), ReadIndexRequest)
    c.campaign()  # a pre-vote round: the read fails, the node is a follower again after it
    assert c.take_ready().reads_failed == ["old"]
    c.step("n1", Heartbeat(2, 0, 2))
    c.take_ready()
    c.read_index(["new"])
    new, = sent(c.take_ready(), ReadIndexRequest)
    assert new.req_id != old.req_id
    c.step("n1", ReadIndexReply(2, old.req_id, 3, True))  # late
    assert not c.take_ready().reads


def test_unanswered_reads_fail_after_the_longest_election_timeout():
    c = following()
    c.read_index(["r"])
    c.take_ready()
    for _ in range(EMAX - 1):
        c.elapsed = 0  # the leader is alive; only the read goes unanswered
        c.tick()
        assert not c.take_ready().reads_failed
    c.tick()
    assert c.take_ready().reads_failed == ["r"]


def test_a_new_term_fails_the_reads_forwarded_in_the_old_one():
    c = following()
    c.read_index(["r"])
    c.take_ready()
    c.step("n3", Heartbeat(3, 0, 1))
    assert c.take_ready().reads_failed == ["r"]


def test_without_a_known_leader_a_follower_refuses():
    c = core("n2", term=2)
    with pytest.raises(NotLeader):
        c.read_index(["r"])
