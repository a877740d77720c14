"""Membership on a secure cluster against the join token's holders (issue 11): a live member
cannot be replaced under its id; join-token rotation."""
from __future__ import annotations

import shutil
import sys

import pytest

from raftkv.wire.client import Client

from .harness import NodeProc, SecureCluster, free_port, wait_until


@pytest.fixture
def cluster(tmp_path):
    c = SecureCluster(tmp_path / "c", n=3)
    try:
        c.start()
        yield c
    finally:
        c.stop()


def _members(cluster) -> dict:
    st = wait_until(cluster.leader_status, 30, what="a leader's status")
    return {m["id"]: m for m in st["members"]}


def _stale_get(cluster, node, key: str):
    with Client([node.client], timeout=5, token=cluster.admin_token) as c:
        return c.get(key, consistency="stale")


def _second_process(cluster, node_id: str, data_dir, token: str) -> NodeProc:
    """Another kvnode process started with ``node_id`` (its own data directory, so another
    incarnation) and the join token, joining through node1: not one of the cluster's nodes."""
    addr, client = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    p = NodeProc(cluster, node_id, addr, client, None,
                 args=["--id", node_id, "--addr", addr, "--client", client, "--data-dir", str(data_dir),
                       "--join", cluster.nodes["node1"].addr, "--token", token])
    p.log_path = cluster.dir / f"second-{node_id}.log"
    return p


def test_a_join_token_holder_cannot_replace_a_live_member_but_a_wiped_one_rejoins(cluster):
    with cluster.client(timeout=20) as kv:
        kv.put("k", b"v1")
    before = _members(cluster)
    n2 = cluster.nodes["node2"]
    imp = _second_process(cluster, "node2", cluster.dir / "elsewhere", cluster.join_token)
    try:
        imp.start()
        wait_until(lambda: "the member is live" in imp.log_text(), 60, what="the second node2 told it is refused")
        assert "WARNING" in imp.log_text()
        leader = cluster.nodes[cluster.wait_leader()]
        wait_until(lambda: "refused a join as node2" in leader.log_text(), 10, what="the leader's log line")
        # The member keeps serving, unchanged, while the second process keeps retrying.
        with cluster.client(timeout=20) as kv:
            kv.put("k", b"v2")
        wait_until(lambda: _stale_get(cluster, n2, "k") == b"v2", 20, what="node2 applying the write")
        assert _members(cluster) == before
        assert n2.alive() and imp.alive()
    finally:
        imp.kill()
    # The wiped-disk path still works once the old process is really dead.
    n2.kill()
    shutil.rmtree(cluster.data_dir / "node2")
    n2.start()
    wait_until(lambda: "by incarnation" in "".join(n.log_text() for n in cluster.nodes.values()), 90,
               what="the leader replacing node2's old record")
    wait_until(lambda: _members(cluster)["node2"]["voter"], 60, what="the new node2 promoted")
    assert _members(cluster)["node2"]["addr"] == before["node2"]["addr"]
    wait_until(lambda: _stale_get(cluster, n2, "k") == b"v2", 30, what="the new node2 caught up")
    assert cluster.exited() == {}


def _exit_of(node, timeout=90.0) -> int:
    wait_until(lambda: node.exit_status() is not None, timeout, what=f"{node.id} to exit")
    return node.exit_status()


def _joined(cluster, node_id: str) -> bool:
    return node_id in _members(cluster)


def test_join_token_rotation(cluster):
    old = cluster.join_token
    # A read token may not rotate it; the admin token may.
    with cluster.client(timeout=20) as kv:
        reader = kv.token_create("reader", "read")
    r = _kvclient(cluster, reader, "join-token", "rotate")
    assert r.returncode == 4, r.stderr
    r = _kvclient(cluster, cluster.admin_token, "join-token", "rotate")
    assert r.returncode == 0, r.stderr
    new = r.stdout.split()[-1]
    assert new.startswith("kvj1_") and new != old
    # The bootstrap node's file held the old token: renamed, so nobody uses it by mistake.
    wait_until(lambda: (cluster.node_dir / "join.token.rotated").exists(), 30, what="join.token renamed")
    assert not (cluster.node_dir / "join.token").exists()
    # The old token is refused (exit 1, the specific message); the new one works.
    n4 = cluster.add_secure_joiner("node4", token=old)
    n4.start()
    assert _exit_of(n4) == 1
    assert "refused this join token" in n4.log_text()
    n5 = cluster.add_secure_joiner("node5", token=new)
    n5.start()
    wait_until(lambda: _joined(cluster, "node5"), 60, what="node5 admitted with the new token")
    assert not _joined(cluster, "node4")
    # Members already in are unaffected, also across restarts (their --token is the old one).
    for n in list(cluster.nodes.values()):
        if n.id in ("node2", "node5"):
            if n.id == "node2":
                n.token = old  # its command line from before the rotation
            n.kill()
            n.start()
    with cluster.client(timeout=30) as kv:
        kv.put("after", b"rotation")
    cluster.wait_applied(cluster.leader_status()["commit_index"], nodes=["node1", "node2", "node3", "node5"],
                         timeout=60)
    # The rotation reached the new member, which joined after it: it refuses the old token too.
    n6 = cluster.add_secure_joiner("node6", token=old)
    n6.args[-1] = n5.addr
    n6.start()
    assert _exit_of(n6) == 1
    n7 = cluster.add_secure_joiner("node7", token=new)
    n7.args[-1] = n5.addr
    n7.start()
    wait_until(lambda: _joined(cluster, "node7"), 60, what="node7 admitted through node5 with the new token")
    assert {k: v for k, v in cluster.exited().items() if k not in ("node4", "node6")} == {}


def _kvclient(cluster, token: str, *args):
    import os
    import subprocess

    from .harness import KVCLIENT, ROOT

    env = {**os.environ, "PYTHONPATH": str(ROOT), "KV_TOKEN": token}
    return subprocess.run([sys.executable, str(KVCLIENT), "--servers", ",".join(cluster.servers), *args],
                          capture_output=True, text=True, env=env, timeout=60)
