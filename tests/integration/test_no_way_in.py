"""A node with no data started with neither ``--bootstrap`` nor ``--join`` says so and exits 2
(issue 13 item 2), before any port opens and without writing anything, so that the same command
with ``--join`` then works; a node that has data restarts with no flag as before."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest

from raftkv.wire.client import Client

from .harness import KVNODE, ROOT, free_port, wait_until

pytestmark = pytest.mark.integration


def _run_without_flag(args: list) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(KVNODE), *args], capture_output=True, text=True, timeout=30,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def _assert_says_how_to_start(r: subprocess.CompletedProcess, node_id: str, only_line: bool = True) -> None:
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    if only_line:
        assert len(lines) == 1, r.stderr  # one clear line, nothing else
    assert lines[-1].startswith(f"kvnode: error: {node_id}: no data in ")
    assert "--bootstrap" in lines[-1] and "--join ADDR" in lines[-1]


def _member_ids(cluster) -> list:
    with cluster.client(timeout=10) as kv:
        return sorted(m["id"] for m in kv.members())


def test_a_node_without_data_and_without_a_flag_exits_2_and_then_joins_with_join(make_cluster):
    cluster = make_cluster(1)
    cluster.wait_leader()
    n1 = cluster.nodes["node1"]
    n2 = cluster.add_joiner("node2", n1.addr)
    no_flag = n2.args[:n2.args.index("--join")]

    # Its peer port held: had it tried to listen, it would exit 1 ("cannot listen"), not 2.
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", int(n2.addr.rsplit(":", 1)[1])))
        busy.listen()
        r = _run_without_flag(no_flag)
    _assert_says_how_to_start(r, "node2")
    assert not (cluster.data_dir / "node2").exists(), "nothing written"

    n2.start()  # the same command with --join
    wait_until(lambda: _member_ids(cluster) == ["node1", "node2"], timeout=60, what="node2 a member")
    with cluster.client(timeout=20) as kv:
        kv.put("k", b"1")
    with Client([n2.client], timeout=5) as c:  # it has data now (a configuration, the key)
        wait_until(lambda: c.get("k", consistency="stale") == b"1", timeout=30, what="node2 serving k")
    n2.kill(signal.SIGTERM)
    assert n2.exit_status() == 0
    n2.args = no_flag  # a node with data restarts with no flag, as before
    n2.start()
    with Client([n2.client], timeout=5) as c:
        wait_until(lambda: c.get("k", consistency="stale") == b"1", timeout=30, what="node2 serving k again")
    assert n2.alive()


def test_a_join_that_never_got_a_configuration_restarted_without_a_flag_exits_2(make_cluster):
    """A node started with --join while nothing listened there, stopped, then started with no
    flag: it has no data to restart from (no configuration: the same holds for a node admitted
    by the leader that stopped before it received anything), so it says so too; with --join it
    joins."""
    cluster = make_cluster(1)
    cluster.wait_leader()
    n1 = cluster.nodes["node1"]
    n3 = cluster.add_joiner("node3", f"127.0.0.1:{free_port()}")  # nothing listens there
    n3.start()
    wait_until(lambda: n3.status(), timeout=30, what="node3 up (not admitted)")
    n3.kill(signal.SIGTERM)
    assert (cluster.data_dir / "node3" / "raft").exists()
    no_flag = n3.args[:n3.args.index("--join")]
    # (its storage opened first, with the usual INFO lines, to find no configuration in it)
    _assert_says_how_to_start(_run_without_flag(no_flag), "node3", only_line=False)
    n3.args = no_flag + ["--join", n1.addr]
    n3.start()
    wait_until(lambda: _member_ids(cluster) == ["node1", "node3"], timeout=60, what="node3 a member")
    assert cluster.exited() == {}
