"""SnapshotStore: atomic, checksummed snapshot files; corrupt ones are detected and skipped."""
from __future__ import annotations

import logging
import os

import pytest

from raftkv.storage import snapshot_store
from raftkv.storage.snapshot_store import CorruptSnapshot, SnapshotStore
from raftkv.wire.messages import Member

MEMBERS = [
    Member("n1", "127.0.0.1:9001", "127.0.0.1:5001"),
    Member("n2", "127.0.0.1:9002", voter=False),
]


def _body(index: int) -> list[bytes]:
    return [b"state-%d-" % index, os.urandom(3000), b"end"]


def _flip_byte(path: str, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


def test_save_list_and_read_back(tmp_path):
    store = SnapshotStore(str(tmp_path))
    body = _body(10)
    path = store.save(10, 2, MEMBERS, iter(body))
    assert os.path.basename(path) == "snap-00000000000000000010-2.snap"
    (meta,) = store.list()
    assert (meta.path, meta.last_index, meta.last_term) == (path, 10, 2)
    assert meta.members == MEMBERS
    assert meta.size == sum(len(c) for c in body)
    assert b"".join(store.open_verified(meta)) == b"".join(body)


def test_streaming_body_larger_than_a_read_chunk(tmp_path, monkeypatch):
    monkeypatch.setattr(snapshot_store, "CHUNK_SIZE", 1000)
    store = SnapshotStore(str(tmp_path))
    chunks = [os.urandom(777) for _ in range(20)]
    store.save(3, 1, MEMBERS, (c for c in chunks))  # a generator: consumed once, as it comes
    meta, reader = store.newest_valid()
    out = list(reader)
    assert max(len(c) for c in out) <= 1000
    assert b"".join(out) == b"".join(chunks)


def test_keep_newest_three(tmp_path):
    store = SnapshotStore(str(tmp_path), keep=3)
    for index in (5, 10, 15, 20, 25):
        store.save(index, 1, MEMBERS, _body(index))
    assert [m.last_index for m in store.list()] == [25, 20, 15]
    assert sorted(os.listdir(tmp_path)) == [
        "snap-00000000000000000015-1.snap",
        "snap-00000000000000000020-1.snap",
        "snap-00000000000000000025-1.snap",
    ]


def test_newest_first_orders_by_index_not_by_save_order(tmp_path):
    store = SnapshotStore(str(tmp_path), keep=5)
    for index in (100, 9, 1000):
        store.save(index, 1, MEMBERS, _body(index))
    assert [m.last_index for m in store.list()] == [1000, 100, 9]


def test_corrupt_newest_body_falls_back(tmp_path, caplog):
    store = SnapshotStore(str(tmp_path))
    old_body = _body(10)
    store.save(10, 1, MEMBERS, old_body)
    newest = store.save(20, 2, MEMBERS, _body(20))
    meta = store.list()[0]
    _flip_byte(newest, meta.body_offset + 100)

    with pytest.raises(CorruptSnapshot, match="checksum"):
        store.open_verified(meta)
    with caplog.at_level(logging.WARNING, logger="storage.snapshot"):
        found = store.newest_valid()
    assert found is not None
    meta, reader = found
    assert meta.last_index == 10
    assert b"".join(reader) == b"".join(old_body)
    warnings = [
        r for r in caplog.records if r.name == "storage.snapshot" and r.levelno == logging.WARNING
    ]
    assert len(warnings) == 1 and "snap-00000000000000000020-2.snap" in warnings[0].getMessage()


def test_corrupt_header_is_skipped(tmp_path, caplog):
    store = SnapshotStore(str(tmp_path))
    store.save(10, 1, MEMBERS, _body(10))
    newest = store.save(20, 2, MEMBERS, _body(20))
    _flip_byte(newest, 14)  # inside last_index
    with caplog.at_level(logging.WARNING, logger="storage.snapshot"):
        assert [m.last_index for m in store.list()] == [10]
        meta, _ = store.newest_valid()
    assert meta.last_index == 10
    assert any("header checksum" in r.getMessage() for r in caplog.records)


def test_truncated_file_detected(tmp_path):
    store = SnapshotStore(str(tmp_path))
    path = store.save(10, 1, MEMBERS, _body(10))
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 5)
    assert store.list() == []
    assert store.newest_valid() is None


def test_no_snapshot(tmp_path):
    store = SnapshotStore(str(tmp_path / "snaps"))
    assert store.list() == []
    assert store.newest_valid() is None


def test_failed_save_leaves_no_temp_file(tmp_path):
    store = SnapshotStore(str(tmp_path))

    def broken():
        yield b"first part"
        raise RuntimeError("serialiser failed")

    with pytest.raises(RuntimeError):
        store.save(10, 1, MEMBERS, broken())
    assert os.listdir(tmp_path) == []


def test_leftover_temp_file_ignored_and_removed(tmp_path):
    store = SnapshotStore(str(tmp_path))
    store.save(10, 1, MEMBERS, _body(10))
    # a save that crashed before its rename: a half-written temp file
    leftover = tmp_path / "snap-abc123.tmp"
    leftover.write_bytes(b"RKVSNAP\0 half written")
    assert [m.last_index for m in store.list()] == [10]
    assert store.newest_valid()[0].last_index == 10

    reopened = SnapshotStore(str(tmp_path))
    assert not leftover.exists()
    assert [m.last_index for m in reopened.list()] == [10]


def test_save_fsyncs_file_then_renames_then_fsyncs_directory(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        kind = "dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "file"
        events.append(("fsync", kind))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("rename", os.path.basename(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(snapshot_store.os, "fsync", fsync)
    monkeypatch.setattr(snapshot_store.os, "replace", replace)
    store = SnapshotStore(str(tmp_path))
    store.save(7, 3, MEMBERS, _body(7))
    assert events == [
        ("fsync", "file"),
        ("rename", "snap-00000000000000000007-3.snap"),
        ("fsync", "dir"),
    ]


def test_members_written_with_appended_fields_are_read(tmp_path, monkeypatch):
    # a newer build may append a field to each member (and to the record): this one reads the rest
    import msgpack

    from raftkv.storage import format as disk

    def newer(members):
        return msgpack.packb([31, [[list(m) + ["zone-a"] for m in members], "extra"]], use_bin_type=True)

    monkeypatch.setattr(snapshot_store, "encode_members", newer)
    store = SnapshotStore(str(tmp_path))
    store.save(10, 2, MEMBERS, iter(_body(10)))
    monkeypatch.setattr(snapshot_store, "encode_members", disk.encode_members)
    (meta,) = SnapshotStore(str(tmp_path)).list()
    assert meta.members == MEMBERS


def test_unknown_snapshot_format_version_is_skipped(tmp_path, caplog):
    store = SnapshotStore(str(tmp_path))
    path = store.save(10, 2, MEMBERS, iter(_body(10)))
    _flip_byte(path, 8 + 3)  # the low byte of the version: 1 -> 254
    with caplog.at_level(logging.WARNING):
        assert store.list() == []
    assert "format version 254, this build reads 1" in caplog.text
