"""The lock workload: ``kv.lock`` and fencing tokens under the nemesis (issue 14).

Client threads (each its own Client) repeatedly take ``kv.lock("jl", ttl=2)`` and, while they
believe they hold it, make one to three fenced increments of the counter ``jl-counter``: read
it, then one txn ``compare lock.is_owner()`` -> ``put jl-counter v+1, put
jl-log/<token>-<client>-<seq>``. A refused compare (``fail``: the lock was lost) or a timeout
(``unknown``) ends the hold. Now and then a client *pauses while holding* (as a GC pause or a
SIGSTOP would): it stops renewing its lease, waits until the lease has expired and another client
has the lock, and only then makes its increment, from the value it read before the pause. With
the fencing compare the cluster refuses it; ``fenced=False`` leaves the compare out, and the
stale write then loses an update the checker must catch.

The node faults are the register workload's schedule (``runner.drive_nemesis``). After the heal
and a quiet period the clients stop, the cluster must converge, and a final read takes the
counter and the log keys; :func:`tests.jepsen.lock_checker.check_locks` checks the history and
reports how often two clients believed they held the lock at the same time.

Run it: ``python -m tests.jepsen.runner --workload locks --nemesis kill,pause,partition
--duration 60 --seed 3``.
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
from typing import Callable, List, Optional, Tuple

from raftkv import txn as t
from raftkv.wire.client import Client, InvalidRequest
from raftkv.wire.recipes import Lock
from tests.integration.harness import wait_until
from tests.jepsen.lock_checker import Hold, LockCheckResult, LockOp, LockRecorder, check_locks
from tests.jepsen.nemesis import PARTITIONS, Firewall, Nemesis, NemesisCluster, expand_nemeses, require_nft
from tests.jepsen.runner import _converge, _short, drive_nemesis, longest_gap

LOCK = "jl"
COUNTER = "jl-counter"
LOG_PREFIX = "jl-log/"


def _read_counter(kv: Client) -> int:
    r = kv.txn(success=[t.get(COUNTER)]).responses[0]
    return int(r.value) if r.found and r.value is not None else 0


class _LockWorker:
    """One client thread: take the lock, make fenced increments, let it go; sometimes pause."""

    def __init__(self, idx: int, n_workers: int, servers: List[str], rec: LockRecorder, seed: int,
                 timeout: float, ttl: int, pause_p: float, stop: threading.Event, token: Optional[str],
                 fenced: bool) -> None:
        self.idx = idx
        self.n_workers = n_workers
        self.process = idx
        self.servers = servers
        self.rec = rec
        self.rng = random.Random(seed * 7919 + idx)
        self.timeout = timeout
        self.ttl = ttl
        self.pause_p = pause_p
        self.stop = stop
        self.token = token
        self.fenced = fenced
        self.seq = 0
        self.pauses = 0
        self.last_ok = 0.0
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._run, name=f"jepsen-locks-{idx}", daemon=True)

    def _client(self) -> Client:
        i = self.rng.randrange(len(self.servers))
        return Client(self.servers[i:] + self.servers[:i], timeout=self.timeout, token=self.token)

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                with self._client() as kv:  # a fresh Client per hold: a lost connection starts clean
                    self._hold(kv)
        except BaseException as e:  # reported by the run
            self.error = e

    def _hold(self, kv: Client) -> None:
        try:
            lock = kv.lock(LOCK, ttl=self.ttl, timeout=5 * self.ttl)
        except Exception:  # no leader, timed out waiting, lease lost while queued: try again
            return
        acquired = time.monotonic()
        token = lock.fencing_token  # release() zeroes it
        try:
            for _ in range(self.rng.randint(1, 3)):
                if self.stop.is_set() or lock.lost or not self._increment(kv, lock):
                    break
        finally:
            try:
                lock.release()
            except Exception:  # unreachable: the lease expires within its TTL
                pass
            self.rec.hold(Hold(self.idx, token, acquired, time.monotonic()))

    def _pause(self, kv: Client, lock: Lock) -> None:
        """Act as a holder frozen past its TTL: stop the keepalives, wait until the lock key is
        gone and someone else has moved the counter (or a few TTLs passed)."""
        self.pauses += 1
        if lock.lease is not None:
            lock.lease.close(revoke=False)
        start = _safe(lambda: _read_counter(kv))
        deadline = time.monotonic() + 4 * self.ttl
        while time.monotonic() < deadline and not self.stop.is_set():
            gone = _safe(lambda: not kv.txn(success=[t.get(lock.key)]).responses[0].found)
            moved = _safe(lambda: _read_counter(kv) != start)
            if gone and moved:
                return
            time.sleep(0.1)

    def _increment(self, kv: Client, lock: Lock) -> bool:
        """One fenced increment; False ends the hold."""
        token = lock.fencing_token
        try:
            value = _read_counter(kv) + 1
        except Exception:
            return False
        paused = self.rng.random() < self.pause_p
        if paused:
            self._pause(kv, lock)
        self.seq += 1
        log_key = f"{LOG_PREFIX}{token:012d}-{self.idx}-{self.seq}"
        tok = self.rec.begin(LockOp(self.process, self.idx, token, value, log_key))
        try:
            res = kv.txn(compare=[lock.is_owner()] if self.fenced else [],
                         success=[t.put(COUNTER, str(value)), t.put(log_key, str(value))])
        except InvalidRequest:
            self.rec.end(tok, "fail")
            return False
        except Exception:  # Timeout/Unavailable: it may still be applied
            self.rec.end(tok, "unknown")
            self.process += self.n_workers
            return False
        if res.succeeded:
            self.rec.end(tok, "ok", res.revision)
            self.last_ok = time.monotonic()
            return not paused
        self.rec.end(tok, "fail")  # the fencing compare refused a stale holder
        self.last_ok = time.monotonic()
        return False


def _safe(f: Callable[[], object]) -> object:
    try:
        return f()
    except Exception:
        return None


@dataclass
class LockRunResult:
    """What a lock run did and found (the fields mirror runner.RunResult)."""

    nemeses: List[str]
    nodes: int
    duration: float
    seed: int
    clients: int
    fenced: bool
    ops: Counter = field(default_factory=Counter)  # outcome -> count
    ops_during_faults: int = 0
    pauses: int = 0
    faults: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    check: Optional[LockCheckResult] = None
    final_counter: Optional[int] = None
    longest_unavailable: float = 0.0
    live: bool = False
    liveness: str = ""
    crashed: dict = field(default_factory=dict)
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
            f"locks{'' if self.fenced else ' (UNFENCED)'} | nemesis {','.join(self.nemeses)} | {self.nodes} nodes "
            f"| {self.duration:g}s | seed {self.seed} | {self.clients} clients",
            "  increments: " + ", ".join(f"{k} {v}" for k, v in sorted(self.ops.items()))
            + f"; ok during faults: {self.ops_during_faults}; client pauses past the TTL: {self.pauses}",
            f"  faults: {faults}" + (f"; skipped: {dict(self.skipped)}" if self.skipped else ""),
            f"  final counter: {self.final_counter}",
            "  checker: " + ("no verdict" if c is None else
                             f"{'consistent' if c.ok else 'NOT CONSISTENT'} ({c.increments_ok} ok increments, "
                             f"{c.increments_fail} refused, {c.increments_unknown} indeterminate)"),
            "  overlapping holds (two clients believed they held the lock at once; fencing makes them "
            f"harmless): {'-' if c is None else c.overlaps} of {'-' if c is None else c.holds} holds",
            f"  longest unavailability (no ok increment): {self.longest_unavailable:.2f}s",
            f"  liveness after heal: {'OK' if self.live else 'FAILED'} ({self.liveness})",
        ]
        if self.crashed:
            lines.append(f"  CRASHED nodes (exited on their own): {self.crashed}")
        if c is not None and c.problems:
            lines.append("  " + c.explanation.replace("\n", "\n  "))
        if self.history_path:
            lines.append(f"  history saved: {self.history_path}  (replay: python -m tests.jepsen.lock_checker "
                         f"{self.history_path})")
        if self.cluster_dir:
            lines.append(f"  cluster dir (node logs): {self.cluster_dir}")
        lines.append(f"  RESULT: {'PASS' if self.ok else 'FAIL'}")
        return "\n".join(lines)


def run_locks(nemesis_names, nodes: int = 3, duration_s: float = 30.0, clients: int = 4, seed: int = 0, *,
              ttl: int = 2, pause_p: float = 0.05, client_timeout: float = 1.5, quiet_s: float = 3.0,
              recover_s: float = 20.0, gap_s: Tuple[float, float] = (1.0, 2.0),
              hold_s: Tuple[float, float] = (1.0, 3.0), raft: Optional[dict] = None,
              directory: Optional[Path] = None, history_dir: Optional[Path] = None, keep: bool = False,
              fenced: bool = True, log: Optional[Callable[[str], None]] = None) -> LockRunResult:
    """One lock run: cluster + lock clients + nemesis for ``duration_s``, heal, quiet period,
    convergence, final read, check. Raises NftUnavailable for a partition nemesis without
    nftables (never skips). ``fenced=False`` drops the fencing compare: a paused holder's stale
    increment then loses an update, and the run must FAIL (the checker is not vacuous)."""
    kinds = expand_nemeses(nemesis_names)
    say = log or (lambda s: None)
    if any(k in PARTITIONS for k in kinds):
        require_nft()
    res = LockRunResult(kinds, nodes, duration_s, seed, clients, fenced)
    own_dir = directory is None
    cdir = Path(tempfile.mkdtemp(prefix=f"kvjepsen-locks-seed{seed}-", dir="/tmp")) if own_dir else Path(directory)
    cluster = NemesisCluster(cdir, n=nodes, raft=raft)
    firewall = Firewall() if any(k in PARTITIONS for k in kinds) else None
    rng = random.Random(seed)
    nem = Nemesis(cluster, rng, firewall, log=lambda s: say(f"[nemesis] {s}"))
    rec = LockRecorder()
    stop = threading.Event()
    workers: List[_LockWorker] = []
    log_keys: Optional[List[str]] = None
    t0 = time.monotonic()
    try:
        cluster.start()
        say(f"cluster of {nodes} on {cluster.subnet}.* in {cdir}")
        try:
            wait_until(lambda: cluster.current_leader(), 30, what="a first leader")
        except AssertionError as e:
            raise AssertionError(f"{e}: the cluster did not start (node logs in {cdir})\n{cluster.logs()}") from None
        workers = [_LockWorker(i, clients, cluster.servers, rec, seed, client_timeout, ttl, pause_p, stop,
                               cluster.client_token, fenced) for i in range(clients)]
        t0 = time.monotonic()
        for w in workers:
            w.thread.start()
        say(f"{clients} lock clients started; nemesis {','.join(kinds)} for {duration_s:g}s")
        end = t0 + duration_s
        first_fault = drive_nemesis(nem, kinds, rng, t0, duration_s, gap_s, hold_s)
        time.sleep(max(0.0, end - time.monotonic()))
        nem.heal_all()
        heal = time.monotonic()
        say("healed; quiet period")

        def recovered() -> bool:
            return any(o.outcome == "ok" and o.invoke >= heal for o in rec.ops())

        deadline = heal + recover_s
        while time.monotonic() < deadline and not (recovered() and time.monotonic() >= heal + quiet_s):
            time.sleep(0.1)
        stop.set()
        for w in workers:
            w.thread.join(timeout=client_timeout + 6 * ttl + 5)
        live = recovered()
        conv_ok, conv_detail = _converge(cluster, recover_s)

        # The final read, clients stopped and cluster healed: the counter and the log, in one
        # snapshot would be nicer, but no client writes any more, so two reads agree.
        with Client(cluster.servers, timeout=5, token=cluster.client_token) as kv:
            def final_read() -> bool:
                nonlocal log_keys
                try:
                    res.final_counter = _read_counter(kv)
                    log_keys = [k for k, _ in kv.list(LOG_PREFIX)]
                except Exception:
                    return False
                return True
            try:
                wait_until(final_read, recover_s, what="a final read")
            except AssertionError:
                live = False

        for nid, n in cluster.nodes.items():
            if not n.alive():
                res.crashed[nid] = n.proc.returncode if n.proc is not None else None
        ops = rec.ops()
        res.ops = Counter(o.outcome for o in ops)
        res.pauses = sum(w.pauses for w in workers)
        if first_fault is not None:
            res.ops_during_faults = sum(1 for o in ops if o.outcome == "ok" and o.complete is not None
                                        and first_fault <= o.complete <= heal)
        oks = [o.complete for o in ops if o.outcome == "ok" and o.complete is not None]
        res.longest_unavailable = longest_gap(oks, t0, heal)[0]
        errors = [f"client {w.idx}: {w.error!r}" for w in workers if w.error is not None]
        hung = [w.idx for w in workers if w.thread.is_alive()]
        res.live = live and conv_ok and not errors and not hung
        res.liveness = (("an ok increment after the heal" if live else
                         f"no ok increment or final read within {recover_s:g}s of the heal")
                        + (f"; client thread errors: {errors}; hung: {hung}" if errors or hung else "")
                        + "; " + conv_detail)
        res.faults = Counter(nem.counts)
        res.skipped = Counter(nem.skipped)
        res.events = [(tm - t0, s) for tm, s in nem.events]
        say(f"checking {len(ops)} increments")
        res.check = check_locks(ops, rec.holds(), res.final_counter, log_keys)
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
        name = f"kvjepsen-locks-{'+'.join(_short(kinds))}-n{nodes}-seed{seed}-{time.strftime('%Y%m%d-%H%M%S')}"
        hpath = hdir / f"{name}.json"
        rec.save(hpath, res.final_counter, log_keys)
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
