"""A snapshot install cut short by a crash (sim seed 1003129): the leader's snapshot was saved
by the follower, but the follower died before its key-value store and its log were moved to it.

At the next start the node must finish that install: before, its core started from the old log
and took the snapshot as already applied, so the entries between the old log's end and the
snapshot were never applied to its key-value store (keys missing on that node), or, with an
empty log, it refused every append after the snapshot for good."""
from __future__ import annotations

import shutil
import signal

import pytest

from .harness import wait_until
from .test_corrupt_checkpoint import assert_holds, checkpoints
from .test_snapshots_membership import fill

pytestmark = pytest.mark.integration


def test_a_restart_finishes_a_snapshot_install_a_crash_cut_short(make_cluster):
    # trailing_logs above what is written: the leader still has every entry to send, so only a
    # node that finishes the install holds the entries up to the snapshot
    cluster = make_cluster(3, raft={"snapshot_threshold": 1000, "trailing_logs": 10_000})
    leader = cluster.wait_leader()
    fill(cluster, 300, prefix="a")
    commit = cluster.nodes[leader].status()["commit_index"]
    cluster.wait_applied(commit)
    victim = next(n for n in cluster.nodes if n != leader)
    node = cluster.nodes[victim]
    node.kill(signal.SIGKILL)
    fill(cluster, 1500, prefix="b")
    leader = cluster.leader()
    snap = checkpoints(cluster, leader)[-1]
    snap_index = int(snap.name.split("-")[1])
    assert snap_index > commit + 500, (snap, commit)
    # What StreamReceiver.adopt leaves once the last chunk is in: the checkpoint and its sidecar
    # in the snapshot directory, before the role restores the state and compacts the log.
    dest = cluster.data_dir / victim / "snapshots"
    shutil.copytree(snap, dest / snap.name)
    shutil.copy(str(snap) + ".meta", str(dest / snap.name) + ".meta")
    node.start()
    final = cluster.nodes[leader].status()["commit_index"]
    wait_until(lambda: node.status()["applied_index"] >= final, timeout=60, what=f"{victim} caught up")
    assert f"snapshot {snap_index} (term" in node.log_text()
    assert "saved but not installed" in node.log_text()
    assert node.status()["first_log_index"] > snap_index - 1
    assert_holds(node, "a", 300)
    assert_holds(node, "b", 1500)
    with cluster.client() as kv:
        kv.put("after", b"1")
    wait_until(lambda: node.status()["applied_index"] > final, what=f"{victim} applies new writes")
