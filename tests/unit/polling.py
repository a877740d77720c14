"""Waiting for a condition in unit tests: poll it until a deadline, never a bare sleep standing in
for the condition."""
from __future__ import annotations

import time
from typing import Any, Callable


def wait_for(cond: Callable[[], Any], what: str, timeout: float = 5.0, every: float = 0.002) -> Any:
    """Poll ``cond`` every ``every`` seconds until it returns a true value, and return that value;
    fail naming ``what`` once ``timeout`` seconds have passed without it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")
