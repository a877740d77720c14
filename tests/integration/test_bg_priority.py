"""A kvnode runs RocksDB's flushes and compactions at the lowest CPU priority
(storage/bg_priority.py), and its own threads at the priority it was started with."""
from __future__ import annotations

import os

import pytest

from raftkv.storage.bg_priority import NICE
from raftkv.storage.crc_warmer import NICE as CRC_NICE

pytestmark = pytest.mark.integration


def _threads(pid: int) -> list:
    out = []
    for name in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{name}/comm") as f:
                out.append((f.read().strip(), os.getpriority(os.PRIO_PROCESS, int(name))))
        except OSError:
            pass  # ended meanwhile
    return out


def test_rocksdb_threads_of_a_node_run_at_the_lowest_priority(make_cluster):
    cluster = make_cluster(3)
    leader = cluster.wait_leader()
    with cluster.client() as kv:
        kv.put("k", b"v")
    pid = cluster.nodes[leader].proc.pid
    own = os.getpriority(os.PRIO_PROCESS, pid)
    threads = _threads(pid)
    rocks = [nice for name, nice in threads if name.startswith("rocksdb:")]
    assert rocks and all(n == max(NICE, own) for n in rocks), threads
    others = [nice for name, nice in threads if not name.startswith("rocksdb:")]
    # but one: the background CRC-32s of new SST files (storage/crc_warmer.py) set their own
    lowered = [n for n in others if n != own]
    assert len(others) > 1 and lowered in ([], [CRC_NICE]), threads
