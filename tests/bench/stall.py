"""kvbench stall: the write stall of a snapshot on the leader, round after round, installs alternated.

Issue 12's figure "write p99 during a snapshot on the leader <= 1.5x the p99 without a snapshot",
measured small enough to repeat under the integration lock. Each run starts 3 fresh kvnode
processes of one install (raft.snapshot_threshold 10**9: only requested snapshots), preloads KEYS
keys through pipelined puts (no snapshot meanwhile, so every node holds KEYS entries in its
in-memory log, as a node does after a burst of writes between two threshold snapshots), starts
WRITERS closed-loop writers, measures BASELINE seconds without a snapshot, then asks the leader
for a snapshot ("A": its checkpoint, and the compaction of ~KEYS log entries) and, SECOND seconds
later, another ("B": a checkpoint that compacts only what came since). The figure of a window is
the p99 of the writes in flight at some moment between the request and the reply (a stall shows
in every write it held up), and the ratio is A's p99 over the baseline's.

Per run it also prints where the slowest writes of [request - 0.2 s, reply + TAIL s] started and
how long they took, beside the leader's log lines of that time (one clock: the bench and the nodes
share the machine), and, with ``--sample-threads``, the moments the leader's threads were in
uninterruptible sleep (state D in /proc/PID/task/*/stat, sampled every 2 ms with their wchan):
a wait for the disk, as opposed to a frozen interpreter; and the stretches in which a thread of
the leader, of a follower or of the bench itself (the writers) was runnable but got no CPU
(schedstat).

    python -m tests.bench.kvbench stall --keys 400000 --rounds 3 \\
        --install base=/tmp/venv-base/bin/kvnode --install new=/tmp/venv-new/bin/kvnode

Installs alternate within a round (A B, then B A in the next round, so neither always runs
first). A development tool: no figure here is asserted anywhere.
"""
from __future__ import annotations

import json
import os
import re
import statistics
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

import click

from raftkv.wire.client import Client

from .cluster import BenchCluster
from .common import fail, in_temp_dir, rounded
from .writers import LatencyWriteLoad, Preloader

_RE_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (.*)$")


def _log_lines(path: Path, since: int, t0_wall: float, lo: float, hi: float) -> list:
    """[(ms after t0_wall, text)] of the lines of a node log (from byte ``since``) stamped in
    [t0_wall + lo, t0_wall + hi] (seconds)."""
    out = []
    try:
        with open(path, "rb") as f:
            f.seek(since)
            text = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return out
    for line in text.splitlines():
        m = _RE_LOG_TIME.match(line)
        if not m:
            continue
        t = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp() - t0_wall
        if lo <= t <= hi:
            out.append((round(t * 1000, 1), m.group(2)[:160]))
    return out


_RE_EVENT = re.compile(r"EVENT_LOG_v1 (\{.*\})\s*$")
_EVENT_FIELDS = ("job", "cf_name", "num_entries", "num_deletes", "total_data_size", "memory_usage",
                 "file_number", "file_size", "compaction_reason", "output_level", "total_output_size",
                 "num_input_records", "lsm_state")


def _rocksdb_events(node_dir: Path, t0_wall: float, lo: float, hi: float) -> list:
    """[(ms after t0_wall, text)] of RocksDB's own events (flushes, compactions, file creations and
    deletions; the EVENT_LOG_v1 lines of the info LOG, stamped in microseconds since the epoch) of
    the node's state DB (kv) and log DB (raft) in [t0_wall + lo, t0_wall + hi]."""
    out = []
    for db in ("kv", "raft"):
        try:
            text = (node_dir / db / "LOG").read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            m = _RE_EVENT.search(line)
            if not m:
                continue
            try:
                ev = json.loads(m.group(1))
            except ValueError:
                continue
            t = ev.get("time_micros", 0) / 1e6 - t0_wall
            if lo <= t <= hi:
                fields = " ".join(f"{k}={ev[k]}" for k in _EVENT_FIELDS if k in ev)
                out.append((round(t * 1000, 1), f"rocksdb {db}: {ev.get('event')} {fields}"[:160]))
    return out


class ThreadSampler:
    """Samples the state of every thread of a process every ``period`` s; keeps the samples in
    which a thread was in uninterruptible sleep (D: waiting for the disk, usually), and each
    thread's time spent runnable but waiting for a CPU (the second field of
    /proc/PID/task/TID/schedstat: the kernel's run-queue wait)."""

    def __init__(self, pid: int, period: float = 0.002) -> None:
        self.pid = pid
        self.period = period
        self.stop = threading.Event()
        self.samples = 0
        self.waits: list = []  # (monotonic, tid, wchan)
        self.cpu: list = []  # (monotonic, {thread name: ns of CPU used so far, summed})
        self.queued: list = []  # (monotonic, {tid: (thread name, ns waited for a CPU so far)})
        self.thread = threading.Thread(target=self._run, daemon=True, name="thread-sampler")

    def _run(self) -> None:
        base = f"/proc/{self.pid}/task"
        while not self.stop.is_set():
            now = time.monotonic()
            try:
                tids = os.listdir(base)
            except OSError:
                return
            used: dict = {}
            queued: dict = {}
            for tid in tids:
                try:
                    with open(f"{base}/{tid}/comm", "rb") as f:
                        comm = f.read().strip().decode(errors="replace")
                    with open(f"{base}/{tid}/schedstat", "rb") as f:
                        fields = f.read().split()
                    used[comm] = used.get(comm, 0) + int(fields[0])
                    queued[tid] = (comm, int(fields[1]))
                    with open(f"{base}/{tid}/stat", "rb") as f:
                        state = f.read().rsplit(b")", 1)[1].split(None, 1)[0]
                    if state == b"D":
                        with open(f"{base}/{tid}/wchan", "rb") as f:
                            self.waits.append((now, int(tid), f.read().decode() or "?"))
                except OSError:
                    continue
            self.cpu.append((now, used))
            self.queued.append((now, queued))
            self.samples += 1
            time.sleep(self.period)

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=2)

    def cpu_ms(self, t_lo: float, t_hi: float) -> dict:
        """CPU ms used by the process's threads, by thread name (RocksDB names its own threads
        rocksdb:low / rocksdb:high; Python's are the program's name), between two moments."""
        inside = [(t, u) for t, u in self.cpu if t_lo <= t <= t_hi]
        if len(inside) < 2:
            return {}
        (_, a), (_, b) = inside[0], inside[-1]
        return {k: round((b[k] - a.get(k, 0)) / 1e6, 1) for k in b}

    def cpu_waits(self, t0: float, lo: float, hi: float, min_ms: float = 4.0) -> list:
        """[(start ms, end ms, thread name, ms waited)] stretches, relative to ``t0``, in which a
        thread spent most of each sampling step runnable but without a CPU, at least ``min_ms``
        in all: a thread held back by the machine's scheduler (other processes, the node's other
        threads), as opposed to a wait for the disk (D) or for a lock (sleeping)."""
        runs: dict = {}
        out = []
        prev: Optional[tuple] = None
        for t, q in self.queued:
            if prev is not None and lo <= t - t0 <= hi:
                pt, pq = prev
                step = t - pt
                for tid, (comm, ns) in q.items():
                    before = pq.get(tid)
                    waited = (ns - before[1]) / 1e9 if before is not None else 0.0
                    r = runs.get(tid)
                    if waited >= step / 2:
                        # the kernel adds a wait up when the thread gets a CPU again: the end of a
                        # stretch is when it was seen, its start is inferred from the wait
                        if r is None:
                            runs[tid] = [min(pt, t - waited), t, comm, waited]
                        else:
                            r[1] = t
                            r[3] += waited
                    elif r is not None:
                        out.append(runs.pop(tid))
            prev = (t, q)
        out.extend(runs.values())
        return sorted((round((s - t0) * 1000, 1), round((e - t0) * 1000, 1), comm, round(w * 1000, 1))
                      for s, e, comm, w in out if w * 1000 >= min_ms)

    def spans(self, t0: float, lo: float, hi: float) -> list:
        """[(start ms, end ms, tid, wchan)] runs of consecutive D samples, relative to ``t0``."""
        runs: dict = {}
        out = []
        for t, tid, wchan in self.waits:
            if not lo <= t - t0 <= hi:
                continue
            r = runs.get(tid)
            if r is not None and t - r[1] <= 3 * self.period and r[2] == wchan:
                r[1] = t
                continue
            if r is not None:
                out.append(r)
            runs[tid] = [t, t, wchan, tid]
        out.extend(runs.values())
        return sorted((round((s - t0) * 1000, 1), round((e - t0) * 1000 + self.period * 1000, 1), tid, w)
                      for s, e, w, tid in out)


def _one_run(name: str, kvnode: Optional[str], keys: int, value_size: int, writers: int, baseline: float,
             second: float, tail: float, trailing_logs: int, slowest: int, sample_threads: bool,
             log_level: Optional[str], directory: Path, out: Any) -> dict:
    raft = {"snapshot_threshold": 10**9, "trailing_logs": trailing_logs}
    extra = ("--log-level", log_level) if log_level else ()
    cl = BenchCluster(directory, n=3, raft=raft, extra_args=extra)
    if kvnode:
        cl.kvnode_cmd = (kvnode,)
    load_: Optional[LatencyWriteLoad] = None
    sampler: Optional[ThreadSampler] = None
    own: Optional[ThreadSampler] = None  # this process: the writers whose latency is measured
    others: list = []  # the followers (a write waits for one of them too)
    slow = 60.0 + keys / 2000.0
    try:
        cl.start()
        cl.wait_leader_status(60)
        pre = Preloader(cl.servers, keys, value_size).run()
        load_ = LatencyWriteLoad(cl.servers, writers, call_timeout=10.0, value_size=value_size)
        load_.start()
        time.sleep(1.0)  # every writer has found the leader
        t_b0 = time.monotonic()
        time.sleep(baseline)
        t_b1 = time.monotonic()
        leader = cl.wait_leader_status(30)["id"]
        if sample_threads:
            sampler = ThreadSampler(cl.nodes[leader].proc.pid)
            sampler.start()
            own = ThreadSampler(os.getpid())
            own.start()
            others = [ThreadSampler(cl.nodes[nid].proc.pid) for nid in cl.ids if nid != leader]
            for o in others:
                o.start()
        marks = {nid: cl.log_size(nid) for nid in cl.ids}
        windows = []
        for label, pause in (("A", second), ("B", 1.0 + tail)):
            with Client([cl.nodes[leader].client], timeout=slow, attempt_timeout=slow) as c:
                w0, t0 = time.time(), time.monotonic()
                info = c.snapshot()
                t1 = time.monotonic()
            windows.append((label, w0, t0, t1, info.get("index") if isinstance(info, dict) else None))
            time.sleep(pause)
        load_.stop.set()
        load_.close()
        if sampler is not None:
            sampler.close()
        if own is not None:
            own.close()
        for o in others:
            o.close()
        base = load_.window(t_b0, t_b1, overlap=False)
        res: dict = {"install": name, "leader": leader, "preload": pre, "baseline": base}
        for label, w0, t0, t1, index in windows:
            w = load_.window(t0, t1, overlap=True)
            wt = load_.window(t0, t1 + tail, overlap=True)
            lo, hi = -0.2, t1 - t0 + tail
            sel = sorted(((e - s) * 1000, (s - t0) * 1000) for s, e, ok in list(load_.samples)
                         if ok and e >= t0 + lo and s <= t0 + hi)
            res[label] = {
                "index": index, "seconds": round(t1 - t0, 3), "window": w, "with_tail": wt,
                "ratio": round(w["p99_ms"] / base["p99_ms"], 2) if w["p99_ms"] and base["p99_ms"] else None,
                "slowest": [{"start_ms": round(st, 1), "ms": round(lat, 1)} for lat, st in sel[-slowest:][::-1]],
                "logs": {nid: _log_lines(cl.nodes[nid].log_path, marks[nid], w0, lo, hi)
                         + _rocksdb_events(cl.data_dir / nid, w0, lo, hi) for nid in cl.ids},
                "disk_waits": sampler.spans(t0, lo, hi) if sampler is not None else None,
                "cpu_ms": sampler.cpu_ms(t0, t1) if sampler is not None else None,
                "cpu_waits": sampler.cpu_waits(t0, lo, hi) if sampler is not None else None,
                "bench_cpu_waits": own.cpu_waits(t0, lo, hi) if own is not None else None,
                "follower_cpu_waits": [x for o in others for x in o.cpu_waits(t0, lo, hi)],
            }
        return res
    finally:
        if load_ is not None:
            load_.stop.set()
        if sampler is not None:
            sampler.close()
        if own is not None:
            own.close()
        for o in others:
            o.close()
        cl.stop()
        if load_ is not None:
            load_.abandon()


def _print_run(r: dict, verbose: bool) -> None:
    p = click.echo
    b = r["baseline"]
    line = f"  {r['install']:<10} baseline p99 {b['p99_ms']:>7.2f} ms ({b['writes']} writes)"
    for label in ("A", "B"):
        w = r[label]
        line += (f" | {label}: p99 {w['window']['p99_ms'] or 0:>7.2f} ms = {w['ratio'] or 0:.2f}x "
                 f"({w['window']['writes']} writes, {w['seconds'] * 1000:.0f} ms; +tail max "
                 f"{w['with_tail']['max_ms'] or 0:.1f})")
    p(line)
    if not verbose:
        return
    for label in ("A", "B"):
        w = r[label]
        p(f"    {label}: slowest writes (start ms after the request, ms): "
          + ", ".join(f"{s['start_ms']:+.0f}:{s['ms']:.1f}" for s in w["slowest"]))
        events = [(t, nid, text) for nid, lines in w["logs"].items() for t, text in lines]
        for t, nid, text in sorted(events):
            p(f"      {t:+8.1f} {nid} {text}")
        if w["cpu_ms"]:
            p(f"      leader CPU ms from request to reply, by thread name: {w['cpu_ms']}")
        if w["disk_waits"]:
            p("      leader threads in D state (start..end ms, tid, wchan): "
              + ", ".join(f"{s:+.0f}..{e:+.0f} {tid} {wc}" for s, e, tid, wc in w["disk_waits"]))
        for key, whose in (("cpu_waits", "leader"), ("follower_cpu_waits", "followers'"),
                           ("bench_cpu_waits", "bench (writers)")):
            if w.get(key):
                p(f"      {whose} threads runnable without a CPU (start..end ms, name, ms waited): "
                  + ", ".join(f"{s:+.0f}..{e:+.0f} {c} {ms:.0f}" for s, e, c, ms in w[key]))


def _summary(runs: list) -> dict:
    out: dict = {}
    for name in dict.fromkeys(r["install"] for r in runs):
        mine = [r for r in runs if r["install"] == name]
        fig = {"baseline_p99_ms": [r["baseline"]["p99_ms"] for r in mine],
               "A_p99_ms": [r["A"]["window"]["p99_ms"] for r in mine],
               "A_ratio": [r["A"]["ratio"] for r in mine],
               "B_p99_ms": [r["B"]["window"]["p99_ms"] for r in mine],
               "B_ratio": [r["B"]["ratio"] for r in mine]}
        out[name] = {k: {"runs": v, "median": rounded(statistics.median([x for x in v if x is not None]), 2)
                         if any(x is not None for x in v) else None} for k, v in fig.items()}
    return out


def _parse_install(spec: str) -> tuple:
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        fail(2, f"--install {spec!r}: expected NAME=PATH/bin/kvnode")
    if not os.access(path, os.X_OK):
        fail(2, f"--install {spec!r}: {path} is not an executable")
    return name, path


@click.command()
@click.option("--keys", "-k", type=click.IntRange(1, None), default=400000, show_default=True,
              help="Keys preloaded (and so log entries the leader's first snapshot compacts).")
@click.option("--value-size", "-b", type=click.IntRange(0, None), default=100, show_default=True)
@click.option("--writers", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Closed-loop writer threads whose latency is measured.")
@click.option("--baseline", type=click.FloatRange(0.5, None), default=4.0, show_default=True,
              help="Seconds of writes measured without a snapshot.")
@click.option("--second", type=click.FloatRange(0.5, None), default=2.0, show_default=True,
              help="Seconds from snapshot A's request to B's.")
@click.option("--tail", type=click.FloatRange(0.0, None), default=1.0, show_default=True,
              help="Seconds after a snapshot's reply still searched for slow writes (the timeline).")
@click.option("--trailing-logs", type=click.IntRange(0, None), default=5000, show_default=True)
@click.option("--rounds", type=click.IntRange(1, 50), default=3, show_default=True)
@click.option("--install", "installs", multiple=True, metavar="NAME=PATH",
              help="A kvnode executable to measure (repeatable; alternated). Default: this checkout.")
@click.option("--slowest", type=click.IntRange(0, 100), default=6, show_default=True,
              help="Slowest writes listed per window.")
@click.option("--sample-threads", is_flag=True, default=False,
              help=("Sample the leader's threads every 2 ms and list their waits in state D and, for them, "
                    "the followers' and the bench's own threads, the stretches runnable without a CPU."))
@click.option("--log-level", type=click.Choice(["debug", "info"]), default=None,
              help="The nodes' log level (debug: more events in the timeline, and more cost).")
@click.option("--quiet", "-q", is_flag=True, default=False, help="No timeline: one line per run.")
@click.option("--json", "as_json", is_flag=True, default=False, help="Print one JSON object.")
@click.option("--keep-dir", is_flag=True, default=False, help="Keep the temporary directories.")
def stall(keys, value_size, writers, baseline, second, tail, trailing_logs, rounds, installs, slowest,
          sample_threads, log_level, quiet, as_json, keep_dir) -> None:
    """Write p99 during a snapshot on the leader against without one, per run, installs alternated.

    Each run: 3 fresh nodes, KEYS keys preloaded, WRITERS writers; p99 of the writes without a
    snapshot, during the leader's snapshot A (which compacts ~KEYS log entries) and during B
    (SECOND s later: a checkpoint and a small compaction), and the ratios; the slowest writes
    beside the nodes' log lines."""
    pairs = [_parse_install(s) for s in installs] or [("checkout", None)]
    runs: list = []
    for rnd in range(rounds):
        order = pairs if rnd % 2 == 0 else pairs[::-1]
        for name, kvnode in order:
            started = datetime.now().strftime("%H:%M:%S")
            r = in_temp_dir("kvbench-stall-", keep_dir, lambda d: _one_run(
                name, kvnode, keys, value_size, writers, baseline, second, tail, trailing_logs, slowest,
                sample_threads, log_level, d, None))
            r["round"], r["started"] = rnd + 1, started
            runs.append(r)
            if not as_json:
                click.echo(f"round {rnd + 1}, {started}, preload {r['preload']['keys_per_sec']:.0f} keys/s:")
                _print_run(r, verbose=not quiet)
    summary = _summary(runs)
    if as_json:
        click.echo(json.dumps({"config": {"keys": keys, "value_size": value_size, "writers": writers,
                                          "baseline_s": baseline, "trailing_logs": trailing_logs},
                               "runs": runs, "summary": summary}))
        return
    click.echo("")
    click.echo("medians over runs (each run's figure in brackets):")
    for name, fig in summary.items():
        click.echo(f"  {name}:")
        for k, v in fig.items():
            click.echo(f"    {k:<16} {_fmt(v['median'])}  [{', '.join(_fmt(x) for x in v['runs'])}]")


def _fmt(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.2f}"
