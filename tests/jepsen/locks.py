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

The node faults and the run are every workload's (``workload.run_workload``). After the heal
and a quiet period the clients stop, the cluster must converge, and a final read takes the
counter and the log keys; :func:`tests.jepsen.lock_checker.check_locks` checks the history and
reports how often two clients believed they held the lock at the same time.

Run it: ``python -m tests.jepsen.runner --workload locks --nemesis kill,pause,partition
--duration 60 --seed 3``.
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Tuple

from raftkv import txn as t
from raftkv.wire.client import Client, InvalidRequest
from raftkv.wire.recipes import Lock
from tests.jepsen.lock_checker import Hold, LockCheckResult, LockOp, LockRecorder, check_locks
from tests.jepsen.nemesis import NemesisCluster
from tests.jepsen.workload import ClientThread, Workload, WorkloadResult, read_until, run_workload

LOCK = "jl"
COUNTER = "jl-counter"
LOG_PREFIX = "jl-log/"


def _read_counter(kv: Client) -> int:
    r = kv.txn(success=[t.get(COUNTER)]).responses[0]
    return int(r.value) if r.found and r.value is not None else 0


class _LockWorker(ClientThread):
    """One client thread: take the lock, make fenced increments, let it go; sometimes pause."""

    def __init__(self, idx: int, n_workers: int, servers: List[str], rec: LockRecorder, seed: int,
                 timeout: float, ttl: int, pause_p: float, stop: threading.Event, token: Optional[str],
                 fenced: bool) -> None:
        super().__init__(idx, n_workers, servers, rec, seed, timeout, stop, token, "jepsen-locks")
        self.ttl = ttl
        self.pause_p = pause_p
        self.fenced = fenced
        self.seq = 0
        self.pauses = 0

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
class LockRunResult(WorkloadResult):
    """What a lock run did and found."""

    fenced: bool
    ops: Counter = field(default_factory=Counter)  # outcome -> count
    pauses: int = 0
    check: Optional[LockCheckResult] = None
    final_counter: Optional[int] = None

    @property
    def consistent(self) -> bool:
        return self.check is not None and self.check.ok

    def replay(self, path: str) -> str:
        return f"python -m tests.jepsen.lock_checker {path}"

    def summary(self) -> str:
        c = self.check
        lines = [
            self.run_line(f"locks{'' if self.fenced else ' (UNFENCED)'} | "),
            "  increments: " + ", ".join(f"{k} {v}" for k, v in sorted(self.ops.items()))
            + f"; ok during faults: {self.ops_during_faults}; client pauses past the TTL: {self.pauses}",
            self.faults_line(),
            f"  final counter: {self.final_counter}",
            self.checker_line(None if c is None else c.ok, "" if c is None else (
                f"{c.increments_ok} ok increments, {c.increments_fail} refused, {c.increments_unknown} indeterminate")),
            "  overlapping holds (two clients believed they held the lock at once; fencing makes them "
            f"harmless): {'-' if c is None else c.overlaps} of {'-' if c is None else c.holds} holds",
        ] + self.availability_lines("increment")
        return "\n".join(lines + self.tail_lines(c.explanation if c is not None and c.problems else None))


class LockWorkload(Workload):
    """Fenced increments under kv.lock, some clients pausing past their TTL, checked by lock_checker."""

    tag = "locks-"
    clients_word = "lock clients"
    ops_word = "increments"
    history_suffix = ".json"

    def __init__(self, clients: int, seed: int, client_timeout: float, ttl: int, pause_p: float,
                 fenced: bool) -> None:
        self.n_clients, self.seed, self.client_timeout = clients, seed, client_timeout
        self.ttl, self.pause_p, self.fenced = ttl, pause_p, fenced
        self.join_extra = 6 * ttl + 5  # a paused holder waits out a few TTLs
        self.rec = LockRecorder()
        self.log_keys: Optional[List[str]] = None

    def workers(self, cluster: NemesisCluster, stop: threading.Event) -> list:
        return [_LockWorker(i, self.n_clients, cluster.servers, self.rec, self.seed, self.client_timeout, self.ttl,
                            self.pause_p, stop, cluster.client_token, self.fenced) for i in range(self.n_clients)]

    def ops(self) -> list:
        return self.rec.ops()

    def recovered(self, heal: float, workers: list) -> bool:
        return any(o.outcome == "ok" and o.invoke >= heal for o in self.rec.ops())

    def final(self, cluster: NemesisCluster, res: WorkloadResult, recover_s: float) -> bool:
        # The final read, clients stopped and cluster healed: the counter and the log, in one
        # snapshot would be nicer, but no client writes any more, so two reads agree.
        assert isinstance(res, LockRunResult)
        def final_read(kv: Client) -> bool:
            try:
                res.final_counter = _read_counter(kv)
                self.log_keys = [k for k, _ in kv.list(LOG_PREFIX)]
            except Exception:
                return False
            return True
        return read_until(cluster, recover_s, final_read)

    def ok_times(self, ops: list) -> List[float]:
        return [o.complete for o in ops if o.outcome == "ok" and o.complete is not None]

    def tally(self, res: WorkloadResult, ops: list, workers: list, heal: float) -> None:
        assert isinstance(res, LockRunResult)
        res.ops = Counter(o.outcome for o in ops)
        res.pauses = sum(w.pauses for w in workers)

    def liveness(self, res: WorkloadResult, live: bool, ops: list, workers: list, heal: float,
                 end: float, recover_s: float) -> Tuple[bool, str]:
        return live, ("an ok increment after the heal" if live else
                      f"no ok increment or final read within {recover_s:g}s of the heal")

    def check(self, res: WorkloadResult, ops: list) -> None:
        assert isinstance(res, LockRunResult)
        res.check = check_locks(ops, self.rec.holds(), res.final_counter, self.log_keys)

    def save(self, path: Path, res: WorkloadResult) -> None:
        assert isinstance(res, LockRunResult)
        self.rec.save(path, res.final_counter, self.log_keys)


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
    wl = LockWorkload(clients, seed, client_timeout, ttl, pause_p, fenced)
    res = run_workload(wl, lambda kinds: LockRunResult(kinds, nodes, duration_s, seed, clients, fenced),
                       nemesis_names, nodes, duration_s, seed, client_timeout=client_timeout, quiet_s=quiet_s,
                       recover_s=recover_s, gap_s=gap_s, hold_s=hold_s, raft=raft, directory=directory,
                       history_dir=history_dir, keep=keep, log=log)
    assert isinstance(res, LockRunResult)
    return res
