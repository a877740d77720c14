"""Micro-benchmark of the RocksDB key-value state (storage/kv_store.py). Prints numbers, asserts
nothing.

Loads N keys (16 B, random order, like client writes) with 100 B values in batches of 512, as the
FSM applies committed entries, then measures point gets, prefix scans of 100 keys, a checkpoint,
streaming that checkpoint into a receiver, a reopen, the DB's size on disk and the process RSS.

    python tests/bench_kv_store.py --keys 1000000 [--cache-mb 128] [--dir /tmp/x]
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time

from raftkv.storage.kv_checkpoint import CheckpointReceiver, build_manifest, checkpoint_name, iter_chunks
from raftkv.storage.kv_db import DEFAULT_CACHE_MB
from raftkv.storage.kv_store import KvStore, Put

BATCH = 512


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident set size of this process, in MB."""
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            name, _, rest = line.partition(":")
            fields[name] = rest
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def du_mb(path: str) -> float:
    """Allocated bytes under ``path`` in MB, each inode once (checkpoints share hard links)."""
    seen = set()
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            st = os.lstat(os.path.join(root, name))
            if st.st_ino not in seen:
                seen.add(st.st_ino)
                total += st.st_blocks * 512
    return total / 1e6


class Stall:
    """A thread ticking every millisecond: the longest gap between ticks is how long the GIL (or
    the machine) kept other threads of the process from running."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last = time.perf_counter()
        while not self._stop.wait(0.001):
            now = time.perf_counter()
            self.longest = max(self.longest, now - last)
            last = now

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.longest


def pct(samples: list[float], p: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--cache-mb", type=int, default=DEFAULT_CACHE_MB)
    ap.add_argument("--dir", default=None, help="work directory (default: a temp dir, deleted afterwards)")
    ap.add_argument("--samples", type=int, default=20_000, help="gets measured")
    args = ap.parse_args()

    work = args.dir or tempfile.mkdtemp(prefix="bench-kv-")
    os.makedirs(work, exist_ok=True)
    path = os.path.join(work, "kv")
    rng = random.Random(1)
    values = [rng.randbytes(100) for _ in range(1024)]
    n = args.keys
    print(f"keys={n:,} key=16B value=100B batch={BATCH} cache_mb={args.cache_mb} dir={work}")
    print(f"raw data: {n * 116 / 1e6:.0f} MB")

    s = KvStore(path, cache_mb=args.cache_mb)
    keys_seed = 2
    krng = random.Random(keys_seed)
    t0 = time.perf_counter()
    index = 0
    done = 0
    while done < n:
        m = min(BATCH, n - done)
        ops = [Put("%016x" % krng.getrandbits(64), values[(done + j) & 1023]) for j in range(m)]
        index += m
        s.apply_batch(ops, index)
        done += m
    load = time.perf_counter() - t0
    print(f"apply: {n / load:,.0f} keys/s ({load:.1f} s, {n // BATCH + (n % BATCH > 0):,} batches)")

    # gets of present keys, in random order (re-generate the key sequence, sample from it)
    want = set(random.Random(3).sample(range(n), min(args.samples, n)))
    krng = random.Random(keys_seed)
    probe = [k for i, k in enumerate("%016x" % krng.getrandbits(64) for _ in range(n)) if i in want]
    random.Random(4).shuffle(probe)
    lat = []
    for k in probe:
        t = time.perf_counter()
        v = s.get(k)
        lat.append(time.perf_counter() - t)
        assert v is not None
    print(f"get (present, random): p50 {pct(lat, 50) * 1e6:.1f} us  p99 {pct(lat, 99) * 1e6:.1f} us  "
          f"(n={len(lat):,})")
    lat = []
    for i in range(min(args.samples, 20_000)):
        k = "z%015x" % i  # hex keys never start with z: absent
        t = time.perf_counter()
        s.get(k)
        lat.append(time.perf_counter() - t)
    print(f"get (absent): p50 {pct(lat, 50) * 1e6:.1f} us  p99 {pct(lat, 99) * 1e6:.1f} us")

    # scans of 100 keys under a 3-hex-digit prefix (n / 4096 keys per prefix: >= 100 from 410k keys)
    lat = []
    got = []
    prng = random.Random(5)
    for _ in range(1000):
        prefix = "%03x" % prng.getrandbits(12)
        t = time.perf_counter()
        items = s.scan(prefix, 100)
        lat.append(time.perf_counter() - t)
        got.append(len(items))
    print(f"scan(3-char prefix, 100): p50 {pct(lat, 50) * 1e3:.2f} ms  p99 {pct(lat, 99) * 1e3:.2f} ms  "
          f"(mean {statistics.mean(got):.0f} keys returned)")
    lat = []
    for _ in range(1000):
        prefix = "%x" % prng.getrandbits(4)
        t = time.perf_counter()
        items = s.scan(prefix, 100)
        lat.append(time.perf_counter() - t)
    print(f"scan(1-char prefix, 100): p50 {pct(lat, 50) * 1e3:.2f} ms  p99 {pct(lat, 99) * 1e3:.2f} ms")

    cur, peak = rss_mb()
    print(f"RSS after load and reads: {cur:.0f} MB (peak {peak:.0f} MB)")

    cks = os.path.join(work, "checkpoints")
    stall = Stall()
    t = time.perf_counter()
    info = s.checkpoint(os.path.join(cks, checkpoint_name(index)))
    took = time.perf_counter() - t
    print(f"checkpoint (memtable flush + hard links): {took * 1e3:.0f} ms; longest stall of another "
          f"thread meanwhile {stall.stop() * 1e3:.0f} ms")
    # load on for one more memtable's worth, then a checkpoint prepared ahead of time: the
    # background flush runs while 20 more batches are applied, as the FSM would keep applying
    xrng = random.Random(6)  # new keys, not overwrites of loaded ones
    for _ in range(120_000 // BATCH):
        index += BATCH
        s.apply_batch([Put("%016x" % xrng.getrandbits(64), values[j]) for j in range(BATCH)], index)
    s.prepare_checkpoint()
    for _ in range(20):
        index += BATCH
        s.apply_batch([Put("%016x" % xrng.getrandbits(64), values[j]) for j in range(BATCH)], index)
    stall = Stall()
    t = time.perf_counter()
    s.checkpoint(os.path.join(cks, checkpoint_name(index)))
    took = time.perf_counter() - t
    print(f"checkpoint after prepare_checkpoint() and 20 batches: {took * 1e3:.0f} ms; longest stall "
          f"{stall.stop() * 1e3:.0f} ms")

    t = time.perf_counter()
    manifest = build_manifest(info.path)
    mt = time.perf_counter() - t
    total = manifest.total_bytes()
    staging = os.path.join(work, "received")
    t = time.perf_counter()
    rx = CheckpointReceiver(staging, manifest, max_bytes=1 << 40)
    for chunk in iter_chunks(info.path, manifest):
        rx.write(chunk)
    rx.finish()
    st = time.perf_counter() - t
    print(f"checkpoint files: {len(manifest.files)} files, {total / 1e6:.0f} MB; manifest (CRC-32 read) "
          f"{mt:.2f} s; stream to a local receiver {st:.2f} s = {total / 1e6 / st:.0f} MB/s")

    s.close()
    raw = (index - 1) * 116 / 1e6  # every key distinct (64-bit random), 1 more for "after-checkpoint"
    print(f"DB size on disk: {du_mb(path):.0f} MB for {index:,} keys ({du_mb(path) / raw:.2f}x raw); "
          f"with both checkpoints: {du_mb(work) - du_mb(staging):.0f} MB")
    t = time.perf_counter()
    s = KvStore(path, cache_mb=args.cache_mb)
    reopen = time.perf_counter() - t
    t = time.perf_counter()
    s.get(probe[0])
    first = time.perf_counter() - t
    print(f"reopen: {reopen * 1e3:.0f} ms (first get after it {first * 1e3:.1f} ms), "
          f"applied index {s.applied_index():,}")
    s.close()
    cur, peak = rss_mb()
    print(f"RSS at the end: {cur:.0f} MB (peak {peak:.0f} MB)")
    if args.dir is None:
        shutil.rmtree(work)


if __name__ == "__main__":
    sys.exit(main())
