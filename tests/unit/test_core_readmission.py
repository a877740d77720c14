"""A node that a leader addresses as another incarnation of its id, although its own log admits
this incarnation, asks that leader to admit it again (actors/readmission.py, sim seed 4095: the
entry admitting a wiped member's new incarnation was truncated by a leader of a later term, whose
configuration still listed the old one; the node ignored it for good and never asked again)."""
from __future__ import annotations

import dataclasses
from typing import Optional

import pytest

from raftkv.actors.core import LEADER, encode_config
from raftkv.actors.memlog import MemLog
from raftkv.actors.replacement_guard import MemberLive
from raftkv.wire.messages import Entry, EntryKind, Heartbeat, HeartbeatReply, JoinRequest, RequestVote

from tests.unit.test_core import EMAX, EMIN, HB, commit_noop, elect, sent, sent_after
from tests.unit.test_core_identity import icore, incs_members, silence
from tests.unit.test_core_membership import config_proposed


def asked(ready, to=None) -> list:
    """The re-admission request of ``ready`` (to ``to``), as a list of at most one; it is never
    among the Ready's other messages (a secure node's shell sends it another way)."""
    assert not sent(ready, JoinRequest) and not sent_after(ready, JoinRequest)
    if ready.readmission is None:
        return []
    dest, req = ready.readmission
    assert type(req) is JoinRequest
    return [req] if to is None or dest == to else []


def readmitted_node(term: int = 1, commit: int = 0, my_term: Optional[int] = None):
    """n2 as incarnation b2, whose log holds an entry of ``term`` replacing a2 by b2 (its own
    term: ``my_term``, by default ``term``)."""
    log = MemLog(0, 0, [Entry(term, EntryKind.CONFIG, encode_config(incs_members(n1="a1", n2="b2", n3="a3")))])
    return icore("n2", "b2", ms=incs_members(n1="a1", n2="a2", n3="a3"), term=term if my_term is None else my_term,
                 log=log, commit=commit)


def later_leader():
    """n1 leading term 2 with a log that lacks n2's entry (its configuration lists a2)."""
    c = icore("n1", "a1", term=1)
    elect(c)
    commit_noop(c)
    c.take_ready()
    return c


def heartbeat_to(leader, to: str) -> Heartbeat:
    for _ in range(HB):
        leader.tick()
    hbs = sent(leader.take_ready(), Heartbeat, to)
    assert hbs
    return hbs[-1]


def test_a_node_addressed_as_its_old_incarnation_asks_the_leader_to_admit_it_again_and_gets_in():
    ld = later_leader()
    n2 = readmitted_node()
    hb = heartbeat_to(ld, "n2")
    assert hb.to_incarnation == "a2"
    n2.step("n1", hb)
    assert n2.has_ready(), "the request alone is a Ready to execute"
    r = n2.take_ready()
    reqs = asked(r, "n1")
    assert len(reqs) == 1 and reqs[0].incarnation == "b2" and reqs[0].member.id == "n2"
    assert reqs[0].member.incarnation == "b2" and reqs[0].member.addr == "127.0.0.1:9002"
    assert n2.term == 1 and n2.leader_id is None and not r.send_after_persist, "the message itself is still dropped"
    # The leader's replacement guard decides as for any join: a new leader counts every member
    # as heard, so it refuses until the a2 record has been silent one election timeout. It does
    # fall silent: this node never answers messages addressed to a2.
    with pytest.raises(MemberLive):
        ld.join(reqs[0].member, "h", reqs[0].incarnation)
    silence(ld, "n2")
    assert ld.join(reqs[0].member, "h", reqs[0].incarnation) is False
    changes = config_proposed(ld)
    assert changes and changes[0][0].replaces is not None and changes[0][0].member.incarnation == "b2"
    assert ld.role == LEADER and ld.member("n2").incarnation == "b2"


def test_it_asks_at_most_once_per_minimum_election_timeout():
    n2 = readmitted_node()
    hb = Heartbeat(2, 0, 1, to_incarnation="a2")
    n2.step("n1", hb)
    n2.step("n1", hb)
    assert len(asked(n2.take_ready())) == 1
    for _ in range(EMIN - 1):
        n2.tick()
    n2.step("n1", hb)
    assert not asked(n2.take_ready())
    n2.tick()
    n2.step("n1", hb)
    assert len(asked(n2.take_ready())) == 1


def test_no_request_to_a_stale_leader_by_a_vote_request_or_from_a_node_not_admitted_in_its_own_log():
    n2 = readmitted_node(term=3)
    n2.step("n1", Heartbeat(2, 0, 1, to_incarnation="a2"))  # a stale leader cannot admit us
    # The leader of the entry's own term appended it: a message of that term addressed to a2 was
    # sent before (delayed, or queued while we were paused; sim seed 47064).
    n2.step("n1", Heartbeat(3, 0, 1, to_incarnation="a2"))
    n2.step("n3", RequestVote(4, 9, 3, to_incarnation="a2"))  # a candidate admits no one
    assert not asked(n2.take_ready())
    # A committed admission is in every later leader's log: such a message is stale too.
    committed = readmitted_node(commit=1)
    committed.step("n1", Heartbeat(5, 0, 1, to_incarnation="a2"))
    assert not asked(committed.take_ready())
    # A wiped node whose log does not list this incarnation yet: its join loop is still asking.
    joiner = icore("n2", "b2", ms=[], term=0)
    joiner.step("n1", Heartbeat(5, 0, 1, to_incarnation="a2"))
    other = icore("n2", "b2", ms=incs_members(n1="a1", n2="a2", n3="a3"), term=0)
    other.step("n1", Heartbeat(5, 0, 1, to_incarnation="a2"))
    assert not asked(joiner.take_ready()) and not asked(other.take_ready())
    # Addressed as itself, it is a follower as always.
    n2.step("n1", Heartbeat(3, 0, 1, to_incarnation="b2"))
    r = n2.take_ready()
    assert not asked(r) and n2.leader_id == "n1"
    assert [type(m) for _, m in r.send] == [HeartbeatReply]


def test_a_leader_of_a_term_below_its_own_is_asked_too():
    """Sim seeds 1519 and 2233 (with NodeModel.maybe_strand_admission): the node, a learner whose
    log was ahead, campaigned (needed_learner) and its term ran past the leader's. The leader's
    voters ignored its vote requests within the lease, and the leader never learned its term (a
    message addressed to the old incarnation is never answered). Refusing to ask a leader of a
    lower term kept it out for good."""
    n2 = readmitted_node(term=1, my_term=9)
    n2.step("n1", Heartbeat(2, 0, 1, to_incarnation="a2"))
    reqs = asked(n2.take_ready(), "n1")
    assert len(reqs) == 1 and reqs[0].incarnation == "b2" and n2.term == 9


def test_a_voter_in_its_own_log_waits_while_a_leader_addresses_its_old_incarnation():
    """Sim seed 921613 (5 nodes, neither pre-vote nor check-quorum): a replacement whose own log
    made it a voter never heard a leader (every message was addressed to its old incarnation), so
    it campaigned every election timeout and each campaign deposed the leader before that leader
    could re-admit it (one election timeout after winning: the replacement guard). A leader's
    heartbeat to the old incarnation now restarts its election timer; the message itself is still
    dropped."""
    ld = later_leader()
    n2 = readmitted_node()
    n2.cfg = dataclasses.replace(n2.cfg, pre_vote=False, check_quorum=False)
    for _ in range(5 * EMAX):
        ld.tick()
        for to, m in ld.take_ready().send:
            if type(m) is not Heartbeat:
                continue
            if to == "n2":
                assert m.to_incarnation == "a2"
                n2.step("n1", m)
            elif to == "n3":  # n3 answers, so the leader keeps its quorum
                ld.step("n3", HeartbeatReply(ld.term, m.round, ld.log.last_index()))
        n2.tick()
        r = n2.take_ready()
        assert not sent(r, RequestVote) and not sent_after(r, RequestVote), "campaigned under a live leader"
    assert ld.role == LEADER and n2.term == 1 and n2.leader_id is None, "the heartbeats are still dropped"
    # The leader falls silent: n2 campaigns within an election timeout, as any voter does.
    campaigned = False
    for _ in range(EMAX):
        n2.tick()
        r = n2.take_ready()
        campaigned |= bool(sent(r, RequestVote) or sent_after(r, RequestVote))
    assert campaigned and n2.term == 2
