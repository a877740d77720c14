"""The lock workload's history and checker (locks under faults, issue 14).

Clients take ``kv.lock("jl")`` and, while they believe they hold it, increment a counter: read
it, then one txn ``compare lock.is_owner()`` (the fencing token: the lock key's create
revision) -> ``put counter v+1, put jl-log/<token>-<client>-<seq>``. Every increment is a
:class:`LockOp` (``ok``: applied at ``revision``; ``fail``: the compare refused it, nothing
happened; ``unknown``: timed out, it may apply later or never). Every time a client held the
lock is a :class:`Hold` (when it got it, when it let go).

:func:`check_locks` asks:

* **fenced order**: ok increments sorted by revision have non-decreasing fencing tokens (a
  stale holder's write never lands after a newer holder's) and strictly increasing counter
  values (no lost update);
* **the counter adds up**: the final counter is the number of ok increments plus some of the
  unknown ones; every ok increment's log key is there, no failed one's is, no key comes from
  nowhere, and the counter equals the number of log keys (each applied increment counted once).

Overlapping holds (two clients believing they held the lock at once) are *reported*, not
failures: a pause or a partition past the TTL makes them happen, which is why fencing exists.
Replay a saved history with ``python -m tests.jepsen.lock_checker HISTORY.json``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Union

OUTCOMES = ("ok", "fail", "unknown")
PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class LockOp:
    """One fenced increment: ``value`` is what it writes (the counter it read + 1), ``log_key``
    the key it creates, ``token`` the fencing token it was made under."""

    process: int
    client: int
    token: int
    value: int
    log_key: str
    outcome: str = "unknown"
    revision: int = 0
    invoke: float = 0.0
    complete: Optional[float] = None

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"bad outcome {self.outcome!r} (expected one of {OUTCOMES})")

    def describe(self) -> str:
        rev = f" rev {self.revision}" if self.outcome == "ok" else ""
        complete = "inf" if self.complete is None else f"{self.complete:.3f}"
        return (f"p{self.process}/c{self.client} incr->{self.value} token {self.token} [{self.outcome}]{rev} "
                f"({self.invoke:.3f} .. {complete})")


@dataclass
class Hold:
    """One time a client believed it held the lock: from ``acquired`` to ``released``."""

    client: int
    token: int
    acquired: float
    released: float


class LockRecorder:
    """Thread-safe recorder of increments (:meth:`begin` just before the txn, :meth:`end` just
    after its outcome is known; never ended stays ``unknown``) and holds."""

    def __init__(self, clock=time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._ops: List[LockOp] = []
        self._holds: List[Hold] = []

    def begin(self, op: LockOp) -> int:
        with self._lock:
            op.invoke = self._clock()
            self._ops.append(op)
            return len(self._ops) - 1

    def end(self, tok: int, outcome: str, revision: int = 0) -> None:
        if outcome not in OUTCOMES:
            raise ValueError(f"bad outcome {outcome!r}")
        with self._lock:
            op = self._ops[tok]
            op.outcome = outcome
            op.complete = None if outcome == "unknown" else self._clock()
            op.revision = revision if outcome == "ok" else 0

    def hold(self, h: Hold) -> None:
        with self._lock:
            self._holds.append(h)

    def ops(self) -> List[LockOp]:
        with self._lock:
            return [dataclasses.replace(o) for o in self._ops]

    def holds(self) -> List[Hold]:
        with self._lock:
            return list(self._holds)

    def save(self, path: PathLike, final_counter: Optional[int], log_keys: Optional[List[str]]) -> None:
        doc = {"ops": [dataclasses.asdict(o) for o in self.ops()],
               "holds": [dataclasses.asdict(h) for h in self.holds()],
               "final_counter": final_counter, "log_keys": log_keys}
        tmp = f"{os.fspath(path)}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f)
        os.replace(tmp, path)


@dataclass
class LockCheckResult:
    """``ok``: no anomaly; ``problems``: one line each; ``overlaps``: pairs of holds by different
    clients that overlapped in time (informational)."""

    ok: bool
    increments_ok: int = 0
    increments_fail: int = 0
    increments_unknown: int = 0
    holds: int = 0
    overlaps: int = 0
    problems: List[str] = field(default_factory=list)

    @property
    def explanation(self) -> str:
        return "\n".join(self.problems[:20])


def count_overlaps(holds: Sequence[Hold]) -> int:
    """Pairs of holds by different clients whose intervals intersect."""
    hs = sorted(holds, key=lambda h: h.acquired)
    n = 0
    for i, a in enumerate(hs):
        for b in hs[i + 1:]:
            if b.acquired >= a.released:
                break
            if b.client != a.client:
                n += 1
    return n


def check_locks(ops: Sequence[LockOp], holds: Sequence[Hold], final_counter: Optional[int],
                log_keys: Optional[Sequence[str]], initial: int = 0) -> LockCheckResult:
    """Check a lock history (see the module docstring). ``final_counter``/``log_keys`` come
    from the read after healing; None means it never succeeded (a problem)."""
    oks = sorted((o for o in ops if o.outcome == "ok"), key=lambda o: o.revision)
    unknown = [o for o in ops if o.outcome == "unknown"]
    failed = [o for o in ops if o.outcome == "fail"]
    res = LockCheckResult(ok=True, increments_ok=len(oks), increments_fail=len(failed),
                          increments_unknown=len(unknown), holds=len(holds), overlaps=count_overlaps(holds))
    p = res.problems
    for prev, cur in zip(oks, oks[1:]):
        if cur.revision == prev.revision:
            p.append(f"two ok increments at one revision: {prev.describe()} and {cur.describe()}")
        if cur.token < prev.token:
            p.append(f"stale holder's write accepted: {cur.describe()} after {prev.describe()}")
        if cur.value <= prev.value:
            p.append(f"lost update: {cur.describe()} wrote {cur.value} after {prev.describe()} wrote {prev.value}")
    if final_counter is None or log_keys is None:
        p.append("no final read of the counter and the log after the heal")
    else:
        applied = final_counter - initial
        if not len(oks) <= applied <= len(oks) + len(unknown):
            p.append(f"final counter {final_counter}: {applied} increments applied, but {len(oks)} were ok and "
                     f"{len(unknown)} indeterminate (expected {len(oks)}..{len(oks) + len(unknown)})")
        present = set(log_keys)
        for o in oks:
            if o.log_key not in present:
                p.append(f"ok increment's log key missing: {o.describe()}")
        for o in failed:
            if o.log_key in present:
                p.append(f"failed increment took effect: {o.describe()}")
        known = {o.log_key for o in ops}
        phantom = sorted(present - known)
        if phantom:
            p.append(f"{len(phantom)} log keys from no increment, e.g. {phantom[:3]}")
        if len(present) != applied:
            p.append(f"final counter {final_counter} but {len(present)} increments logged: updates were lost")
    res.ok = not p
    return res


def load_lock_history(path: PathLike) -> dict:
    """Read what :meth:`LockRecorder.save` wrote: ops, holds, final counter, log keys."""
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    return {"ops": [LockOp(**o) for o in doc["ops"]], "holds": [Hold(**h) for h in doc["holds"]],
            "final_counter": doc["final_counter"], "log_keys": doc["log_keys"]}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.jepsen.lock_checker",
                                description="Check a saved lock-workload history.")
    p.add_argument("history")
    a = p.parse_args(argv)
    h = load_lock_history(a.history)
    res = check_locks(h["ops"], h["holds"], h["final_counter"], h["log_keys"])
    print(f"{res.increments_ok} ok increments, {res.increments_unknown} indeterminate, {res.holds} holds, "
          f"{res.overlaps} overlapping holds")
    print("locks: consistent" if res.ok else "locks: NOT CONSISTENT\n" + res.explanation)
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())

