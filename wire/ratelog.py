"""Rate-limited warnings: one log line per kind per interval, with a count of those held back.

A peer or client that sends garbage (or an attacker that sends it on purpose) must not be able
to fill the node's log or make it spend its time formatting lines: every warning a remote party
can trigger goes through :class:`RateLimitedLog`.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

__all__ = ["RateLimitedLog"]

_MAX_KINDS = 256  # distinct kinds remembered; beyond, new kinds share one (kinds may derive from input)


class RateLimitedLog:
    """``warn(kind, fmt, *args)`` logs at most one line per ``kind`` every ``interval`` seconds;
    the next line that gets through says how many were suppressed in between. Thread-safe."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0, level: int = logging.WARNING) -> None:
        self.logger = logger
        self.interval = interval
        self.level = level
        self._lock = threading.Lock()
        self._state: dict[str, list] = {}  # kind -> [time of the last line, lines held back since]

    def warn(self, kind: str, fmt: str, *args: Any) -> bool:
        """Log ``fmt % args`` unless a line of ``kind`` was logged within the interval; True if logged."""
        now = time.monotonic()
        with self._lock:
            st = self._state.get(kind)
            if st is None and len(self._state) >= _MAX_KINDS:
                kind = "*more kinds*"  # a full table: every new kind shares one limit
                st = self._state.get(kind)
            if st is not None and now - st[0] < self.interval:
                st[1] += 1
                return False
            held = st[1] if st is not None else 0
            self._state[kind] = [now, 0]
        if held:
            fmt += " (%d more like this in the last %.0fs)"
            args = (*args, held, self.interval)
        self.logger.log(self.level, fmt, *args)
        return True
