"""Checkpoint snapshots as one byte stream: read at any offsets, rebuilt by the receiver."""
from __future__ import annotations

import pytest

from raftkv.records import Member
from raftkv.storage.checkpoint_store import CheckpointStore, StreamReceiver, stage_copy
from raftkv.storage.kv_checkpoint import CheckpointError
from raftkv.storage.kv_store import KvStore, Put

MEMBERS = [Member("n1", "127.0.0.1:1", "127.0.0.1:2", "", True)]


def _taken(tmp_path, n: int = 3000):
    kv = KvStore(str(tmp_path / "kv"))
    kv.apply_batch([Put(f"k{i:05d}", b"v" * 100) for i in range(n)], 7)
    store = CheckpointStore(str(tmp_path / "snaps"), keep=2)
    meta = store.describe(kv.checkpoint(store.path_for(7)), 3, MEMBERS)
    return kv, store, meta


@pytest.mark.parametrize("chunk", [1, 777, 1 << 20])
def test_the_stream_in_any_chunk_size_rebuilds_the_same_db(tmp_path, chunk):
    kv, store, meta = _taken(tmp_path)
    if chunk == 1:
        chunk = 97  # small, not aligned to anything
    rx = StreamReceiver(str(tmp_path / "snaps" / "recv-x"))
    offset = 0
    while offset < meta.size:
        data = store.read(meta, offset, chunk)
        assert data
        rx.feed(data)
        offset += len(data)
    dest = CheckpointStore(str(tmp_path / "other"), keep=2)
    got = rx.adopt(dest, meta.last_term, meta.members)
    assert (got.last_index, got.last_term, got.members, got.size) == (7, 3, MEMBERS, meta.size)
    copy = KvStore(str(tmp_path / "copy"))  # opening first: it clears a stale .incoming
    stage_copy(got.path, str(tmp_path / "copy.incoming"))
    assert copy.install(str(tmp_path / "copy.incoming")) == 7
    assert copy.scan("k", 0) == kv.scan("k", 0)
    copy.close()
    kv.close()


def test_a_damaged_stream_is_refused(tmp_path):
    kv, store, meta = _taken(tmp_path, 500)
    body = bytearray(store.read(meta, 0, meta.size))
    body[-5] ^= 0xFF
    rx = StreamReceiver(str(tmp_path / "recv"))
    rx.feed(bytes(body))
    with pytest.raises(CheckpointError):
        rx.finish()
    capped = StreamReceiver(str(tmp_path / "recv2"), max_bytes=100)
    with pytest.raises(CheckpointError, match="exceeds the cap"):
        capped.feed(store.read(meta, 0, meta.size))
    kv.close()


def test_only_the_newest_are_kept(tmp_path):
    kv, store, _ = _taken(tmp_path, 10)
    for i in (8, 9, 10):
        kv.apply_batch([Put("x", b"%d" % i)], i)
        store.describe(kv.checkpoint(store.path_for(i)), 3, MEMBERS)
    assert [m.last_index for m in store.list()] == [10, 9]
    kv.close()


def test_pruning_can_wait_until_after_the_new_snapshot_is_announced(tmp_path):
    # The snapshotter describes without pruning (deleting an old checkpoint is thousands of unlinks
    # at 10M keys) and prunes after it told the role and replied: until then the old ones stay whole.
    kv, store, _ = _taken(tmp_path, 10)
    for i in (8, 9):
        kv.apply_batch([Put("x", b"%d" % i)], i)
        meta = store.describe(kv.checkpoint(store.path_for(i)), 3, MEMBERS, prune=False)
    assert [m.last_index for m in store.list()] == [9, 8, 7]
    store.prune(keep_path=meta.path)
    assert [m.last_index for m in store.list()] == [9, 8]
    assert store.open_verified(store.list()[1])  # the kept older one is untouched
    kv.close()


def test_a_restore_passes_over_a_whole_checkpoint_that_does_not_open(tmp_path):
    # The newest checkpoint's files all match its manifest, but its MANIFEST names an SST file it
    # lacks (what the MANIFEST race of round 10 built): restoring uses the older one and deletes it.
    import os

    kv, store, older = _taken(tmp_path)
    kv.apply_batch([Put(f"k{i:05d}", b"w" * 100) for i in range(3000, 6000)], 9)
    info = kv.checkpoint(store.path_for(9))
    kv.close()
    new_ssts = set(n for n in os.listdir(info.path) if n.endswith(".sst")) - set(os.listdir(older.path))
    assert new_ssts
    os.unlink(os.path.join(info.path, new_ssts.pop()))
    newest = store.describe(info, 3, MEMBERS)
    assert [m.last_index for m in store.list()] == [9, 7]
    assert store.newest_verified().last_index == 7
    assert [m.last_index for m in store.list()] == [7] and not os.path.exists(newest.path)
