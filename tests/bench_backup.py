"""Backup and restore timings on real processes: prints numbers, asserts nothing.

    python -m tests.bench_backup [--keys 100000] [--value-bytes 1000]

A 3-node cluster is loaded with KEYS keys; then ``kvclient backup`` (with a writer running
meanwhile, to see what a backup costs the writes), ``kvnode restore`` and the first start of the
restored node are timed.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from raftkv.wire.client import Client

from tests.integration.harness import KVCLIENT, KVNODE, ROOT, Cluster, NodeProc, free_port, wait_until


def _run(*args: object) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    if r.returncode != 0:
        raise SystemExit(f"{args[1]} failed: {r.stderr}")
    return time.monotonic() - t0, r


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--value-bytes", type=int, default=1000)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(Path(tmp) / "c", n=3)
        cluster.start()
        try:
            cluster.wait_leader(60)
            value = os.urandom(a.value_bytes // 2).hex().encode()
            t0 = time.monotonic()
            with cluster.client(timeout=60) as kv:
                for i in range(0, a.keys, 10_000):
                    kv.put_many((f"key{j:08d}", value) for j in range(i, min(a.keys, i + 10_000)))
            load = time.monotonic() - t0
            print(f"loaded {a.keys} keys of {a.value_bytes} bytes in {load:.1f}s")

            lat: list = []
            stop = threading.Event()

            def writer() -> None:
                with cluster.client(timeout=30) as kv:
                    while not stop.is_set():
                        t = time.monotonic()
                        kv.put("w", b"x")
                        lat.append(time.monotonic() - t)

            baseline: list = []
            with cluster.client(timeout=30) as kv:
                for _ in range(200):
                    t = time.monotonic()
                    kv.put("w", b"x")
                    baseline.append(time.monotonic() - t)
            th = threading.Thread(target=writer)
            th.start()
            backup = Path(tmp) / "b.backup"
            took, r = _run(KVCLIENT, "--servers", ",".join(cluster.servers), "backup", backup)
            stop.set()
            th.join()
            size = backup.stat().st_size
            print(r.stdout.strip())
            print(f"kvclient backup: {took:.2f}s for {size / 1e6:.1f} MB ({size / 1e6 / took:.1f} MB/s, "
                  "process start included)")
            baseline.sort()
            lat.sort()
            print(f"put latency p50/p99/max: without a backup {baseline[len(baseline) // 2] * 1000:.1f}/"
                  f"{baseline[int(len(baseline) * .99)] * 1000:.1f}/{baseline[-1] * 1000:.1f} ms; during it "
                  f"{lat[len(lat) // 2] * 1000:.1f}/{lat[int(len(lat) * .99)] * 1000:.1f}/{lat[-1] * 1000:.1f} ms "
                  f"({len(lat)} puts)")
        finally:
            cluster.stop()

        new = Cluster(Path(tmp) / "r", n=0)
        addr, client = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        took, _ = _run(KVNODE, "restore", backup, "--id", "node1", "--data-dir", new.data_dir, "--addr", addr,
                       "--client", client)
        print(f"kvnode restore: {took:.2f}s (verify + install, process start included)")
        node = NodeProc(new, "node1", addr, client, None,
                        args=["--id", "node1", "--addr", addr, "--client", client, "--data-dir", str(new.data_dir)])
        new.nodes["node1"] = node
        t0 = time.monotonic()
        node.start()
        try:
            wait_until(lambda: node.status()["state"] == "leader", timeout=120, what="the restored node leads")
            print(f"restored node leading {time.monotonic() - t0:.2f}s after its start")
            with Client([client], timeout=60) as kv:
                n = len(kv.list("key"))
            print(f"keys in the restored cluster: {n}")
        finally:
            new.stop()


if __name__ == "__main__":
    main()
