"""Summing the live key-value DB's SST files in the background, so that a snapshot need not.

A snapshot's manifest holds each checkpoint file's CRC-32 (storage/kv_checkpoint.py). A
checkpoint hard-links the live DB's SST files, so a CRC-32 known for a live file (same inode and
size and time: :func:`~.kv_checkpoint.file_key`) is that checkpoint file's too. Files a previous
checkpoint shares are carried over from its manifest; the ones compactions wrote since are
summed here, a few seconds after they appear, on a low-priority thread (reads and zlib.crc32
release the GIL), so that describing a snapshot reads only what its own flush wrote.

Only files RocksDB lists as live (whole, part of the current version) with the size it records
are summed: a compaction output still being written is not. A CRC-32 computed here is what a
describe would have computed from the same inode: the same guarantee (a file damaged later is
caught when it is streamed or restored: StreamCheck, CheckpointStore.open_verified).
"""
from __future__ import annotations

import logging
import os
import threading
import zlib
from typing import Callable, Optional

from .kv_checkpoint import CHUNK_SIZE, file_key, reusable
from .periodic import PeriodicScan

log = logging.getLogger("storage.snapshot")

SCAN_EVERY = 3.0  # seconds between looks at the live DB's files
NICE = 10  # the summing thread's nice increment (Linux sets it per thread)


def sum_file(path: str, size: int, stop: Optional[threading.Event] = None,
             prefix: Optional[Callable[[int, os.stat_result], tuple[int, int]]] = None) -> Optional[tuple]:
    """(:func:`~.kv_checkpoint.file_key`, CRC-32) of the file at ``path``, keyed by the file
    actually opened (not a second lookup of the name); None if it is not ``size`` bytes long,
    changed while read, or ``stop`` is set meanwhile. ``prefix(fd, stat)`` may give (offset,
    CRC-32 of the bytes before it) known already, so that only the rest is read."""
    crc, got = 0, 0
    buf = bytearray(CHUNK_SIZE)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        st = os.fstat(f.fileno())
        key = file_key(st)
        if key[2] != size:
            return None
        if prefix is not None:
            got, crc = prefix(f.fileno(), st)
            f.seek(got)
        while True:
            n = f.readinto(buf)
            if not n:
                break
            crc = zlib.crc32(view[:n], crc)
            got += n
            if stop is not None and stop.is_set():
                return None
        if got != size or file_key(os.fstat(f.fileno())) != key:
            return None
    return key, crc


class CrcWarmer(PeriodicScan):
    """Keeps :meth:`known` (file key -> CRC-32) up to date for the SST files of the live DB in
    ``live_dir``, on a low-priority thread (:meth:`start`, :meth:`stop`); ``list_files()`` gives
    RocksDB's live files as (name, size) (may raise while the store is closed or swapped: that
    round is skipped); ``seed()`` gives CRC-32s known already (the described checkpoints'
    manifests), which are not summed again."""

    def __init__(self, live_dir: str, list_files: Callable[[], list], seed: Callable[[], dict],
                 every: float = SCAN_EVERY) -> None:
        super().__init__("kv-crc", every, NICE)
        self.live_dir = live_dir
        self._list_files = list_files
        self._seed = seed
        self._known: dict = {}

    def known(self) -> dict:
        """The CRC-32s summed so far (a dict replaced whole: safe to read from any thread)."""
        return self._known

    def scan_once(self) -> int:
        """Sum the live SST files not known yet; returns how many were summed."""
        try:
            files = self._list_files()
        except Exception:  # rocksdict raises a bare Exception on a closed DB (a swap going on)
            return 0
        old, seed = self._known, None
        new: dict = {}
        summed = 0
        for name, size in files:
            name = name.lstrip("/")
            if not reusable(name):
                continue
            path = os.path.join(self.live_dir, name)
            try:
                st = os.stat(path)
            except OSError:
                continue  # compacted away meanwhile
            if st.st_size != size:
                continue
            key = file_key(st)
            crc = old.get(key)
            if crc is None:
                if seed is None:
                    seed = self._seed()
                crc = seed.get(key)
            if crc is None:
                try:
                    got = sum_file(path, size, self._stop)
                except OSError:
                    got = None
                if got is None:
                    if self._stop.is_set():
                        break
                    continue
                key, crc = got
                summed += 1
            new[key] = crc
        self._known = new
        return summed


class WalSums:
    """Running CRC-32s of the growing WAL files of the live DB in ``live_dir``, so that a
    checkpoint linking one (storage/kv_live_checkpoint.py) reads only what was appended since the
    last look, not up to a whole memtable's WAL: at 10M keys, 40 MB of WAL took 90-120 ms to sum
    on a busy machine, all of a snapshot's time once its fsync was short (storage/writeback.py).
    :meth:`advance` is called as a file grows (by the writeback thread, a megabyte at a time);
    :meth:`prefix` by the checkpoint's summing. A WAL file is only ever appended to (RocksDB
    recycles none: storage/kv_db.py), so a CRC of its first N bytes stays right. A file is known
    by its inode and the CRC-32 of its first page, so that a new WAL given a deleted one's inode
    number (ext4 reuses them at once) is not taken for it: its first record's sequence number
    differs."""

    HEAD = 4096  # bytes whose CRC-32 tells two files that shared an inode number apart

    def __init__(self, live_dir: str) -> None:
        self.live_dir = os.path.abspath(live_dir)
        self._lock = threading.Lock()
        # (st_dev, st_ino) -> (path, CRC-32 of the first HEAD bytes, offset, CRC-32 up to offset)
        self._running: dict[tuple[int, int], tuple[str, int, int, int]] = {}

    def advance(self, path: str) -> None:
        """Sum what was appended to the WAL file at ``path`` since the last call (other files
        are ignored), and forget the files that are gone."""
        if not path.endswith(".log") or os.path.dirname(os.path.abspath(path)) != self.live_dir:
            return
        try:
            with open(path, "rb", buffering=0) as f:
                st = os.fstat(f.fileno())
                ident = (st.st_dev, st.st_ino)
                head = self._head(f.fileno())
                if head is None:
                    return
                offset, crc = self._known(ident, head, st.st_size)
                f.seek(offset)
                buf = bytearray(CHUNK_SIZE)
                view = memoryview(buf)
                while offset < st.st_size:  # only what was there at the fstat: whole records
                    n = f.readinto(view[:min(CHUNK_SIZE, st.st_size - offset)])
                    if not n:
                        return  # shorter than its fstat said: not a file that only grows
                    crc = zlib.crc32(view[:n], crc)
                    offset += n
        except OSError:
            return  # deleted meanwhile (its memtable was flushed)
        with self._lock:
            for other, rec in list(self._running.items()):
                if other != ident and not os.path.exists(rec[0]):
                    del self._running[other]
            self._running[ident] = (path, head, offset, crc)

    def prefix(self, fd: int, st: os.stat_result) -> tuple[int, int]:
        """(offset, CRC-32 of the bytes before it) known for the open file ``fd`` (``st``: its
        fstat); (0, 0) if nothing is known of it."""
        head = self._head(fd)
        return (0, 0) if head is None else self._known((st.st_dev, st.st_ino), head, st.st_size)

    def clear(self) -> None:
        """Forget every running sum (the DB was replaced by an install)."""
        with self._lock:
            self._running.clear()

    def _known(self, ident: tuple[int, int], head: int, size: int) -> tuple[int, int]:
        with self._lock:
            rec = self._running.get(ident)
        if rec is None or rec[1] != head or rec[2] > size:
            return 0, 0
        return rec[2], rec[3]

    def _head(self, fd: int) -> Optional[int]:
        data = os.pread(fd, self.HEAD, 0)
        return zlib.crc32(data) if len(data) == self.HEAD else None
