"""Lock-free counters and histograms for the hot path, read by the metrics collector.

prometheus_client's own Counter and Histogram take a lock on every update. The components
on a write's path (the log writer, the client front door, the HTTP gateway's loop) each
update their statistics from one thread only, so they keep them here as plain integers and
lists instead, and the node's metrics collector (actors/metrics.py) turns them into
Prometheus families at scrape time. A scrape reads them from another thread without a lock:
under the GIL each read is of a whole int, and a scrape that sees one bucket incremented but
not yet the sum is off by one observation until the next scrape, which is harmless for metrics.
"""
from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

# Seconds: from a fast SSD fsync (~0.1 ms) to a stalled disk or a slow request (10 s).
LATENCY_BUCKETS: tuple[float, ...] = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                      0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Entries per group commit: 1 when idle, hundreds under load.
BATCH_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class Histogram:
    """A cumulative-at-scrape histogram with fixed upper bounds; one writer thread.

    ``counts[i]`` counts observations in (bounds[i-1], bounds[i]]; the last slot is +Inf.
    """

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        """Record one observation: a bisect and two additions, no lock, no allocation."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, int]]:
        """The buckets as Prometheus wants them: (upper bound, count at or below it), +Inf last."""
        out = []
        acc = 0
        counts = list(self.counts)  # one consistent-enough copy for this scrape
        for bound, n in zip(self.bounds, counts):
            acc += n
            out.append((repr(float(bound)), acc))
        out.append(("+Inf", acc + counts[-1]))
        return out


@dataclass
class RequestStats:
    """Requests of one front end (HTTP gateway or ZeroMQ front door), by operation and outcome.

    ``count[(op, status)]`` counts answered requests; ``latency[op]`` their duration from
    arrival to answer (front ends that cannot time a request leave it empty).
    """

    count: dict = field(default_factory=dict)
    latency: dict = field(default_factory=dict)

    def done(self, op: str, status: str, seconds: float) -> None:
        """One answered request of ``op`` that ended in ``status`` after ``seconds``."""
        key = (op, status)
        self.count[key] = self.count.get(key, 0) + 1
        h = self.latency.get(op)
        if h is None:
            h = self.latency[op] = Histogram()
        h.observe(seconds)

    def counted(self, op: str, status: str) -> None:
        """One answered request whose duration is not known."""
        key = (op, status)
        self.count[key] = self.count.get(key, 0) + 1


@dataclass
class LogStats:
    """The log writer's group commits: how long each synced write took and how many entries it carried."""

    fsync: Histogram = field(default_factory=Histogram)
    batch: Histogram = field(default_factory=lambda: Histogram(BATCH_BUCKETS))
