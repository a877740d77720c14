"""The tutorial's demo, end to end, with the tutorial's own flags and plain HTTP (as curl would)."""
from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys

import pytest

from .harness import KVNODE, ROOT, free_port, wait_until

pytestmark = pytest.mark.integration


def request(port: int, method: str, path: str, body: bytes = None, timeout: float = 5.0):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


class Demo:
    """Three nodes started exactly as in the tutorial, with free ports."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.peer = {i: free_port() for i in (1, 2, 3)}
        self.http = {i: free_port() for i in (1, 2, 3)}
        self.procs: dict = {}

    def args(self, i: int) -> list:
        a = [sys.executable, str(KVNODE), "--id", f"node{i}", "--addr", f"localhost:{self.peer[i]}",
             "--http", f":{self.http[i]}"]
        return a + (["--bootstrap"] if i == 1 else ["--join", f"localhost:{self.peer[1]}"])

    def start(self, i: int) -> None:
        log = open(self.tmp / f"node{i}.log", "ab")
        self.procs[i] = subprocess.Popen(self.args(i), cwd=self.tmp, stdout=log, stderr=subprocess.STDOUT,
                                         env={**os.environ, "PYTHONPATH": str(ROOT)})

    def status(self, i: int) -> dict:
        code, body = request(self.http[i], "GET", "/status", timeout=1)
        assert code == 200
        return json.loads(body)

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.fixture
def demo(tmp_path):
    d = Demo(tmp_path)
    yield d
    d.stop()


def test_the_tutorial_demo(demo):
    for i in (1, 2, 3):
        demo.start(i)
    wait_until(lambda: sum(m["voter"] for m in demo.status(1)["members"]) == 3, what="three voters")
    # Default client ports and data directories derive from the flags, as the demo needs.
    assert {m["id"]: m["client"] for m in demo.status(1)["members"]} == {
        f"node{i}": f"127.0.0.1:{demo.peer[i] - 4000}" for i in (1, 2, 3)}
    assert (demo.tmp / "data" / "node2").is_dir()

    assert request(demo.http[1], "PUT", "/kv/hello", b"distributed")[0] == 204
    assert request(demo.http[2], "GET", "/kv/hello") == (200, b"distributed")

    leader = int(demo.status(1)["leader_id"][-1])
    demo.procs[leader].send_signal(signal.SIGKILL)
    demo.procs[leader].wait()
    survivor = next(i for i in (1, 2, 3) if i != leader)
    wait_until(lambda: demo.status(survivor)["leader_id"] not in (None, f"node{leader}"), what="a new leader")
    assert request(demo.http[survivor], "GET", "/kv/hello") == (200, b"distributed")
    assert request(demo.http[survivor], "PUT", "/kv/hello", b"still works")[0] == 204

    demo.start(leader)  # the same command line: --bootstrap / --join are no-ops now
    wait_until(lambda: demo.status(leader)["state"] == "follower" and
               request(demo.http[leader], "GET", "/kv/hello?consistency=stale", timeout=1) == (200, b"still works"),
               what="the old leader rejoining and catching up")
    assert request(demo.http[leader], "GET", "/kv/hello") == (200, b"still works")
    log = (demo.tmp / f"node{leader}.log").read_text()
    assert "already has data" in log


def test_http_errors_and_health(demo):
    for i in (1, 2, 3):
        demo.start(i)
    wait_until(lambda: demo.status(1)["leader_id"], what="a leader")
    wait_until(lambda: demo.status(3)["leader_id"], what="node3 serving and knowing the leader")
    assert request(demo.http[3], "GET", "/kv/missing")[0] == 404
    code, body = request(demo.http[2], "PUT", "/kv/big", b"x" * (1024 * 1024 + 1))
    assert code == 413 and b"value too large" in body
    assert request(demo.http[2], "GET", "/kv/big")[0] == 404  # nothing was written
    assert request(demo.http[1], "GET", "/health")[0] == 200
    code, body = request(demo.http[1], "GET", "/metrics")
    assert code == 200 and b"raftkv_commit_index" in body
    assert request(demo.http[2], "DELETE", "/kv/hello")[0] == 204
