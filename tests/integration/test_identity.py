"""Node identity on real processes (issue 13 items 1-2): a node whose data directory was wiped
is a new member that must be re-admitted, never the old one with an empty log; joining is
idempotent until it succeeds."""
from __future__ import annotations

import shutil

import pytest

from raftkv.wire.client import Client, ClientError

from .harness import wait_until


def _members(cluster) -> dict:
    with cluster.client(timeout=10) as kv:
        return {m["id"]: m for m in kv.members()}


def _stale_get(node, key: str) -> bytes:
    with Client([node.client], timeout=2) as c:
        return c.get(key, consistency="stale")


def test_a_wiped_node_is_readmitted_not_counted_as_the_old_one(make_cluster):
    """The scenario of issue 13: node3 down; ``put x committed`` acknowledged by node1+node2;
    node1 and node2 killed; node2's data directory deleted; node3 and node2 restarted with their
    command lines. Without node1 the cluster must be unavailable (never answer the old value);
    once node1 is back the wiped node2 is re-admitted and all three agree on ``committed``."""
    cluster = make_cluster(1)  # node1 bootstraps alone; node2 and node3 join it
    cluster.wait_leader()
    n1 = cluster.nodes["node1"]
    n2 = cluster.add_joiner("node2", n1.addr)
    n3 = cluster.add_joiner("node3", n1.addr)
    n2.start()
    n3.start()
    wait_until(lambda: [m["voter"] for m in _members(cluster).values()] == [True] * 3, timeout=60,
               what="node2 and node3 promoted to voters")
    with cluster.client(timeout=20) as kv:
        kv.put("x", b"before")
    n3.kill()
    with Client([n1.client, n2.client], timeout=20) as kv:
        kv.put("x", b"committed")  # acknowledged: on node1 and node2
    n1.kill()
    n2.kill()
    shutil.rmtree(cluster.data_dir / "node2")
    n3.start()
    n2.start()

    # node2 refuses to be the old node2 (it says so), so node3 alone has no quorum: unavailable.
    wait_until(lambda: "data directory was replaced" in n2.log_text(), timeout=30,
               what="node2's warning that it was addressed as its old incarnation")
    with Client([n3.client, n2.client], timeout=4) as kv:
        with pytest.raises(ClientError):
            got = kv.get("x")
            pytest.fail(f"a linearizable get answered {got!r} without a quorum of the real members")
    assert n3.status()["state"] != "leader" and n2.status()["state"] != "leader"

    n1.start()
    wait_until(lambda: "by incarnation" in n1.log_text() + n3.log_text(), timeout=60,
               what="the leader replacing node2's old record")
    wait_until(lambda: _members(cluster)["node2"]["voter"], timeout=60, what="the new node2 promoted")
    with cluster.client(timeout=20) as kv:
        assert kv.get("x") == b"committed"
        kv.put("y", b"after")
    commit = cluster.leader_status()["commit_index"]
    cluster.wait_applied(commit, timeout=60)
    for n in (n1, n2, n3):
        assert _stale_get(n, "x") == b"committed", n.id
    assert cluster.exited() == {}


def test_an_interrupted_first_join_completes_on_restart(make_cluster):
    """A joiner started before any member listens, then stopped, then started again with the same
    command once the cluster is up: it becomes a member (its data directory is not "data")."""
    cluster = make_cluster(1, start=False)
    n1 = cluster.nodes["node1"]
    n4 = cluster.add_joiner("node4", n1.addr)
    n4.start()
    wait_until(lambda: "serving" in n4.log_text(), timeout=30, what="node4 serving (unjoined)")
    n4.kill()
    n1.start()
    cluster.wait_leader()
    n4.start()
    wait_until(lambda: _members(cluster).get("node4", {}).get("voter"), timeout=60,
               what="node4 admitted and promoted")
    assert "--join ignored" not in n4.log_text()
    with cluster.client(timeout=20) as kv:
        kv.put("k", b"v")
    cluster.wait_applied(cluster.leader_status()["commit_index"], timeout=30)
    assert _stale_get(n4, "k") == b"v"


def test_a_joiner_that_cannot_reach_its_join_address_warns_naming_it(make_cluster):
    """A --join address where nothing listens: a WARNING names it (and the node keeps trying)."""
    cluster = make_cluster(1, start=False)
    n4 = cluster.add_joiner("node4", cluster.nodes["node1"].addr)
    n4.start()
    wait_until(lambda: "WARNING" in n4.log_text() and cluster.nodes["node1"].addr in n4.log_text(), timeout=30,
               what="a WARNING naming the unreachable join address")
    assert n4.alive()


def test_a_wiped_node_of_a_cluster_file_rejoins_with_join(make_cluster):
    """Nodes bootstrapped together from a whole-cluster file: the leader records their
    incarnations, so a wiped node restarted with ``--join`` is a replacement too."""
    cluster = make_cluster(3)
    cluster.wait_leader()
    wait_until(lambda: "recording the incarnations" in "".join(n.log_text() for n in cluster.nodes.values()),
               timeout=30, what="the leader recording the members' incarnations")
    with cluster.client(timeout=20) as kv:
        kv.put("x", b"committed")
    n2 = cluster.nodes["node2"]
    n2.kill()
    shutil.rmtree(cluster.data_dir / "node2")
    others = [n for n in cluster.nodes.values() if n.id != "node2"]
    n2.start(extra=("--join", others[0].addr))
    wait_until(lambda: "by incarnation" in "".join(n.log_text() for n in others), timeout=60,
               what="the leader replacing node2's old record")
    wait_until(lambda: _members(cluster)["node2"]["voter"], timeout=60, what="the new node2 promoted")
    commit = cluster.leader_status()["commit_index"]
    cluster.wait_applied(commit, timeout=60)
    assert _stale_get(n2, "x") == b"committed"
