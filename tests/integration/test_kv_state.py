"""The key-value state on RocksDB, on real processes: a kill -9 during writes loses no
acknowledged write and the restart replays only the log after the DB's applied index; a
follower brought up to date by a checkpoint snapshot holds exactly what the others hold."""
from __future__ import annotations

import re
import signal
import threading

import pytest

from raftkv.wire.client import Client, ClientError

from .harness import wait_until

pytestmark = pytest.mark.integration

SMALL = {"snapshot_threshold": 2000, "trailing_logs": 500}


def _opened_at(text: str) -> list[int]:
    return [int(m) for m in re.findall(r"opened the key-value store at applied index (\d+)", text)]


def test_kill_9_during_writes_restarts_from_the_db_and_keeps_every_acknowledged_write(make_cluster):
    cluster = make_cluster(3, raft=SMALL)
    leader = cluster.wait_leader()
    victim = next(n for n in cluster.nodes if n != leader)
    acked: set[str] = set()
    stop = threading.Event()

    def write(t: int) -> None:
        with cluster.client(timeout=30) as kv:
            i = 0
            while not stop.is_set():
                key = f"w{t:02d}-{i:06d}"
                try:
                    kv.put(key, key.encode())
                except ClientError:
                    continue  # not acknowledged: may or may not be there
                acked.add(key)
                i += 1

    writers = [threading.Thread(target=write, args=(t,)) for t in range(8)]
    for w in writers:
        w.start()
    wait_until(lambda: len(acked) >= 5000, timeout=60, what="5000 acknowledged writes")
    cluster.nodes[victim].kill(signal.SIGKILL)  # in the middle of the writes
    wait_until(lambda: len(acked) >= 7000, timeout=60, what="more writes without the victim")
    stop.set()
    for w in writers:
        w.join()
    commit = cluster.nodes[cluster.leader()].status()["commit_index"]
    node = cluster.nodes[victim]
    node.start()
    wait_until(lambda: node.status()["applied_index"] >= commit, timeout=60, what="the victim catching up")
    opened = _opened_at(node.log_text())
    assert len(opened) == 2, opened
    # The restart started from the DB's own applied index, not from zero nor from a snapshot
    # read back: only the log after it was replayed.
    assert opened[1] >= 4000, opened
    with Client([node.client], timeout=10) as c:
        held = {k for k, _ in c.list("w", consistency="stale")}
    assert acked <= held, f"{len(acked - held)} acknowledged writes missing"


def test_a_follower_installing_a_checkpoint_ends_with_identical_contents(make_cluster):
    cluster = make_cluster(3, raft=SMALL)
    leader = cluster.wait_leader()
    lagger = next(n for n in cluster.nodes if n != leader)
    cluster.nodes[lagger].kill(signal.SIGKILL)
    with cluster.client(timeout=30) as kv:
        kv.put_many((f"c{i:06d}", f"v{i}".encode()) for i in range(6000))
        for i in range(0, 6000, 7):
            kv.delete(f"c{i:06d}")
        kv.put_many((f"c{i:06d}", b"again") for i in range(0, 6000, 5))
    commit = cluster.nodes[cluster.leader()].status()["commit_index"]
    cluster.nodes[lagger].start()
    cluster.wait_applied(commit, nodes=[lagger], timeout=60)
    text = cluster.nodes[lagger].log_text()
    assert "received snapshot" in text and "installed snapshot" in text
    cluster.wait_applied(commit, timeout=60)
    contents = {}
    for nid, n in cluster.nodes.items():
        with Client([n.client], timeout=10) as c:
            contents[nid] = c.list("c", consistency="stale")
    first = contents[leader]
    assert len(first) == 6000 - len(range(0, 6000, 7)) + len([i for i in range(0, 6000, 5) if i % 7 == 0])
    for nid, items in contents.items():
        assert items == first, nid
