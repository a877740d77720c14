"""Backup, restore and recovery from a lost majority on real processes (issue 13 items 3-4):
``kvclient backup``, ``kvnode restore``, ``kvnode recover``."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

from raftkv.wire.client import Client, ClientError

from .harness import KVCLIENT, KVNODE, ROOT, Cluster, NodeProc, free_port, wait_until


def _run(*args: object, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def _backup(cluster: Cluster, path: Path) -> subprocess.CompletedProcess:
    return _run(KVCLIENT, "--servers", ",".join(cluster.servers), "backup", path)


def _members(servers: list) -> dict:
    with Client(servers, timeout=10) as kv:
        return {m["id"]: m for m in kv.members()}


def _restored_node(target: Cluster, node_id: str, backup: Path) -> NodeProc:
    """``kvnode restore`` into ``target``'s data directory (new ports), as a NodeProc not started."""
    addr, client = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    r = _run(KVNODE, "restore", backup, "--id", node_id, "--data-dir", target.data_dir, "--addr", addr,
             "--client", client)
    assert r.returncode == 0, r.stderr
    assert "new cluster" in r.stdout and f"--join {addr}" in r.stdout, r.stdout
    node = NodeProc(target, node_id, addr, client, None,
                    args=["--id", node_id, "--addr", addr, "--client", client, "--data-dir", str(target.data_dir)])
    target.nodes[node_id] = node
    return node


def test_backup_then_restore_into_a_new_cluster_that_others_join(make_cluster, tmp_path):
    """2,000 keys on 3 nodes; ``kvclient backup``; every node and its data gone; ``kvnode restore``
    into a new directory; started with its plain command line it leads a new one-node cluster
    holding every key; two new nodes join it and get everything."""
    cluster = make_cluster(3)
    cluster.wait_leader()
    items = [(f"key{i:05d}", f"value-{i}".encode()) for i in range(2000)]
    with cluster.client(timeout=60) as kv:
        kv.put_many(items)
        old_cid = kv.status()["cluster_id"]
    backup = tmp_path / "cluster.backup"
    r = _backup(cluster, backup)
    assert r.returncode == 0, r.stderr
    assert str(backup) in r.stdout and "at index" in r.stdout and "bytes" in r.stdout, r.stdout
    assert backup.exists() and not Path(str(backup) + ".tmp").exists()
    cluster.stop()
    shutil.rmtree(cluster.data_dir)

    new = make_cluster(0, start=False)
    n1 = _restored_node(new, "node1", backup)
    n1.start()
    wait_until(lambda: n1.status()["state"] == "leader", timeout=60, what="the restored node leads")
    st = n1.status()
    assert st["cluster_id"] != old_cid  # a new cluster, as etcd's restore makes
    assert [m["id"] for m in st["members"]] == ["node1"]
    with Client([n1.client], timeout=30) as kv:
        assert kv.list("key") == items
        kv.put("after-restore", b"yes")

    joiners = [new.add_joiner(nid, n1.addr) for nid in ("node2", "node3")]
    for j in joiners:
        j.start()
    wait_until(lambda: [m["voter"] for m in _members([n1.client]).values()] == [True] * 3, timeout=90,
               what="node2 and node3 admitted as voters")
    with Client([n1.client], timeout=30) as kv:
        kv.put("after-join", b"yes")
        index = kv.status()["commit_index"]
    new.wait_applied(index, timeout=60)
    for j in joiners:
        with Client([j.client], timeout=10) as kv:
            assert kv.list("key", consistency="stale") == items
            assert kv.get("after-join", consistency="stale") == b"yes"
    assert not new.exited()


def test_restore_refuses_a_damaged_or_truncated_backup_and_a_used_directory(make_cluster, tmp_path):
    """A corrupt or truncated backup file is refused with exit 1 and a message saying so; nothing is
    written. A target directory with data in it is refused too."""
    cluster = make_cluster(1)
    cluster.wait_leader()
    with cluster.client(timeout=30) as kv:
        kv.put_many([(f"k{i}", b"v" * 100) for i in range(300)])
    good = tmp_path / "good.backup"
    assert _backup(cluster, good).returncode == 0
    data = good.read_bytes()

    flipped = tmp_path / "flipped.backup"
    mid = len(data) // 2
    flipped.write_bytes(data[:mid] + bytes([data[mid] ^ 0x40]) + data[mid + 1:])
    truncated = tmp_path / "truncated.backup"
    truncated.write_bytes(data[:len(data) - 1000])
    garbage = tmp_path / "garbage.backup"
    garbage.write_bytes(b"not a backup at all" * 10)
    target = tmp_path / "restore-here"
    for path, words in ((flipped, "checksum"), (truncated, "truncated"), (garbage, "not a raftkv backup")):
        r = _run(KVNODE, "restore", path, "--id", "n1", "--data-dir", target, "--addr", "127.0.0.1:7999")
        assert r.returncode == 1, (path, r.stdout, r.stderr)
        assert words in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert not target.exists() or not any(target.iterdir()), f"{path.name} left files behind"

    (target / "n1").mkdir(parents=True)
    (target / "n1" / "something").write_text("x")
    r = _run(KVNODE, "restore", good, "--id", "n1", "--data-dir", target, "--addr", "127.0.0.1:7999")
    assert r.returncode == 1 and "not empty" in r.stderr, r.stderr
    assert sorted(os.listdir(target / "n1")) == ["something"]


def test_backup_under_concurrent_writes_is_a_consistent_prefix(make_cluster, tmp_path):
    """One client writes w00000, w00001, ... in order while a backup is taken: the backup holds every
    write acknowledged before it started, and exactly a prefix of the sequence (the state at one
    index, never a mix)."""
    cluster = make_cluster(3, raft={"snapshot_threshold": 500})  # snapshots happen during the backup too
    cluster.wait_leader()
    acked: list = []
    stop = threading.Event()
    errors: list = []

    def writer() -> None:
        with cluster.client(timeout=30) as kv:
            i = 0
            while not stop.is_set():
                try:
                    kv.put(f"w{i:05d}", f"{i}".encode())
                except ClientError as e:  # pragma: no cover - reported by the assertion below
                    errors.append(e)
                    return
                acked.append(i)
                i += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        wait_until(lambda: len(acked) >= 300, timeout=60, what="300 acknowledged writes")
        before = len(acked)
        backup = tmp_path / "live.backup"
        with cluster.client(timeout=30) as kv:
            info = kv.backup(str(backup))
        during = len(acked)
        wait_until(lambda: len(acked) >= during + 50, timeout=60, what="writes going on after the backup")
    finally:
        stop.set()
        t.join(timeout=60)
    assert not errors, errors
    assert info["path"] == str(backup) and info["bytes"] == backup.stat().st_size

    target = tmp_path / "restored"
    r = _run(KVNODE, "restore", backup, "--id", "r1", "--data-dir", target, "--addr", "127.0.0.1:7998")
    assert r.returncode == 0, r.stderr
    from raftkv.storage.kv_store import KvStore

    kvs = KvStore(str(target / "r1" / "kv"))
    try:
        got = sorted(int(k[1:]) for k, _ in kvs.scan("w", 0))
        assert kvs.applied_index() == info["index"]
    finally:
        kvs.close()
    assert got == list(range(len(got))), "the backup is not a prefix of the writes"
    assert len(got) >= before, f"{before} writes were acknowledged before the backup, it holds {len(got)}"


def test_recover_the_survivor_of_a_lost_majority(make_cluster):
    """3 nodes; writes acknowledged; two nodes destroyed (SIGKILL, data deleted). ``kvnode recover``
    refuses a running node, explains and changes nothing without --yes, and with it makes the
    survivor a one-node cluster: restarted with its usual command line it leads, serves every
    acknowledged write, accepts new ones, and a new node joins it."""
    cluster = make_cluster(3)
    cluster.wait_leader()
    items = [(f"acked{i:04d}", f"{i}".encode()) for i in range(500)]
    with cluster.client(timeout=60) as kv:
        kv.put_many(items)
        kv.put("last", b"acknowledged")
    survivor = cluster.nodes["node3"]
    for nid in ("node1", "node2"):
        cluster.nodes[nid].kill(signal.SIGKILL)
        shutil.rmtree(cluster.data_dir / nid)
    with Client([survivor.client], timeout=3) as kv:
        try:
            kv.put("no-quorum", b"x")
            raise AssertionError("a write was acknowledged by a node without a quorum")
        except ClientError:
            pass

    args = ("recover", "--data-dir", cluster.data_dir, "--id", "node3")
    r = _run(KVNODE, *args, "--yes")
    assert r.returncode == 1 and "stop the node first" in r.stderr, (r.stdout, r.stderr)
    survivor.kill(signal.SIGTERM)
    r = _run(KVNODE, *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "node1" in r.stdout and "node2" in r.stdout and "--yes" in r.stdout, r.stdout
    r = _run(KVNODE, *args, "--yes")
    assert r.returncode == 0, r.stderr
    assert "WARNING" in r.stderr and "recovered from lost quorum" in r.stderr, r.stderr

    survivor.start()  # its usual command line
    wait_until(lambda: survivor.status()["state"] == "leader", timeout=60, what="the survivor leads")
    assert [m["id"] for m in survivor.status()["members"]] == ["node3"]
    with Client([survivor.client], timeout=30) as kv:
        assert kv.list("acked") == items
        assert kv.get("last") == b"acknowledged"
        kv.put("after-recovery", b"new")

    n4 = cluster.add_joiner("node4", survivor.addr)
    n4.start()
    wait_until(lambda: _members([survivor.client]).get("node4", {}).get("voter"), timeout=90,
               what="node4 admitted as a voter")
    with Client([survivor.client], timeout=30) as kv:
        index = kv.status()["commit_index"]
    cluster.wait_applied(index, nodes=["node3", "node4"], timeout=60)
    with Client([n4.client], timeout=10) as kv:
        assert kv.list("acked", consistency="stale") == items
        assert kv.get("after-recovery", consistency="stale") == b"new"


def test_a_backup_completes_when_leadership_moves_while_it_streams(make_cluster, tmp_path):
    """The chunks are read from the node that took the checkpoint, whatever its role by then: a
    leadership transfer in the middle of a backup does not break it."""
    cluster = make_cluster(3)
    cluster.wait_leader()
    items = [(f"r{i:05d}", os.urandom(1000)) for i in range(3000)]  # incompressible: several chunks
    with cluster.client(timeout=60) as kv:
        kv.put_many(items)
    moved: list = []

    def progress(done: int, total: int) -> None:
        if moved or done >= total:
            return
        old = cluster.leader()
        with cluster.client(timeout=30) as kv:
            kv.transfer_leader()
        moved.append(wait_until(lambda: (lead := cluster.leader()) not in (None, old) and lead, timeout=30,
                                what="leadership moved"))

    backup = tmp_path / "moving.backup"
    with cluster.client(timeout=30) as kv:
        info = kv.backup(str(backup), progress=progress)
    assert moved and moved[0] != info["node"]
    target = tmp_path / "restored"
    r = _run(KVNODE, "restore", backup, "--id", "x1", "--data-dir", target, "--addr", "127.0.0.1:7997")
    assert r.returncode == 0, r.stderr
    from raftkv.storage.kv_store import KvStore

    kvs = KvStore(str(target / "x1" / "kv"))
    try:
        assert kvs.scan("r", 0) == items
    finally:
        kvs.close()
