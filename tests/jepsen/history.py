"""History model for Jepsen-style fault tests.

A history is a list of :class:`Op` records, one per client operation.  Each
record carries the interval in which the operation was in flight
(``invoke`` .. ``complete``, taken from :func:`time.monotonic`) and what the
client learned about it:

``outcome == "ok"``
    The operation definitely took effect, exactly once, somewhere inside its
    interval.  For a ``get`` ``value`` is the value read (``None`` = absent);
    for a ``cas`` ``result`` says whether it swapped.
``outcome == "fail"``
    The operation definitely did *not* take effect (e.g. rejected by a
    non-leader before being proposed).  A cas whose comparison did not match
    is **not** a failure: it is ``"ok"`` with ``result=False``.
``outcome == "unknown"``
    Timeout, connection reset, crashed client...  The operation may have taken
    effect at any point after ``invoke`` -- possibly long after the client gave
    up -- or never.  ``complete`` is ``None`` (read as +infinity).

:class:`HistoryRecorder` builds such a history from concurrent client threads;
histories are saved/loaded as JSON lines (bytes base64-encoded) so that a
failing run can be replayed through the checker
(``python -m tests.jepsen.checker HISTORY.jsonl``).
"""
from __future__ import annotations

import base64
import dataclasses
import json
import math
import os
import threading
import time
from dataclasses import dataclass
from typing import Iterable, List, Optional, Union

KINDS = ("put", "get", "delete", "cas")
OUTCOMES = ("ok", "fail", "unknown")

PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class Op:
    """One client operation on one key.

    ``value``: put -> value written; get -> value read (None = key absent);
    cas -> new value; delete -> unused (None).
    ``expected``: cas only -- the value compared against (None = "only if the
    key is absent").
    ``result``: cas only -- True if it swapped, False if the comparison did not
    match, None if not known (outcome "unknown").
    ``complete``: None (or +inf) for outcome "unknown".
    """

    process: int
    kind: str
    key: str
    value: Optional[bytes] = None
    expected: Optional[bytes] = None
    outcome: str = "unknown"
    result: Optional[bool] = None
    invoke: float = 0.0
    complete: Optional[float] = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"bad op kind {self.kind!r} (expected one of {KINDS})")
        if self.outcome not in OUTCOMES:
            raise ValueError(f"bad op outcome {self.outcome!r} (expected one of {OUTCOMES})")

    # -- presentation -----------------------------------------------------
    def describe(self) -> str:
        """Short human-readable form, e.g. ``p3 cas 'k1' b'a'->b'b' ok=True``."""

        def show(b: Optional[bytes]) -> str:
            return "<absent>" if b is None else repr(b)

        if self.kind == "put":
            body = f"put {self.key!r} {show(self.value)}"
        elif self.kind == "delete":
            body = f"delete {self.key!r}"
        elif self.kind == "get":
            body = f"get {self.key!r}"
            if self.outcome == "ok":
                body += f" -> {show(self.value)}"
        else:
            body = f"cas {self.key!r} {show(self.expected)} -> {show(self.value)}"
            if self.outcome == "ok":
                body += f" result={self.result}"
        complete = "inf" if self.complete is None or math.isinf(self.complete) else f"{self.complete:.6f}"
        return f"p{self.process} {body} [{self.outcome}] ({self.invoke:.6f} .. {complete})"

    # -- (de)serialisation ------------------------------------------------
    def to_json(self) -> dict:
        complete = self.complete
        if complete is not None and math.isinf(complete):
            complete = None
        return {
            "process": self.process,
            "kind": self.kind,
            "key": self.key,
            "value": _b64(self.value),
            "expected": _b64(self.expected),
            "outcome": self.outcome,
            "result": self.result,
            "invoke": self.invoke,
            "complete": complete,
        }

    @classmethod
    def from_json(cls, d: dict) -> "Op":
        return cls(
            process=int(d["process"]),
            kind=d["kind"],
            key=d["key"],
            value=_unb64(d.get("value")),
            expected=_unb64(d.get("expected")),
            outcome=d.get("outcome", "unknown"),
            result=d.get("result"),
            invoke=float(d["invoke"]),
            complete=None if d.get("complete") is None else float(d["complete"]),
        )


def _b64(b: Optional[bytes]) -> Optional[str]:
    return None if b is None else base64.b64encode(b).decode("ascii")


def _unb64(s: Optional[str]) -> Optional[bytes]:
    return None if s is None else base64.b64decode(s)


def save_history(ops: Iterable[Op], path: PathLike) -> None:
    """Write ``ops`` to ``path`` as JSON lines (bytes base64-encoded)."""
    tmp = f"{os.fspath(path)}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for op in ops:
            f.write(json.dumps(op.to_json(), sort_keys=True))
            f.write("\n")
    os.replace(tmp, path)


def load_history(path: PathLike) -> List[Op]:
    """Read a history written by :func:`save_history`."""
    ops: List[Op] = []
    with open(path, "r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                ops.append(Op.from_json(json.loads(line)))
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{os.fspath(path)}:{lineno}: bad history record: {e}") from e
    return ops


class HistoryRecorder:
    """Thread-safe recorder of client operations.

    Call :meth:`begin` immediately *before* sending a request and :meth:`end`
    immediately *after* learning its outcome::

        t = rec.begin(pid, "cas", "k", value=b"new", expected=b"old")
        try:
            swapped = client.cas("k", b"old", b"new")
        except Timeout:
            rec.end(t, "unknown")
        except NotLeader:          # definitely not applied
            rec.end(t, "fail")
        else:
            rec.end(t, "ok", result=swapped)

    An operation that is begun but never ended (e.g. its thread died) stays
    ``"unknown"``, which is the safe interpretation.
    """

    def __init__(self, clock=time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._ops: List[Op] = []
        self._ended: set = set()

    def begin(
        self,
        process: int,
        kind: str,
        key: str,
        value: Optional[bytes] = None,
        expected: Optional[bytes] = None,
    ) -> int:
        """Record an invocation; returns a token for :meth:`end`.

        ``value``: the value to write (put/cas); ignored for get/delete.
        ``expected``: cas only.
        """
        if kind in ("get", "delete"):
            value = None
        if kind != "cas":
            expected = None
        op = Op(process=process, kind=kind, key=key, value=value, expected=expected,
                outcome="unknown", invoke=0.0, complete=None)
        with self._lock:
            op.invoke = self._clock()
            self._ops.append(op)
            return len(self._ops) - 1

    def end(
        self,
        token: int,
        outcome: str,
        value: Optional[bytes] = None,
        result: Optional[bool] = None,
    ) -> None:
        """Record the completion of the operation ``token``.

        ``outcome``: "ok", "fail" or "unknown".  ``value``: for an ok get, the
        value read (None = absent); ignored for other kinds.  ``result``: for
        an ok cas, whether it swapped.
        """
        if outcome not in OUTCOMES:
            raise ValueError(f"bad outcome {outcome!r}")
        with self._lock:
            now = self._clock()
            op = self._ops[token]
            if token in self._ended:
                raise ValueError(f"operation {token} already ended")
            self._ended.add(token)
            op.outcome = outcome
            if outcome == "unknown":
                op.complete = None
                return
            op.complete = now
            if outcome == "ok":
                if op.kind == "get":
                    op.value = value
                elif op.kind == "cas":
                    if result is None:
                        raise ValueError("an ok cas needs result=True/False")
                    op.result = bool(result)

    def ops(self) -> List[Op]:
        """A snapshot (copies) of the operations recorded so far."""
        with self._lock:
            return [dataclasses.replace(op) for op in self._ops]

    def __len__(self) -> int:
        with self._lock:
            return len(self._ops)

    def save(self, path: PathLike) -> None:
        save_history(self.ops(), path)

    @staticmethod
    def load(path: PathLike) -> List[Op]:
        return load_history(path)
