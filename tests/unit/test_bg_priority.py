"""storage/bg_priority.py: RocksDB's background threads reniced, the others left alone."""
from __future__ import annotations

import os
import threading

from raftkv.storage.bg_priority import RocksThreadPriority
from raftkv.storage.kv_store import KvStore, Put


def _threads() -> dict:
    """tid -> (name, nice) of this process's threads."""
    out = {}
    for name in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{name}/comm") as f:
                comm = f.read().strip()
            out[int(name)] = (comm, os.getpriority(os.PRIO_PROCESS, int(name)))
        except OSError:
            pass
    return out


def test_rocksdb_threads_are_reniced_and_no_other(tmp_path):
    kv = KvStore(str(tmp_path / "kv"))
    try:
        kv.apply_batch([Put("k%d" % i, b"v" * 100) for i in range(1000)], 1)  # RocksDB's pools start with the DB
        before = _threads()
        base = before[threading.get_native_id()][1]
        rocks = {t for t, (n, _) in before.items() if n.startswith("rocksdb:")}
        assert rocks, f"no RocksDB background thread found among {sorted(n for n, _ in before.values())}"
        # +1 only: this test process keeps the setting, and lowering it again needs privileges
        p = RocksThreadPriority(nice=base + 1)
        assert p.scan_once() == len(rocks)
        after = _threads()
        for t, (n, nice) in after.items():
            if t in rocks:
                assert nice == base + 1, (n, nice)
            elif t in before and not n.startswith("rocksdb:"):
                assert nice == before[t][1], (n, nice)
        assert p.scan_once() == 0, "a thread is reniced once"
    finally:
        kv.close()
