"""``--join`` with several members' addresses: a joiner whose first address is down still gets in
through the next one, on a plain and on a secure cluster (a wiped node restarted by a supervisor
with its usual command line must not wait for one particular member to come back)."""
from __future__ import annotations

import signal

import pytest

from raftkv.wire.client import Client

from .harness import SecureCluster, free_port, wait_until

pytestmark = pytest.mark.integration


def _member_ids(status: dict) -> set:
    return {m["id"] for m in status["members"]}


def test_joiner_passes_over_a_dead_member(make_cluster):
    cluster = make_cluster(3)
    cluster.wait_leader()
    with cluster.client() as kv:
        kv.put("before", b"1")
    dead = cluster.nodes["node1"]
    dead.kill(signal.SIGKILL)
    survivors = ["node2", "node3"]
    leader = cluster.wait_leader(among=survivors)
    joiner = cluster.add_joiner("node4", f"{dead.addr},{cluster.nodes['node2'].addr}")
    joiner.start()
    wait_until(lambda: "node4" in _member_ids(cluster.nodes[leader].status()), timeout=40,
               what="node4 admitted through node2 while node1 is down")
    with Client([cluster.nodes[n].client for n in survivors], timeout=10) as kv:
        kv.put("after", b"2")
    with Client([joiner.client], timeout=10) as kv:
        wait_until(lambda: kv.get("after", consistency="stale") == b"2", timeout=30, what="node4 caught up")
        assert kv.get("before", consistency="stale") == b"1"
    assert joiner.alive() and cluster.exited() == {}


def test_secure_joiner_passes_over_a_dead_address(tmp_path):
    cluster = SecureCluster(tmp_path / "c", n=2)
    try:
        cluster.start()
        nobody = f"127.0.0.1:{free_port()}"  # no member listens there
        joiner = cluster.add_secure_joiner("node3", join=f"{nobody},{cluster.nodes['node2'].addr}")
        joiner.start()
        wait_until(lambda: "node3" in _member_ids(cluster.leader_status()), timeout=60,
                   what="node3 admitted through node2")
        with cluster.client() as kv:
            kv.put("k", b"v")
        with Client([joiner.client], timeout=10, token=cluster.admin_token) as kv:
            wait_until(lambda: kv.get("k", consistency="stale") == b"v", timeout=30, what="node3 caught up")
        assert joiner.alive() and cluster.exited() == {}
    finally:
        cluster.stop()
