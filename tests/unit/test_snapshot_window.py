"""The leader's snapshot sender keeps WINDOW chunks in flight ahead of the core's stop-and-wait
asks, rewinds on a repeated ask, and the follower rebuilds the same checkpoint either way."""
from __future__ import annotations

import os

from raftkv.actors import snapshotter as snap_mod
from raftkv.actors.snapshot_transfer import SendChunk
from raftkv.actors.snapshotter import CHUNK_BYTES, WINDOW, Snapshotter, SnapshotSendFailed
from raftkv.records import Member
from raftkv.storage.checkpoint_store import CheckpointStore, StreamReceiver
from raftkv.storage.kv_store import KvStore, Put

MEMBERS = [Member("n1", "127.0.0.1:1", "127.0.0.1:2", "", True)]


def _sender(tmp_path, monkeypatch, chunk: int = 4096):
    kv = KvStore(str(tmp_path / "kv"))
    kv.apply_batch([Put(f"k{i:06d}", bytes([i % 251]) * 100) for i in range(20_000)], 9)
    store = CheckpointStore(str(tmp_path / "snaps"), keep=2)
    meta = store.describe(kv.checkpoint(store.path_for(9)), 2, MEMBERS)
    kv.close()
    monkeypatch.setattr(snap_mod, "CHUNK_BYTES", chunk)
    sent: list = []
    told: list = []
    s = Snapshotter("n1", store, lambda to, m: sent.append((to, m)), told.append, lambda i: None, lambda items: None)
    return s, meta, sent, told


def test_a_window_of_chunks_is_in_flight_and_slides_one_per_answer(tmp_path, monkeypatch):
    s, meta, sent, _ = _sender(tmp_path, monkeypatch)
    assert meta.size > 20 * 4096
    s.on_receive(SendChunk("n2", 5, 9, 0))
    assert [m.offset for _, m in sent] == [i * 4096 for i in range(WINDOW)]
    sent.clear()
    s.on_receive(SendChunk("n2", 5, 9, 4096))  # the follower took the first chunk
    assert [m.offset for _, m in sent] == [WINDOW * 4096]


def test_in_order_delivery_rebuilds_the_checkpoint_and_the_last_chunk_is_done(tmp_path, monkeypatch):
    s, meta, sent, _ = _sender(tmp_path, monkeypatch)
    rx = StreamReceiver(str(tmp_path / "recv"))
    s.on_receive(SendChunk("n2", 5, 9, 0))
    expected = 0
    while sent:
        _, m = sent.pop(0)
        assert m.offset == expected and m.done == (m.offset + len(m.data) >= meta.size)
        rx.feed(m.data)
        expected += len(m.data)
        if not m.done:
            s.on_receive(SendChunk("n2", 5, 9, expected))  # the core's ask after each answer
    assert expected == meta.size
    assert rx.finish()[0].applied_index == 9


def test_a_repeated_ask_rewinds_the_window_once(tmp_path, monkeypatch):
    s, meta, sent, _ = _sender(tmp_path, monkeypatch)
    clock = [100.0]
    monkeypatch.setattr(snap_mod.time, "monotonic", lambda: clock[0])
    s.on_receive(SendChunk("n2", 5, 9, 0))
    s.on_receive(SendChunk("n2", 5, 9, 4096))
    sent.clear()
    clock[0] += 1.0
    # chunk 1 was lost: the follower answers each later chunk with the offset it expects
    for _ in range(WINDOW - 1):
        s.on_receive(SendChunk("n2", 5, 9, 4096))
    assert [m.offset for _, m in sent] == [4096 * (1 + i) for i in range(WINDOW)]  # one rewind, not three


def test_a_stream_that_went_away_is_reported(tmp_path, monkeypatch):
    s, meta, sent, told = _sender(tmp_path, monkeypatch)
    s.on_receive(SendChunk("n2", 5, 8, 0))  # no snapshot at index 8
    assert sent == [] and told == [SnapshotSendFailed("n2")]


def test_default_chunks_fit_the_peer_bound():
    from raftkv.records import MAX_CHUNK_BYTES
    assert WINDOW >= 2 and CHUNK_BYTES <= MAX_CHUNK_BYTES


def _send_whole(s, sent, meta) -> None:
    s.on_receive(SendChunk("n2", 5, 9, 0))
    offset = 0
    while sent:
        _, m = sent.pop(0)
        offset = m.offset + len(m.data)
        if not m.done:
            s.on_receive(SendChunk("n2", 5, 9, offset))
    assert offset == meta.size


def test_a_checkpoint_asked_for_again_after_a_whole_send_is_sent_again_if_it_opens(tmp_path, monkeypatch):
    s, meta, sent, told = _sender(tmp_path, monkeypatch, chunk=64 << 10)
    _send_whole(s, sent, meta)
    s.on_receive(SendChunk("n2", 5, 9, 0))  # e.g. the last chunk was lost: the core starts over
    assert sent and sent[0][1].offset == 0 and not told
    assert [m.last_index for m in s.store.list()] == [9]


def test_a_whole_but_unopenable_checkpoint_is_replaced_when_a_follower_asks_for_it_again(tmp_path, monkeypatch):
    # A checkpoint whose files all match their CRC-32s but whose MANIFEST names an SST file it
    # lacks (what the MANIFEST race built): the follower rejects it after the last chunk without
    # telling the leader, and the core asks for it from the start again, for good, unless the
    # leader finds it out: it deletes it and takes a fresh snapshot.
    kv = KvStore(str(tmp_path / "kv"))
    kv.apply_batch([Put(f"k{i:06d}", bytes([i % 251]) * 100) for i in range(20_000)], 9)
    store = CheckpointStore(str(tmp_path / "snaps"), keep=2)
    info = kv.checkpoint(store.path_for(9))
    kv.close()
    path = info.path
    ssts = [n for n in os.listdir(path) if n.endswith(".sst")]
    assert ssts
    os.unlink(os.path.join(path, ssts[0]))
    meta = store.describe(info, 2, MEMBERS)  # describes (and sums) the files that are there
    monkeypatch.setattr(snap_mod, "CHUNK_BYTES", 64 << 10)
    sent: list = []
    told: list = []
    asked: list = []
    s = Snapshotter("n1", store, lambda to, m: sent.append((to, m)), told.append, lambda i: None,
                    lambda items: None, take_snapshot=lambda: asked.append(True))
    _send_whole(s, sent, meta)
    assert not told
    s.on_receive(SendChunk("n2", 5, 9, 0))
    assert told == [SnapshotSendFailed("n2")] and asked == [True] and not sent
    assert store.list() == [] and not os.path.exists(path)
