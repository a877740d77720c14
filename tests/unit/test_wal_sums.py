"""Running CRC-32s of the growing WAL files (storage/crc_warmer.py WalSums): a checkpoint's sum
reads on from them, and is the whole file's CRC-32 whatever happened to the file meanwhile."""
from __future__ import annotations

import os
import zlib

from raftkv.storage.crc_warmer import WalSums, sum_file
from raftkv.storage.kv_checkpoint import build_manifest, finish_checkpoint
from raftkv.storage.kv_store import KvStore, Put

MB = 1 << 20


def _append(path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def _crc(path) -> int:
    with open(path, "rb") as f:
        return zlib.crc32(f.read())


def _summed(path, sums: WalSums, seen: list):
    """sum_file with the running sums, recording the prefix each call was given."""
    def prefix(fd, st):
        got = sums.prefix(fd, st)
        seen.append(got)
        return got
    return sum_file(str(path), os.path.getsize(path), prefix=prefix)


def test_a_sum_reads_on_from_the_running_one_and_equals_the_whole_files(tmp_path):
    wal = tmp_path / "000042.log"
    sums = WalSums(str(tmp_path))
    _append(wal, os.urandom(MB + 123))
    sums.advance(str(wal))
    _append(wal, os.urandom(MB))
    sums.advance(str(wal))
    _append(wal, os.urandom(1000))  # the tail the writeback has not reached yet
    seen: list = []
    key, crc = _summed(wal, sums, seen)
    assert crc == _crc(wal)
    assert seen[0][0] == 2 * MB + 123  # only the last 1,000 bytes were read
    assert key[1] == os.stat(wal).st_ino


def test_a_new_file_on_a_reused_inode_is_summed_from_its_start(tmp_path):
    # ext4 hands a deleted WAL's inode number to the next file at once. Same inode, other bytes:
    # rewriting the first page in place stands for it.
    wal = tmp_path / "000043.log"
    sums = WalSums(str(tmp_path))
    _append(wal, os.urandom(2 * MB))
    sums.advance(str(wal))
    fd = os.open(wal, os.O_WRONLY)
    try:
        os.pwrite(fd, os.urandom(WalSums.HEAD), 0)
    finally:
        os.close(fd)
    seen: list = []
    assert _summed(wal, sums, seen)[1] == _crc(wal)
    assert seen == [(0, 0)]


def test_a_file_shorter_than_its_running_sum_is_summed_from_its_start(tmp_path):
    wal = tmp_path / "000044.log"
    sums = WalSums(str(tmp_path))
    _append(wal, os.urandom(2 * MB))
    sums.advance(str(wal))
    os.truncate(wal, MB)
    seen: list = []
    assert _summed(wal, sums, seen)[1] == _crc(wal)
    assert seen == [(0, 0)]


def test_other_files_are_ignored_and_gone_ones_forgotten(tmp_path):
    sums = WalSums(str(tmp_path / "kv"))
    os.mkdir(tmp_path / "kv")
    os.mkdir(tmp_path / "raft")
    for path in (tmp_path / "kv" / "000007.sst", tmp_path / "raft" / "000008.log"):
        _append(path, os.urandom(2 * MB))
        sums.advance(str(path))
    assert sums._running == {}
    old, new = tmp_path / "kv" / "000009.log", tmp_path / "kv" / "000010.log"
    _append(old, os.urandom(2 * MB))
    sums.advance(str(old))
    os.unlink(old)  # its memtable was flushed
    _append(new, os.urandom(2 * MB))
    sums.advance(str(new))
    assert [rec[0] for rec in sums._running.values()] == [str(new)]


def test_a_checkpoint_of_the_store_sums_only_what_its_wal_grew_by_since(tmp_path, monkeypatch):
    store = KvStore(str(tmp_path / "kv"))
    seen: list = []
    real = store.wal_sums.prefix

    def prefix(fd, st):
        got = real(fd, st)
        seen.append((got[0], st.st_size))
        return got

    monkeypatch.setattr(store.wal_sums, "prefix", prefix)
    try:
        index = 0
        for i in range(0, 40_000, 1_000):
            index += 1
            store.apply_batch([Put(f"k{j:09d}", b"v" * 100) for j in range(i, i + 1_000)], index)
            if i == 30_000:  # what the writeback thread does as the WAL grows
                for name in os.listdir(store.path):
                    store.wal_sums.advance(os.path.join(store.path, name))
        pending = store.begin_checkpoint(str(tmp_path / "snaps" / "ckpt"))
        finish_checkpoint(pending)
        assert len(seen) == 1 and 0 < seen[0][0] < seen[0][1]  # read on from the running sum
        # ... and the CRC-32 it recorded is the file's: the manifest built by reading every file agrees
        assert build_manifest(pending.path, summed=pending.crcs) == build_manifest(pending.path)
    finally:
        store.close()
