"""kvclient and kvnode as a user runs them: output, exit codes, the REPL, and clear start-up errors."""
from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import yaml

import raftkv

from raftkv.wire.client import ClientError

from .harness import KVCLIENT, KVNODE, ROOT, free_port, wait_until

pytestmark = pytest.mark.integration
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def kvclient(servers, *args, stdin=None, timeout=30):
    return subprocess.run([sys.executable, str(KVCLIENT), "--servers", ",".join(servers), *args],
                          input=stdin, capture_output=True, timeout=timeout, env=ENV)


def kvnode(*args, cwd, timeout=20):
    return subprocess.run([sys.executable, str(KVNODE), *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env=ENV)


def test_one_shot_commands_and_exit_codes(cluster):
    cluster.wait_leader()
    s = cluster.servers
    assert kvclient(s, "put", "greeting", "hello world").returncode == 0
    r = kvclient(s, "get", "greeting")
    assert (r.returncode, r.stdout) == (0, b"hello world\n")
    r = kvclient(s, "get", "greeting", "--json")
    assert r.returncode == 0
    assert json.loads(r.stdout).items() >= {"key": "greeting", "value": "hello world"}.items()
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
    assert r.returncode == 1  # a script's failure shows: the status of its last failed line
    assert r.stdout.split(b"\n")[:2] == [b"1", b"1"]
    assert b"not found" in r.stderr.lower()
    assert kvclient(cluster.servers, stdin=b"put b 2\nget b\n").returncode == 0


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
        assert r.stderr.strip().splitlines()[-1].startswith("kvnode: error: node1: ")  # which node, in --all
        r = kvnode("--id", "node1", "--addr", f"127.0.0.1:{port}", "--client", f"127.0.0.1:{free_port()}",
                   "--bootstrap", "--log-format", "json", cwd=tmp_path)
    assert r.returncode == 1
    records = [json.loads(line) for line in r.stderr.splitlines()]  # every line is JSON, the error too
    assert (records[-1]["level"], records[-1]["node"]) == ("ERROR", "node1")
    assert "cannot listen" in records[-1]["message"] and str(port) in records[-1]["message"]


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
            with pytest.raises(ClientError):
                kv.status()
    finally:
        if p.poll() is None:
            p.kill()


# ------------------------------------------------------------------ the operator's toolkit


def test_version(tmp_path):
    r = kvnode("--version", cwd=tmp_path)
    assert (r.returncode, r.stdout) == (0, f"kvnode {raftkv.__version__}\n")
    r = kvclient([], "--version")
    assert (r.returncode, r.stdout) == (0, f"kvclient {raftkv.__version__}\n".encode())


def test_values_from_stdin_and_files(cluster, tmp_path):
    cluster.wait_leader()
    s = cluster.servers
    piped = b"\x00\xffbinary, from a pipe\n"
    assert kvclient(s, "put", "piped", "-", stdin=piped).returncode == 0
    assert kvclient(s, "get", "piped").stdout == piped + b"\n"
    near_limit = tmp_path / "near.bin"
    near_limit.write_bytes(os.urandom(1_000_000))  # under max_value_bytes (1 MiB)
    r = kvclient(s, "put", "big", "--file", str(near_limit))
    assert (r.returncode, r.stderr) == (0, b"")
    assert kvclient(s, "get", "big").stdout == near_limit.read_bytes() + b"\n"
    too_big = tmp_path / "too-big.bin"
    too_big.write_bytes(b"x" * 1_100_000)  # 1.1 MB: over the limit, and too long for an argument list
    for r in (kvclient(s, "put", "huge", "--file", str(too_big)),
              kvclient(s, "put", "huge", "-", stdin=too_big.read_bytes())):
        assert r.returncode == 2
        assert "value too large" in r.stderr.decode() and r.stderr.decode().count("\n") == 1
    assert kvclient(s, "get", "huge").returncode == 1  # nothing was written


def test_admin_commands_name_the_node_that_answered(cluster):
    leader = cluster.wait_leader()
    s = cluster.servers
    assert kvclient(s, "put", "k", "v").returncode == 0
    r = kvclient([cluster.nodes[leader].client], "snapshot")
    assert r.returncode == 0
    assert re.fullmatch(rf"{leader} \(the leader\) took a snapshot at index \d+ \(term \d+\)\n", r.stdout.decode())
    follower = next(n for n in cluster.nodes if n != leader)
    r = kvclient([cluster.nodes[follower].client], "snapshot")
    assert r.returncode == 0
    assert re.fullmatch(rf"{follower} \(a follower of {leader}\) took a snapshot of its own copy at index \d+ "
                        rf"\(term \d+\)\n", r.stdout.decode())
    target = next(n for n in cluster.nodes if n != leader)
    r = kvclient(s, "transfer-leader", target)
    assert (r.returncode, r.stdout.decode()) == (0, f"{leader} is handing leadership to {target}\n")
    wait_until(lambda: cluster.leader() == target, what=f"{target} leads")
    r = kvclient(s, "members")
    assert r.returncode == 0
    lines = r.stdout.decode().splitlines()
    assert len(lines) == 3 and all(re.search(r" last_contact=\d+\.\d{3}s ", line) for line in lines)
    assert "None" not in r.stdout.decode() and "True" not in r.stdout.decode()


def test_snapshot_on_a_node_without_quorum_is_not_a_success(cluster):
    cluster.wait_leader()
    assert kvclient(cluster.servers, "put", "k", "v").returncode == 0
    cluster.wait_applied(2)
    survivor = cluster.nodes["node3"]
    cluster.nodes["node1"].kill()
    cluster.nodes["node2"].kill()
    wait_until(lambda: survivor.status()["leader_id"] is None, what="node3 to lose its leader")
    r = kvclient([survivor.client], "status")
    assert "leader_id: null\n" in r.stdout.decode()
    r = kvclient([survivor.client], "snapshot")
    assert r.returncode == 3 and r.stdout == b""
    assert "node3 knows no leader" in r.stderr.decode()


def test_sighup_rereads_the_log_level_and_does_not_stop_the_node(cluster):
    cluster.wait_leader()
    node = cluster.nodes["node1"]
    assert kvclient(cluster.servers, "put", "k", "v").returncode == 0

    def set_level(level: str) -> None:
        doc = yaml.safe_load(cluster.config_path.read_text())
        doc["log_level"] = level
        cluster.config_path.write_text(yaml.safe_dump(doc))
        node.proc.send_signal(signal.SIGHUP)

    set_level("WARNING")
    wait_until(lambda: "log level WARNING (was INFO)" in node.log_text(), what="node1 to re-read its level")
    assert kvclient([node.client], "snapshot").returncode == 0  # logs "saved snapshot" at INFO: hidden now
    set_level("INFO")  # a second SIGHUP: the handler stays
    wait_until(lambda: "log level INFO (was WARNING)" in node.log_text(), what="node1 to re-read its level again")
    assert "saved snapshot" not in node.log_text()
    assert kvclient([node.client], "snapshot").returncode == 0
    wait_until(lambda: "saved snapshot" in node.log_text(), what="INFO lines again")
    assert node.alive() and node.status()["id"] == "node1"
    assert kvclient(cluster.servers, "put", "after-hup", "1").returncode == 0


def test_json_log_lines_parse_and_name_their_node(make_cluster):
    cluster = make_cluster(3, extra_args=("--log-format", "json"))
    cluster.wait_leader()
    assert kvclient(cluster.servers, "put", "k", "v").returncode == 0
    assert kvclient(cluster.servers, "snapshot").returncode == 0
    for nid, node in cluster.nodes.items():
        lines = node.log_text().splitlines()
        assert lines, nid
        for line in lines:
            rec = json.loads(line)
            assert set(rec) >= {"time", "level", "node", "logger", "message"}, line
            assert rec["node"] == nid, line
    assert any("snapshot" in json.loads(line)["message"] for n in cluster.nodes.values()
               for line in n.log_text().splitlines())


TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ \[(?P<node>[^\]]+)\] \S+: ")


def test_every_line_of_an_all_run_names_its_node(make_cluster):
    cluster = make_cluster(3, start=False)
    log_path = cluster.dir / "all.log"
    with open(log_path, "wb") as logf:
        p = subprocess.Popen([sys.executable, str(KVNODE), "--config", str(cluster.config_path), "--all"],
                             cwd=cluster.dir, env=ENV, stdout=logf, stderr=subprocess.STDOUT)
    try:
        from raftkv.wire.client import Client
        assert kvclient(cluster.servers, "put", "k", "v").returncode == 0
        assert kvclient(cluster.servers, "snapshot").returncode == 0  # "saved snapshot" has no id of its own
        p.send_signal(signal.SIGHUP)  # passed on to every node, none stops
        wait_until(lambda: log_path.read_text().count("SIGHUP") >= 4, what="four SIGHUP lines")
        assert p.poll() is None
        for n in cluster.nodes.values():
            with Client([n.client], timeout=5) as kv:
                assert kv.status(n.client)["id"] == n.id
        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=30) == 0
    finally:
        if p.poll() is None:
            p.kill()
    text = log_path.read_text()
    names = [TEXT_LINE.match(line) for line in text.splitlines()]
    assert all(names), [line for line, m in zip(text.splitlines(), names) if not m]
    seen = {m["node"] for m in names}
    assert seen == {"node1", "node2", "node3", "supervisor"}, seen
    assert "saved snapshot" in text
