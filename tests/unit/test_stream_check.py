"""The sender checks a checkpoint's CRC-32s as it reads the stream: a damaged file is caught
before the chunk holding its last byte goes out, whatever the chunk size or resume point."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from raftkv.records import Member
from raftkv.storage.checkpoint_store import CheckpointStore, StreamCheck
from raftkv.storage.kv_checkpoint import CheckpointError, CheckpointManifest
from raftkv.storage.kv_store import KvStore, Put

MEMBERS = [Member("n1", "127.0.0.1:1", "127.0.0.1:2", "", True)]


def _taken(tmp_path):
    kv = KvStore(str(tmp_path / "kv"))
    kv.apply_batch([Put(f"k{i:05d}", os.urandom(100)) for i in range(3000)], 7)
    store = CheckpointStore(str(tmp_path / "snaps"), keep=2)
    meta = store.describe(kv.checkpoint(store.path_for(7)), 3, MEMBERS)
    kv.close()
    return store, meta


def _damage(meta) -> tuple[str, int]:
    """Flip a byte in the middle of the largest file (a new inode: the live DB keeps its own);
    return its name and the stream offset of its last byte."""
    files = CheckpointManifest.from_bytes(meta.manifest).files
    big = max(files, key=lambda f: f.size)
    path = Path(meta.path) / big.name
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.unlink()
    path.write_bytes(bytes(raw))
    end = next(e for s, e, n in meta._layout if n == big.name)
    return big.name, end - 1


def _stream(store, meta, start: int, chunk: int) -> int:
    """Read and check the stream from ``start``; return how far it got."""
    check = StreamCheck(meta)
    offset = start
    while offset < meta.size:
        data = store.read(meta, offset, chunk)
        check.check(offset, data)
        offset += len(data)
    return offset


@pytest.mark.parametrize("chunk", [97, 4096, 1 << 20])
def test_a_sound_checkpoint_streams_whole(tmp_path, chunk):
    store, meta = _taken(tmp_path)
    assert store.check_sizes(meta) == meta.path
    assert _stream(store, meta, 0, chunk) == meta.size


@pytest.mark.parametrize("chunk", [97, 4096, 1 << 20])
def test_a_damaged_file_is_caught_before_its_last_chunk_goes_out(tmp_path, chunk):
    store, meta = _taken(tmp_path)
    name, last = _damage(meta)
    assert store.check_sizes(meta) == meta.path  # same size: only the sums tell
    check = StreamCheck(meta)
    offset = 0
    with pytest.raises(CheckpointError, match=f"corrupt: {name} does not match"):
        while offset < meta.size:
            data = store.read(meta, offset, chunk)
            check.check(offset, data)
            offset += len(data)  # "sent"
    assert offset <= last < offset + len(data)  # the refused chunk held the file's last byte


def test_a_resumed_stream_checks_what_it_skipped(tmp_path):
    store, meta = _taken(tmp_path)
    _name, last = _damage(meta)
    with pytest.raises(CheckpointError):
        _stream(store, meta, last + 1 - 10, 4096)  # resumed after the damaged byte


def test_a_resent_chunk_is_not_summed_twice(tmp_path):
    store, meta = _taken(tmp_path)
    check = StreamCheck(meta)
    half = meta.size // 2
    check.check(0, store.read(meta, 0, half))
    check.check(100, store.read(meta, 100, half - 100))  # a rewind
    check.check(half, store.read(meta, half, meta.size - half))
    assert check.upto == meta.size


def test_a_truncated_file_fails_the_size_check(tmp_path):
    store, meta = _taken(tmp_path)
    name = max(CheckpointManifest.from_bytes(meta.manifest).files, key=lambda f: f.size).name
    path = Path(meta.path) / name
    data = path.read_bytes()
    path.unlink()
    path.write_bytes(data[:-1])
    with pytest.raises(CheckpointError, match=f"{name} has"):
        store.check_sizes(meta)
