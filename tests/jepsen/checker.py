"""Linearizability checker for histories of the KV store (see ``history.py``).

Model
-----
Every key is an independent register whose state is ``Optional[bytes]``
(``None`` = absent, the initial state):

* ``put(v)``            -> state := v
* ``delete``            -> state := None
* ``get`` -> v          legal iff state == v
* ``cas(e, n)`` -> True  legal iff state == e (e None = "absent"); state := n
* ``cas(e, n)`` -> False legal iff state != e; no change

Because operations on different keys commute, a history is linearizable iff
each per-key sub-history is (P-compositionality, Horn & Kroening 2015), so the
history is split by key and every key is searched on its own.

Search
------
Per key we run the Wing & Gong / Lowe algorithm ("WGL") the way Porcupine
(``checker.go``) does: the acknowledged operations become call/return events in
a time-ordered doubly linked list; a depth-first search repeatedly picks a call
that precedes the first remaining return (i.e. an operation that may be
linearized next), applies it to the model, and if legal *lifts* the call and its
return out of the list.  When no candidate works it pops the backtracking stack
and *unlifts*.  Configurations ``(bitset of linearized ops, state)`` already
visited are memoised (a Python int is the bitset), so every configuration is
expanded at most once.  Events with equal timestamps are ordered calls first,
so operations whose intervals merely touch count as concurrent.

Operations with outcome ``"fail"`` did not happen and are dropped.  Operations
with outcome ``"unknown"`` may take effect at any point after their invocation,
or never (Knossos semantics).  Their return is at +infinity, so they never
constrain anything and are kept outside the linked list: an unknown op is a
candidate whenever its invocation precedes the first remaining return.  The
search succeeds as soon as every *acknowledged* op is linearized -- unknown ops
left over simply never happened.  Unknown gets have no effect and are dropped.

Plain WGL explodes on histories with unknown ops (each is a candidate at
every later step) and on hot keys with many concurrent writes, so the search
adds five reductions.  Each one only discards linearizations (or
configurations) that have an equally good counterpart which is still explored,
so verdicts are exactly those of the plain algorithm -- the test-suite
cross-checks this against a brute-force search on random small histories.

1. An unknown op is only linearized where it changes the state (an unknown cas
   that does not match, or a write of the current value, is the same as the op
   never happening).
2. Right after an unknown op the next linearized op must be a read that the
   unknown op *enabled*: a get, a successful cas, an unknown cas, or a failed
   cas that expected the state from before the unknown op.  A write would hide
   the unknown op (drop it instead), and a get / failed cas that is legal
   either way commutes with it.  The state before the unknown op (``pre``) is
   part of the memo key; a one-step lookahead ("does any candidate want the
   value this unknown op would leave?") avoids pushing hopeless unknown ops.
3. Of several unknown candidates with the same effect (e.g. two unknown
   deletes) only the earliest-invoked unused one is tried: both stay available
   for the rest of the history, so the two choices are symmetric.
4. A legal pure read (a get, or a cas that failed) among the candidates is
   linearized at once and *no alternative is tried at that level*: if any
   valid linearization exists, one exists with that read moved to the front.
5. Values that no get reads and no cas expects are all replaced by a single
   opaque token, so configurations that differ only in such an unobservable
   value (e.g. the order of two concurrent puts nobody reads) are merged.

Besides exact memoisation, a configuration is pruned if an already failed one
has the same acknowledged ops linearized, the same state and a subset of the
unknown ops linearized (unused unknown ops only add options).  Acknowledged
candidates are tried before unknown ones, so a legal history is normally
judged in about one pass.

Cost: a legal history costs roughly (ops x concurrency per key); refuting an
illegal one may have to exhaust every ordering of the prefix before the
anomaly, which grows with ops per key, concurrency per key and the number of
unknown ops pending on the key.  10,000 ops over 20 keys (10 clients, 2%
unknown) take ~0.05 s either way.  10,000 ops on a single hot key take ~1 s if
legal, but refuting a stale read near the end takes ~2 s without unknown ops
and ~2 minutes with 2% unknown ops.  So spread load over keys (as Jepsen's
independent-key tests do) and pass ``timeout`` to bound the search.

On failure the explanation names the key, the longest linearizable prefix
found (how far the search got) and the operations that cannot be ordered at
that point, each with the reason the model rejects it.

CLI: ``python -m tests.jepsen.checker HISTORY.jsonl`` prints the verdict and
exits 0 (linearizable) or 1 (not linearizable).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from .history import Op, load_history

__all__ = ["CheckResult", "CheckTimeout", "check", "check_key", "main"]

INF = math.inf

# Operation kinds, as small ints for the hot loop.
_PUT, _DELETE, _GET, _CAS = 0, 1, 2, 3
_KIND_CODE = {"put": _PUT, "delete": _DELETE, "get": _GET, "cas": _CAS}

# ``pre`` of a configuration not directly preceded by an unknown op.
_FREE = object()

# Stands for every value that no get reads and no cas expects (reduction 5).
_OPAQUE = object()

# Stack marker of a committed pure read (reduction 4).
_COMMIT = object()

# How many linearized ops to show before the point where the search got stuck.
_TAIL = 8


@dataclass
class CheckResult:
    """Verdict of :func:`check`.

    ``ok``: the history is linearizable.  ``key``: the first (in sorted order)
    key whose sub-history is not linearizable, else None.  ``explanation``:
    human-readable verdict; on failure it lists the operations that cannot be
    ordered.  ``ops_checked``: number of history entries belonging to the keys
    that were checked (all of them when ``ok``).  ``elapsed``: seconds spent.
    ``keys_checked``: number of keys searched.
    """

    ok: bool
    key: Optional[str]
    explanation: str
    ops_checked: int
    elapsed: float
    keys_checked: int = 0

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        return self.explanation


class CheckTimeout(Exception):
    """Raised by :func:`check` when ``timeout`` seconds pass without a verdict."""


class _Node:
    """An event in Porcupine's doubly linked list (call or return of one op)."""

    __slots__ = ("op", "is_call", "time", "match", "prev", "next")

    def __init__(self, op: int, is_call: bool, t: float) -> None:
        self.op = op
        self.is_call = is_call
        self.time = t
        self.match: Optional[_Node] = None  # call -> its return
        self.prev: Optional[_Node] = None
        self.next: Optional[_Node] = None


def _lift(call: _Node) -> None:
    call.prev.next = call.next
    call.next.prev = call.prev
    ret = call.match
    ret.prev.next = ret.next
    if ret.next is not None:
        ret.next.prev = ret.prev


def _unlift(call: _Node) -> None:
    ret = call.match
    ret.prev.next = ret
    if ret.next is not None:
        ret.next.prev = ret
    call.prev.next = call
    call.next.prev = call


def _show(b: Optional[bytes]) -> str:
    return "<absent>" if b is None else repr(b)


def _validate(op: Op) -> None:
    if op.outcome == "ok":
        if op.complete is None or math.isinf(op.complete):
            raise ValueError(f"acknowledged op has no completion time: {op}")
        if op.complete < op.invoke:
            raise ValueError(f"op completes before it is invoked: {op}")


def _step_acked(kind: int, value, expected, result, state):
    """Model step for an acknowledged op: (legal, new_state)."""
    if kind == _PUT or kind == _DELETE:
        return True, value  # a delete's value is (the abstraction of) None
    if kind == _GET:
        return state == value, state
    # cas
    if result is None:  # result not recorded: either branch, whichever applies
        return True, (value if state == expected else state)
    if result:
        return state == expected, value
    return state != expected, state


def _reject_reason(op: Op, state: Optional[bytes]) -> Optional[str]:
    """Why the model rejects ``op`` in ``state`` (None if it accepts it)."""
    if op.kind == "get" and op.value != state:
        return f"read {_show(op.value)} but the register holds {_show(state)}"
    if op.kind == "cas" and op.outcome == "ok":
        if op.result is True and state != op.expected:
            return f"cas succeeded expecting {_show(op.expected)} but the register holds {_show(state)}"
        if op.result is False and state == op.expected:
            return f"cas failed although the register holds the expected {_show(state)}"
    return None


def _dominated(failed: Dict[tuple, List[int]], lin: int, state, pre,
               ack_mask: int, n_acked: int) -> bool:
    """Is configuration (lin, state, pre) subsumed by a failed one?

    A configuration with the same acknowledged ops linearized, the same state
    and a *subset* of the unknown ops linearized has every option this one has
    (an unknown op not yet used can still be used later, or never), so if it
    failed this one fails too.  An unrestricted (``_FREE``) configuration also
    subsumes a restricted one.  Only fully explored configurations are
    recorded, never ones still on the stack, so the pruning is not circular.
    """
    r = lin & ack_mask
    u = lin >> n_acked
    lst = failed.get((r, state, _FREE))
    if lst is not None:
        for f in lst:
            if not f & ~u:
                return True
    if pre is not _FREE:
        lst = failed.get((r, state, pre))
        if lst is not None:
            for f in lst:
                if not f & ~u:
                    return True
    return False


def check_key(key: str, ops: Sequence[Op], deadline: float = INF) -> Tuple[bool, str]:
    """Check the sub-history of one key.  Returns ``(ok, explanation)``."""
    acked: List[Op] = []
    unknown: List[Op] = []
    for op in ops:
        _validate(op)
        if op.outcome == "ok":
            acked.append(op)
        elif op.outcome == "unknown" and op.kind != "get":
            unknown.append(op)
        # "fail" ops and unknown gets have no effect.
    n_acked = len(acked)
    if n_acked == 0:
        return True, f"key {key!r}: linearizable (no acknowledged ops)"
    unknown.sort(key=lambda o: o.invoke)
    all_ops = acked + unknown  # bit i of the bitset <-> all_ops[i]

    # Reduction 5: the model only ever compares the state with values read by
    # gets and with cas expectations ("comparands").  Every other value -- one
    # written but never read back -- is replaced by the one token _OPAQUE:
    # the abstraction preserves every comparison and commutes with every step,
    # so the abstract history is linearizable iff the concrete one is, and
    # states (and unknown writes) that no op can tell apart are merged.
    comparands = {o.value for o in acked if o.kind == "get"}
    comparands.update(o.expected for o in all_ops if o.kind == "cas")

    def abstract(v: Optional[bytes]):
        return v if v in comparands else _OPAQUE

    # Compact op descriptions for the hot loop.
    kinds = [_KIND_CODE[o.kind] for o in all_ops]
    values = [abstract(None if o.kind == "delete" else o.value) for o in all_ops]
    expecteds = [o.expected for o in all_ops]
    results = [o.result for o in all_ops]
    is_reader = [k in (_GET, _CAS) for k in kinds]
    # get / failed cas: legal or not, they never change the state
    is_pure = [k == _GET or (k == _CAS and r is False) for k, r in zip(kinds, results)]

    # Porcupine's linked list of call/return events of acknowledged ops.
    events: List[Tuple[float, int, int, _Node]] = []
    calls: List[_Node] = []
    for i, o in enumerate(acked):
        c = _Node(i, True, o.invoke)
        r = _Node(i, False, o.complete)
        c.match = r
        calls.append(c)
        events.append((o.invoke, 0, i, c))  # calls before returns on ties
        events.append((o.complete, 1, i, r))
    events.sort(key=lambda e: (e[0], e[1], e[2]))
    head = _Node(-1, False, -INF)
    prev = head
    for _, _, _, node in events:
        prev.next = node
        node.prev = prev
        prev = node

    # Unknown ops: candidates once invoked; "twins" = earlier unknown ops with
    # the same effect (reduction 3).
    u_invoke = [o.invoke for o in unknown]
    u_cas = [(o.invoke, o.expected) for o in unknown if o.kind == "cas"]
    u_base = n_acked
    n_unknown = len(unknown)
    twin_mask = [0] * n_unknown
    first_of: Dict[tuple, int] = {}
    for j, o in enumerate(unknown):
        sig = (kinds[u_base + j], values[u_base + j], o.expected)
        twin_mask[j] = first_of.get(sig, 0)
        first_of[sig] = first_of.get(sig, 0) | (1 << (u_base + j))

    state = abstract(None)  # the register starts absent
    linearized = 0  # bitset over all_ops
    # _FREE, or -- right after an unknown op -- the state before that op; the
    # next op must then be one the unknown op enabled (reduction 2).
    pre = _FREE
    remaining = n_acked
    cache = set()  # every configuration ever pushed: (bitset, state, pre)
    # Fully explored, failed configurations, for subsumption (see _dominated):
    # (acknowledged bitset, state, pre) -> [bitsets of linearized unknown ops]
    failed: Dict[tuple, List[int]] = {}
    ack_mask = (1 << n_acked) - 1
    # Backtracking stack: (op index, state before, pre before, ctx).  ctx is
    # _COMMIT for a committed pure read (reduction 4), None for another
    # acknowledged op, and for an unknown op the unknown phase's
    # (bound, want, wild) at that level so that the phase can resume.
    stack: List[tuple] = []

    best_remaining = n_acked
    best: Tuple[int, Optional[bytes], List[int]] = (0, None, [])  # for _explain

    entry = head.next
    u_idx = -1  # -1: scanning acknowledged candidates; >= 0: unknown phase
    fresh = True  # a new configuration: look for a pure read to commit to
    dead = False  # the current configuration is known to fail
    bound = INF
    want: set = set()
    wild = False
    pops = 0
    while True:
        if dead:
            pass
        elif u_idx < 0:
            # Phase 1: acknowledged calls before the first remaining return.
            if fresh:
                # Reduction 4: a legal pure read among the candidates can be
                # linearized right now in *some* valid linearization if there
                # is any (moving a get / failed cas earlier, to a point where
                # it is legal and allowed, changes nothing for the other ops).
                # So commit to it: no alternatives are tried at this level.
                fresh = False
                e = entry
                while e is not None and e.is_call:
                    i = e.op
                    if is_pure[i] and (
                            values[i] == state if kinds[i] == _GET
                            else expecteds[i] != state and (pre is _FREE or expecteds[i] == pre)):
                        break
                    e = e.next
                else:
                    e = None
                if e is not None:
                    new_lin = linearized | (1 << i)
                    ck = (new_lin, state, _FREE)
                    if ck in cache or (
                            failed and new_lin > ack_mask
                            and _dominated(failed, new_lin, state, _FREE, ack_mask, n_acked)):
                        dead = True
                        continue
                    cache.add(ck)
                    stack.append((i, state, pre, _COMMIT))
                    linearized = new_lin
                    pre = _FREE
                    _lift(e)
                    remaining -= 1
                    if remaining < best_remaining:
                        if remaining == 0:
                            return True, f"key {key!r}: linearizable ({len(ops)} ops)"
                        best_remaining = remaining
                        best = (linearized, _concrete(stack, state, all_ops),
                                    [f[0] for f in stack[-_TAIL:]])
                    entry = head.next
                    fresh = True
                    continue
            if entry is not None and entry.is_call:
                i = entry.op
                if is_pure[i] or (pre is not _FREE and not is_reader[i]):
                    # Pure reads were handled above.  After an unknown op only
                    # a read it enables may follow (reduction 2); a get or
                    # successful cas legal now was illegal before, since the
                    # unknown op changed the state.
                    entry = entry.next
                    continue
                legal, new_state = _step_acked(kinds[i], values[i], expecteds[i], results[i], state)
                if legal:
                    new_lin = linearized | (1 << i)
                    ck = (new_lin, new_state, _FREE)
                    if ck not in cache and not (
                            failed and new_lin > ack_mask
                            and _dominated(failed, new_lin, new_state, _FREE, ack_mask, n_acked)):
                        cache.add(ck)
                        stack.append((i, state, pre, None))
                        state = new_state
                        linearized = new_lin
                        pre = _FREE
                        _lift(entry)
                        remaining -= 1
                        if remaining < best_remaining:
                            if remaining == 0:
                                return True, f"key {key!r}: linearizable ({len(ops)} ops)"
                            best_remaining = remaining
                            best = (linearized, _concrete(stack, state, all_ops),
                                    [f[0] for f in stack[-_TAIL:]])
                        entry = head.next
                        fresh = True
                        continue
                entry = entry.next
                continue
            bound = entry.time if entry is not None else INF
            u_idx = 0
            if n_unknown and u_invoke[0] <= bound:
                # Values an unknown op would have to leave in the register for
                # some candidate to follow it (lookahead for reduction 2).
                want = set()
                wild = False
                e = head.next
                while e is not None and e.is_call:
                    k = e.op
                    if kinds[k] == _GET:
                        want.add(values[k])
                    elif kinds[k] == _CAS:
                        if results[k] is True:
                            want.add(expecteds[k])
                        elif results[k] is None or expecteds[k] == state:
                            wild = True
                    e = e.next
                for t, x in u_cas:
                    if t > bound:
                        break
                    want.add(x)
                if not want and not wild:
                    u_idx = n_unknown  # no unknown op could be followed by anything
            else:
                u_idx = n_unknown  # no unknown candidates

        if not dead:
            # Phase 2: unknown ops invoked before the first remaining return.
            pushed = False
            while u_idx < n_unknown and u_invoke[u_idx] <= bound:
                j = u_idx
                u_idx += 1
                i = u_base + j
                # Model step of an unknown op, restricted by reductions 1 and 2.
                if kinds[i] == _CAS:
                    if state != expecteds[i]:
                        continue
                elif pre is not _FREE:
                    continue
                new_state = values[i]  # None for a delete
                if new_state == state or not (wild or new_state in want):
                    continue
                bit = 1 << i
                if linearized & bit or twin_mask[j] & ~linearized:
                    continue
                new_lin = linearized | bit
                ck = (new_lin, new_state, state)
                if ck in cache or (new_lin, new_state, _FREE) in cache:
                    continue
                if failed and _dominated(failed, new_lin, new_state, state, ack_mask, n_acked):
                    continue
                cache.add(ck)
                stack.append((i, state, pre, (bound, want, wild)))
                pre = state
                state = new_state
                linearized = new_lin
                entry = head.next
                u_idx = -1
                fresh = True
                pushed = True
                break
            if pushed:
                continue

        # Dead end: backtrack.
        if not stack:
            return False, _explain(key, ops, all_ops, n_acked, best)
        pops += 1
        if not pops & 0x3FF and time.monotonic() > deadline:
            raise CheckTimeout(f"key {key!r}: no verdict before the deadline")
        if n_unknown:
            # Remember the failure for subsumption.
            fk = (linearized & ack_mask, state, pre)
            lst = failed.get(fk)
            if lst is None:
                failed[fk] = [linearized >> n_acked]
            else:
                lst.append(linearized >> n_acked)
        i, state, pre, ctx = stack.pop()
        linearized &= ~(1 << i)
        dead = False
        if i < n_acked:
            call = calls[i]
            _unlift(call)
            remaining += 1
            if ctx is _COMMIT:
                dead = True  # the level committed to this read: it fails too
            else:
                entry = call.next
                u_idx = -1
        else:
            bound, want, wild = ctx
            u_idx = i - u_base + 1


def _concrete(stack: List[tuple], state, all_ops: List[Op]) -> Optional[bytes]:
    """The concrete register value at the top of the search stack."""
    if state is not _OPAQUE:
        return state
    for i, before, _, _ in reversed(stack):
        op = all_ops[i]
        if op.kind == "put":
            return op.value
        if op.kind == "delete":
            return None
        if op.kind == "cas" and (op.result or (op.result is None and before == op.expected)):
            return op.value
    return None  # nothing written yet: the initial, absent state


def _explain(key: str, ops: Sequence[Op], all_ops: List[Op], n_acked: int,
             best: Tuple[int, Optional[bytes], List[int]]) -> str:
    linearized, state, tail = best
    done = bin(linearized & ((1 << n_acked) - 1)).count("1")
    pending = [i for i in range(n_acked) if not linearized >> i & 1]
    horizon = min(all_ops[i].complete for i in pending)
    stuck = [i for i in pending if all_ops[i].invoke <= horizon]
    stuck.sort(key=lambda i: all_ops[i].invoke)
    unknown_avail = [i for i in range(n_acked, len(all_ops))
                     if not linearized >> i & 1 and all_ops[i].invoke <= horizon]

    lines = [
        f"key {key!r} is NOT linearizable ({len(ops)} ops on this key, "
        f"{n_acked} acknowledged).",
        f"Longest linearizable prefix: {done} of {n_acked} acknowledged ops; "
        f"the register then holds {_show(state)}.",
    ]
    if tail:
        lines.append("Last ops of that prefix (in linearization order):")
        for i in tail:
            lines.append(f"    {all_ops[i].describe()}")
    lines.append("Operations that cannot be ordered at that point "
                 "(one of them must come next, none can):")
    for i in stuck:
        reason = _reject_reason(all_ops[i], state)
        if reason is None:
            reason = "allowed here, but every continuation after it fails"
        lines.append(f"    {all_ops[i].describe()}  <- {reason}")
    if unknown_avail:
        lines.append(f"Unknown-outcome ops that could have taken effect by then "
                     f"(none of them helps): {len(unknown_avail)}")
        for i in unknown_avail[:_TAIL]:
            lines.append(f"    {all_ops[i].describe()}")
        if len(unknown_avail) > _TAIL:
            lines.append(f"    ... and {len(unknown_avail) - _TAIL} more")
    return "\n".join(lines)


def check(ops: Iterable[Op], timeout: Optional[float] = None) -> CheckResult:
    """Check a whole history for linearizability.

    The history is split by key; keys are checked in sorted order and the
    first non-linearizable one is reported.  ``timeout`` (seconds) bounds the
    search; on expiry :class:`CheckTimeout` is raised.
    """
    start = time.monotonic()
    deadline = INF if timeout is None else start + timeout
    by_key: Dict[str, List[Op]] = {}
    for op in ops:
        by_key.setdefault(op.key, []).append(op)
    checked = 0
    for n, key in enumerate(sorted(by_key), 1):
        key_ops = by_key[key]
        checked += len(key_ops)
        ok, why = check_key(key, key_ops, deadline)
        if not ok:
            return CheckResult(False, key, why, checked, time.monotonic() - start, n)
    elapsed = time.monotonic() - start
    return CheckResult(
        True, None,
        f"linearizable: {checked} ops over {len(by_key)} keys checked in {elapsed:.3f}s",
        checked, elapsed, len(by_key),
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.jepsen.checker",
        description="Check a recorded KV history (JSON lines) for linearizability.")
    parser.add_argument("history", help="history file written by HistoryRecorder.save")
    parser.add_argument("--timeout", type=float, default=None,
                        help="give up after this many seconds (exit status 2)")
    args = parser.parse_args(argv)
    ops = load_history(args.history)
    try:
        res = check(ops, timeout=args.timeout)
    except CheckTimeout as e:
        print(f"UNKNOWN: {e}")
        return 2
    if res.ok:
        print(f"OK: {res.explanation}")
        return 0
    print(f"NOT LINEARIZABLE (key {res.key!r}, {res.ops_checked} ops checked, "
          f"{res.elapsed:.3f}s)")
    print(res.explanation)
    return 1


if __name__ == "__main__":
    sys.exit(main())
