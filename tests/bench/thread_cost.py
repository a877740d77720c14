"""CPU and context switches per request of each node thread, two (or more) installs side by side.

cpu_per_op.py says how much CPU a node spends per request; this says in which of its threads, and
how often each thread went to sleep and was woken again (a voluntary context switch: an empty
inbox, a lock or the GIL held by another thread, a socket or a disk wait). A thread hand-off on a
request's path shows up as wake-ups per request of the receiving thread; batching shows up as
fewer of them. Same cluster and workload as cpu_per_op.py (3 nodes on 127.0.0.1, 10,000 keys of
16 bytes, 100-byte values, one wrk thread); the installs alternate within a round (A B, then
B A), and every figure is the median over rounds with its range:

    python -m tests.bench.thread_cost --install base=/tmp/venv-base/bin/kvnode \\
        --install before=/tmp/venv-before/bin/kvnode --rounds 3 --duration 8

For each thread: CPU (utime+stime) in us per request, and voluntary / involuntary switches per
1,000 requests, read from /proc/PID/task/*/stat and status around wrk. Threads are grouped by
name with trailing digits dropped (the followers' figures are their mean). Python names its
threads only inside the interpreter, so the nodes run with a ``sitecustomize`` (written to the
scratch directory and put on their PYTHONPATH) that gives each Python thread's OS thread its
Python name, cut to the kernel's 15 bytes; RocksDB and libzmq name theirs. A development tool:
no figure here is asserted anywhere.
"""
from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

import click

from .cpu_per_op import CLK_TCK, LUA, NKEYS, REQUEST, LocalCluster

# Written to the scratch directory and found by the nodes' interpreters at start-up.
SITECUSTOMIZE = '''\
# Names each Python thread's OS thread after it (tests/bench/thread_cost.py, a measuring aid).
import ctypes
import threading

try:
    _prctl = ctypes.CDLL(None).prctl
    _run = threading.Thread._bootstrap_inner

    def _named(self):
        try:
            _prctl(15, self.name.encode()[:15] + b"\\0", 0, 0, 0)  # PR_SET_NAME
        except Exception:
            pass
        return _run(self)

    threading.Thread._bootstrap_inner = _named
except Exception:
    pass
'''

_VOLUNTARY = re.compile(r"^voluntary_ctxt_switches:\s+(\d+)", re.M)
_INVOLUNTARY = re.compile(r"^nonvoluntary_ctxt_switches:\s+(\d+)", re.M)


def thread_counters(pid: int) -> Counter:
    """Per thread name: CPU ticks ``name``, voluntary switches ``name:v``, involuntary ``name:i``."""
    out: Counter = Counter()
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        base = f"/proc/{pid}/task/{tid}"
        try:
            with open(f"{base}/comm") as f:
                name = re.sub(r"[-_]?\d+$", "", f.read().strip()) or "?"
            with open(f"{base}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"{base}/status") as f:
                status = f.read()
        except OSError:  # the thread ended meanwhile
            continue
        out[name] += int(fields[11]) + int(fields[12])
        m_v, m_i = _VOLUNTARY.search(status), _INVOLUNTARY.search(status)
        out[name + ":v"] += int(m_v.group(1)) if m_v else 0
        out[name + ":i"] += int(m_i.group(1)) if m_i else 0
    return out


def _per_request(before: Counter, after: Counter, n: int) -> dict:
    """us of CPU per request and switches per 1,000 requests, per thread name, and the total."""
    out: dict = {}
    total = 0
    for key in set(before) | set(after):
        d = after[key] - before[key]  # a thread that ended counts from what it had
        if ":" in key:
            out[key] = d * 1000.0 / n
        else:
            out[key] = d * 1e6 / CLK_TCK / n
            total += d
    out["all threads"] = total * 1e6 / CLK_TCK / n
    return out


@click.command()
@click.option("--install", "installs", multiple=True, required=True,
              help="LABEL=PATH of a kvnode executable; give two or more.")
@click.option("--rounds", default=3, show_default=True)
@click.option("--duration", default=8, show_default=True, help="Seconds of wrk per cell.")
@click.option("--conns", default=64, show_default=True)
@click.option("--op", type=click.Choice(sorted(REQUEST)), default="put", show_default=True)
@click.option("--port-base", default=27100, show_default=True)
@click.option("--min-cpu", default=0.2, show_default=True,
              help="Leave out threads below this many us per request in every column.")
def main(installs: tuple, rounds: int, duration: int, conns: int, op: str, port_base: int,
         min_cpu: float) -> None:
    """Median CPU (us per request) and context switches (per 1,000 requests) of each thread."""
    if shutil.which("wrk") is None:
        raise click.ClickException("wrk is not on PATH")
    pairs = [tuple(s.split("=", 1)) for s in installs]
    scratch = Path(tempfile.mkdtemp(prefix="thread-cost-"))
    (scratch / "site").mkdir()
    (scratch / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    script = scratch / f"{op}.lua"
    script.write_text(LUA % {"nkeys": NKEYS, "request": REQUEST[op]})
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(scratch / "site") + (os.pathsep + saved if saved else "")
    # (install, "leader"/"followers", thread key) -> one value per round
    res: dict = defaultdict(list)
    rates: dict = defaultdict(list)
    try:
        for r in range(rounds):
            for label, kvnode in (pairs if r % 2 == 0 else pairs[::-1]):
                cl = LocalCluster(kvnode, port_base, scratch / f"{label}-r{r}")
                try:
                    lead = cl.start()
                    cl.preload(lead)
                    pids = {i: p.pid for i, p in cl.procs.items()}
                    before = {i: thread_counters(p) for i, p in pids.items()}
                    out = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--timeout", "5s",
                                          "-s", str(script), f"http://127.0.0.1:{cl.port(2, lead)}"],
                                         capture_output=True, text=True, check=False).stdout
                    after = {i: thread_counters(p) for i, p in pids.items()}
                finally:
                    cl.stop()
                m = re.search(r"^RESULT,([\d.]+),.*,(\d+)$", out, re.M)
                if not m:
                    raise click.ClickException(f"wrk gave no result:\n{out}")
                n = max(1, int(m.group(2)))
                rates[label].append(float(m.group(1)))
                per = {i: _per_request(before[i], after[i], n) for i in pids}
                followers = [per[i] for i in pids if i != lead]
                for key in set().union(*per.values()):
                    res[(label, "leader", key)].append(per[lead].get(key, 0.0))
                    res[(label, "followers", key)].append(statistics.mean(f.get(key, 0.0) for f in followers))
                click.echo(f"r{r} {label}: {float(m.group(1)):.0f} req/s, {n} requests, leader "
                           f"{per[lead]['all threads']:.1f} us per request", err=True)
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
        shutil.rmtree(scratch, ignore_errors=True)
    _report(pairs, res, rates, rounds, duration, op, conns, min_cpu)


def _cell(v: list) -> str:
    return f"{statistics.median(v):.1f} [{min(v):.1f}-{max(v):.1f}]" if v else "-"


def _report(pairs: list, res: dict, rates: dict, rounds: int, duration: int, op: str, conns: int,
            min_cpu: float) -> None:
    labels = [label for label, _ in pairs]
    click.echo(f"{op.upper()} c={conns}, medians [ranges] over {rounds} rounds of {duration} s; "
               "CPU in us per request, switches (voluntary / involuntary) per 1,000 requests")
    click.echo("req/s: " + ", ".join(f"{label} {_cell(rates[label])}" for label in labels))
    for role in ("leader", "followers"):
        names = sorted({k[2] for k in res if k[1] == role and ":" not in k[2] and k[2] != "all threads"})
        names = [n for n in names
                 if any(statistics.median(res.get((lb, role, n), [0.0])) >= min_cpu for lb in labels)]
        click.echo(f"--- {role}" + ("" if role == "leader" else " (their mean)"))
        click.echo(f"{'thread':<16}" + "".join(f"{lb + ' CPU':>22}{lb + ' switches v / i':>30}" for lb in labels))
        for name in names + ["all threads"]:
            row = f"{name:<16}"
            for lb in labels:
                cpu = res.get((lb, role, name), [])
                vol, inv = res.get((lb, role, name + ":v"), []), res.get((lb, role, name + ":i"), [])
                sw = f"{_cell(vol)} / {statistics.median(inv):.0f}" if vol and inv else "-"
                row += f"{_cell(cpu):>22}{sw:>30}"
            click.echo(row)


if __name__ == "__main__":
    main()
