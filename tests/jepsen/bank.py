"""The bank workload: transactions under the nemesis (issue 14).

Accounts ``acct/0`` .. ``acct/N-1`` start at ``balance`` each (one txn writes them all). Client
threads do, at random:

* **transfer**: read both accounts (a txn of two gets: values and mod revisions), pick an
  amount the source can pay, then one txn ``compare mod(src) == m1, mod(dst) == m2`` ->
  ``put src, put dst``. A compare that no longer holds is a ``fail`` (nothing happened) and the
  client retries with a fresh read (up to 3 times); a timeout is ``unknown`` (it may apply
  later) and the thread goes on as a new process, as in Jepsen.
* **read**: one txn of gets of every account: one atomic snapshot at the txn's revision.

The nemesis schedule and the run are every workload's (``workload.run_workload``). After the final
heal and the quiet period the clients stop, the cluster must converge, and a *final read* is
made; then :func:`tests.jepsen.bank_checker.check_bank` checks the history (no torn read, no
negative balance, every ok transfer reflected and no failed one, reads never go back).

Run it: ``python -m tests.jepsen.runner --workload bank --nemesis kill,pause,partition
--duration 60 --seed 3`` (``--keys`` is the number of accounts).
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from raftkv import txn as t
from raftkv.wire.client import Client, InvalidRequest
from tests.integration.harness import wait_until
from tests.jepsen.bank_checker import BankCheckResult, BankOp, BankRecorder, check_bank
from tests.jepsen.nemesis import NemesisCluster
from tests.jepsen.workload import ClientThread, Workload, WorkloadResult, read_until, run_workload


def account(i: int) -> str:
    """The key of account ``i``."""
    return f"acct/{i}"


class BadBalance(Exception):
    """A txn's get returned something that is not a balance (absent, not an integer)."""


def _balances(res, accounts: List[int]) -> Tuple[Dict[int, int], Dict[int, int]]:
    """(account -> balance, account -> mod revision) from a txn's gets; an absent account is
    left out of both (the checker reports it)."""
    bal: Dict[int, int] = {}
    mods: Dict[int, int] = {}
    for i, r in zip(accounts, res.responses):
        if r.found and r.value is not None:
            try:
                bal[i] = int(r.value)
            except ValueError:
                raise BadBalance(f"{account(i)} = {r.value!r}") from None
            mods[i] = r.mod_revision
    return bal, mods


class _BankWorker(ClientThread):
    """One client thread: transfers and snapshot reads on the accounts."""

    def __init__(self, idx: int, n_workers: int, servers: List[str], rec: BankRecorder, accounts: int,
                 seed: int, timeout: float, stop: threading.Event, token: Optional[str] = None,
                 compare: bool = True) -> None:
        super().__init__(idx, n_workers, servers, rec, seed, timeout, stop, token, "jepsen-bank")
        self.compare = compare  # False: blind transfers (lost updates), to see the checker fail
        self.accounts = accounts

    def step(self, kv: Client) -> None:
        if self.rng.random() < 0.4:
            self._read(kv)
        else:
            self._transfer(kv)

    def _read(self, kv: Client) -> None:
        accts = list(range(self.accounts))
        tok = self.rec.begin(BankOp(self.process, "read", client=self.idx))
        try:
            res = kv.txn(success=[t.get(account(i)) for i in accts])
        except InvalidRequest:
            self.rec.end(tok, "fail")
        except BadBalance:
            raise
        except Exception:  # a read has no effect: unknown, and the process goes on
            self.rec.end(tok, "unknown")
        else:
            bal, _ = _balances(res, accts)
            self.rec.end(tok, "ok", revision=res.revision, balances=bal)
            self.last_ok = time.monotonic()

    def _transfer(self, kv: Client) -> None:
        src, dst = self.rng.sample(range(self.accounts), 2)
        for _attempt in range(3):
            if self.stop.is_set():
                return
            try:  # the read the compare is built on (no effect, not part of the history)
                bal, mods = _balances(kv.txn(success=[t.get(account(src)), t.get(account(dst))]), [src, dst])
            except BadBalance:
                raise
            except Exception:
                return
            if src not in bal or dst not in bal or bal[src] <= 0:
                return
            amount = self.rng.randint(1, min(5, bal[src]))
            op = BankOp(self.process, "transfer", client=self.idx, src=src, dst=dst, amount=amount)
            tok = self.rec.begin(op)
            try:
                guard = [t.mod(account(src)) == mods[src], t.mod(account(dst)) == mods[dst]] if self.compare else []
                res = kv.txn(compare=guard,
                             success=[t.put(account(src), str(bal[src] - amount)),
                                      t.put(account(dst), str(bal[dst] + amount))])
            except InvalidRequest:
                self.rec.end(tok, "fail")
                return
            except Exception:  # Timeout/Unavailable: it may still be applied
                self.rec.end(tok, "unknown")
                self.process += self.n_workers
                return
            if res.succeeded:
                self.rec.end(tok, "ok", revision=res.revision)
                self.last_ok = time.monotonic()
                return
            self.rec.end(tok, "fail")  # a concurrent transfer got there first: retry
            self.last_ok = time.monotonic()


@dataclass
class BankRunResult(WorkloadResult):
    """What a bank run did and found."""

    accounts: int
    total: int
    ops: Counter = field(default_factory=Counter)  # "kind outcome" -> count
    check: Optional[BankCheckResult] = None
    final_balances: Optional[Dict[int, int]] = None

    @property
    def consistent(self) -> bool:
        return self.check is not None and self.check.ok

    def replay(self, path: str) -> str:
        return (f"python -m tests.jepsen.bank_checker {path} --accounts {self.accounts} "
                f"--balance {self.total // self.accounts}")

    def summary(self) -> str:
        c = self.check
        lines = [
            self.run_line("bank | ") + f" | {self.accounts} accounts, total {self.total}",
            "  ops: " + ", ".join(f"{k} {v}" for k, v in sorted(self.ops.items()))
            + f"; ok during faults: {self.ops_during_faults}",
            self.faults_line(),
            f"  final balances: {self.final_balances}",
            self.checker_line(None if c is None else c.ok, "" if c is None else (
                f"{c.reads} ok reads, {c.transfers_ok} ok transfers, {c.transfers_unknown} indeterminate")),
        ] + self.availability_lines("transfer")
        return "\n".join(lines + self.tail_lines(c.explanation if c is not None and (c.problems or c.notes) else None))


class BankWorkload(Workload):
    """Transfers and snapshot reads between accounts, checked by bank_checker."""

    tag = "bank-"
    clients_word = "bank clients"

    def __init__(self, clients: int, accounts: int, seed: int, balance: int, client_timeout: float,
                 compare: bool) -> None:
        self.n_clients, self.accounts, self.seed, self.balance = clients, accounts, seed, balance
        self.client_timeout, self.compare = client_timeout, compare
        self.rec = BankRecorder()

    def setup(self, cluster: NemesisCluster) -> None:
        with Client(cluster.servers, timeout=10, token=cluster.client_token) as kv:
            # All accounts in one txn, only if none exists yet: exactly once even if retried.
            wait_until(lambda: kv.txn(compare=[t.version(account(0)) == 0],
                                      success=[t.put(account(i), str(self.balance)) for i in range(self.accounts)])
                       is not None, 30, what="the accounts' initial write")

    def workers(self, cluster: NemesisCluster, stop: threading.Event) -> list:
        return [_BankWorker(i, self.n_clients, cluster.servers, self.rec, self.accounts, self.seed,
                            self.client_timeout, stop, cluster.client_token, self.compare)
                for i in range(self.n_clients)]

    def ops(self) -> list:
        return self.rec.ops()

    def recovered(self, heal: float, workers: list) -> bool:
        ops = self.rec.ops()
        tr = any(o.kind == "transfer" and o.outcome == "ok" and o.invoke >= heal for o in ops)
        rd = any(o.kind == "read" and o.outcome == "ok" and o.invoke >= heal for o in ops)
        return tr and rd and all(w.last_ok > heal for w in workers)

    def final(self, cluster: NemesisCluster, res: WorkloadResult, recover_s: float) -> bool:
        # The final read, with the clients stopped and the cluster healed (retried until ok).
        assert isinstance(res, BankRunResult)
        def final_read(kv: Client) -> bool:
            tok = self.rec.begin(BankOp(-1, "read", client=-1, final=True))
            try:
                r = kv.txn(success=[t.get(account(i)) for i in range(self.accounts)])
            except Exception:
                self.rec.end(tok, "unknown")
                return False
            bal, _ = _balances(r, list(range(self.accounts)))
            self.rec.end(tok, "ok", revision=r.revision, balances=bal)
            res.final_balances = bal
            return True
        return read_until(cluster, recover_s, final_read)

    def ok_times(self, ops: list) -> List[float]:
        return [o.complete for o in ops if o.kind == "transfer" and o.outcome == "ok" and o.complete is not None]

    def tally(self, res: WorkloadResult, ops: list, workers: list, heal: float) -> None:
        assert isinstance(res, BankRunResult)
        for o in ops:
            res.ops[f"{o.kind} {o.outcome}"] += 1

    def liveness(self, res: WorkloadResult, live: bool, ops: list, workers: list, heal: float,
                 end: float, recover_s: float) -> Tuple[bool, str]:
        return live, ("ok transfer and read after the heal by every client" if live else
                      f"no ok transfer and read by every client within {recover_s:g}s of the heal")

    def check(self, res: WorkloadResult, ops: list) -> None:
        assert isinstance(res, BankRunResult)
        res.check = check_bank(ops, {i: self.balance for i in range(self.accounts)}, res.total)

    def save(self, path: Path, res: WorkloadResult) -> None:
        self.rec.save(path)


def run_bank(nemesis_names, nodes: int = 3, duration_s: float = 30.0, clients: int = 5, accounts: int = 5,
             seed: int = 0, *, balance: int = 100, client_timeout: float = 1.5, quiet_s: float = 3.0,
             recover_s: float = 20.0, gap_s: Tuple[float, float] = (1.0, 2.0),
             hold_s: Tuple[float, float] = (1.0, 3.0), raft: Optional[dict] = None,
             directory: Optional[Path] = None, history_dir: Optional[Path] = None, keep: bool = False,
             compare: bool = True, log: Optional[Callable[[str], None]] = None) -> BankRunResult:
    """One bank run: cluster + transfer/read clients + nemesis for ``duration_s``, heal, quiet
    period, convergence, final read, check. Raises NftUnavailable for a partition nemesis
    without nftables (never skips). ``compare=False`` makes the transfers blind (no compare
    of what they read): concurrent ones then lose money, and the run must FAIL -- a check
    that the checker is not vacuous."""
    if accounts < 2:
        raise ValueError("the bank workload needs at least 2 accounts")
    wl = BankWorkload(clients, accounts, seed, balance, client_timeout, compare)
    res = run_workload(wl, lambda kinds: BankRunResult(kinds, nodes, duration_s, seed, clients, accounts,
                                                       balance * accounts),
                       nemesis_names, nodes, duration_s, seed, client_timeout=client_timeout, quiet_s=quiet_s,
                       recover_s=recover_s, gap_s=gap_s, hold_s=hold_s, raft=raft, directory=directory,
                       history_dir=history_dir, keep=keep, log=log)
    assert isinstance(res, BankRunResult)
    return res
