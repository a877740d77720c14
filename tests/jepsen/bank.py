"""The bank workload: transactions under the nemesis (issue 14).

Accounts ``acct/0`` .. ``acct/N-1`` start at ``balance`` each (one txn writes them all). Client
threads do, at random:

* **transfer**: read both accounts (a txn of two gets: values and mod revisions), pick an
  amount the source can pay, then one txn ``compare mod(src) == m1, mod(dst) == m2`` ->
  ``put src, put dst``. A compare that no longer holds is a ``fail`` (nothing happened) and the
  client retries with a fresh read (up to 3 times); a timeout is ``unknown`` (it may apply
  later) and the thread goes on as a new process, as in Jepsen.
* **read**: one txn of gets of every account: one atomic snapshot at the txn's revision.

The nemesis schedule is the register workload's (``runner.drive_nemesis``). After the final
heal and the quiet period the clients stop, the cluster must converge, and a *final read* is
made; then :func:`tests.jepsen.bank_checker.check_bank` checks the history (no torn read, no
negative balance, every ok transfer reflected and no failed one, reads never go back).

Run it: ``python -m tests.jepsen.runner --workload bank --nemesis kill,pause,partition
--duration 60 --seed 3`` (``--keys`` is the number of accounts).
"""
from __future__ import annotations

import random
import shutil
import tempfile
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
from tests.jepsen.nemesis import PARTITIONS, Firewall, Nemesis, NemesisCluster, expand_nemeses, require_nft
from tests.jepsen.runner import _converge, _short, drive_nemesis, longest_gap


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


class _BankWorker:
    """One client thread: transfers and snapshot reads on the accounts."""

    RECONNECT = 0.02  # chance per op of a fresh Client starting at a random node

    def __init__(self, idx: int, n_workers: int, servers: List[str], rec: BankRecorder, accounts: int,
                 seed: int, timeout: float, stop: threading.Event, token: Optional[str] = None,
                 compare: bool = True) -> None:
        self.idx = idx
        self.compare = compare  # False: blind transfers (lost updates), to see the checker fail
        self.n_workers = n_workers
        self.process = idx
        self.servers = servers
        self.rec = rec
        self.accounts = accounts
        self.rng = random.Random(seed * 7919 + idx)
        self.timeout = timeout
        self.stop = stop
        self.token = token
        self.last_ok = 0.0
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._run, name=f"jepsen-bank-{idx}", daemon=True)

    def _client(self) -> Client:
        i = self.rng.randrange(len(self.servers))
        return Client(self.servers[i:] + self.servers[:i], timeout=self.timeout, token=self.token)

    def _run(self) -> None:
        kv = None
        try:
            kv = self._client()
            while not self.stop.is_set():
                if self.rng.random() < self.RECONNECT:
                    kv.close()
                    kv = self._client()
                if self.rng.random() < 0.4:
                    self._read(kv)
                else:
                    self._transfer(kv)
        except BaseException as e:  # reported by the run
            self.error = e
        finally:
            if kv is not None:
                kv.close()

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
class BankRunResult:
    """What a bank run did and found (the fields mirror runner.RunResult)."""

    nemeses: List[str]
    nodes: int
    duration: float
    seed: int
    clients: int
    accounts: int
    total: int
    ops: Counter = field(default_factory=Counter)  # "kind outcome" -> count
    ops_during_faults: int = 0
    faults: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    check: Optional[BankCheckResult] = None
    final_balances: Optional[Dict[int, int]] = None
    longest_unavailable: float = 0.0
    live: bool = False
    liveness: str = ""
    crashed: Dict[str, Optional[int]] = field(default_factory=dict)
    events: List[Tuple[float, str]] = field(default_factory=list)
    history_path: Optional[str] = None
    cluster_dir: Optional[str] = None
    log_tail: str = ""

    @property
    def consistent(self) -> bool:
        return self.check is not None and self.check.ok

    @property
    def ok(self) -> bool:
        return self.consistent and self.live and not self.crashed

    def summary(self) -> str:
        faults = ", ".join(f"{k}={v}" for k, v in sorted(self.faults.items())) or "none"
        c = self.check
        lines = [
            f"bank | nemesis {','.join(self.nemeses)} | {self.nodes} nodes | {self.duration:g}s | seed {self.seed} "
            f"| {self.clients} clients | {self.accounts} accounts, total {self.total}",
            "  ops: " + ", ".join(f"{k} {v}" for k, v in sorted(self.ops.items()))
            + f"; ok during faults: {self.ops_during_faults}",
            f"  faults: {faults}" + (f"; skipped: {dict(self.skipped)}" if self.skipped else ""),
            f"  final balances: {self.final_balances}",
            "  checker: " + ("no verdict" if c is None else
                             f"{'consistent' if c.ok else 'NOT CONSISTENT'} ({c.reads} ok reads, "
                             f"{c.transfers_ok} ok transfers, {c.transfers_unknown} indeterminate)"),
            f"  longest unavailability (no ok transfer): {self.longest_unavailable:.2f}s",
            f"  liveness after heal: {'OK' if self.live else 'FAILED'} ({self.liveness})",
        ]
        if self.crashed:
            lines.append(f"  CRASHED nodes (exited on their own): {self.crashed}")
        if c is not None and (c.problems or c.notes):
            lines.append("  " + c.explanation.replace("\n", "\n  "))
        if self.history_path:
            lines.append(f"  history saved: {self.history_path}  (replay: python -m tests.jepsen.bank_checker "
                         f"{self.history_path} --accounts {self.accounts} --balance {self.total // self.accounts})")
        if self.cluster_dir:
            lines.append(f"  cluster dir (node logs): {self.cluster_dir}")
        lines.append(f"  RESULT: {'PASS' if self.ok else 'FAIL'}")
        return "\n".join(lines)


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
    kinds = expand_nemeses(nemesis_names)
    say = log or (lambda s: None)
    if any(k in PARTITIONS for k in kinds):
        require_nft()
    initial = {i: balance for i in range(accounts)}
    res = BankRunResult(kinds, nodes, duration_s, seed, clients, accounts, balance * accounts)
    own_dir = directory is None
    cdir = Path(tempfile.mkdtemp(prefix=f"kvjepsen-bank-seed{seed}-", dir="/tmp")) if own_dir else Path(directory)
    cluster = NemesisCluster(cdir, n=nodes, raft=raft)
    firewall = Firewall() if any(k in PARTITIONS for k in kinds) else None
    rng = random.Random(seed)
    nem = Nemesis(cluster, rng, firewall, log=lambda s: say(f"[nemesis] {s}"))
    rec = BankRecorder()
    stop = threading.Event()
    workers: List[_BankWorker] = []
    t0 = time.monotonic()
    try:
        cluster.start()
        say(f"cluster of {nodes} on {cluster.subnet}.* in {cdir}")
        try:
            wait_until(lambda: cluster.current_leader(), 30, what="a first leader")
            with Client(cluster.servers, timeout=10, token=cluster.client_token) as kv:
                # All accounts in one txn, only if none exists yet: exactly once even if retried.
                wait_until(lambda: kv.txn(compare=[t.version(account(0)) == 0],
                                          success=[t.put(account(i), str(balance)) for i in range(accounts)])
                           is not None, 30, what="the accounts' initial write")
        except AssertionError as e:
            raise AssertionError(f"{e}: the cluster did not start (node logs in {cdir})\n{cluster.logs()}") from None
        workers = [_BankWorker(i, clients, cluster.servers, rec, accounts, seed, client_timeout, stop,
                               cluster.client_token, compare) for i in range(clients)]
        t0 = time.monotonic()
        for w in workers:
            w.thread.start()
        say(f"{clients} bank clients started; nemesis {','.join(kinds)} for {duration_s:g}s")
        end = t0 + duration_s
        first_fault = drive_nemesis(nem, kinds, rng, t0, duration_s, gap_s, hold_s)
        time.sleep(max(0.0, end - time.monotonic()))
        nem.heal_all()
        heal = time.monotonic()
        say("healed; quiet period")

        def recovered() -> bool:
            ops = rec.ops()
            tr = any(o.kind == "transfer" and o.outcome == "ok" and o.invoke >= heal for o in ops)
            rd = any(o.kind == "read" and o.outcome == "ok" and o.invoke >= heal for o in ops)
            return tr and rd and all(w.last_ok > heal for w in workers)

        deadline = heal + recover_s
        while time.monotonic() < deadline and not (recovered() and time.monotonic() >= heal + quiet_s):
            time.sleep(0.1)
        stop.set()
        for w in workers:
            w.thread.join(timeout=client_timeout + 5)
        live = recovered()
        conv_ok, conv_detail = _converge(cluster, recover_s)

        # The final read, with the clients stopped and the cluster healed (retried until ok).
        with Client(cluster.servers, timeout=5, token=cluster.client_token) as kv:
            def final_read() -> bool:
                tok = rec.begin(BankOp(-1, "read", client=-1, final=True))
                try:
                    r = kv.txn(success=[t.get(account(i)) for i in range(accounts)])
                except Exception:
                    rec.end(tok, "unknown")
                    return False
                bal, _ = _balances(r, list(range(accounts)))
                rec.end(tok, "ok", revision=r.revision, balances=bal)
                res.final_balances = bal
                return True
            try:
                wait_until(final_read, recover_s, what="a final read")
            except AssertionError:
                live = False

        for nid, n in cluster.nodes.items():
            if not n.alive():
                res.crashed[nid] = n.proc.returncode if n.proc is not None else None
        ops = rec.ops()
        for o in ops:
            res.ops[f"{o.kind} {o.outcome}"] += 1
        if first_fault is not None:
            res.ops_during_faults = sum(1 for o in ops if o.outcome == "ok" and o.complete is not None
                                        and first_fault <= o.complete <= heal)
        oks = [o.complete for o in ops if o.kind == "transfer" and o.outcome == "ok" and o.complete is not None]
        res.longest_unavailable = longest_gap(oks, t0, heal)[0]
        errors = [f"client {w.idx}: {w.error!r}" for w in workers if w.error is not None]
        hung = [w.idx for w in workers if w.thread.is_alive()]
        res.live = live and conv_ok and not errors and not hung
        res.liveness = (("ok transfer and read after the heal by every client" if live else
                         f"no ok transfer and read by every client within {recover_s:g}s of the heal")
                        + (f"; client thread errors: {errors}; hung: {hung}" if errors or hung else "")
                        + "; " + conv_detail)
        res.faults = Counter(nem.counts)
        res.skipped = Counter(nem.skipped)
        res.events = [(tm - t0, s) for tm, s in nem.events]
        say(f"checking {len(ops)} ops")
        res.check = check_bank(ops, initial, res.total)
    finally:
        stop.set()
        try:
            nem.close()
        finally:
            cluster.stop()
    if not res.ok:
        res.log_tail = cluster.logs()
        hdir = Path(history_dir or "/tmp")
        hdir.mkdir(parents=True, exist_ok=True)
        name = f"kvjepsen-bank-{'+'.join(_short(kinds))}-n{nodes}-seed{seed}-{time.strftime('%Y%m%d-%H%M%S')}"
        hpath = hdir / f"{name}.jsonl"
        rec.save(hpath)
        with open(hdir / f"{name}.nemesis.txt", "w") as f:
            for tm, s in res.events:
                f.write(f"+{tm:8.3f}s  {s}\n")
            f.write("\n" + res.summary() + "\n")
        res.history_path = str(hpath)
        res.cluster_dir = str(cdir)
    elif own_dir and not keep:
        shutil.rmtree(cdir, ignore_errors=True)
    else:
        res.cluster_dir = str(cdir)
    return res
