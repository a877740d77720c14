"""The bank workload's history and checker (transactions under faults, issue 14).

N accounts hold balances that sum to a fixed total. A *transfer* moves ``amount`` from
``src`` to ``dst`` in one transaction (compare both accounts' mod revisions as read, put both
new balances); a *read* gets every account in one transaction (one atomic snapshot).
Every op is a :class:`BankOp`: ``ok`` (took effect; a transfer's ``revision`` is its entry's
log index, a read's ``balances`` were seen at ``revision``), ``fail`` (definitely no effect:
the compare did not hold, or the node refused it) or ``unknown`` (timed out: a transfer may
still take effect, at any later point, or never).

:func:`check_bank` asks, for every ok read (the last one being the read after healing):

* **no torn read**: every account is present, none is negative, and they sum to the total;
* **no lost or phantom transfer**: the balances equal the initial ones plus every ok transfer
  whose revision is below the read's revision, plus *some subset* of the unknown transfers
  invoked before the read completed -- never a failed transfer, never an ok transfer that
  came later in the log;
* **reads move forward**: a client's reads have non-decreasing revisions, and a read that
  began after another completed has a revision at least as high (real-time order).

The final read must exist (the cluster served a read after the heal). Replay a saved history
with ``python -m tests.jepsen.bank_checker HISTORY.jsonl``.
"""
from __future__ import annotations

import argparse
import bisect
import dataclasses
import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

BANK_KINDS = ("transfer", "read")
OUTCOMES = ("ok", "fail", "unknown")
MAX_STATES = 200_000  # subset search bound (reachable balance deltas); beyond it: inconclusive

PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class BankOp:
    """One transfer or read. ``client``: the worker thread (monotonic-read check);
    ``process``: Jepsen's process (a new one after an unknown outcome).
    ``balances``: an ok read's accounts (account -> balance; a missing account is absent).
    ``final``: the read made after healing, with the clients stopped."""

    process: int
    kind: str
    client: int = 0
    src: int = 0
    dst: int = 0
    amount: int = 0
    balances: Optional[Dict[int, int]] = None
    revision: int = 0
    outcome: str = "unknown"
    invoke: float = 0.0
    complete: Optional[float] = None
    final: bool = False

    def __post_init__(self) -> None:
        if self.kind not in BANK_KINDS:
            raise ValueError(f"bad bank op kind {self.kind!r} (expected one of {BANK_KINDS})")
        if self.outcome not in OUTCOMES:
            raise ValueError(f"bad outcome {self.outcome!r} (expected one of {OUTCOMES})")

    def describe(self) -> str:
        """Short human-readable form, e.g. ``p3 transfer 1->4 x5 [ok] rev 88``."""
        if self.kind == "transfer":
            body = f"transfer {self.src}->{self.dst} x{self.amount}"
        else:
            body = ("final read" if self.final else "read") + (f" {self.balances}" if self.outcome == "ok" else "")
        rev = f" rev {self.revision}" if self.outcome == "ok" else ""
        complete = "inf" if self.complete is None else f"{self.complete:.3f}"
        return f"p{self.process}/c{self.client} {body} [{self.outcome}]{rev} ({self.invoke:.3f} .. {complete})"

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        if self.balances is not None:
            d["balances"] = {str(k): v for k, v in self.balances.items()}
        return d

    @classmethod
    def from_json(cls, d: dict) -> "BankOp":
        d = dict(d)
        if d.get("balances") is not None:
            d["balances"] = {int(k): int(v) for k, v in d["balances"].items()}
        return cls(**d)


class BankRecorder:
    """Thread-safe recorder: :meth:`begin` just before the request, :meth:`end` just after
    its outcome is known. An op never ended stays ``unknown`` (the safe reading)."""

    def __init__(self, clock=time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._ops: List[BankOp] = []

    def begin(self, op: BankOp) -> int:
        with self._lock:
            op.invoke = self._clock()
            self._ops.append(op)
            return len(self._ops) - 1

    def end(self, token: int, outcome: str, *, revision: int = 0,
            balances: Optional[Dict[int, int]] = None) -> None:
        if outcome not in OUTCOMES:
            raise ValueError(f"bad outcome {outcome!r}")
        with self._lock:
            op = self._ops[token]
            op.outcome = outcome
            op.complete = None if outcome == "unknown" else self._clock()
            if outcome == "ok":
                op.revision = revision
                op.balances = balances

    def ops(self) -> List[BankOp]:
        with self._lock:
            return [dataclasses.replace(o) for o in self._ops]

    def save(self, path: PathLike) -> None:
        tmp = f"{os.fspath(path)}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            for o in self.ops():
                f.write(json.dumps(o.to_json(), sort_keys=True) + "\n")
        os.replace(tmp, path)


def load_bank_history(path: PathLike) -> List[BankOp]:
    """Read a history written by :meth:`BankRecorder.save`."""
    with open(path, encoding="utf-8") as f:
        return [BankOp.from_json(json.loads(line)) for line in f if line.strip()]


@dataclass
class BankCheckResult:
    """``ok``: no anomaly; ``problems``: one line each (the first few); ``notes``: checks that
    were inconclusive (the subset search grew too large), not failures."""

    ok: bool
    reads: int = 0
    transfers_ok: int = 0
    transfers_unknown: int = 0
    problems: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    @property
    def explanation(self) -> str:
        return "\n".join(self.problems[:20] + self.notes[:5])


Delta = Tuple[int, ...]


def _move(op: BankOp, n: int) -> Delta:
    d = [0] * n
    d[op.src] -= op.amount
    d[op.dst] += op.amount
    return tuple(d)


class _Subsets:
    """The balance changes some subset of the indeterminate transfers can make, grown as more
    of them (in invoke order) become possible: one set shared by every read, so each read's
    question is a lookup. Past MAX_STATES the answer is None (inconclusive)."""

    def __init__(self, unknowns: Sequence[BankOp], n: int) -> None:
        self.moves = [(u.invoke, _move(u, n)) for u in sorted(unknowns, key=lambda o: o.invoke)]
        self.used = 0
        self.states: Optional[Set[Delta]] = {tuple(0 for _ in range(n))}

    def reachable(self, target: Delta, before: float) -> Optional[bool]:
        """Whether ``target`` is the sum of a subset of the transfers invoked before ``before``."""
        while self.used < len(self.moves) and self.moves[self.used][0] < before:
            m = self.moves[self.used][1]
            self.used += 1
            if self.states is not None:
                self.states |= {tuple(a + b for a, b in zip(st, m)) for st in self.states}
                if len(self.states) > MAX_STATES:
                    self.states = None
        if not any(target):
            return True
        return None if self.states is None else target in self.states


def check_bank(ops: Iterable[BankOp], initial: Dict[int, int], total: int) -> BankCheckResult:
    """Check a bank history against the accounts' ``initial`` balances (see module doc)."""
    ops = list(ops)
    n = len(initial)
    if sorted(initial) != list(range(n)) or sum(initial.values()) != total:
        raise ValueError(f"initial balances {initial} must be accounts 0..{n - 1} summing to {total}")
    reads = [o for o in ops if o.kind == "read" and o.outcome == "ok"]
    oks = sorted((o for o in ops if o.kind == "transfer" and o.outcome == "ok"), key=lambda o: o.revision)
    unknowns = [o for o in ops if o.kind == "transfer" and o.outcome == "unknown"]
    res = BankCheckResult(True, len(reads), len(oks), len(unknowns))
    bad = res.problems.append
    init = tuple(initial[i] for i in range(n))
    revs = [o.revision for o in oks]
    if len(set(revs)) != len(revs):
        bad("two ok transfers have the same revision (one log entry acknowledged twice?)")

    # prefix[k]: the balances after the first k ok transfers in log order
    prefix = [init]
    for o in oks:
        nxt = list(prefix[-1])
        nxt[o.src] -= o.amount
        nxt[o.dst] += o.amount
        prefix.append(tuple(nxt))
    subsets = _Subsets(unknowns, n)
    for r in sorted(reads, key=lambda o: o.complete if o.complete is not None else float("inf")):
        bal = r.balances or {}
        what = r.describe()
        missing = [i for i in range(n) if i not in bal]
        if missing:
            bad(f"torn read: accounts {missing} absent in {what}")
            continue
        if any(bal[i] < 0 for i in range(n)):
            bad(f"negative balance in {what}")
        if sum(bal[i] for i in range(n)) != total:
            bad(f"torn read: the balances sum to {sum(bal[i] for i in range(n))}, not {total}, in {what}")
        # What the ok transfers before this read in the log must have done.
        k = bisect.bisect_left(revs, r.revision)
        target = tuple(bal[i] - prefix[k][i] for i in range(n))
        found = subsets.reachable(target, r.complete if r.complete is not None else float("inf"))
        if found is False:
            bad(f"lost or phantom transfer: {what} differs from the initial balances plus the "
                f"{k} ok transfers before revision {r.revision} by {target}, which no subset of "
                f"the indeterminate transfers explains")
        elif found is None:
            res.notes.append(f"inconclusive: too many indeterminate transfers to search for {what}")

    # Reads move forward: per client, and in real time.
    last: Dict[int, BankOp] = {}
    for r in sorted(reads, key=lambda o: o.invoke):
        prev = last.get(r.client)
        if prev is not None and r.revision < prev.revision:
            bad(f"client {r.client}'s reads went back in time: {prev.describe()} then {r.describe()}")
        last[r.client] = r
    by_complete = sorted(reads, key=lambda o: o.complete or 0.0)
    best: Optional[BankOp] = None
    i = 0
    for r in sorted(reads, key=lambda o: o.invoke):
        while i < len(by_complete) and (by_complete[i].complete or 0.0) < r.invoke:
            if best is None or by_complete[i].revision > best.revision:
                best = by_complete[i]
            i += 1
        if best is not None and r.revision < best.revision:
            bad(f"stale read: {r.describe()} began after {best.describe()} completed")
    if not any(r.final for r in reads):
        bad("no final read after the heal: the final state was never checked")
    res.ok = not res.problems
    return res


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.jepsen.bank_checker",
                                description="Check a saved bank-workload history.")
    p.add_argument("history")
    p.add_argument("--accounts", type=int, default=5)
    p.add_argument("--balance", type=int, default=100, help="each account's initial balance")
    a = p.parse_args(argv)
    initial = {i: a.balance for i in range(a.accounts)}
    res = check_bank(load_bank_history(a.history), initial, a.balance * a.accounts)
    print(f"{res.reads} ok reads, {res.transfers_ok} ok transfers, {res.transfers_unknown} indeterminate")
    print("bank: consistent" if res.ok else "bank: NOT CONSISTENT\n" + res.explanation)
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
