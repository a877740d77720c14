"""Learners on real processes: a node added with ``kvclient add-node --learner`` stays a learner."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from raftkv.wire.client import Client

from .harness import KVCLIENT, KVNODE, ROOT, NodeProc, free_port, wait_until

pytestmark = pytest.mark.integration


def test_a_node_added_as_a_learner_stays_a_learner(make_cluster):
    """``kvclient add-node ID ADDR --learner``: the node catches up and serves stale reads but is
    never promoted, so it never counts for quorums (a join, by contrast, is promoted)."""
    cluster = make_cluster(3)
    cluster.wait_leader()
    with cluster.client(timeout=20) as kv:
        kv.put("before", b"1")
    n4 = NodeProc(cluster, "node4", f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}", None)
    cluster.nodes["node4"] = n4
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(n4.log_path, "ab") as logf:
        # a fresh node with neither --bootstrap nor --join waits to be added
        n4.proc = subprocess.Popen([sys.executable, str(KVNODE), "--id", "node4", "--addr", n4.addr, "--client",
                                    n4.client, "--data-dir", str(cluster.data_dir)],
                                   stdout=logf, stderr=subprocess.STDOUT, env=env)
    servers = ",".join(n.client for n in cluster.nodes.values() if n.id != "node4")
    cli = [sys.executable, str(KVCLIENT), "--servers", servers]
    r = subprocess.run([*cli, "add-node", "node4", n4.addr, "--client", n4.client, "--learner"],
                       capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    with cluster.client(timeout=20) as kv:
        wait_until(lambda: any(m["id"] == "node4" for m in kv.members()), what="node4 in the configuration")
        commit = kv.status(cluster.nodes[cluster.leader()].client)["commit_index"]
        cluster.wait_applied(commit, nodes=["node4"], timeout=60)  # caught up: a voter-to-be is promoted by now
        kv.put("after", b"2")  # and the leader has handled node4's acknowledgements since
        assert [m["voter"] for m in kv.members() if m["id"] == "node4"] == [False]
    with Client([n4.client], timeout=10) as c:
        assert c.get("before", consistency="stale") == b"1"
    r = subprocess.run([*cli, "members"], capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    line, = [x for x in r.stdout.splitlines() if "node4" in x]
    assert "learner" in line and "voter" not in line
