"""Handing memory the process has freed back to the operating system (glibc's malloc_trim).

RocksDB allocates each memtable in blocks of a few MB with malloc and frees them when the
memtable is flushed; glibc keeps such freed blocks in its arenas (one per thread that allocated,
above its dynamic mmap threshold) instead of returning them, so a node's RSS keeps the peak of
every memtable it ever flushed on top of what it uses. Measured on a 1M-key write run: RSS 120 MB
after the flush, 61 MB after ``malloc_trim(0)`` (docs/performance.md, "Node memory").

Called after a snapshot (its checkpoint just flushed the memtable, and the Raft log below it is
about to be dropped). Without glibc (musl, macOS) this does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from typing import Callable, Optional

log = logging.getLogger("storage.memory")

_trim: Optional[Callable[[int], int]] = None
_looked_up = False


def _malloc_trim() -> Optional[Callable[[int], int]]:
    global _trim, _looked_up
    if not _looked_up:
        _looked_up = True
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _trim = libc.malloc_trim
            _trim.argtypes = [ctypes.c_size_t]
            _trim.restype = ctypes.c_int
        except (OSError, AttributeError):  # not glibc: nothing to trim
            _trim = None
    return _trim


def rss_bytes() -> int:
    """This process's resident set size (0 where /proc is not there)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def release_free_memory() -> int:
    """Return the C heap's free pages to the OS; the bytes of RSS this gave back (0: none, or
    not glibc). Takes a few milliseconds: call it off the write path."""
    trim = _malloc_trim()
    if trim is None:
        return 0
    before = rss_bytes()
    trim(0)
    freed = max(0, before - rss_bytes())
    log.debug("malloc_trim returned %d MB to the OS", freed >> 20)
    return freed
