"""Writers of the cluster benchmarks: background closed-loop writers (WriteLoad, and
LatencyWriteLoad that keeps every write's latency), and the preload of many keys through
``Client.put_many``."""
from __future__ import annotations

import math
import os
import threading
import time
from typing import Any, Callable, Optional

from raftkv.wire.client import Client, ClientError

from .common import KEY_FMT, BenchError, nearest_rank, rounded


class WriteLoad:
    """Background writer threads (one Client each, closed loop, 1 s per call, retrying), and the
    bookkeeping that finds the first acknowledged write started after a given moment."""

    def __init__(self, servers: list, writers: int, call_timeout: float = 1.0) -> None:
        self.servers = servers
        self.call_timeout = call_timeout
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.failed = 0
        self.watch_from: Optional[float] = None  # writes started at/after this count
        self.first_ack: Optional[float] = None  # earliest acknowledgement of such a write
        self.last_ack: Optional[float] = None
        self.max_gap = 0.0  # longest time between two acknowledgements since the last reset
        self.value = os.urandom(100)
        self.threads = [threading.Thread(target=self._run, args=(f"w{i}",), daemon=True, name=f"writer-{i}")
                        for i in range(writers)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=self.call_timeout + 2)

    def watch(self, t: float) -> None:
        with self.lock:
            self.watch_from, self.first_ack = t, None

    def reset_gap(self) -> None:
        with self.lock:
            self.max_gap = 0.0

    def record(self, start: float, end: float, ok: bool) -> None:
        with self.lock:
            if not ok:
                self.failed += 1
                return
            self.ok += 1
            if self.last_ack is not None:
                self.max_gap = max(self.max_gap, end - self.last_ack)
            self.last_ack = end if self.last_ack is None else max(self.last_ack, end)
            if self.watch_from is not None and start >= self.watch_from:
                if self.first_ack is None or end < self.first_ack:
                    self.first_ack = end

    def put_once(self, client: Client, key: str) -> bool:
        t1 = time.monotonic()
        try:
            client.put(key, self.value)
            ok = True
        except ClientError:
            ok = False
        self.record(t1, time.monotonic(), ok)
        return ok

    def _run(self, name: str) -> None:
        i = 0
        with Client(self.servers, timeout=self.call_timeout) as c:
            while not self.stop.is_set():
                i += 1
                self.put_once(c, f"failover-{name}-{i % 1000:04d}")


class LatencyWriteLoad(WriteLoad):
    """WriteLoad that also keeps every write's (start, end, ok), for latency over any time window."""

    def __init__(self, servers: list, writers: int, call_timeout: float, value_size: int) -> None:
        super().__init__(servers, writers, call_timeout)
        self.value = os.urandom(value_size)
        self.samples: list = []  # (start, end, ok); list.append is atomic

    def record(self, start: float, end: float, ok: bool) -> None:
        super().record(start, end, ok)
        self.samples.append((start, end, ok))

    def abandon(self, wait: float = 2.0) -> None:
        """Stop without waiting out calls to nodes already killed (their deadline is long; the
        threads are daemons)."""
        self.stop.set()
        deadline = time.monotonic() + wait
        for t in self.threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))

    def window(self, t0: float, t1: float, overlap: bool) -> dict:
        """Latency (ms) of the writes inside [t0, t1] (overlap=False: started and ended in it) or in
        flight at some moment of it (overlap=True: a stall shows in every write it held up)."""
        if overlap:
            sel = [(s, e, ok) for s, e, ok in list(self.samples) if e >= t0 and s <= t1]
        else:
            sel = [(s, e, ok) for s, e, ok in list(self.samples) if s >= t0 and e <= t1]
        lat = sorted((e - s) * 1000.0 for s, e, ok in sel if ok)
        failed = sum(1 for _, _, ok in sel if not ok)
        # Throughput: writes acknowledged within the window, whatever their start.
        acked = sum(1 for s, e, ok in list(self.samples) if ok and t0 <= e <= t1)
        return {"seconds": round(t1 - t0, 3), "writes": len(lat), "failed": failed,
                "writes_per_sec": round(acked / (t1 - t0), 1) if t1 > t0 else None,
                "p50_ms": rounded(nearest_rank(lat, 0.50)), "p99_ms": rounded(nearest_rank(lat, 0.99)),
                "max_ms": rounded(lat[-1] if lat else None)}


class Preloader:
    """Writes keys KEY_FMT % i for 0 <= i < keys as fast as the cluster takes them.

    Pipelined, not closed-loop: each worker thread has its own Client and writes one block of
    keys at a time with ``Client.put_many`` (the whole block in flight), so thousands of writes
    are in flight and the leader group-commits them in large batches. A block that fails (a
    Timeout during a leader change) is simply written again: a put of a fixed value is
    idempotent."""

    def __init__(self, servers: list, keys: int, value_size: int, workers: int = 4, block: int = 500,
                 reply_timeout: float = 30.0) -> None:
        self.servers = servers
        self.keys = keys
        self.value_size = value_size
        self.workers = max(1, min(workers, math.ceil(keys / block)))
        self.block = block
        self.reply_timeout = reply_timeout
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.next_key = 0
        self.done = 0
        self.resent_blocks = 0
        self.error: Optional[str] = None

    def _take(self) -> Optional[range]:
        with self.lock:
            if self.next_key >= self.keys or self.stop.is_set():
                return None
            lo = self.next_key
            self.next_key = min(self.keys, lo + self.block)
            return range(lo, self.next_key)

    def _run(self) -> None:
        value = os.urandom(self.value_size)
        try:
            with Client(self.servers, timeout=self.reply_timeout) as client:
                while (blk := self._take()) is not None:
                    tries = 0
                    while not self.stop.is_set():
                        try:
                            client.put_many([(KEY_FMT % i, value) for i in blk], window=len(blk))
                        except ClientError:
                            tries += 1
                            with self.lock:
                                self.resent_blocks += 1
                            if tries >= 20:
                                raise BenchError(f"preload: keys {blk.start}..{blk.stop - 1} not written "
                                                 f"after {tries} tries") from None
                            time.sleep(min(1.0, 0.05 * 2 ** tries))
                            continue
                        with self.lock:
                            self.done += len(blk)
                        break
        except Exception as e:  # reported by run()
            with self.lock:
                self.error = self.error or f"{type(e).__name__}: {e}"
            self.stop.set()

    def run(self, progress: Optional[Callable[[str], Any]] = None,
            every: Optional[tuple[int, Callable[[int], Any]]] = None) -> dict:
        """Write every key; returns {keys, seconds, keys_per_sec, resent_blocks}.

        ``every=(n, hook)``: call ``hook(done)`` from this thread (the writers go on meanwhile)
        each time another ``n`` keys have been written, short of the last ``n``."""
        t0 = time.monotonic()
        next_hook = every[0] if every else None
        threads = [threading.Thread(target=self._run, daemon=True, name=f"preload-{i}") for i in range(self.workers)]
        try:
            for t in threads:
                t.start()
            last = t0
            while any(t.is_alive() for t in threads):
                for t in threads:
                    t.join(timeout=0.5)
                if every is not None and next_hook is not None and next_hook < self.keys:
                    with self.lock:
                        done = self.done
                    if done >= next_hook:
                        next_hook = (done // every[0] + 1) * every[0]
                        every[1](done)
                if progress is not None and time.monotonic() - last >= 10:
                    last = time.monotonic()
                    with self.lock:
                        done = self.done
                    progress(f"  preload: {done} of {self.keys} keys, {done / (last - t0):.0f} keys/s")
        finally:
            self.stop.set()
            for t in threads:
                t.join(timeout=self.reply_timeout + 5)
        if self.error:
            raise BenchError(f"preload failed: {self.error}")
        el = time.monotonic() - t0
        return {"keys": self.done, "seconds": round(el, 3), "keys_per_sec": round(self.done / max(el, 1e-9), 1),
                "resent_blocks": self.resent_blocks}
