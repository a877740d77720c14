"""kvclient and kvnode as a user runs them: output, exit codes, the REPL, and clear start-up errors."""
from __future__ import annotations

import json
import os
import pty
import select
import shutil
import socket
import subprocess
import sys
import time

import pytest

from .harness import KVCLIENT, KVNODE, ROOT, free_port, wait_until

pytestmark = pytest.mark.integration
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def kvclient(servers, *args, stdin=None, timeout=30):  # noqa: ANN001, ANN201
    return subprocess.run([sys.executable, str(KVCLIENT), "--servers", ",".join(servers), *args],
                          input=stdin, capture_output=True, timeout=timeout, env=ENV)


def kvnode(*args, cwd, timeout=20):  # noqa: ANN001, ANN201
    return subprocess.run([sys.executable, str(KVNODE), *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env=ENV)


def test_one_shot_commands_and_exit_codes(cluster):
    cluster.wait_leader()
    s = cluster.servers
    assert kvclient(s, "put", "greeting", "hello world").returncode == 0
    r = kvclient(s, "get", "greeting")
    assert (r.returncode, r.stdout) == (0, b"hello world\n")
    r = kvclient(s, "get", "greeting", "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == {"key": "greeting", "value": "hello world"}
    assert kvclient(s, "--json", "get", "greeting").stdout == r.stdout  # --json before or after
    assert kvclient(s, "get", "greeting", "--stale").stdout == b"hello world\n"
    r = kvclient(s, "get", "nope")
    assert r.returncode == 1 and b"not found" in r.stderr.lower()
    assert kvclient(s, "cas", "greeting", "wrong", "x").returncode == 1
    assert kvclient(s, "cas", "greeting", "hello world", "bye").returncode == 0
    assert kvclient(s, "create", "greeting", "again").returncode == 1
    assert kvclient(s, "create", "fresh", "1").returncode == 0
    r = kvclient(s, "list", "--json")
    assert [i["key"] for i in json.loads(r.stdout)] == ["fresh", "greeting"]
    assert kvclient(s, "delete", "fresh").returncode == 0
    assert kvclient(s, "get", "fresh").returncode == 1
    r = kvclient(s, "status", "--json")
    st = json.loads(r.stdout)
    for field in ("id", "state", "term", "leader_id", "commit_index", "applied_index", "last_log_index",
                  "snapshot_index", "first_log_index", "members"):
        assert field in st
    assert st["id"] == "node1"  # status asks the first server given, not the leader
    assert {m["id"] for m in st["members"]} == {"node1", "node2", "node3"}
    assert kvclient(s, "frobnicate").returncode == 2  # usage error
    assert kvclient(s, "get").returncode == 2
    dead = [f"127.0.0.1:{free_port()}"]
    r = kvclient(dead, "--timeout", "1", "get", "greeting")
    assert r.returncode == 3 and r.stderr.strip()


def test_repl_through_a_pipe(cluster):
    cluster.wait_leader()
    r = kvclient(cluster.servers, stdin=b"put a 1\nget a\nget missing\nget a\n")
    assert r.returncode == 0
    assert r.stdout.split(b"\n")[:2] == [b"1", b"1"]
    assert b"not found" in r.stderr.lower()


def test_repl_through_a_pty(cluster):
    cluster.wait_leader()
    pid, fd = pty.fork()
    if pid == 0:  # the child: kvclient with a terminal for stdin and stdout
        os.execve(sys.executable, [sys.executable, str(KVCLIENT), "--servers", ",".join(cluster.servers)],
                  {**ENV, "HOME": str(cluster.dir), "TERM": "dumb"})
    out = b""

    def read_until(token: bytes, timeout: float = 15) -> bytes:
        nonlocal out
        deadline = time.monotonic() + timeout
        while token not in out and time.monotonic() < deadline:
            r, _, _ = select.select([fd], [], [], 0.2)
            if r:
                try:
                    out += os.read(fd, 4096)
                except OSError:
                    break
        assert token in out, out
        return out

    try:
        read_until(b"kv> ")
        out = b""
        os.write(fd, b"put tty yes\n")
        read_until(b"kv> ")
        out = b""
        os.write(fd, b"get tty\n")
        assert b"yes" in read_until(b"kv> ")
        os.write(fd, b"exit\n")
        _, status = os.waitpid(pid, 0)
        assert os.WEXITSTATUS(status) == 0
    finally:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
        os.close(fd)


def test_kvnode_rejects_bad_configuration_with_one_clear_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: node1\naddr: 127.0.0.1:9001\nbootstrap: true\nraft:\n  heartbeat: 10\n")
    r = kvnode("--config", str(bad), cwd=tmp_path)
    assert r.returncode == 2 and "heartbeat" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = kvnode("--config", str(tmp_path / "missing.yaml"), cwd=tmp_path)
    assert r.returncode == 2 and "missing.yaml" in r.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("id: [unclosed\n")
    r = kvnode("--config", str(broken), cwd=tmp_path)
    assert r.returncode == 2 and "broken.yaml" in r.stderr
    assert not (tmp_path / "data").exists()  # nothing was created


def test_kvnode_refuses_a_port_in_use(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = kvnode("--id", "node1", "--addr", f"127.0.0.1:{port}", "--client", f"127.0.0.1:{free_port()}",
                   "--bootstrap", cwd=tmp_path)
    assert r.returncode == 1 and "cannot listen" in r.stderr and str(port) in r.stderr


def test_kvnode_refuses_data_of_another_node_or_cluster(tmp_path):
    addr, client = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    p = subprocess.Popen([sys.executable, str(KVNODE), "--id", "node1", "--addr", addr, "--client", client,
                          "--bootstrap", "--cluster-id", "alpha"], cwd=tmp_path, env=ENV,
                         stderr=subprocess.DEVNULL)
    try:
        from raftkv.wire.client import Client
        with Client([client], timeout=20) as c:
            c.put("x", b"1")
    finally:
        p.terminate()
        assert p.wait(timeout=20) == 0  # SIGTERM: clean shutdown, exit 0
    r = kvnode("--id", "node1", "--addr", addr, "--client", client, "--cluster-id", "beta", cwd=tmp_path)
    assert r.returncode == 1 and "belongs to cluster 'alpha'" in r.stderr
    shutil.copytree(tmp_path / "data" / "node1", tmp_path / "data" / "node2")
    r = kvnode("--id", "node2", "--addr", addr, "--client", client, cwd=tmp_path)
    assert r.returncode == 1 and "belongs to node 'node1'" in r.stderr


def test_kvnode_all_runs_a_whole_cluster_and_ctrl_c_stops_it(make_cluster):
    cluster = make_cluster(3, start=False)
    p = subprocess.Popen([sys.executable, str(KVNODE), "--config", str(cluster.config_path), "--all"],
                         cwd=cluster.dir, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        from raftkv.wire.client import Client
        with Client(cluster.servers, timeout=20) as kv:
            kv.put("all", b"three")
            wait_until(lambda: sum(m["voter"] for m in kv.status()["members"]) == 3, what="three members")
        p.send_signal(2)  # SIGINT, as Ctrl-C
        assert p.wait(timeout=30) == 0
        # every child is gone: nothing answers any more
        with Client(cluster.servers, timeout=1) as kv:
            with pytest.raises(Exception):
                kv.status()
    finally:
        if p.poll() is None:
            p.kill()
