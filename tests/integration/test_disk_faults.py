"""A node whose disk fills up acknowledges nothing it did not sync, keeps its log intact and
recovers by itself once space is back (needs root to mount a small tmpfs, as CI has)."""
from __future__ import annotations

import os
import signal
import subprocess

import pytest

from raftkv.wire.client import Client

from .harness import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def small_disk(tmp_path):
    mounts = []

    def mount(path, size="48m"):
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
        mounts.append(path)

    yield mount
    for m in mounts:
        subprocess.run(["umount", "-l", str(m)], check=False)


def fill(path) -> None:
    """Take every free byte of the filesystem at ``path``."""
    with open(path / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 20))
                f.flush()
        except OSError:
            pass
        try:
            os.fsync(f.fileno())
        except OSError:
            pass


def test_a_full_disk_on_one_node_loses_nothing_and_heals(make_cluster, small_disk):
    cluster = make_cluster(3, start=False)
    victim = cluster.nodes["node3"]
    vdir = cluster.data_dir / "node3"
    small_disk(vdir)
    cluster.start()
    cluster.wait_leader()
    acked = []
    with cluster.client(timeout=20) as kv:
        for i in range(200):
            kv.put(f"a{i}", b"x" * 1000)
            acked.append(f"a{i}")
        fill(vdir)
        for i in range(3000):  # enough to need new space on the full node
            kv.put(f"b{i}", b"y" * 1000)
            acked.append(f"b{i}")
        wait_until(lambda: "disk_error" in victim.status(), timeout=60, what="node3 reporting its disk")
        assert "disk failure" in victim.status()["disk_error"]
        assert "cannot write the log" in victim.log_text()
        # the two healthy nodes carry on; if node3 led, it handed leadership over
        assert cluster.leader() != "node3"
        kv.put("during", b"1")
        (vdir / "filler").unlink()  # space is back
        wait_until(lambda: "disk_error" not in victim.status(), timeout=60, what="node3 healing")
        commit = cluster.nodes[cluster.leader()].status()["commit_index"]
    cluster.wait_applied(commit, nodes=["node3"], timeout=60)
    victim.kill(signal.SIGKILL)  # and its log is intact: it restarts from it
    victim.start()
    cluster.wait_applied(commit, nodes=["node3"], timeout=60)
    with Client([victim.client], timeout=10) as c:
        got = dict(c.list("", consistency="stale"))
    missing = [k for k in acked if k not in got]
    assert not missing and got["during"] == b"1"
