"""Benchmark of lease keepalives (issue 14): keepalives/s and their latency, through the client
library, against a 3-node cluster of real kvnode processes that it starts and stops itself.

::

    python3 tests/bench_leases.py                        # 8 threads, 64 leases, 8 s
    python3 tests/bench_leases.py --threads 1,8,32 --leases 1000 --duration 10

Each thread has its own Client and renews its share of the leases in a loop, one call at a time
(``Client.lease_keepalive``: a ReadIndex-confirmed renewal at the leader, nothing written to the
log). Prints keepalives/s and p50/p99 latency per thread count. Prints numbers, asserts nothing;
not collected by pytest.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from raftkv.wire.client import Client  # noqa: E402
from tests.integration.harness import Cluster  # noqa: E402


def run(servers: list, leases: list, threads: int, duration: float) -> tuple:
    lat: list = []
    lock = threading.Lock()
    stop = time.monotonic() + duration

    def worker(i: int) -> None:
        mine = leases[i::threads] or leases
        local = []
        with Client(servers, timeout=5) as kv:
            k = 0
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                kv.lease_keepalive(mine[k % len(mine)])
                local.append(time.perf_counter() - t0)
                k += 1
        with lock:
            lat.extend(local)

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    took = time.monotonic() - t0
    lat.sort()
    p = (lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000) if lat else (lambda q: 0.0)
    return len(lat) / took, p(0.5), p(0.99)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", default="1,8", help="comma-separated thread counts")
    ap.add_argument("--leases", type=int, default=64)
    ap.add_argument("--duration", type=float, default=8.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-leases-") as d:
        cluster = Cluster(Path(d), 3)
        cluster.start()
        try:
            cluster.wait_leader()
            with Client(cluster.servers, timeout=10) as kv:
                leases = [kv.lease_grant(600) for _ in range(args.leases)]
                for lid in leases:
                    kv.put(f"svc/{lid}", b"up", lease=lid)
            for n in (int(x) for x in args.threads.split(",")):
                rate, p50, p99 = run(cluster.servers, leases, n, args.duration)
                print(f"threads={n:3d} leases={args.leases}: {rate:8.0f} keepalives/s  p50 {p50:.2f} ms  "
                      f"p99 {p99:.2f} ms")
        finally:
            cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
