"""The replicated core against three real kvnode processes (issue: replicated core)."""
from __future__ import annotations

import signal
import threading

import pytest

from raftkv.wire.client import Client, ClientError

from .harness import wait_until

pytestmark = pytest.mark.integration


def test_single_leader_is_elected(cluster):
    leader = cluster.wait_leader()
    # Every node agrees on the one leader, and exactly one node claims the role in that term.
    def agreed():
        st = cluster.statuses()
        return len(st) == 3 and {s["leader_id"] for s in st.values()} == {leader} and \
            [s["id"] for s in st.values() if s["state"] == "leader"] == [leader]
    wait_until(agreed, what="all nodes agreeing on one leader")


def test_1000_writes_visible_on_every_node(cluster):
    cluster.wait_leader()
    with cluster.client() as kv:
        for i in range(1000):
            kv.put(f"key{i:04d}", f"value{i}".encode())
        commit = kv.status(cluster.nodes[cluster.leader()].client)["commit_index"]
    cluster.wait_applied(commit)
    for n in cluster.nodes.values():
        with Client([n.client], timeout=5) as c:
            assert c.get("key0000", consistency="stale") == b"value0"
            assert c.get("key0999", consistency="stale") == b"value999"
            assert c.list("key", consistency="stale") == [(f"key{i:04d}", f"value{i}".encode()) for i in range(1000)]


def test_leader_kill_new_leader_writes_go_on_and_old_leader_catches_up(cluster):
    old = cluster.wait_leader()
    with cluster.client() as kv:
        kv.put("before", b"1")
        cluster.nodes[old].kill(signal.SIGKILL)
        others = [n for n in cluster.nodes if n != old]
        new = cluster.wait_leader(among=others)
        assert new != old
        kv.put("after", b"2")
        for i in range(100):
            kv.put(f"more{i}", b"x")
        assert kv.get("before") == b"1"
        commit = kv.status(cluster.nodes[new].client)["commit_index"]
    cluster.nodes[old].start()
    cluster.wait_applied(commit, nodes=[old])
    with Client([cluster.nodes[old].client], timeout=5) as c:
        assert c.get("after", consistency="stale") == b"2"
        assert c.get("more99", consistency="stale") == b"x"
        st = c.status(cluster.nodes[old].client)
        assert st["state"] == "follower" and st["leader_id"] == new


def test_whole_cluster_sigkilled_during_writes_keeps_every_acknowledged_write(cluster):
    cluster.wait_leader()
    acked: list = []
    stop = threading.Event()

    def writer(w: int) -> None:
        with cluster.client(timeout=2) as kv:
            i = 0
            while not stop.is_set():
                key = f"w{w}-{i}"
                try:
                    kv.put(key, key.encode())
                    acked.append(key)
                except ClientError:
                    pass
                i += 1

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    wait_until(lambda: len(acked) >= 300, timeout=30, what="300 acknowledged writes")
    for n in cluster.nodes.values():
        n.kill(signal.SIGKILL)
    stop.set()
    for t in threads:
        t.join()
    snapshot = list(acked)
    cluster.start()
    cluster.wait_leader()
    with cluster.client(timeout=10) as kv:
        got = dict(kv.list("w"))
        missing = [k for k in snapshot if got.get(k) != k.encode()]
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:5]}"


def test_pipelined_writes_survive_a_leader_kill_midway(cluster):
    old = cluster.wait_leader()
    n = 50_000
    done: list = []

    def load() -> None:
        with cluster.client(timeout=20) as kv:
            kv.put_many([(f"p{i:05d}", b"%d" % i) for i in range(n)], window=256)
            done.append(True)

    t = threading.Thread(target=load)
    t.start()
    wait_until(lambda: cluster.nodes[old].status().get("applied_index", 0) > 2_000, timeout=30,
               what="the first pipelined writes applied")
    assert not done, "put_many finished before the leader could be killed midway"
    cluster.nodes[old].kill(signal.SIGKILL)
    t.join(60)
    assert done, "put_many did not finish after the leader was killed"
    with cluster.client(timeout=10) as kv:
        got = dict(kv.list("p"))
        assert kv.get_many(["p00000", f"p{n - 1:05d}", "nope"]) == [b"0", b"%d" % (n - 1), None]
    missing = [i for i in range(n) if got.get(f"p{i:05d}") != b"%d" % i]
    assert not missing, f"{len(missing)} pipelined writes missing, e.g. {missing[:5]}"
