"""Lease reads and follower read indexes in the pure core (thesis 6.4, 6.4.1)."""
from __future__ import annotations

from raftkv.actors.core import LEADER, CoreConfig, RaftCore, RemoteRead, encode_config
from raftkv.actors.memlog import MemLog
from raftkv.wire.messages import (Entry, EntryKind, HeartbeatReply, Member, ReadIndexReply, ReadIndexRequest,
                           RequestVote)

CFG = CoreConfig(election_ticks_min=10, election_ticks_max=20, heartbeat_ticks=2)
MEMBERS = [Member("a", "a:1"), Member("b", "b:1"), Member("c", "c:1")]


def leader() -> RaftCore:
    """Node a as leader of term 2 with its no-op committed."""
    log = MemLog(0, 0, [Entry(1, EntryKind.CONFIG, encode_config(MEMBERS))])
    c = RaftCore("a", CFG, term=2, vote="a", log=log, commit=1)
    c.role = LEADER
    c._become_leader()  # test drives the transition directly
    c.take_ready()
    c.on_persisted(2, 2)
    from raftkv.wire.messages import AppendReply
    c.step("b", AppendReply(2, True, match_index=2))
    c.take_ready()
    assert c.commit == 2
    return c


def ack_round(c: RaftCore, *peers: str) -> None:
    for p in peers:
        c.step(p, HeartbeatReply(c.term, c.round, c.log.last_index()))


def test_lease_read_served_locally_only_while_the_lease_holds():
    c = leader()
    c.lease_read(["r0"])  # no round confirmed yet: falls back to ReadIndex
    rd = c.take_ready()
    assert rd.reads == [] and c.pending_reads
    ack_round(c, "b")
    assert c.take_ready().reads == [(2, ["r0"])]
    c.lease_read(["r1"])
    assert c.take_ready().reads == [(2, ["r1"])]  # inside the lease: no round needed
    for _ in range(CFG.election_ticks_min):
        c.now += 1  # time passes with no acknowledgement
    c.lease_read(["r2"])
    rd = c.take_ready()
    assert rd.reads == [] and any(h == ["r2"] for _, _, h in c.pending_reads)


def test_transfer_ends_the_lease():
    c = leader()
    ack_round(c, "b")
    c.take_ready()
    c.transfer_leadership("b")
    c.lease_read(["r"])
    c.take_ready()
    assert any(h == ["r"] for _, _, h in c.pending_reads)  # not served from the lease


def test_follower_read_index_request_is_answered_after_a_confirmed_round():
    c = leader()
    c.step("b", ReadIndexRequest(2, 7))
    rd = c.take_ready()
    assert not rd.reads
    ack_round(c, "c")
    rd = c.take_ready()
    assert not rd.reads  # answered by the core itself, not handed to the shell
    assert ("b", ReadIndexReply(2, 7, 2, True)) in rd.send
    assert not any(isinstance(h, RemoteRead) for _, hs in rd.reads for h in hs)


def test_a_non_leader_refuses_read_index_requests():
    c = RaftCore("b", CFG, term=2, log=MemLog(0, 0, [Entry(1, EntryKind.CONFIG, encode_config(MEMBERS))]))
    c.step("c", ReadIndexRequest(2, 3))
    assert c.take_ready().send == [("c", ReadIndexReply(2, 3, 0, False))]


def test_a_just_started_node_does_not_vote_within_an_election_timeout():
    c = RaftCore("b", CFG, term=2, log=MemLog(0, 0, [Entry(1, EntryKind.CONFIG, encode_config(MEMBERS))]))
    c.step("c", RequestVote(3, 5, 2))
    assert c.term == 2 and not c.take_ready().send_after_persist  # ignored: a leader may hold a lease
    for _ in range(CFG.election_ticks_min):
        c.now += 1
    c.step("c", RequestVote(3, 5, 2))
    assert c.term == 3 and c.vote == "c"


def test_a_leader_whose_own_removal_commits_steps_down_cleanly():
    from raftkv.wire.messages import AppendReply
    c = leader()
    idx = c.propose_config([m for m in MEMBERS if m.id != "a"])
    c.take_ready()
    c.on_persisted(idx, 2)
    c.step("b", AppendReply(2, True, match_index=idx))
    c.step("c", AppendReply(2, True, match_index=idx))  # commits the change that removes us
    assert c.role != LEADER and c.commit == idx
    c.take_ready()
