"""RocksDB's background threads (memtable flushes, compactions) at the lowest CPU priority.

A snapshot switches the state DB's memtable, and RocksDB flushes the old one at once: at 400k
keys that flush spent ~200 ms of CPU building and compressing an SST file, while the node's
Python threads (the writes' path) waited for a core on a small machine (issue 12: write p99
during the leader's snapshot ~1.6-2x the p99 without; ~1.1x with these threads at nice 19,
docs/performance.md). RocksDB's own ``Env::LowerThreadPoolCPUPriority`` does this, but rocksdict
does not expose it, so the threads are found by the names RocksDB gives them (``rocksdb:low``,
``rocksdb:high``) and reniced one by one (Linux sets a nice value per thread).

A flush or compaction still runs whenever a core is free. Under a load that keeps every core
busy it may fall behind; RocksDB then slows the writes until it catches up (the DB's write stall),
which frees the cores it needs: throughput under such load is measured beside the stall.
"""
from __future__ import annotations

import logging
import os

from .periodic import PeriodicScan

log = logging.getLogger("storage")

NICE = 19  # the lowest priority (the CFS weight of nice 19 is 15 against 1024 at nice 0)
EVERY = 5.0  # seconds between looks for threads RocksDB starts later (its pools grow on demand)
_TASKS = "/proc/self/task"
_PREFIX = "rocksdb:"


class RocksThreadPriority(PeriodicScan):
    """Renices every RocksDB background thread of this process to ``nice``: at :meth:`start`
    and every ``every`` seconds, for the threads started since. Nothing on a system without
    ``/proc/self/task`` (not Linux)."""

    def __init__(self, nice: int = NICE, every: float = EVERY) -> None:
        super().__init__("rocksdb-nice", every)
        self.nice = nice
        self._done: set[int] = set()

    def start(self) -> None:
        """Renice the threads there are now, then keep looking on a daemon thread."""
        if not os.path.isdir(_TASKS) or not self.nice:
            return
        self.scan_once()
        super().start()

    def scan_once(self) -> int:
        """Renice the RocksDB threads not reniced yet; returns how many it reniced."""
        done = self._done
        alive = set()
        count = 0
        for name in os.listdir(_TASKS):
            tid = int(name)
            alive.add(tid)
            if tid in done:
                continue
            try:
                with open(f"{_TASKS}/{name}/comm") as f:
                    comm = f.read().strip()
            except OSError:
                continue  # ended meanwhile
            if not comm.startswith(_PREFIX):
                continue
            try:
                os.setpriority(os.PRIO_PROCESS, tid, self.nice)
            except OSError as e:  # ended meanwhile; or a system that refuses it: keep running as is
                log.debug("renice %s (%d): %s", comm, tid, e)
                continue
            done.add(tid)
            count += 1
        done &= alive  # thread ids are reused
        return count
