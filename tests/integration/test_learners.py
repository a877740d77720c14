"""Learners on real processes: a node added with ``kvclient add-node --learner`` stays a learner;
a node added with ``kvclient add-node`` and then started with ``--join`` is that member (issue 13
item 2: a node with no data needs ``--bootstrap`` or ``--join``)."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from raftkv.wire.client import Client

from .harness import KVCLIENT, ROOT, wait_until

pytestmark = pytest.mark.integration


def _membership_changes(cluster, node_id: str) -> list:
    """The membership changes about ``node_id`` every leader logged, without their index/term."""
    out = []
    for n in cluster.nodes.values():
        for line in n.log_text().splitlines():
            m = re.search(r"membership change at index \d+ in term \d+: (.*)", line)
            if m and node_id in m.group(1):
                out.append(m.group(1))
    return out


@pytest.mark.parametrize("learner", [True, False], ids=["learner", "voter"])
def test_a_node_added_by_add_node_then_started_with_join_is_that_member(make_cluster, learner):
    """``kvclient add-node node4 ADDR [--learner]``, then ``kvnode --id node4 ... --join <a
    follower>``: node4 catches up and serves stale reads; it is listed once, with its incarnation
    recorded by one change; added with ``--learner`` it is never promoted (it never counts for
    quorums), added without it is promoted to voter."""
    cluster = make_cluster(3)
    leader = cluster.wait_leader()
    with cluster.client(timeout=20) as kv:
        kv.put("before", b"1")
    follower = next(n for n in cluster.nodes.values() if n.id != leader)
    n4 = cluster.add_joiner("node4", follower.addr)  # through any member: a follower forwards it
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    servers = ",".join(n.client for n in cluster.nodes.values() if n.id != "node4")
    cli = [sys.executable, str(KVCLIENT), "--servers", servers]
    r = subprocess.run([*cli, "add-node", "node4", n4.addr, "--client", n4.client, *(["--learner"] * learner)],
                       capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    n4.start()
    with cluster.client(timeout=20) as kv:
        wait_until(lambda: any(c.startswith("recording the incarnations of") for c in
                               _membership_changes(cluster, "node4")), timeout=60, what="node4's incarnation recorded")
        if learner:
            commit = kv.status(cluster.nodes[cluster.leader()].client)["commit_index"]
            cluster.wait_applied(commit, nodes=["node4"], timeout=60)  # caught up: a voter-to-be is promoted by now
            kv.put("after", b"2")  # and the leader has handled node4's acknowledgements since
        else:
            wait_until(lambda: [m["voter"] for m in kv.members() if m["id"] == "node4"] == [True], timeout=60,
                       what="node4 promoted to voter")
        assert [m["voter"] for m in kv.members() if m["id"] == "node4"] == [not learner]
    wait_until(lambda: "is a member of cluster" in n4.log_text(), timeout=30, what="node4 seeing itself a member")
    with Client([n4.client], timeout=10) as c:
        wait_until(lambda: c.get("before", consistency="stale") == b"1", timeout=30, what="node4 serving 'before'")
    # One record, no replacement, no second addition: only the changes needed.
    kinds = [c.split(" ")[0] for c in _membership_changes(cluster, "node4")]
    assert sorted(kinds) == sorted(["adding", "recording"] + ([] if learner else ["promoting"])), \
        _membership_changes(cluster, "node4")
    r = subprocess.run([*cli, "members"], capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    line, = [x for x in r.stdout.splitlines() if "node4" in x]
    assert ("learner" in line and "voter" not in line) if learner else "voter" in line
    assert cluster.exited() == {}
