"""The DB files are written back as they grow (storage/writeback.py): which files, which ranges."""
from __future__ import annotations

import os

import pytest

from raftkv.storage import writeback
from raftkv.storage.kv_store import KvStore, Put
from raftkv.storage.writeback import CHUNK, Writeback

MB = 1 << 20


@pytest.fixture
def calls(monkeypatch):
    """The writeback ranges asked for, as (file name, offset, length)."""
    got: list = []

    def fake(fd: int, offset: int, length: int, flags: int) -> int:
        assert flags == writeback.SYNC_FILE_RANGE_WRITE  # start it, never wait for the disk
        got.append((os.path.basename(os.readlink(f"/proc/self/fd/{fd}")), offset, length))
        return 0

    monkeypatch.setattr(writeback, "_sync_file_range", fake)
    return got


def _grow(path, n: int) -> None:
    with open(path, "ab") as f:
        f.write(b"x" * n)


def test_a_growing_wal_is_written_back_a_chunk_at_a_time_in_whole_pages(tmp_path, calls):
    wal = tmp_path / "000012.log"
    w = Writeback([str(tmp_path)])
    _grow(wal, CHUNK // 2)
    assert w.scan_once() == 0 and calls == []  # less than a chunk: left to the kernel for now
    _grow(wal, 2 * CHUNK + 100)  # 2.5 chunks and 100 bytes: the page being appended to is left
    assert w.scan_once() == 1
    assert calls == [("000012.log", 0, (5 * CHUNK // 2 + 100) // 4096 * 4096)]
    end = calls[-1][1] + calls[-1][2]
    assert w.scan_once() == 0  # nothing new
    _grow(wal, CHUNK)
    assert w.scan_once() == 1
    assert calls[-1][1] == end  # on from where the last one ended, nothing written back twice
    assert (calls[-1][1] + calls[-1][2]) % 4096 == 0


def test_only_wal_and_table_files_are_written_back(tmp_path, calls):
    for name in ("000007.sst", "000008.log", "MANIFEST-000005", "LOG", "OPTIONS-000009", "CURRENT"):
        _grow(tmp_path / name, 2 * MB)
    assert Writeback([str(tmp_path)]).scan_once() == 2
    assert sorted(c[0] for c in calls) == ["000007.sst", "000008.log"]


def test_a_file_replaced_under_its_name_is_written_back_from_its_start(tmp_path, calls):
    # A follower's snapshot install swaps the whole DB directory: names come back, inodes do not.
    sst = tmp_path / "000020.sst"
    _grow(sst, 3 * MB)
    w = Writeback([str(tmp_path)])
    w.scan_once()
    os.unlink(sst)
    _grow(sst, 2 * MB)
    assert w.scan_once() == 1
    assert calls[-1] == ("000020.sst", 0, 2 * MB)


def test_directories_that_are_missing_are_skipped(tmp_path, calls):
    _grow(tmp_path / "000001.log", 2 * MB)
    w = Writeback([str(tmp_path / "not-yet"), str(tmp_path)])
    assert w.scan_once() == 1


def test_the_key_value_dbs_unsynced_wal_is_written_back(tmp_path):
    # The real system call, on the files RocksDB really writes (its WAL is NNNNNN.log).
    store = KvStore(str(tmp_path / "kv"))
    try:
        store.apply_batch([Put(f"k{i:08d}", b"v" * 100) for i in range(30_000)], applied_index=1)
        wals = [n for n in os.listdir(store.path) if n.endswith(".log")]
        assert wals and max(os.path.getsize(os.path.join(store.path, n)) for n in wals) > 2 * MB
        w = Writeback([store.path])
        assert w.scan_once() >= 1
        assert w.scan_once() == 0
    finally:
        store.close()


def test_the_thread_starts_and_stops(tmp_path):
    w = Writeback([str(tmp_path)], every=0.01)
    w.start()
    w.stop()
    assert w._thread is None
