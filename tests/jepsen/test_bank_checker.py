"""The bank checker on hand-made histories: it passes a consistent one and catches a lost
transfer, a torn read, a negative balance, a phantom (failed) transfer and a stale read."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.jepsen.bank_checker import BankOp, BankRecorder, check_bank, load_bank_history

INIT = {0: 10, 1: 10, 2: 10}
TOTAL = 30


def transfer(src, dst, amount, rev, t0, t1, outcome="ok", p=0):
    return BankOp(p, "transfer", client=p, src=src, dst=dst, amount=amount, revision=rev if outcome == "ok" else 0,
                  outcome=outcome, invoke=t0, complete=None if outcome == "unknown" else t1)


def read(balances, rev, t0, t1, client=1, final=False):
    return BankOp(client, "read", client=client, balances=dict(enumerate(balances)), revision=rev,
                  outcome="ok", invoke=t0, complete=t1, final=final)


def test_consistent_history_passes():
    h = [transfer(0, 1, 3, 10, 0.0, 1.0),
         read([7, 13, 10], 11, 1.5, 2.0),
         transfer(1, 2, 5, 0, 2.1, None, outcome="unknown", p=2),   # timed out, applied later
         transfer(2, 0, 1, 0, 2.2, 2.3, outcome="fail"),            # compare did not hold
         read([7, 8, 15], 14, 3.0, 3.1, client=3),
         read([7, 8, 15], 15, 4.0, 4.1, client=-1, final=True)]
    res = check_bank(h, INIT, TOTAL)
    assert res.ok, res.explanation
    assert (res.reads, res.transfers_ok, res.transfers_unknown) == (3, 1, 1)


def test_indeterminate_transfer_may_never_happen():
    h = [transfer(0, 1, 3, 0, 0.0, None, outcome="unknown"), read([10, 10, 10], 9, 1.0, 1.1, final=True)]
    assert check_bank(h, INIT, TOTAL).ok


def test_lost_transfer_is_caught():
    # acknowledged at revision 10, but the final read at 12 does not reflect it
    h = [transfer(0, 1, 3, 10, 0.0, 1.0), read([10, 10, 10], 12, 2.0, 2.1, final=True)]
    res = check_bank(h, INIT, TOTAL)
    assert not res.ok
    assert "lost or phantom transfer" in res.explanation


def test_torn_read_is_caught():
    # a read that saw the debit of a transfer but not its credit
    h = [transfer(0, 1, 3, 10, 0.0, 1.0), read([7, 10, 10], 11, 2.0, 2.1),
         read([7, 13, 10], 12, 3.0, 3.1, final=True)]
    res = check_bank(h, INIT, TOTAL)
    assert not res.ok
    assert "torn read: the balances sum to 27, not 30" in res.explanation


def test_missing_account_and_negative_balance_are_caught():
    h = [BankOp(1, "read", client=1, balances={0: 10, 1: 20}, revision=5, outcome="ok", invoke=0, complete=1),
         read([-1, 21, 10], 6, 1.5, 2.0, final=True)]
    res = check_bank(h, INIT, TOTAL)
    assert "accounts [2] absent" in res.explanation
    assert "negative balance" in res.explanation


def test_failed_transfer_must_not_show():
    h = [transfer(0, 1, 3, 0, 0.0, 1.0, outcome="fail"), read([7, 13, 10], 12, 2.0, 2.1, final=True)]
    assert "lost or phantom transfer" in check_bank(h, INIT, TOTAL).explanation


def test_reads_going_back_are_caught():
    h = [read([10, 10, 10], 20, 0.0, 1.0, client=1), read([10, 10, 10], 15, 2.0, 3.0, client=1),
         read([10, 10, 10], 21, 4.0, 4.5, client=-1, final=True)]
    res = check_bank(h, INIT, TOTAL)
    assert "client 1's reads went back in time" in res.explanation
    assert "stale read" in res.explanation


def test_final_read_is_required():
    assert "no final read" in check_bank([read([10, 10, 10], 3, 0, 1)], INIT, TOTAL).explanation


def test_bad_initial_balances_are_refused():
    with pytest.raises(ValueError, match="summing to"):
        check_bank([], {0: 1, 1: 2}, 5)


def test_saved_history_replays(tmp_path):
    clock = iter(float(i) for i in range(100))
    rec = BankRecorder(clock=lambda: next(clock))
    tok = rec.begin(BankOp(0, "transfer", src=0, dst=1, amount=2))
    rec.end(tok, "ok", revision=7)
    tok = rec.begin(BankOp(-1, "read", client=-1, final=True))
    rec.end(tok, "ok", revision=8, balances={0: 98, 1: 102, 2: 100, 3: 100, 4: 100})
    path = tmp_path / "h.jsonl"
    rec.save(path)
    assert load_bank_history(path) == rec.ops()
    root = str(Path(__file__).parents[2])
    out = subprocess.run([sys.executable, "-m", "tests.jepsen.bank_checker", str(path)],
                         capture_output=True, text=True, cwd=root)
    assert out.returncode == 0 and "bank: consistent" in out.stdout, out.stdout + out.stderr
    # the same history with the transfer lost: exit 1
    tok = rec.begin(BankOp(-1, "read", client=-1, final=True))
    rec.end(tok, "ok", revision=9, balances={i: 100 for i in range(5)})
    rec.save(path)
    out = subprocess.run([sys.executable, "-m", "tests.jepsen.bank_checker", str(path)],
                         capture_output=True, text=True, cwd=root)
    assert out.returncode == 1 and "NOT CONSISTENT" in out.stdout, out.stdout + out.stderr


def test_a_subset_of_indeterminate_transfers_explains_a_read_but_not_a_later_one():
    h = [transfer(0, 1, 1, 0, 0.0, None, outcome="unknown"),
         transfer(1, 2, 2, 0, 0.1, None, outcome="unknown", p=5),
         transfer(2, 0, 4, 0, 0.2, None, outcome="unknown", p=6),
         read([10, 8, 12], 9, 1.0, 1.1),                     # only the second one happened
         read([6, 8, 16], 10, 2.0, 2.1, final=True)]         # 0 -> 2 x4 was never invoked
    res = check_bank(h, INIT, TOTAL)
    assert not res.ok
    assert len(res.problems) == 1 and "rev 10" in res.problems[0], res.explanation


def test_a_long_history_checks_quickly():
    import random
    import time as _time
    rng = random.Random(1)
    init = {i: 100 for i in range(5)}
    bal = [100] * 5
    h, clock, rev = [], 0.0, 0
    for i in range(20000):
        clock += 1.0
        rev += 1
        if i % 500 == 0:  # indeterminate transfers that never happened
            h.append(transfer(0, 1, rng.randint(1, 5), 0, clock, None, outcome="unknown", p=i))
        elif i % 2:
            s, d = rng.sample(range(5), 2)
            a = rng.randint(0, min(5, bal[s]))
            bal[s] -= a
            bal[d] += a
            h.append(transfer(s, d, a, rev, clock, clock + 0.5, p=i % 7))
        else:
            h.append(read(list(bal), rev, clock, clock + 0.5, client=i % 7, final=i == 19998))
    start = _time.monotonic()
    res = check_bank(h, init, 500)
    assert res.ok and not res.notes, res.explanation
    assert _time.monotonic() - start < 10
