"""Writing RocksDB's files back to the disk as they grow, so that no fsync finds megabytes to write.

RocksDB has options for this (``bytes_per_sync``, ``wal_bytes_per_sync``), but the RocksDB that
rocksdict bundles is built without ``sync_file_range``: the options are accepted, written to the
OPTIONS file, and do nothing (strace shows no such call). So the pages of the key-value DB's
unsynced WAL, and of every SST a flush or compaction writes, stay dirty in the page cache until
Linux writes them back by itself (after 30 s, or at 10 % of the RAM dirty) or until an fsync
writes them all at once: the snapshot's fsync of the WAL file it links (~1.4 ms per MB, up to a
whole 64 MB memtable) or the one ending a flush or compaction. The Raft log's fsyncs, which
acknowledge writes, queue behind that burst on the disk; that is where the write p99 during a
snapshot went (docs/performance.md, "Writing back as the files grow").

:class:`Writeback` asks the kernel, from a thread of its own, to start writing each ``.log`` and
``.sst`` file of the given directories once it has grown by :data:`CHUNK` bytes
(``SYNC_FILE_RANGE_WRITE``: the call starts the writeback and does not wait for it, and ctypes
releases the GIL around it). The disk then sees the same bytes as a steady trickle instead of
bursts. Nothing here is needed for durability: every fsync RocksDB or the snapshot does stays.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from typing import Callable, Optional

from .periodic import PeriodicScan

log = logging.getLogger("storage.writeback")

EVERY = 0.1  # seconds between looks at the directories
CHUNK = 1 << 20  # bytes a file grows by before its writeback is started
_PAGE = 4096
_SUFFIXES = (".log", ".sst")  # the files that grow: WAL files and SST files being written
SYNC_FILE_RANGE_WRITE = 2  # <fcntl.h>: start writing the dirty pages, do not wait


def _load_sync_file_range() -> Optional[Callable[[int, int, int, int], int]]:
    """libc's ``sync_file_range`` (Linux only), or None where there is none."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fn = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_sync_file_range = _load_sync_file_range()


def start_writeback(path: str, offset: int, length: int) -> bool:
    """Start writing back ``length`` bytes of the file at ``path`` from ``offset`` (not waiting
    for the disk). False if the file is gone or the system has no ``sync_file_range``."""
    if _sync_file_range is None:
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False  # deleted meanwhile (a flushed WAL, a compaction's input)
    try:
        if _sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE) != 0:
            log.debug("sync_file_range(%s): %s", path, os.strerror(ctypes.get_errno()))
            return False
        return True
    finally:
        os.close(fd)


class Writeback(PeriodicScan):
    """A daemon thread that starts the writeback of the growing files in ``dirs`` every
    ``every`` seconds, a :data:`CHUNK` at a time, then calls ``on_grown(path)`` for each such
    file (the key-value store's WAL sums: storage/crc_warmer.py). :meth:`stop` ends it."""

    def __init__(self, dirs: list[str], every: float = EVERY, chunk: int = CHUNK,
                 on_grown: Optional[Callable[[str], None]] = None) -> None:
        super().__init__("kv-writeback", every)
        self.dirs = list(dirs)
        self._on_grown = on_grown
        self._chunk = chunk
        self._done: dict[tuple[str, int], int] = {}  # (path, inode) -> bytes written back

    @staticmethod
    def available() -> bool:
        """Whether this system has ``sync_file_range`` (Linux)."""
        return _sync_file_range is not None

    def start(self) -> None:
        """Start the thread; without ``sync_file_range`` there is nothing to do."""
        if not self.available():
            log.info("no sync_file_range on this system: the DB files are written back by the kernel alone")
            return
        super().start()

    def scan_once(self) -> int:
        """Start the writeback of every file grown by a chunk since the last look; returns how
        many files it started."""
        seen: dict[tuple[str, int], int] = {}
        started = 0
        for d in self.dirs:
            try:
                entries = list(os.scandir(d))
            except OSError:
                continue  # not made yet, or swapped by an install: the next look finds it
            for e in entries:
                if not e.name.endswith(_SUFFIXES):
                    continue
                try:
                    key = (e.path, e.inode())
                    size = e.stat().st_size
                except OSError:
                    continue
                done = self._done.get(key, 0)
                if size < done:
                    done = 0  # replaced (ext4 reuses inode numbers at once): our files only grow
                end = size - size % _PAGE  # whole pages: the last one is still being appended to
                if end - done >= self._chunk and start_writeback(e.path, done, end - done):
                    done = end
                    started += 1
                    if self._on_grown is not None:
                        self._on_grown(e.path)
                seen[key] = done
        self._done = seen  # files gone since the last look are forgotten
        return started
