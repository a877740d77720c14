"""Memory freed by the C heap is handed back to the OS after a snapshot (glibc's malloc_trim)."""
from __future__ import annotations

import ctypes

from raftkv.storage.free_memory import release_free_memory, rss_bytes

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter


def test_freed_c_heap_blocks_go_back_to_the_os():
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    # As in a node once RocksDB has freed a few memtables: glibc's dynamic thresholds have grown,
    # and free() keeps what it frees in the heap.
    libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)
    try:
        blocks = []
        for _ in range(400):
            p = libc.malloc(100_000)
            libc.memset(p, 1, 100_000)
            blocks.append(p)
        for p in blocks:
            libc.free(p)
        before = rss_bytes()
        freed = release_free_memory()
        assert freed >= 20 << 20
        assert rss_bytes() <= before - (20 << 20)
    finally:
        libc.mallopt(M_TRIM_THRESHOLD, 128 << 10)  # glibc's default
