"""Watch fan-out benchmark (issue 14): events/s delivered to many watchers, and the latency from a
write's commit (its acknowledgement to the writer) to its delivery to each watcher.

    python -m tests.bench_watch [--watchers 100] [--seconds 10] [--writers 4] [--procs 4]

Starts a local 3-node cluster (real kvnode processes), then ``--watchers`` watchers of one prefix,
spread over the nodes and over ``--procs`` processes (one Python process cannot drain 100 watches:
the GIL), and ``--writers`` writer threads putting keys of that prefix as fast as they are
acknowledged for ``--seconds``. Prints the writes acknowledged per second, the events delivered per
second (all watchers together), and the commit-to-delivery latency p50/p99: per event and watcher,
the time it reached the watcher minus the time the writer's put returned (both on this machine's
monotonic clock; a delivery before the acknowledgement counts as 0). A benchmark, not a test: it
asserts nothing but that every watcher got every write.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import shutil
import tempfile
import threading
import time
from pathlib import Path

from raftkv.wire.client import Client
from tests.integration.harness import Cluster

PREFIX = "bench/"


def _watch_proc(servers: list, start: int, n: int, expect: "mp.Value", out: "mp.Queue", ready: "mp.Queue",
                go: "mp.Event") -> None:
    """``n`` watcher threads in one process; reports [(key, delivery time)] per watcher."""
    results: list = [None] * n

    def one(i: int) -> None:
        # Each watcher asks a different node first (any node serves watches).
        order = servers[i % len(servers):] + servers[:i % len(servers)]
        got = []
        with Client(order, timeout=30) as kv, kv.watch(PREFIX, start_revision=start) as w:
            ready.put(1)
            go.wait()
            while True:
                for ev in w.poll():
                    got.append((ev.key, time.monotonic()))
                if expect.value and len(got) >= expect.value:
                    break
        results[i] = got

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put(results)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--watchers", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--writers", type=int, default=4)
    ap.add_argument("--procs", type=int, default=4)
    args = ap.parse_args()
    d = Path(tempfile.mkdtemp(prefix="bench-watch-"))
    c = Cluster(d, n=3)
    c.start()
    try:
        c.wait_leader()
        with c.client() as kv:
            kv.put("warmup", "1")
            start = kv.status()["applied_index"] + 1
        ctx = mp.get_context("spawn")
        expect = ctx.Value("q", 0)
        out, ready, go = ctx.Queue(), ctx.Queue(), ctx.Event()
        per = [args.watchers // args.procs + (1 if i < args.watchers % args.procs else 0) for i in range(args.procs)]
        procs = [ctx.Process(target=_watch_proc, args=(c.servers, start, k, expect, out, ready, go)) for k in per if k]
        for p in procs:
            p.start()
        for _ in range(args.watchers):
            ready.get(timeout=120)
        acked: dict = {}
        stop = threading.Event()

        def writer(t: int) -> None:
            with Client(c.servers, timeout=20) as kv:
                i = 0
                while not stop.is_set():
                    key = f"{PREFIX}{t}/{i:07d}"
                    kv.put(key, b"x" * 100)
                    acked[key] = time.monotonic()
                    i += 1

        go.set()
        t0 = time.monotonic()
        ws = [threading.Thread(target=writer, args=(t,)) for t in range(args.writers)]
        for w in ws:
            w.start()
        time.sleep(args.seconds)
        stop.set()
        for w in ws:
            w.join()
        write_s = time.monotonic() - t0
        expect.value = len(acked)
        results = []
        for _ in procs:
            results.extend(out.get(timeout=300))
        for p in procs:
            p.join()
        last = max(t for r in results for _, t in r)
        lat = sorted(max(0.0, t - acked[k]) for r in results for k, t in r if k in acked)
        delivered = sum(len(r) for r in results)
        complete = all({k for k, _ in r} >= set(acked) for r in results)
        print(f"watchers {args.watchers} (in {len(procs)} processes, spread over 3 nodes), "
              f"writers {args.writers}, {args.seconds:g} s")
        print(f"writes acknowledged: {len(acked)} ({len(acked) / write_s:.0f}/s)")
        print(f"events delivered: {delivered} ({delivered / (last - t0):.0f}/s over {last - t0:.1f} s); "
              f"every watcher got every write: {complete}")
        print(f"commit-to-delivery latency: p50 {lat[len(lat) // 2] * 1000:.1f} ms, "
              f"p99 {lat[int(len(lat) * 0.99)] * 1000:.1f} ms, max {lat[-1] * 1000:.1f} ms")
    finally:
        c.stop()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
