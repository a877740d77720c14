"""Micro-benchmark of the HTTP gateway alone, against a fake node that answers at once.

::

    python3 tests/bench_http_gateway.py                      # this tree's gateway (batched submit)
    python3 tests/bench_http_gateway.py --impl old.py        # another wire/http.py, through its
                                                             # Client ``local=`` hook (e.g. from git)
    python3 tests/bench_http_gateway.py --conns 1,16,64 --runs 3 --duration 5 --ops put,get
    git show HEAD:wire/http.py > /tmp/old_http.py
    python3 tests/bench_http_gateway.py --compare /tmp/old_http.py   # both, interleaved run by run

The fake node is one thread that takes request batches from a queue and answers each request
with ``route.deliver(reply)`` (as ``FrontDoor.reply_many`` does): "ok" for a PUT, a 100-byte
value for a GET. Load comes from ``wrk -t1 -cN`` with a Lua script (PUT /kv/<random key of
10,000> with a 100-byte body, or GET of the same keys). Prints each run's req/s and the median.
Needs ``wrk`` on the PATH; not collected by pytest.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import queue
import re
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from raftkv.wire.frontdoor import LocalRoute  # noqa: E402
from raftkv.wire.messages import ClientReply  # noqa: E402

LUA = {
    "put": """
local paths = {}
local value = string.rep("0123456789", 10)
function init(args)
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 100000)
  for i = 0, 9999 do paths[i] = string.format("/kv/k%015d", i) end
end
function request() return wrk.format("PUT", paths[math.random(0, 9999)], nil, value) end
""",
    "get": """
local paths = {}
function init(args)
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 100000)
  for i = 0, 9999 do paths[i] = string.format("/kv/k%015d", i) end
end
function request() return wrk.format("GET", paths[math.random(0, 9999)]) end
""",
}

VALUE = b"0123456789" * 10
OK = ClientReply("ok", leader_id="node1")
OK_GET = ClientReply("ok", value=VALUE, leader_id="node1")


class FakeNode:
    """Answers every request from its own thread, like the node's actors via reply_many."""

    def __init__(self) -> None:
        self.q: queue.SimpleQueue = queue.SimpleQueue()
        self.batches = 0
        self.requests = 0
        threading.Thread(target=self._run, name="fake-node", daemon=True).start()

    def submit(self, items: list) -> None:
        self.q.put(items)

    def local_call(self, req, wait: float):  # the Client ``local=`` hook
        route = LocalRoute()
        self.q.put([(route, req)])
        return route.wait(wait)

    def _run(self) -> None:
        while True:
            items = self.q.get()
            self.batches += 1
            self.requests += len(items)
            for route, req in items:
                route.deliver(OK_GET if req.op == "get" else OK)


def load_gateway(impl: str):
    if impl == "new":
        from raftkv.wire.http import HttpGateway

        return HttpGateway
    spec = importlib.util.spec_from_file_location("gateway_under_test", impl)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.HttpGateway


def wrk_output(url: str, script: str, conns: int, duration: float, extra: Sequence[str] = ()) -> str:
    """What ``wrk -t1 -cCONNS`` printed after ``duration`` seconds against ``url`` with the Lua
    ``script`` (``extra``: more wrk arguments, e.g. ``-H`` headers). Also used by
    tests/bench/secure_cost.py."""
    return subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{duration:g}s", "-s", script, *extra, url],
                          capture_output=True, text=True, check=True, timeout=duration + 60).stdout


def wrk_rate(out: str) -> Optional[float]:
    """The requests/s of a wrk output; None if it printed none."""
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return float(m.group(1)) if m else None


def wrk(port: int, script: str, conns: int, duration: int) -> float:
    out = wrk_output(f"http://127.0.0.1:{port}", script, conns, duration)
    rate = wrk_rate(out)
    if rate is None or "Non-2xx" in out or "Socket errors" in out:
        print(out, file=sys.stderr)
    return rate if rate is not None else 0.0


def start(impl: str):
    node = FakeNode()
    cls = load_gateway(impl)
    addr = "127.0.0.1:1"  # never dialled: the in-process hook answers for it
    if impl == "new":
        gw = cls("127.0.0.1:0", [addr], local=(addr, node.local_call), submit=node.submit)
    else:
        gw = cls("127.0.0.1:0", [addr], local=(addr, node.local_call))
    gw.start()
    return node, gw


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--impl", default="new", help='"new" (this tree, batched submit) or a path to an http.py')
    ap.add_argument("--compare", metavar="PATH", help="also run the http.py at PATH, interleaved run by run "
                                                      "with --impl (fairer on a noisy machine)")
    ap.add_argument("--conns", default="1,16,64")
    ap.add_argument("--ops", default="put,get")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5)
    args = ap.parse_args()

    impls = [args.compare, args.impl] if args.compare else [args.impl]
    started = {impl: start(impl) for impl in impls}
    tmp = tempfile.mkdtemp(prefix="gwbench-")
    try:
        for op in args.ops.split(","):
            script = os.path.join(tmp, f"{op}.lua")
            Path(script).write_text(LUA[op])
            for impl in impls:
                wrk(started[impl][1].port, script, 16, 1)  # warm-up
            for c in (int(x) for x in args.conns.split(",")):
                runs: dict = {impl: [] for impl in impls}
                for _ in range(args.runs):
                    for impl in impls:
                        runs[impl].append(wrk(started[impl][1].port, script, c, args.duration))
                for impl in impls:
                    name = "new" if impl == "new" else Path(impl).name
                    print(f"{name:12} {op:4} -c{c:<3} median {statistics.median(runs[impl]):9.0f} req/s   runs "
                          + " ".join(f"{r:.0f}" for r in runs[impl]), flush=True)
        for impl in impls:
            node = started[impl][0]
            if node.batches:
                print(f"{impl}: fake node got {node.requests} requests in {node.batches} submits "
                      f"({node.requests / node.batches:.1f} per submit)")
    finally:
        for _, gw in started.values():
            gw.stop()


if __name__ == "__main__":
    main()
