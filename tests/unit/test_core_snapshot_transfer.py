"""Snapshot streaming decided by the core (actors/snapshot_transfer.py); the Snapshotter actor
only moves the bytes. Once in the Snapshotter; the simulation found its stuck stream."""
from __future__ import annotations

from raftkv.actors.core import PROBE, SNAPSHOT, SendChunk, SnapshotRef
from raftkv.wire.messages import (AppendEntries, AppendReply, EntryKind, HeartbeatReply, InstallSnapshot,
                                  InstallSnapshotReply)

from tests.unit.test_core import core, elect, members, sent, sent_after

SIZE = 100


def compacted_leader(snapshot: bool = True):
    """n1 leads with its log compacted to index 4 behind a snapshot of SIZE bytes; n3 knows nothing."""
    c = core()
    elect(c)
    c.propose([(EntryKind.COMMAND, b"%d" % i) for i in range(4)])
    c.on_persisted(c.log.last_index(), c.log.last_term())
    c.step("n2", AppendReply(c.term, True, match_index=5))
    assert c.commit == 5
    if snapshot:
        c.set_snapshot(SnapshotRef(4, c.term, SIZE))
    c.compact(4)
    c.take_ready()
    return c


def needs_snapshot(c):
    """n3 answers a heartbeat: it needs index 1, which is compacted away; returns that Ready."""
    c.step("n3", HeartbeatReply(c.term, c.round, 0))
    return c.take_ready()


def ack(c, offset, done=False):
    c.step("n3", InstallSnapshotReply(c.term, 4, offset, done))
    return c.take_ready()


def test_a_follower_behind_the_compaction_point_gets_the_newest_snapshot_chunk_by_chunk():
    c = compacted_leader()
    rd = needs_snapshot(c)
    assert rd.chunks_to_send == [SendChunk("n3", c.term, 4, 0)] and c.progress["n3"].state == SNAPSHOT
    assert ack(c, 40).chunks_to_send == [SendChunk("n3", c.term, 4, 40)]
    assert ack(c, 40).chunks_to_send == [SendChunk("n3", c.term, 4, 40)], "a duplicate answer resends"
    assert not ack(c, SIZE).chunks_to_send, "every byte is there: wait for the follower's done reply"
    rd = ack(c, SIZE, done=True)
    pr = c.progress["n3"]
    assert pr.state == PROBE and pr.match == 4 and not c.snap_out
    assert [m.prev_index for m in sent(rd, AppendEntries, to="n3")] == [4], "replication resumes after it"


def test_an_unanswered_chunk_is_resent_and_a_silent_follower_given_up():
    c = compacted_leader()
    needs_snapshot(c)
    resend, give_up = c.cfg.snapshot_resend_ticks, c.cfg.snapshot_give_up_ticks
    chunks = []
    for _ in range(give_up + 1):
        c.elapsed = 0  # keep check-quorum out of it
        c.progress["n2"].active = True
        c.tick()
        chunks += c.take_ready().chunks_to_send
    assert chunks and all(ch.offset == 0 for ch in chunks)
    assert len(chunks) == give_up // (resend + 1), "resent every resend_ticks, counted from the last send"
    assert c.progress["n3"].state == PROBE and "n3" not in c.snap_out, "abandoned: start over when it answers"


def test_a_second_snapshot_in_the_same_term_is_streamed_afresh():
    """The Snapshotter bug the simulation found (seed 10 of 0-999): a finished stream of the same
    term kept a follower needing a second snapshot from ever getting one."""
    c = compacted_leader()
    needs_snapshot(c)
    ack(c, SIZE)
    ack(c, SIZE, done=True)
    c.set_snapshot(SnapshotRef(5, c.term, 2 * SIZE))
    c.compact(5)
    c.take_ready()
    c.step("n3", AppendReply(c.term, True, match_index=4, need_snapshot=True))  # its own snapshot is bad
    assert c.take_ready().chunks_to_send == [SendChunk("n3", c.term, 5, 0)]


def test_a_snapshot_the_transport_lost_is_replaced_by_the_newest():
    c = compacted_leader()
    needs_snapshot(c)
    c.snapshot_failed("n3")
    assert c.progress["n3"].state == PROBE and not c.snap_out
    c.set_snapshot(SnapshotRef(5, c.term, SIZE))
    c.compact(5)
    rd = needs_snapshot(c)
    assert rd.chunks_to_send == [SendChunk("n3", c.term, 5, 0)]


def test_without_a_durable_snapshot_the_follower_stays_in_probe():
    c = compacted_leader(snapshot=False)
    rd = needs_snapshot(c)
    assert not rd.chunks_to_send and c.progress["n3"].state == PROBE


# ---------------------------------------------------------------- the receiving follower


def chunk(offset, data=b"abcd", done=False, index=9, term=2):
    return InstallSnapshot(2, index, term, offset, data, done, members(3))


def test_a_follower_stores_chunks_in_order_and_answers_the_next_offset():
    c = core("n2", term=2)
    c.step("n1", chunk(0))
    rd = c.take_ready()
    assert [s.msg.offset for s in rd.chunks_to_store] == [0]
    assert sent(rd, InstallSnapshotReply) == [InstallSnapshotReply(2, 9, 4, False)]
    for dup in (chunk(0), chunk(8)):  # a duplicate and one from the future: not stored
        c.step("n1", dup)
        rd = c.take_ready()
        assert not rd.chunks_to_store and sent(rd, InstallSnapshotReply) == [InstallSnapshotReply(2, 9, 4, False)]
    c.step("n1", chunk(4, done=True))
    rd = c.take_ready()
    assert [s.msg.offset for s in rd.chunks_to_store] == [4] and not sent(rd, InstallSnapshotReply)
    c.install_snapshot(9, 2, members(3), leader="n1", size=8)
    rd = c.take_ready()
    assert sent_after(rd, InstallSnapshotReply) == [InstallSnapshotReply(2, 9, 8, True)], "once durable"
    assert rd.persist.compact_to == (9, 2) and c.snapshot == SnapshotRef(9, 2, 8)


def test_a_follower_without_the_streams_start_asks_for_offset_zero():
    c = core("n2", term=2)  # e.g. restarted mid-stream
    c.step("n1", chunk(40))
    rd = c.take_ready()
    assert not rd.chunks_to_store and sent(rd, InstallSnapshotReply) == [InstallSnapshotReply(2, 9, 0, False)]


def test_a_new_snapshot_replaces_a_partial_one_only_from_its_start():
    c = core("n2", term=2)
    c.step("n1", chunk(0))
    c.take_ready()
    c.step("n1", chunk(4, index=12))
    assert not c.take_ready().chunks_to_store
    c.step("n1", chunk(0, index=12))
    rd = c.take_ready()
    assert [(s.msg.last_index, s.msg.offset) for s in rd.chunks_to_store] == [(12, 0)]
