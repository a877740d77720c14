"""Log-scale latency histograms: 1 % wide buckets, so memory does not grow with the number of
operations and percentiles are exact to within 1 %."""
from __future__ import annotations

import math
from collections import Counter
from typing import Optional

_LOG_STEP = math.log(1.01)  # bucket width: 1 % of the value


def bucket(seconds: float) -> int:
    """The bucket of a latency in seconds."""
    us = seconds * 1e6
    return int(math.log(us) / _LOG_STEP) if us > 1.0 else 0


def bucket_ms(b: int) -> float:
    """A bucket's latency in milliseconds."""
    return math.exp((b + 0.5) * _LOG_STEP) / 1000.0  # the middle of the bucket


def quantiles(hist: Counter, qs: tuple = (0.50, 0.95, 0.99), max_ms: Optional[float] = None) -> list:
    """Quantiles (ms) of a histogram {bucket: count}; None when it is empty."""
    total = sum(hist.values())
    if not total:
        return [None for _ in qs]
    out = []
    items = sorted(hist.items())
    for q in qs:
        rank = max(1, math.ceil(q * total))
        cum = 0
        for b, n in items:
            cum += n
            if cum >= rank:
                v = bucket_ms(b)
                out.append(min(v, max_ms) if max_ms is not None else v)
                break
    return out
