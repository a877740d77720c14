"""Tests for the history model and the linearizability checker."""
from __future__ import annotations

import dataclasses
import functools
import heapq
import os
import random
import subprocess
import sys
import threading
from typing import List

import pytest

from tests.jepsen.checker import CheckTimeout, check
from tests.jepsen.history import HistoryRecorder, Op, load_history, save_history

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# ---------------------------------------------------------------- helpers
def put(p, key, value, t0, t1=None, outcome="ok"):
    return Op(p, "put", key, value=value, outcome=outcome, invoke=t0,
              complete=None if outcome == "unknown" else t1)


def get(p, key, value, t0, t1=None, outcome="ok"):
    return Op(p, "get", key, value=value, outcome=outcome, invoke=t0,
              complete=None if outcome == "unknown" else t1)


def delete(p, key, t0, t1=None, outcome="ok"):
    return Op(p, "delete", key, outcome=outcome, invoke=t0,
              complete=None if outcome == "unknown" else t1)


def cas(p, key, expected, new, result, t0, t1=None, outcome="ok"):
    return Op(p, "cas", key, value=new, expected=expected, result=result,
              outcome=outcome, invoke=t0, complete=None if outcome == "unknown" else t1)


def assert_ok(ops):
    res = check(ops)
    assert res.ok, res.explanation
    assert res.key is None
    return res


def assert_bad(ops, key="x"):
    res = check(ops)
    assert not res.ok, "history should not be linearizable"
    assert res.key == key
    assert repr(key) in res.explanation
    return res


# ---------------------------------------------------------------- legal histories
def test_empty_history():
    res = check([])
    assert res.ok and res.ops_checked == 0


def test_sequential_legal():
    assert_ok([
        get(0, "x", None, 0, 1),
        put(0, "x", b"a", 2, 3),
        get(1, "x", b"a", 4, 5),
        put(1, "x", b"b", 6, 7),
        get(0, "x", b"b", 8, 9),
        delete(0, "x", 10, 11),
        get(1, "x", None, 12, 13),
    ])


def test_concurrent_read_may_see_old_or_new():
    # The put is concurrent with both reads: one sees the old, one the new
    # value -- but only in that order, since the reads do not overlap.
    assert_ok([
        put(0, "x", b"a", 0, 1),
        put(1, "x", b"b", 2, 10),
        get(2, "x", b"a", 3, 4),
        get(2, "x", b"b", 5, 6),
    ])


def test_concurrent_new_then_old_is_illegal():
    res = assert_bad([
        put(0, "x", b"a", 0, 1),
        put(1, "x", b"b", 2, 10),
        get(2, "x", b"b", 3, 4),
        get(2, "x", b"a", 5, 6),
    ])
    assert "b'a'" in res.explanation


def test_concurrent_overlapping_reads_any_order():
    # Overlapping reads may be linearized in either order around the write.
    assert_ok([
        put(0, "x", b"a", 0, 1),
        put(1, "x", b"b", 2, 10),
        get(2, "x", b"b", 3, 6),
        get(3, "x", b"a", 4, 7),
    ])


def test_touching_intervals_are_concurrent():
    assert_ok([
        put(0, "x", b"a", 0, 1),
        get(1, "x", None, 1, 2),
    ])


def test_keys_are_independent():
    assert_ok([
        put(0, "x", b"a", 0, 1),
        put(0, "y", b"b", 2, 3),
        get(1, "x", b"a", 4, 5),
        get(1, "y", b"b", 4, 5),
        get(1, "z", None, 6, 7),
    ])


def test_failed_ops_are_ignored():
    assert_ok([
        put(0, "x", b"a", 0, 1),
        put(1, "x", b"b", 2, 3, outcome="fail"),
        get(0, "x", b"a", 4, 5),
    ])
    # ... and a read of a failed write's value is a read of a value never written
    assert_bad([
        put(0, "x", b"a", 0, 1),
        put(1, "x", b"b", 2, 3, outcome="fail"),
        get(0, "x", b"b", 4, 5),
    ])


# ---------------------------------------------------------------- anomalies
def test_stale_read():
    res = assert_bad([
        put(0, "x", b"a", 0, 1),
        put(0, "x", b"b", 2, 3),
        get(1, "x", b"a", 4, 5),  # b was acknowledged before this read began
    ])
    assert "get 'x' -> b'a'" in res.explanation
    assert "register holds b'b'" in res.explanation


def test_stale_read_among_other_keys_names_the_key():
    ops = [put(0, f"k{i}", b"v", 0, 1) for i in range(5)]
    ops += [get(1, f"k{i}", b"v", 2, 3) for i in range(5)]
    ops += [put(2, "k3", b"w", 4, 5), get(3, "k3", b"v", 6, 7)]
    res = assert_bad(ops, key="k3")
    assert "cannot be ordered" in res.explanation


def test_lost_acknowledged_write():
    res = assert_bad([
        put(0, "x", b"a", 0, 1),
        put(1, "x", b"b", 2, 3),  # acknowledged ...
        get(2, "x", b"a", 4, 5),  # ... but later reads see the older value
        get(3, "x", b"a", 6, 7),
    ])
    assert "put 'x' b'b'" in res.explanation


def test_lost_write_from_initial_state():
    assert_bad([
        put(0, "x", b"a", 0, 1),
        get(1, "x", None, 2, 3),
    ])


def test_read_of_value_never_written():
    res = assert_bad([
        put(0, "x", b"a", 0, 1),
        get(1, "x", b"zzz", 0.5, 3),
    ])
    assert "b'zzz'" in res.explanation


def test_read_of_value_written_to_another_key():
    assert_bad([
        put(0, "y", b"a", 0, 1),
        get(1, "x", b"a", 2, 3),
    ])


# ---------------------------------------------------------------- unknown outcomes
def test_legal_only_if_unknown_put_took_effect():
    ops = [
        put(0, "x", b"a", 0, 1),
        put(1, "x", b"b", 2, outcome="unknown"),
        get(2, "x", b"b", 100, 101),  # long after the client gave up
    ]
    assert_ok(ops)
    # control: the same history with the put known to have failed is illegal
    ops[1] = put(1, "x", b"b", 2, 3, outcome="fail")
    assert_bad(ops)


def test_legal_only_if_unknown_put_never_took_effect():
    ops = [
        put(0, "x", b"a", 0, 1),
        put(1, "x", b"b", 2, outcome="unknown"),
        get(2, "x", b"a", 100, 101),
        get(2, "x", b"a", 102, 103),
    ]
    assert_ok(ops)
    # control: had the put been acknowledged, the reads would be stale
    ops[1] = put(1, "x", b"b", 2, 3)
    assert_bad(ops)


def test_unknown_put_takes_effect_at_most_once():
    # a, then b (unknown), then a again, then b again: b would have to take
    # effect twice.
    assert_bad([
        put(0, "x", b"a", 0, 1),
        put(1, "x", b"b", 2, outcome="unknown"),
        get(2, "x", b"b", 10, 11),
        put(0, "x", b"a", 12, 13),
        get(2, "x", b"b", 14, 15),
    ])


def test_unknown_op_cannot_take_effect_before_invocation():
    assert_bad([
        get(0, "x", b"a", 0, 1),
        put(1, "x", b"a", 2, outcome="unknown"),
    ])


def test_unknown_delete_explains_absent_read():
    ops = [
        put(0, "x", b"a", 0, 1),
        delete(1, "x", 2, outcome="unknown"),
        get(0, "x", b"a", 3, 4),
        get(0, "x", None, 5, 6),
    ]
    assert_ok(ops)
    ops[1] = delete(1, "x", 2, 3, outcome="fail")
    assert_bad(ops)


def test_unknown_cas_takes_effect_only_if_it_matches():
    base = [
        put(0, "x", b"a", 0, 1),
        get(0, "x", b"b", 5, 6),
    ]
    assert_ok(base + [cas(1, "x", b"a", b"b", None, 2, outcome="unknown")])
    assert_bad(base + [cas(1, "x", b"z", b"b", None, 2, outcome="unknown")])


def test_chain_of_unknown_ops():
    # Only explicable by unknown put c followed by unknown cas c->d.
    assert_ok([
        put(0, "x", b"a", 0, 1),
        cas(1, "x", b"c", b"d", None, 2, outcome="unknown"),
        put(2, "x", b"c", 3, outcome="unknown"),
        get(0, "x", b"a", 4, 5),
        get(0, "x", b"d", 6, 7),
    ])


def test_unknown_gets_are_ignored():
    assert_ok([
        put(0, "x", b"a", 0, 1),
        get(1, "x", b"nonsense", 2, outcome="unknown"),
        get(0, "x", b"a", 3, 4),
    ])


def test_many_never_applied_unknown_writes_are_cheap():
    # 60 pending unknown writes that never happened, then 300 reads of "a":
    # the search must not explore subsets of the unknown ops.
    ops = [put(0, "x", b"a", 0, 1)]
    ops += [put(100 + i, "x", b"u%d" % i, 2 + i, outcome="unknown") for i in range(30)]
    ops += [delete(200 + i, "x", 2 + i, outcome="unknown") for i in range(30)]
    ops += [get(1, "x", b"a", 100 + 2 * i, 101 + 2 * i) for i in range(300)]
    res = check(ops, timeout=60)  # a hang guard, not a performance assertion
    assert res.ok, res.explanation
    # and an illegal variant must also terminate quickly
    ops.append(get(2, "x", b"nope", 1000, 1001))
    res = check(ops, timeout=60)
    assert not res.ok and res.key == "x"


# ---------------------------------------------------------------- cas and delete
def test_cas_success_and_failure_consistent():
    assert_ok([
        cas(0, "x", None, b"a", True, 0, 1),     # create-if-absent
        cas(0, "x", None, b"b", False, 2, 3),    # already present
        cas(1, "x", b"a", b"c", True, 4, 5),
        cas(1, "x", b"a", b"d", False, 6, 7),
        get(0, "x", b"c", 8, 9),
    ])


def test_cas_success_inconsistent_with_state():
    res = assert_bad([
        put(0, "x", b"a", 0, 1),
        cas(1, "x", b"b", b"c", True, 2, 3),
    ])
    assert "cas succeeded expecting b'b'" in res.explanation


def test_cas_failure_inconsistent_with_state():
    res = assert_bad([
        put(0, "x", b"a", 0, 1),
        cas(1, "x", b"a", b"c", False, 2, 3),
    ])
    assert "cas failed" in res.explanation


def test_cas_absent_expectation():
    assert_bad([cas(0, "x", None, b"a", False, 0, 1)])  # key is absent initially
    assert_ok([cas(0, "x", None, b"a", True, 0, 1), get(0, "x", b"a", 2, 3)])


def test_failed_cas_changes_nothing():
    assert_bad([
        put(0, "x", b"a", 0, 1),
        cas(1, "x", b"b", b"c", False, 2, 3),
        get(0, "x", b"c", 4, 5),
    ])


def test_concurrent_cas_only_one_wins():
    assert_ok([
        put(0, "x", b"a", 0, 1),
        cas(1, "x", b"a", b"b", True, 2, 5),
        cas(2, "x", b"a", b"c", False, 2, 5),
        get(0, "x", b"b", 6, 7),
    ])
    assert_bad([
        put(0, "x", b"a", 0, 1),
        cas(1, "x", b"a", b"b", True, 2, 5),
        cas(2, "x", b"a", b"c", True, 2, 5),
    ])


def test_delete():
    assert_ok([
        put(0, "x", b"a", 0, 1),
        delete(1, "x", 2, 3),
        get(0, "x", None, 4, 5),
        cas(0, "x", None, b"b", True, 6, 7),
    ])
    res = assert_bad([
        put(0, "x", b"a", 0, 1),
        delete(1, "x", 2, 3),
        get(0, "x", b"a", 4, 5),
    ])
    assert "register holds <absent>" in res.explanation


def test_invalid_ops_rejected():
    with pytest.raises(ValueError):
        Op(0, "append", "x")
    with pytest.raises(ValueError):
        check([Op(0, "put", "x", b"a", outcome="ok", invoke=1, complete=None)])


# ---------------------------------------------------------------- recorder / files / CLI
def test_recorder_threads_and_round_trip(tmp_path):
    rec = HistoryRecorder()
    reg = {"x": None}
    lock = threading.Lock()

    def client(p):
        for i in range(50):
            v = b"%d-%d" % (p, i)
            t = rec.begin(p, "put", "x", value=v)
            with lock:
                reg["x"] = v
            rec.end(t, "ok")
            t = rec.begin(p, "get", "x")
            with lock:
                seen = reg["x"]
            rec.end(t, "ok", value=seen)
            t = rec.begin(p, "cas", "x", value=b"c", expected=seen)
            with lock:
                swapped = reg["x"] == seen
                if swapped:
                    reg["x"] = b"c"
            rec.end(t, "ok", result=swapped)
        t = rec.begin(p, "delete", "x")
        rec.end(t, "unknown")
        rec.begin(p, "put", "x", value=b"never-ended")

    threads = [threading.Thread(target=client, args=(p,)) for p in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    ops = rec.ops()
    assert len(ops) == 4 * 152
    assert sum(op.outcome == "unknown" for op in ops) == 8
    assert all(op.complete is None for op in ops if op.outcome == "unknown")
    assert_ok(ops)

    path = tmp_path / "h.jsonl"
    rec.save(path)
    loaded = HistoryRecorder.load(path)
    assert loaded == ops
    with pytest.raises(ValueError):
        rec.end(0, "ok")  # already ended


def test_save_load_binary_values(tmp_path):
    ops = [put(0, "k", bytes(range(256)), 0.5, 1.5), get(1, "k", None, 2, 3),
           cas(2, "k", None, b"\x00", None, 4, outcome="unknown")]
    path = tmp_path / "h.jsonl"
    save_history(ops, path)
    assert load_history(path) == ops


def test_cli(tmp_path):
    good = tmp_path / "good.jsonl"
    bad = tmp_path / "bad.jsonl"
    save_history([put(0, "x", b"a", 0, 1), get(1, "x", b"a", 2, 3)], good)
    save_history([put(0, "x", b"a", 0, 1), get(1, "x", b"b", 2, 3)], bad)
    cmd = [sys.executable, "-m", "tests.jepsen.checker"]
    r = subprocess.run(cmd + [str(good)], cwd=REPO_ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("OK")
    r = subprocess.run(cmd + [str(bad)], cwd=REPO_ROOT, capture_output=True, text=True)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "NOT LINEARIZABLE" in r.stdout and "'x'" in r.stdout


# ---------------------------------------------------------------- random histories
def simulate(seed: int, n_ops: int = 10_000, n_keys: int = 20, n_procs: int = 10,
             unknown_rate: float = 0.02, fail_rate: float = 0.01) -> List[Op]:
    """A history of a real linearizable register store.

    ``n_procs`` clients run concurrently; every op gets a random interval and
    takes effect at a random point inside it.  Unknown ops take effect at a
    random later point (possibly long after the client gave up) or never; the
    client process is then replaced by a fresh one, as in Jepsen.  Failed ops
    never take effect.
    """
    rng = random.Random(seed)
    keys = [f"k{i:02d}" for i in range(n_keys)]
    recent = {k: [None] for k in keys}  # values written recently, for cas
    ready = [(rng.uniform(0, 1.0), p) for p in range(n_procs)]
    heapq.heapify(ready)
    next_pid = n_procs
    effects = []  # (time, seq, op)
    ops: List[Op] = []
    for n in range(n_ops):
        t, p = heapq.heappop(ready)
        invoke = t + rng.expovariate(5.0)
        complete = invoke + rng.uniform(0.05, 2.0)
        key = rng.choice(keys)
        r = rng.random()
        value = b"v%d" % n
        if r < 0.4:
            op = Op(p, "put", key, value=value)
        elif r < 0.8:
            op = Op(p, "get", key)
        elif r < 0.9:
            op = Op(p, "delete", key)
        else:
            op = Op(p, "cas", key, value=value, expected=rng.choice(recent[key][-3:]))
        if op.kind in ("put", "cas"):
            recent[key].append(value)
        op.invoke = invoke
        r = rng.random()
        if r < unknown_rate:
            op.outcome, op.complete = "unknown", None
            if rng.random() < 0.5:
                effects.append((invoke + rng.uniform(0, 20.0), n, op))
            p = next_pid  # the client is replaced
            next_pid += 1
        elif r < unknown_rate + fail_rate:
            op.outcome, op.complete = "fail", complete
        else:
            op.outcome, op.complete = "ok", complete
            effects.append((rng.uniform(invoke, complete), n, op))
        ops.append(op)
        heapq.heappush(ready, (complete, p))
    state = {}
    for _, _, op in sorted(effects, key=lambda e: (e[0], e[1])):
        cur = state.get(op.key)
        if op.kind == "put":
            state[op.key] = op.value
        elif op.kind == "delete":
            state[op.key] = None
        elif op.kind == "get":
            op.value = cur
        else:
            swapped = cur == op.expected
            if op.outcome == "ok":
                op.result = swapped
            if swapped:
                state[op.key] = op.value
    return ops


def inject_stale_read(ops: List[Op], rng: random.Random) -> Op:
    """Make one ok get return a value that was definitely overwritten before it began."""
    gets = [o for o in ops if o.kind == "get" and o.outcome == "ok"]
    rng.shuffle(gets)
    for g in gets:
        puts = [o for o in ops if o.key == g.key and o.kind == "put" and o.outcome == "ok"
                and o.complete < g.invoke]
        for p2 in sorted(puts, key=lambda o: -o.complete):
            olds = [p1 for p1 in puts if p1.complete < p2.invoke and p1.value != g.value]
            if olds:
                g.value = olds[-1].value
                return g
    raise AssertionError("no place to inject a stale read")


def test_simulated_small_histories_are_legal():
    for seed in range(30):
        ops = simulate(seed, n_ops=300, n_keys=2, n_procs=6, unknown_rate=0.05)
        res = check(ops)
        assert res.ok, f"seed {seed}: {res.explanation}"
        rng = random.Random(seed)
        bad = inject_stale_read(ops, rng)
        res = check(ops)
        assert not res.ok and res.key == bad.key, f"seed {seed}"


def test_single_hot_key_high_concurrency():
    ops = simulate(7, n_ops=2000, n_keys=1, n_procs=10)
    res = assert_ok(ops)
    print(f"\n2000 ops / 1 key / 10 procs: {res.elapsed:.3f}s")


def test_performance_10000_ops_20_keys():
    ops = simulate(2024)
    assert len(ops) == 10_000
    assert len({o.key for o in ops}) == 20
    n_unknown = sum(o.outcome == "unknown" for o in ops)
    assert 100 <= n_unknown <= 300
    res = check(ops)
    print(f"\nlegal history: 10000 ops / 20 keys / {n_unknown} unknown: "
          f"checked in {res.elapsed:.3f}s")
    assert res.ok, res.explanation
    assert res.ops_checked == 10_000 and res.keys_checked == 20


def test_performance_10000_ops_20_keys_with_stale_read():
    ops = simulate(2024)
    bad = inject_stale_read(ops, random.Random(1))
    res = check(ops)
    print(f"\nhistory with one stale read: judged in {res.elapsed:.3f}s")
    assert not res.ok
    assert res.key == bad.key
    assert bad.describe() in res.explanation


def test_single_hot_key_with_stale_read():
    ops = simulate(11, n_ops=1000, n_keys=1, n_procs=10)
    bad = inject_stale_read(ops, random.Random(3))
    res = check(ops)
    print(f"\n1000 ops / 1 key / 10 procs, one stale read: {res.elapsed:.3f}s")
    assert not res.ok and bad.describe() in res.explanation


def test_timeout():
    # Refuting this one takes seconds: exhaustive search of a hot key's prefix.
    ops = simulate(11, n_ops=3000, n_keys=1, n_procs=10)
    inject_stale_read(ops, random.Random(5))
    with pytest.raises(CheckTimeout):
        check(ops, timeout=0.01)


# ---------------------------------------------------------------- brute-force cross-check
def brute_force_linearizable(ops: List[Op]) -> bool:
    """The definition, searched naively (memoised on (linearized set, state))."""
    ops = [o for o in ops if o.outcome != "fail" and not (o.outcome == "unknown" and o.kind == "get")]
    for key in {o.key for o in ops}:
        kops = [o for o in ops if o.key == key]
        acked = [i for i, o in enumerate(kops) if o.outcome == "ok"]
        all_acked = sum(1 << i for i in acked)

        def step(o, s):
            if o.kind == "put":
                return True, o.value
            if o.kind == "delete":
                return True, None
            if o.kind == "get":
                return s == o.value, s
            if o.outcome == "unknown" or o.result is None:
                return True, (o.value if s == o.expected else s)
            return (s == o.expected, o.value) if o.result else (s != o.expected, s)

        @functools.lru_cache(maxsize=None)
        def search(lin, s):
            if lin & all_acked == all_acked:
                return True
            horizon = min(kops[i].complete for i in acked if not lin >> i & 1)
            for i, o in enumerate(kops):
                if not lin >> i & 1 and o.invoke <= horizon:
                    legal, s2 = step(o, s)
                    if legal and search(lin | 1 << i, s2):
                        return True
            return False

        if not search(0, None):
            return False
    return True


def random_small_history(rng: random.Random, n: int) -> List[Op]:
    """Arbitrary (mostly illegal) small histories with colliding values and times."""
    read_vals = [None, b"a", b"b", b"c"]
    ops = []
    for _ in range(n):
        t0 = rng.randint(0, 6) if rng.random() < 0.5 else rng.uniform(0, 6)
        t1 = t0 + rng.choice([0, 1, 2, rng.uniform(0, 3)])
        kind = rng.choice(["put", "put", "get", "get", "get", "delete", "cas", "cas"])
        outcome = rng.choices(["ok", "unknown", "fail"], [0.6, 0.35, 0.05])[0]
        op = Op(rng.randrange(4), kind, "x" if rng.random() < 0.9 else "y", outcome=outcome,
                invoke=t0, complete=None if outcome == "unknown" else t1)
        if kind == "put":
            op.value = rng.choice([b"a", b"b", b"c", b"p1", b"p2"])
        elif kind == "get":
            op.value = rng.choice(read_vals)
        elif kind == "cas":
            op.value = rng.choice([b"a", b"b", b"p1"])
            op.expected = rng.choice(read_vals)
            if outcome == "ok":
                op.result = rng.random() < 0.5
        ops.append(op)
    return ops


def test_matches_brute_force_on_random_small_histories():
    rng = random.Random(12345)
    verdicts = {True: 0, False: 0}
    for n in range(5000):
        ops = random_small_history(rng, rng.randint(1, 12))
        expected = brute_force_linearizable(ops)
        verdicts[expected] += 1
        res = check(ops)
        assert res.ok == expected, "\n".join(
            [f"history #{n}: checker={res.ok} brute force={expected}"]
            + [o.describe() for o in sorted(ops, key=lambda o: o.invoke)])
    # both verdicts well represented
    assert min(verdicts.values()) > 1000, verdicts


def test_matches_brute_force_on_mutated_simulations():
    rng = random.Random(99)
    for seed in range(150):
        base = simulate(seed, n_ops=14, n_keys=1, n_procs=4, unknown_rate=0.25)
        assert check(base).ok
        for _ in range(6):
            ops = [dataclasses.replace(o) for o in base]
            o = rng.choice(ops)
            if o.kind == "get" and o.outcome == "ok":
                o.value = rng.choice([None] + [x.value for x in ops if x.value is not None])
            elif o.kind == "cas" and o.outcome == "ok":
                o.result = not o.result
            elif o.outcome == "unknown":
                o.outcome, o.complete = "ok", o.invoke + rng.uniform(0, 3)
                if o.kind == "cas":
                    o.result = rng.random() < 0.5
                elif o.kind == "get":
                    o.value = None
            assert check(ops).ok == brute_force_linearizable(ops), seed
