"""The cost of security (issue 11): the same load on a secure and an insecure cluster, in one run.

::

    python -m tests.bench.secure_cost                      # 3 rounds of 8 s cells
    python -m tests.bench.secure_cost --rounds 5 --duration 10 --cells put1,put64,get64,lib1
    python -m tests.bench.secure_cost --cells get64 --baseline-kvnode /tmp/venv-main/bin/kvnode
    python -m tests.bench.secure_cost --kvnode /tmp/venv-this/bin/kvnode --cells get1,get64   # both from a venv

Starts two 3-node clusters of real kvnode processes on 127.0.0.1, both with HTTP gateways: an
insecure one (loopback-only mode, plain HTTP) and a secure one (``--bootstrap --secure`` plus two
``--join --token``: CurveZMQ doors, HTTPS, bearer tokens; the load uses a ``write`` token made
with ``token create``). 10,000 keys of 100 bytes are written to both first. Then, in rounds that
interleave the two clusters cell by cell (so that drift of the shared machine hits both alike):

- ``put1``, ``put64``, ``get1``, ``get64``: ``wrk -t1 -cN`` against the leader's gateway (PUT /kv/<random key>
  with a 100-byte body, or GET of one), plain HTTP or HTTPS with ``Authorization: Bearer``;
- ``lib1``: one library Client in this process writing in a closed loop for the cell's duration
  (the client door: NULL against CURVE).

Prints every run's requests/s and, per cell, the medians of both clusters and the secure one's
difference (with ``--baseline-kvnode``, a third cluster, secure, run by another installation's
kvnode, e.g. a venv of main: the same cells alternated with the others, and this checkout's secure
cluster against it); then, for the wrk cells, where the CPU went: microseconds of CPU per request of the
leader, of the two followers together and of wrk itself (from /proc/<pid>/stat and wrk's
rusage, over the cell), medians per cluster. On a shared machine where the clusters get a fixed
share of the CPU, requests/s follow the total. A benchmark, not a test: it asserts nothing and is not collected by pytest. Needs
``wrk`` (built with OpenSSL, as Debian's) on the PATH.
"""
from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

from raftkv.wire.client import Client
from tests.bench_http_gateway import LUA, VALUE, wrk_output, wrk_rate
from tests.integration.harness import Cluster, SecureCluster, wait_until
from tests.integration.secure_http import with_http

CELLS = ("put1", "put64", "get1", "get64", "lib1")
KEYS = 10_000
class Side:
    """One of the two clusters: how to reach its leader's gateway and its client door."""

    def __init__(self, name: str, cluster: Cluster, scheme: str, token: Optional[str]) -> None:
        self.name, self.cluster, self.scheme, self.token = name, cluster, scheme, token
        self.last_cpu: tuple = ()  # the last wrk cell's CPU us per request: leader, followers, wrk

    def client(self, timeout: float = 10.0) -> Client:
        return Client(self.cluster.servers, timeout=timeout, token=self.token)

    def leader_http(self) -> str:
        leader = self.cluster.wait_leader(30)
        return self.cluster.nodes[leader].http

    def wrk(self, op: str, conns: int, duration: float, script: Path) -> float:
        leader = self.cluster.wait_leader(30)
        url = f"{self.scheme}://{self.cluster.nodes[leader].http}/"
        extra = ["--timeout", "5s"] + (["-H", f"Authorization: Bearer {self.token}"] if self.token else [])
        before = self._cpu(leader)
        out = wrk_output(url, str(script), conns, duration, extra)
        after = self._cpu(leader)
        rate = wrk_rate(out)
        bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        if rate is None:
            raise RuntimeError(f"wrk printed no rate:\n{out}")
        if bad:
            print(f"    ({self.name} {op} c={conns}: {bad.group(1)} non-2xx answers)", flush=True)
        n = rate * duration
        if n > 0:
            self.last_cpu = tuple((b - a) * 1e6 / n for a, b in zip(before, after))
        return rate

    def _cpu(self, leader: str) -> tuple:
        """CPU seconds so far: the leader, the other nodes together, this process's finished children."""
        def node(p: Any) -> float:
            if p.proc is None:
                return 0.0
            try:
                f = Path(f"/proc/{p.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                return 0.0
            return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        others = sum(node(p) for k, p in self.cluster.nodes.items() if k != leader)
        return node(self.cluster.nodes[leader]), others, ru.ru_utime + ru.ru_stime

    def lib(self, duration: float) -> float:
        with self.client() as kv:
            n, end = 0, time.monotonic() + duration
            while time.monotonic() < end:
                kv.put(f"k{n % KEYS:015d}", VALUE)
                n += 1
        return n / duration


def _secure_side(name: str, cluster: SecureCluster, clusters: list) -> Side:
    clusters.append(cluster)
    cluster.start()
    with cluster.client() as kv:
        token = kv.token_create("bench", "write")
    return Side(name, cluster, "https", token)


def _start(base: Path, clusters: list, baseline: Optional[str] = None,
           kvnode: Optional[str] = None) -> tuple[Side, ...]:
    plain = Cluster(base / "insecure", n=3, http=True)
    secure = with_http(SecureCluster(base / "secure", n=3))
    if kvnode:
        plain.kvnode_cmd = secure.kvnode_cmd = (kvnode,)
    clusters.append(plain)
    plain.start()
    sides = [Side("insecure", plain, "http", None), _secure_side("secure", secure, clusters)]
    if baseline:
        other = with_http(SecureCluster(base / "baseline", n=3))
        other.kvnode_cmd = (baseline,)
        sides.append(_secure_side("baseline", other, clusters))
    for side in sides:
        side.cluster.wait_leader(30)
        with side.client(30) as kv:
            wait_until(lambda: kv.put("_warmup", b"1") is None, 30, what=f"a first write on {side.name}")
            kv.put_many((f"k{i:015d}", VALUE) for i in range(KEYS))
    return tuple(sides)


def main(argv: Optional[list] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.bench.secure_cost", description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=8.0, help="seconds per cell")
    p.add_argument("--cells", default=",".join(CELLS), help=f"some of {','.join(CELLS)}")
    p.add_argument("--keep", action="store_true", help="keep the clusters' directory (node logs)")
    p.add_argument("--kvnode", metavar="PATH",
                   help="the kvnode that runs the insecure and the secure cluster, e.g. a venv's (default: this "
                        "checkout's bin/kvnode, run as the integration tests run it)")
    p.add_argument("--baseline-kvnode", metavar="PATH",
                   help="also run a third, secure cluster with this kvnode (another installation, e.g. a "
                        "venv of main), alternated with the others: 'secure vs baseline' compares the two versions")
    a = p.parse_args(argv)
    cells = [c for c in a.cells.split(",") if c]
    unknown = [c for c in cells if c not in CELLS]
    if unknown:
        p.error(f"unknown cells {unknown}; pick from {','.join(CELLS)}")
    if shutil.which("wrk") is None and any(c != "lib1" for c in cells):
        p.error("wrk is not on the PATH")
    base = Path(tempfile.mkdtemp(prefix="kvsecure-cost-"))
    scripts = {}
    for op, text in LUA.items():
        scripts[op] = base / f"{op}.lua"
        scripts[op].write_text(text)
    clusters: list = []
    try:
        sides = _start(base, clusters, a.baseline_kvnode, a.kvnode)
        runs: dict[tuple[str, str], list[float]] = {(c, s.name): [] for c in cells for s in sides}
        cpu: dict[tuple[str, str], list[tuple]] = {(c, s.name): [] for c in cells for s in sides}
        for r in range(a.rounds):
            for cell in cells:
                order = sides if r % 2 == 0 else tuple(reversed(sides))
                for side in order:
                    fn: Callable[[], float]
                    if cell == "lib1":
                        fn = lambda side=side: side.lib(a.duration)  # noqa: E731
                    else:
                        op, conns = cell[:3], int(cell[3:])
                        fn = lambda side=side, op=op, conns=conns: side.wrk(op, conns, a.duration, scripts[op])  # noqa: E731
                    side.last_cpu = ()
                    rate = fn()
                    runs[(cell, side.name)].append(rate)
                    if side.last_cpu:
                        cpu[(cell, side.name)].append(side.last_cpu)
                    print(f"round {r + 1} {cell:6} {side.name:8} {rate:10,.0f} req/s", flush=True)
        print(f"\nmedians of {a.rounds} rounds, {a.duration:g} s per cell:")
        names = [s.name for s in sides]
        print(f"{'cell':6} " + " ".join(f"{n:>12}" for n in names) + f" {'secure vs insecure':>20}"
              + (f" {'baseline vs insecure':>22} {'secure vs baseline':>20}" if len(names) > 2 else ""))
        for cell in cells:
            med = {n: statistics.median(runs[(cell, n)]) for n in names}
            plain, sec = med["insecure"], med["secure"]
            line = f"{cell:6} " + " ".join(f"{med[n]:12,.0f}" for n in names) + f" {100 * (sec - plain) / plain:+19.1f} %"
            if "baseline" in med:
                b = med["baseline"]
                line += f" {100 * (b - plain) / plain:+21.1f} % {100 * (sec - b) / b:+19.1f} %"
            print(line)
        if any(cpu.values()):
            print("\nCPU us per request (medians): leader, followers (both), wrk, total")
            for (cell, name), rows in cpu.items():
                if rows:
                    med = [statistics.median(col) for col in zip(*rows)]
                    print(f"{cell:6} {name:8} leader {med[0]:6.1f}  followers {med[1]:6.1f}  wrk {med[2]:6.1f}"
                          f"  total {sum(med):6.1f}")
    finally:
        for c in clusters:
            c.stop()
        if a.keep:
            print(f"cluster directories kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
