"""Snapshots, compaction, InstallSnapshot and membership changes on real processes."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest

from raftkv.wire.client import Client

from .harness import KVNODE, ROOT, NodeProc, free_port, wait_until

pytestmark = pytest.mark.integration

SMALL = {"snapshot_threshold": 2000, "trailing_logs": 500}


def fill(cluster, n: int, prefix: str = "k") -> None:
    """Write n keys ``{prefix}{i:07d}`` = ``v{i}``, pipelined (``put_many``: up to 256 writes in
    flight on one connection; each is still one log entry, as a ``put`` is)."""
    with cluster.client(timeout=30) as kv:
        kv.put_many((f"{prefix}{i:07d}", f"v{i}".encode()) for i in range(n))


def test_snapshots_bound_the_log_and_a_restarted_node_restores(make_cluster):
    cluster = make_cluster(3, raft=SMALL)
    cluster.wait_leader()
    fill(cluster, 20_000)
    leader = cluster.leader()
    commit = cluster.nodes[leader].status()["commit_index"]
    cluster.wait_applied(commit)
    # A node snapshots once 2,000 entries are applied past its last snapshot, in the background:
    # status shows a snapshot once it is durable, so the one covering the last writes may still
    # be on its way (or put off while a flush runs) when the last write is applied.
    wait_until(lambda: all(st["snapshot_index"] >= 18_000 for st in cluster.statuses().values()), 30,
               what="every node's snapshot within 2,000 entries of the end")
    for nid, st in cluster.statuses().items():
        kept = st["last_log_index"] - st["first_log_index"] + 1
        assert kept <= SMALL["snapshot_threshold"] + SMALL["trailing_logs"] + 100, (nid, kept)
        snaps = [p for p in (cluster.data_dir / nid / "snapshots").glob("ckpt-*") if p.is_dir()]
        assert 1 <= len(snaps) <= 3
    victim = next(n for n in cluster.nodes if n != leader)
    cluster.nodes[victim].kill(signal.SIGKILL)
    cluster.nodes[victim].start()
    wait_until(lambda: cluster.nodes[victim].status()["applied_index"] >= commit, what="restart and restore")
    # the restart opens the key-value store at its own applied index: no snapshot is read back
    opened = re.findall(r"opened the key-value store at applied index (\d+)", cluster.nodes[victim].log_text())
    assert len(opened) == 2 and int(opened[-1]) >= 18_000, opened
    with Client([cluster.nodes[victim].client], timeout=5) as c:
        assert c.get("k0000000", consistency="stale") == b"v0"
        assert c.get("k0019999", consistency="stale") == b"v19999"


def test_a_follower_far_behind_catches_up_through_install_snapshot(make_cluster):
    cluster = make_cluster(3, raft=SMALL)
    leader = cluster.wait_leader()
    lagger = next(n for n in cluster.nodes if n != leader)
    cluster.nodes[lagger].kill(signal.SIGKILL)
    fill(cluster, 6000, prefix="lag")
    commit = cluster.nodes[cluster.leader()].status()["commit_index"]
    cluster.nodes[lagger].start()
    cluster.wait_applied(commit, nodes=[lagger])
    assert "installed snapshot" in cluster.nodes[lagger].log_text()
    with Client([cluster.nodes[lagger].client], timeout=5) as c:
        assert len(c.list("lag", consistency="stale")) == 6000


def test_a_corrupt_newest_snapshot_does_not_stop_a_restart(make_cluster):
    cluster = make_cluster(3, raft={"snapshot_threshold": 1000, "trailing_logs": 1500})
    cluster.wait_leader()
    fill(cluster, 3500)
    leader = cluster.leader()
    commit = cluster.nodes[leader].status()["commit_index"]
    cluster.wait_applied(commit)
    victim = next(n for n in cluster.nodes if n != leader)
    node = cluster.nodes[victim]
    node.kill(signal.SIGKILL)
    snaps = sorted(p for p in (cluster.data_dir / victim / "snapshots").glob("ckpt-*") if p.is_dir())
    newest = max(snaps[-1].glob("*.sst"), key=lambda p: p.stat().st_size)
    raw = bytearray(newest.read_bytes())
    raw[-10] ^= 0xFF  # flip a byte of a checkpoint file (a copy: the live DB's is not hard-linked to it)
    newest.unlink()
    newest.write_bytes(bytes(raw))
    node.start()
    # a restart reads the live key-value store, never a snapshot: the damaged copy is not used
    wait_until(lambda: node.status()["applied_index"] >= commit, what="restart from the key-value store")
    with Client([node.client], timeout=5) as c:
        assert c.get("k0003499", consistency="stale") == b"v3499"


def test_a_fourth_node_joins_a_cluster_with_100k_keys_and_serves_them(make_cluster):
    cluster = make_cluster(3)
    cluster.wait_leader()
    fill(cluster, 100_000)
    # node4 joins with the tutorial's flags, through any member's peer address
    n4 = NodeProc(cluster, "node4", f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}", None)
    cluster.nodes["node4"] = n4
    follower = next(n for n in cluster.nodes.values() if n.id != cluster.leader() and n.id != "node4")
    logf = open(n4.log_path, "ab")
    n4.proc = subprocess.Popen([sys.executable, str(KVNODE), "--id", "node4", "--addr", n4.addr, "--client",
                                n4.client, "--data-dir", str(cluster.data_dir), "--join", follower.addr],
                               stdout=logf, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    logf.close()
    with cluster.client(timeout=30) as kv:
        wait_until(lambda: any(m["id"] == "node4" and m["voter"] for m in kv.status()["members"]),
                   timeout=120, what="node4 promoted to voter")
        commit = kv.status(cluster.nodes[cluster.leader()].client)["commit_index"]
    cluster.wait_applied(commit, nodes=["node4"], timeout=120)
    with Client([n4.client], timeout=10) as c:
        assert c.get("k0099999", consistency="stale") == b"v99999"
        assert len(c.list("k0", consistency="stale")) == 100_000


def test_remove_a_follower_then_the_leader(make_cluster):
    cluster = make_cluster(3)
    leader = cluster.wait_leader()
    follower = next(n for n in cluster.nodes if n != leader)
    with cluster.client(timeout=20) as kv:
        kv.put("x", b"1")
        kv.remove_node(follower)
        wait_until(lambda: not cluster.nodes[follower].alive(), what="the removed follower stopping")
        assert "removed from cluster" in cluster.nodes[follower].log_text()
        assert {m["id"] for m in kv.members()} == set(cluster.nodes) - {follower}
        kv.put("x", b"2")
        kv.remove_node(leader)  # the leader removes itself: it steps down once that commits
        wait_until(lambda: not cluster.nodes[leader].alive(), what="the removed leader stopping")
        last = next(n for n in cluster.nodes if n not in (leader, follower))
        cluster.wait_leader(among=[last])
        kv.put("x", b"3")
        assert kv.get("x") == b"3"
    # a removed node refuses to start again on its old data
    cluster.nodes[follower].start()
    cluster.nodes[follower].proc.wait(timeout=20)
    assert cluster.nodes[follower].proc.returncode == 1
    assert "was removed" in cluster.nodes[follower].log_text()


def test_leadership_transfer_to_a_named_node(cluster):
    leader = cluster.wait_leader()
    target = next(n for n in cluster.nodes if n != leader)
    with cluster.client() as kv:
        kv.put("t", b"1")
        kv.transfer_leader(target)
        wait_until(lambda: cluster.leader() == target, what=f"{target} leading")
        kv.put("t", b"2")
        assert kv.get("t") == b"2"
