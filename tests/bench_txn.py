"""Benchmark of transactions (issue 14): txn/s on a local 3-node cluster, next to plain puts/s
and compare-and-set/s on the same cluster. Prints numbers, asserts nothing.

Each of ``--threads`` threads has its own Client and loops for ``--seconds`` on one kind of
request; the kinds run one after the other:

- put: ``kv.put(key, 100 B)``;
- cas: ``kv.cas(key, old, new)`` on the thread's own key (always succeeds);
- txn: a transfer between two of the thread's keys: compare the source's value, delete it,
  put the destination, get it (2 writes and a read in one entry, as a bank transfer does);
- txn-read: a txn of two gets (a consistent read of two keys: one log entry, unlike a get).

    python tests/bench_txn.py [--threads 16] [--seconds 10] [--json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout

from raftkv import txn as t  # noqa: E402
from tests.bench.cluster import BenchCluster  # noqa: E402


def run_kind(cluster: BenchCluster, kind: str, threads: int, seconds: float) -> dict:
    counts = [0] * threads
    lat: list[list[float]] = [[] for _ in range(threads)]
    start = threading.Barrier(threads + 1)
    stop = threading.Event()

    def worker(i: int) -> None:
        with cluster.client(timeout=30) as kv:
            a, b = f"{kind}/{i}/a", f"{kind}/{i}/b"
            kv.put(a, b"1")
            cur = b"1"
            start.wait()
            n = 0
            while not stop.is_set():
                t0 = time.perf_counter()
                if kind == "put":
                    kv.put(a, b"v" * 100)
                elif kind == "cas":
                    new = b"%d" % n
                    kv.cas(a, cur, new)
                    cur = new
                elif kind == "txn":
                    src, dst = (a, b) if n % 2 == 0 else (b, a)
                    res = kv.txn([t.value(src) == b"1"], [t.delete(src), t.put(dst, b"1"), t.get(dst)])
                    assert res.succeeded
                else:
                    kv.txn(success=[t.get(a), t.get(b)])
                lat[i].append(time.perf_counter() - t0)
                n += 1
            counts[i] = n

    ths = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for th in ths:
        th.start()
    start.wait()
    t0 = time.perf_counter()
    time.sleep(seconds)  # the measured interval itself, not a stand-in for a condition
    stop.set()
    for th in ths:
        th.join()
    took = time.perf_counter() - t0
    all_lat = sorted(x for xs in lat for x in xs)
    return {"kind": kind, "ops": sum(counts), "per_second": round(sum(counts) / took),
            "p50_ms": round(statistics.median(all_lat) * 1000, 2),
            "p99_ms": round(all_lat[int(len(all_lat) * 0.99)] * 1000, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-txn-") as d:
        cluster = BenchCluster(Path(d), n=3)
        cluster.start()
        try:
            cluster.wait_leader()
            rows = [run_kind(cluster, k, args.threads, args.seconds) for k in ("put", "cas", "txn", "txn-read")]
        finally:
            cluster.stop()
    if args.json:
        print(json.dumps(rows))
        return
    print(f"{'kind':10} {'ops/s':>8} {'p50 ms':>8} {'p99 ms':>8}   ({args.threads} threads, {args.seconds:g}s each)")
    for r in rows:
        print(f"{r['kind']:10} {r['per_second']:>8} {r['p50_ms']:>8} {r['p99_ms']:>8}")


if __name__ == "__main__":
    main()
