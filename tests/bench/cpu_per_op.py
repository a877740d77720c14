"""CPU per operation of two (or more) installs, side by side, through the HTTP gateway.

Throughput on a shared 2-core machine swings with whatever else runs; the CPU a node spends per
request barely does. For each install (a ``kvnode`` executable) and each round this starts a
3-node cluster on 127.0.0.1 (node1 bootstraps, the others join), writes the 10,000 keys of the
workload, drives wrk (one thread, random keys of 16 bytes, 100-byte values, the anchors'
workload) at each connection count, and reads utime+stime of every node process from
/proc/PID/stat before and after. Installs alternate within a round (A B A B ...), and the report
gives medians over rounds of CPU-ms per 1000 requests (leader, followers) and req/s:

    python -m tests.bench.cpu_per_op --install before=/tmp/venv-before/bin/kvnode \\
        --install main=/tmp/venv-main/bin/kvnode --rounds 3 --duration 5

Needs wrk on PATH. A development tool: no figure here is asserted anywhere.
"""
from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import click

NKEYS = 10_000
VALUE = b"0123456789" * 10
CLK_TCK = os.sysconf("SC_CLK_TCK")

LUA = r"""
local NKEYS = %(nkeys)d
local VALUE = string.rep("0123456789", 10)
local paths = {}
function init(args)
  local f = io.open("/dev/urandom", "rb")
  local b = f:read(4); f:close()
  math.randomseed(b:byte(1) * 16777216 + b:byte(2) * 65536 + b:byte(3) * 256 + b:byte(4))
  for i = 0, NKEYS - 1 do paths[i] = string.format("/kv/k%%015d", i) end
end
function request()
  %(request)s
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT,%%.1f,%%.3f,%%.3f,%%d,%%d,%%d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    e.connect + e.read + e.write + e.timeout, e.status, summary.requests))
end
"""
REQUEST = {
    "put": 'return wrk.format("PUT", paths[math.random(0, NKEYS - 1)], nil, VALUE)',
    "get": 'return wrk.format("GET", paths[math.random(0, NKEYS - 1)])',
}


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process, in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def http_call(port: int, method: str, path: str, body: Optional[bytes] = None,
              timeout: float = 2.0) -> tuple:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


@dataclass
class Sample:
    """One wrk run against one install."""
    req_s: float
    p50_ms: float
    requests: int
    errors: int
    leader_ms_per_k: float
    followers_ms_per_k: float


class LocalCluster:
    """Three kvnode processes of one install on 127.0.0.1 (ports from ``base``)."""

    def __init__(self, kvnode: str, base: int, workdir: Path) -> None:
        self.kvnode, self.base, self.dir = kvnode, base, workdir
        self.procs: dict = {}

    def port(self, kind: int, i: int) -> int:
        return self.base + kind * 10 + i  # kind 0 peer, 1 client, 2 http

    def launch(self, i: int) -> None:
        args = [self.kvnode, "--id", f"n{i}", "--addr", f"127.0.0.1:{self.port(0, i)}",
                "--client", f"127.0.0.1:{self.port(1, i)}", "--http", f"127.0.0.1:{self.port(2, i)}",
                "--data-dir", str(self.dir / "data"), "--log-level", "WARNING"]
        args += ["--bootstrap"] if i == 1 else ["--join", f"127.0.0.1:{self.port(0, 1)}"]
        log = open(self.dir / f"n{i}.log", "ab")
        self.procs[i] = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log)

    def status(self, i: int) -> Optional[dict]:
        try:
            code, body = http_call(self.port(2, i), "GET", "/status", timeout=1.0)
            return json.loads(body) if code == 200 else None
        except (OSError, ValueError, http.client.HTTPException):
            return None

    def leader(self) -> Optional[int]:
        for i in self.procs:
            st = self.status(i)
            if st and st.get("state") == "leader":
                return i
        return None

    def wait(self, what: str, cond, timeout: float = 40.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, p in self.procs.items():
                if p.poll() is not None:
                    raise click.ClickException(f"n{i} exited ({p.returncode}); see {self.dir}")
            if cond():
                return
            time.sleep(0.1)
        raise click.ClickException(f"timed out waiting for {what}; see {self.dir}")

    def write_ok(self) -> bool:
        lead = self.leader()
        if lead is None:
            return False
        try:
            return http_call(self.port(2, lead), "PUT", "/kv/__ready", b"ready")[0] in (200, 204)
        except (OSError, http.client.HTTPException):
            return False

    def caught_up(self) -> bool:
        lead = self.leader()
        st = self.status(lead) if lead else None
        if not st or len(st.get("members", [])) != 3:
            return False
        sts = [self.status(i) for i in self.procs]
        return all(s and s.get("applied_index", -1) >= st["commit_index"] for s in sts)

    def start(self) -> int:
        (self.dir / "data").mkdir(parents=True)
        self.launch(1)
        self.wait("node1 to lead", self.write_ok)
        self.launch(2)
        self.launch(3)
        self.wait("three caught-up members", self.caught_up)
        lead = self.leader()
        assert lead is not None
        return lead

    def preload(self, lead: int, threads: int = 16) -> None:
        todo = list(range(NKEYS))
        lock = threading.Lock()
        failed: list = []

        def worker() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", self.port(2, lead), timeout=10)
            while True:
                with lock:
                    if not todo:
                        break
                    i = todo.pop()
                conn.request("PUT", "/kv/k%015d" % i, body=VALUE)
                r = conn.getresponse()
                r.read()
                if r.status >= 300:
                    failed.append(i)
            conn.close()

        ts = [threading.Thread(target=worker) for _ in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        if failed:
            raise click.ClickException(f"preload: {len(failed)} writes failed")
        self.wait("followers to apply the preload", self.caught_up)

    def stop(self) -> None:
        for p in self.procs.values():
            p.terminate()
        for p in self.procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def run_wrk(script: Path, port: int, conns: int, duration: float, pids: dict, lead: int) -> Sample:
    before = {i: cpu_ticks(p) for i, p in pids.items()}
    out = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{max(1, round(duration))}s", "--timeout", "5s",
                          "-s", str(script), f"http://127.0.0.1:{port}"],
                         capture_output=True, text=True, check=False).stdout
    after = {i: cpu_ticks(p) for i, p in pids.items()}
    m = re.search(r"^RESULT,([\d.]+),([\d.]+),([\d.]+),(\d+),(\d+),(\d+)$", out, re.M)
    if not m:
        raise click.ClickException(f"wrk gave no result:\n{out}")
    req_s, p50, _p99 = (float(m.group(k)) for k in (1, 2, 3))
    errors, non2xx, n = int(m.group(4)), int(m.group(5)), int(m.group(6))
    ms = {i: (after[i] - before[i]) * 1000.0 / CLK_TCK for i in pids}
    per_k = 1000.0 / max(n, 1)
    followers = [ms[i] for i in pids if i != lead]
    return Sample(req_s, p50, n, errors + non2xx, ms[lead] * per_k,
                  statistics.mean(followers) * per_k)


@click.command()
@click.option("--install", "installs", multiple=True, required=True,
              help="LABEL=PATH of a kvnode executable; give two or more.")
@click.option("--rounds", default=3, show_default=True)
@click.option("--duration", default=5, show_default=True, help="Seconds of wrk per cell.")
@click.option("--conns", default="1 64", show_default=True)
@click.option("--ops", default="put get", show_default=True)
@click.option("--port-base", default=27000, show_default=True)
@click.option("--keep", is_flag=True, help="Keep the scratch directories (logs).")
def main(installs: tuple, rounds: int, duration: float, conns: str, ops: str,
         port_base: int, keep: bool) -> None:
    """Median CPU-ms per 1000 requests and req/s of each install through its HTTP gateway."""
    if shutil.which("wrk") is None:
        raise click.ClickException("wrk is not on PATH")
    pairs = [tuple(s.split("=", 1)) for s in installs]
    scratch = Path(tempfile.mkdtemp(prefix="cpu-per-op-"))
    scripts = {}
    for op, req in REQUEST.items():
        scripts[op] = scratch / f"{op}.lua"
        scripts[op].write_text(LUA % {"nkeys": NKEYS, "request": req})
    cells = [(op, int(c)) for op in ops.split() for c in conns.split()]
    results: dict = {(label, cell): [] for label, _ in pairs for cell in cells}
    try:
        for r in range(rounds):
            order = pairs if r % 2 == 0 else list(reversed(pairs))
            for label, kvnode in order:
                cl = LocalCluster(kvnode, port_base, scratch / f"{label}-r{r}")
                try:
                    lead = cl.start()
                    cl.preload(lead)
                    pids = {i: p.pid for i, p in cl.procs.items()}
                    for cell in cells:
                        s = run_wrk(scripts[cell[0]], cl.port(2, lead), cell[1], duration, pids, lead)
                        results[(label, cell)].append(s)
                        click.echo(f"r{r} {label:>8} {cell[0]} c={cell[1]:<3} {s.req_s:9.0f} req/s "
                                   f"p50 {s.p50_ms:6.2f} ms  cpu-ms/1k: leader {s.leader_ms_per_k:6.1f} "
                                   f"followers {s.followers_ms_per_k:6.1f}  errors {s.errors}", err=True)
                finally:
                    cl.stop()
    finally:
        if not keep:
            shutil.rmtree(scratch, ignore_errors=True)
    med = statistics.median
    click.echo(f"medians over {rounds} rounds of {duration:g} s; CPU = utime+stime in ms per 1000 requests "
               "(followers: their mean)")
    click.echo(f"{'install':<12}{'cell':<10}{'req/s':>9}{'p50 ms':>8}{'CPU leader':>12}{'CPU followers':>15}")
    for cell in cells:
        for label, _ in pairs:
            ss = results[(label, cell)]
            click.echo(f"{label:<12}{cell[0] + ' c=' + str(cell[1]):<10}{med([s.req_s for s in ss]):>9.0f}"
                       f"{med([s.p50_ms for s in ss]):>8.2f}{med([s.leader_ms_per_k for s in ss]):>12.1f}"
                       f"{med([s.followers_ms_per_k for s in ss]):>15.1f}")

if __name__ == "__main__":
    main()
