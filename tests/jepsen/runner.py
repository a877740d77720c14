"""Jepsen-style runs against real kvnode processes: clients + nemesis + linearizability check.

What a run does
---------------
1. Starts a cluster of ``--nodes`` real ``kvnode`` processes, each on its own loopback IP
   (``tests/jepsen/nemesis.py``: ``NemesisCluster``), and waits for a leader.
2. Starts ``--clients`` client threads, each with its own ``wire.client.Client`` (short
   timeout), doing put / get / delete / cas with unique values (``"<process>-<n>"``) over a
   small contended key space (``--keys`` keys).  Every operation is recorded in a
   ``HistoryRecorder``: ``ok``, ``fail`` (InvalidRequest: nothing was proposed) or
   ``unknown`` (Timeout / Unavailable / anything else on a write: it may have happened).
   A get that raises NotFound is an ok read of "absent"; a cas that returns False is ok
   with result False.  After an unknown outcome the thread continues as a new process id
   (as in Jepsen: the old process is "crashed", its op may still take effect).  Now and then
   a thread reconnects with a fresh Client that starts at a random node instead of the
   leader it knew, so that requests do land on deposed, paused or cut-off leaders.
3. A nemesis thread injects the chosen faults on a schedule seeded by ``--seed``: wait
   1-2 s, inject one fault (the kinds are taken in seeded shuffled rounds, so every chosen
   kind occurs), hold it 1-3 s, heal (``--gap``, ``--hold``).  Kinds: kill-random, kill-leader, pause-random,
   pause-leader, partition-leader, partition-follower, partition-halves, partition-bridge;
   groups: kill, pause, partition, all.
4. After ``--duration`` seconds everything is healed (killed nodes restarted, paused nodes
   resumed, links restored) and the clients keep going for a quiet period: the cluster must
   serve a write and a read again within ``--recover`` seconds (liveness).
5. Every node must still be running (a node that exited on its own is reported as a crash),
   and the history is checked by ``tests/jepsen/checker.py``.

It prints ops ok / fail / unknown, the faults injected by kind, the checker's verdict and
the longest unavailability window (the longest time with no successful write).  When the
run fails, the history is saved as JSON lines (with the nemesis timeline next to it as
``*.nemesis.txt``) and the cluster directory with every node's log is kept; both paths are
printed.  Replay the check with ``python -m tests.jepsen.checker HISTORY.jsonl``.

Running a soak
--------------
Partition nemeses need root and nftables (``apt-get install -y nftables``)::

    cd /work/main   # the repository root
    python -m tests.jepsen.runner --nemesis partition-leader,kill,pause --nodes 5 --duration 120 --seed 7
    python -m tests.jepsen.runner --nemesis all --nodes 5 --duration 600 --clients 8 --keys 10 --seed 1
    # many seeds, stop at the first failure:
    for s in $(seq 1 50); do python -m tests.jepsen.runner --nemesis all --duration 60 --seed $s || break; done

``--workload bank`` runs the transactions workload instead (``tests/jepsen/bank.py``: transfers
between ``--keys`` accounts, default 5, and snapshot reads, checked by ``bank_checker.py``);
``--workload locks`` runs the lock workload (``tests/jepsen/locks.py``: fenced increments under
``kv.lock``, checked by ``lock_checker.py``).

Options: ``--clients`` (default 5), ``--keys`` (default 6: few keys = more contention, but
the checker's cost grows with ops per key; keep ~100-300 ops per key per minute of run),
``--client-timeout`` (s per call, default 1.5), ``--recover`` (liveness deadline after
the final heal, default 20 s), ``--quiet`` (minimum quiet period, default 3 s),
``--raft heartbeat_ms=50,election_timeout_ms=300:600`` (node tuning), ``--dir`` (where the
cluster runs; default a fresh /tmp/kvjepsen-* directory, removed on success unless
``--keep``), ``--history-dir`` (where failing histories go, default /tmp).  Exit status 0 when
the run passes (linearizable, live, no crash), 1 otherwise.  A run is reproducible in its
schedule (which fault, which random node, hold times), not in its timing.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from tests.integration.harness import wait_until
from tests.jepsen.checker import CheckTimeout, check
from tests.jepsen.history import HistoryRecorder
from tests.jepsen.nemesis import NemesisCluster, SecureNemesisCluster
from tests.jepsen.workload import ClientThread, Workload, WorkloadResult, run_workload
from raftkv.wire.client import Client, InvalidRequest, NotFound

WRITES = ("put", "delete", "cas")


@dataclass
class RunResult(WorkloadResult):
    """What a register run did and found."""

    keys: int
    ops: Counter = field(default_factory=Counter)  # outcome -> count
    ops_by_kind: Dict[str, Counter] = field(default_factory=dict)  # kind -> outcome -> count
    linearizable: Optional[bool] = None  # None: the checker gave no verdict in time
    explanation: str = ""
    check_seconds: float = 0.0
    recovered_after: Optional[float] = None  # final heal -> first ok write (s); None: never

    @property
    def consistent(self) -> bool:
        return bool(self.linearizable)

    def replay(self, path: str) -> str:
        return f"python -m tests.jepsen.checker {path}"

    def verdict(self) -> str:
        if self.linearizable is None:
            return "UNKNOWN (checker timeout)"
        return "linearizable" if self.linearizable else "NOT LINEARIZABLE"

    def summary(self) -> str:
        lines = [
            self.run_line("") + f" | {self.keys} keys",
            f"  ops: {sum(self.ops.values())} (ok {self.ops['ok']}, fail {self.ops['fail']}, "
            f"unknown {self.ops['unknown']}); ok during faults: {self.ops_during_faults}",
            "  by kind: " + ", ".join(
                f"{k} {c['ok']}/{c['fail']}/{c['unknown']}" for k, c in sorted(self.ops_by_kind.items()))
            + " (ok/fail/unknown)",
            self.faults_line(),
            f"  checker: {self.verdict()} ({self.check_seconds:.2f}s)",
        ] + self.availability_lines("write", when=True)
        return "\n".join(lines + self.tail_lines(self.explanation if not self.linearizable else None))

    def table_row(self) -> str:
        faults = ",".join(f"{k}={v}" for k, v in sorted(self.faults.items()))
        return (f"| {','.join(self.nemeses)} | {self.nodes} | {sum(self.ops.values())} | "
                f"{self.ops['ok']}/{self.ops['fail']}/{self.ops['unknown']} | {faults} | "
                f"{self.verdict()} | {self.longest_unavailable:.2f}s | "
                f"{'live' if self.live else 'NOT LIVE'} |")


# --------------------------------------------------------------------------- clients


class _Worker(ClientThread):
    """One client thread: a Client of its own, random ops on the shared key space."""

    def __init__(self, idx: int, n_workers: int, servers: List[str], rec: HistoryRecorder,
                 keys: int, seed: int, timeout: float, stop: threading.Event,
                 known: Dict[str, Optional[bytes]], consistency: str = "linearizable",
                 token: Optional[str] = None) -> None:
        super().__init__(idx, n_workers, servers, rec, seed, timeout, stop, token, "jepsen-client")
        self.consistency = consistency
        self.keys = keys
        self.known = known  # key -> a value recently seen (cas expectations)
        self.counter = 0

    def _value(self) -> bytes:
        self.counter += 1
        return f"{self.process}-{self.counter}".encode()

    def step(self, kv: Client) -> None:
        rng, rec = self.rng, self.rec
        key = f"k{rng.randrange(self.keys)}"
        r = rng.random()
        if r < 0.40:
            t = rec.begin(self.process, "get", key)
            try:
                v = kv.get(key, consistency=self.consistency)
            except NotFound:
                rec.end(t, "ok", value=None)
                self.known[key] = None
                self.last_ok = time.monotonic()
            except InvalidRequest:
                rec.end(t, "fail")
            except Exception:  # Timeout, Unavailable, anything: no effect anyway
                rec.end(t, "unknown")
            else:
                rec.end(t, "ok", value=v)
                self.known[key] = v
                self.last_ok = time.monotonic()
            return
        if r < 0.65:
            kind, value, expected = "put", self._value(), None
        elif r < 0.75:
            kind, value, expected = "delete", None, None
        else:
            kind, value = "cas", self._value()
            expected = None if rng.random() < 0.15 else self.known.get(key)
        t = rec.begin(self.process, kind, key, value=value, expected=expected)
        try:
            if kind == "put":
                kv.put(key, value)
                result = None
            elif kind == "delete":
                try:
                    kv.delete(key)
                except NotFound:
                    pass  # applied: the key was absent, and still is
                result = None
            else:
                result = kv.cas(key, expected=expected, new=value)
        except InvalidRequest:
            rec.end(t, "fail")
        except Exception:  # Timeout/Unavailable/other: may have been applied
            rec.end(t, "unknown")
            # Jepsen's convention: the process that lost track of an op is gone; go on as a new one.
            self.process += self.n_workers
        else:
            rec.end(t, "ok", result=result)
            self.last_ok = time.monotonic()
            if kind == "put" or (kind == "cas" and result):
                self.known[key] = value
            elif kind == "delete":
                self.known[key] = None


# --------------------------------------------------------------------------- analysis


def _parse_raft(spec: Optional[str]) -> Optional[dict]:
    if not spec:
        return None
    out: dict = {}
    for item in spec.split(","):
        k, _, v = item.partition("=")
        k = k.strip()
        if ":" in v:
            out[k] = [int(x) for x in v.split(":")]
        elif v.strip().lower() in ("true", "false"):
            out[k] = v.strip().lower() == "true"
        else:
            out[k] = int(v)
    return out


# --------------------------------------------------------------------------- the run


class RegisterWorkload(Workload):
    """put / get / delete / cas with unique values on a few keys, checked for linearizability."""

    def __init__(self, clients: int, keys: int, seed: int, client_timeout: float, check_timeout: float,
                 read_consistency: str, secure: bool) -> None:
        self.n_clients, self.keys, self.seed = clients, keys, seed
        self.client_timeout, self.check_timeout = client_timeout, check_timeout
        self.read_consistency, self.secure = read_consistency, secure
        self.rec = HistoryRecorder()

    def cluster(self, cdir: Path, nodes: int, raft: Optional[dict]) -> NemesisCluster:
        return (SecureNemesisCluster if self.secure else NemesisCluster)(cdir, n=nodes, raft=raft)

    def started(self, cluster: NemesisCluster, nodes: int, cdir: Path) -> str:
        return f"{'secure ' if self.secure else ''}cluster of {nodes} on {cluster.subnet}.* in {cdir}"

    def setup(self, cluster: NemesisCluster) -> None:
        with Client(cluster.servers, timeout=10, token=cluster.client_token) as kv:
            wait_until(lambda: kv.put("_warmup", b"1") is None, 30, what="a first write")

    def workers(self, cluster: NemesisCluster, stop: threading.Event) -> list:
        known: Dict[str, Optional[bytes]] = {}
        return [_Worker(i, self.n_clients, cluster.servers, self.rec, self.keys, self.seed, self.client_timeout,
                        stop, known, self.read_consistency, cluster.client_token) for i in range(self.n_clients)]

    def ops(self) -> list:
        return self.rec.ops()

    def recovered(self, heal: float, workers: list) -> bool:
        # Writes and reads again, to every client.
        ops = self.rec.ops()
        w = any(o.outcome == "ok" and o.kind in WRITES and o.invoke >= heal for o in ops)
        r = any(o.outcome == "ok" and o.kind == "get" and o.invoke >= heal for o in ops)
        return w and r and all(wk.last_ok > heal for wk in workers)

    def ok_times(self, ops: list) -> List[float]:
        return [o.complete for o in ops if o.outcome == "ok" and o.kind in WRITES]

    def tally(self, res: WorkloadResult, ops: list, workers: list, heal: float) -> None:
        assert isinstance(res, RunResult)
        for o in ops:
            res.ops[o.outcome] += 1
            res.ops_by_kind.setdefault(o.kind, Counter())[o.outcome] += 1
        after = [t for t in self.ok_times(ops) if t >= heal]
        res.recovered_after = (min(after) - heal) if after else None

    def liveness(self, res: WorkloadResult, live: bool, ops: list, workers: list, heal: float,
                 end: float, recover_s: float) -> Tuple[bool, str]:
        assert isinstance(res, RunResult)
        if live:
            text = (f"first ok write {res.recovered_after:.2f}s after the final heal; "
                    f"{sum(1 for o in ops if o.outcome == 'ok' and o.invoke >= heal)} ok ops "
                    f"in {end - heal:.1f}s")
        else:
            text = f"no ok write and read within {recover_s:g}s of the final heal"
        if not all(wk.last_ok > heal for wk in workers):
            live = False
            text += "; clients without an ok op after the heal: " + \
                str([wk.idx for wk in workers if wk.last_ok <= heal])
        return live, text

    def check(self, res: WorkloadResult, ops: list) -> None:
        assert isinstance(res, RunResult)
        t_check = time.monotonic()
        try:
            cr = check(ops, timeout=self.check_timeout)
            res.linearizable = cr.ok
            res.explanation = cr.explanation
        except CheckTimeout as e:
            res.linearizable = None
            res.explanation = str(e)
        res.check_seconds = time.monotonic() - t_check

    def save(self, path: Path, res: WorkloadResult) -> None:
        self.rec.save(path)


def run(nemesis_names, nodes: int = 3, duration_s: float = 30.0, clients: int = 5, keys: int = 6,
        seed: int = 0, *, client_timeout: float = 1.5, quiet_s: float = 3.0, recover_s: float = 20.0,
        gap_s: Tuple[float, float] = (1.0, 2.0), hold_s: Tuple[float, float] = (1.0, 3.0),
        raft: Optional[dict] = None, directory: Optional[Path] = None,
        history_dir: Optional[Path] = None, keep: bool = False, check_timeout: float = 120.0,
        read_consistency: str = "linearizable", secure: bool = False,
        log: Optional[Callable[[str], None]] = None) -> RunResult:
    """One run: cluster + clients + nemesis for ``duration_s``, heal, quiet period, check.

    ``read_consistency``: the reads' level; "linearizable" (the default) is the contract under
    test; "stale" exists to check that the harness catches a violation (it must fail).
    ``secure``: make the cluster with ``--bootstrap --secure`` and ``--join --token`` (CurveZMQ
    doors; the clients use the admin token), as issue 11 asks the nemesis to run once.

    Raises :class:`tests.jepsen.nemesis.NftUnavailable` when a partition nemesis is chosen
    and nftables cannot be used (it never silently skips)."""
    wl = RegisterWorkload(clients, keys, seed, client_timeout, check_timeout, read_consistency, secure)
    res = run_workload(wl, lambda kinds: RunResult(kinds, nodes, duration_s, seed, clients, keys), nemesis_names,
                       nodes, duration_s, seed, client_timeout=client_timeout, quiet_s=quiet_s,
                       recover_s=recover_s, gap_s=gap_s, hold_s=hold_s, raft=raft, directory=directory,
                       history_dir=history_dir, keep=keep, log=log)
    assert isinstance(res, RunResult)
    return res


def _range(spec: str) -> Tuple[float, float]:
    lo, _, hi = spec.partition(":")
    return float(lo), float(hi or lo)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.jepsen.runner",
                                description="Jepsen-style fault run against real kvnode processes.")
    p.add_argument("--nemesis", default="all",
                   help="comma-separated nemeses or groups (kill, pause, partition, wipe, all, "
                        "kill-leader, partition-bridge, ...); default all")
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--duration", type=float, default=60.0, help="seconds of faults")
    p.add_argument("--clients", type=int, default=5)
    p.add_argument("--keys", type=int, default=None,
                   help="register: keys (default 6); bank: accounts acct/0.. (default 5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--client-timeout", type=float, default=1.5)
    p.add_argument("--quiet", type=float, default=3.0, help="minimum quiet period after the final heal")
    p.add_argument("--recover", type=float, default=20.0, help="liveness deadline after the final heal")
    p.add_argument("--gap", default="1.0:2.0", help="seconds between a heal and the next fault, MIN:MAX")
    p.add_argument("--hold", default="1.0:3.0", help="seconds a fault is held, MIN:MAX")
    p.add_argument("--raft", default=None, help="node tuning, e.g. heartbeat_ms=50,election_timeout_ms=300:600")
    p.add_argument("--dir", default=None, help="cluster directory (default: a new /tmp/kvjepsen-*)")
    p.add_argument("--history-dir", default="/tmp", help="where a failing history is saved")
    p.add_argument("--keep", action="store_true", help="keep the cluster directory even on success")
    p.add_argument("--check-timeout", type=float, default=300.0)
    p.add_argument("--reads", default="linearizable", choices=("linearizable", "lease", "stale"),
                   help="consistency of the gets (stale: a sanity check that the checker fails)")
    p.add_argument("-q", "--quiet-log", action="store_true", help="no progress lines")
    p.add_argument("--secure", action="store_true",
                   help="a secure cluster (--bootstrap --secure, joins with --token; clients use the admin token)")
    p.add_argument("--workload", default="register", choices=("register", "bank", "locks"),
                   help="register: put/get/delete/cas checked for linearizability (default); bank: "
                        "transfers between --keys accounts as txns, checked by tests/jepsen/bank_checker.py; "
                        "locks: fenced increments under kv.lock, checked by tests/jepsen/lock_checker.py")
    a = p.parse_args(argv)
    # Stopping a soak (Ctrl-C, kill, or SIGINT to a background job, which starts out ignored)
    # must still run the cleanup: resume/kill the nodes, delete the nftables table.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    start = time.monotonic()
    log = None if a.quiet_log else (lambda s: print(f"{time.monotonic() - start:7.2f}s {s}", flush=True))
    if a.workload == "bank":
        if a.secure or a.reads != "linearizable":
            p.error("--workload bank does not take --secure or --reads")
        from tests.jepsen.bank import run_bank  # bank imports this module

        bank = run_bank(a.nemesis, nodes=a.nodes, duration_s=a.duration, clients=a.clients,
                        accounts=a.keys or 5, seed=a.seed, client_timeout=a.client_timeout,
                        quiet_s=a.quiet, recover_s=a.recover, gap_s=_range(a.gap), hold_s=_range(a.hold),
                        raft=_parse_raft(a.raft), directory=Path(a.dir) if a.dir else None,
                        history_dir=Path(a.history_dir), keep=a.keep, log=log)
        print(bank.summary())
        return 0 if bank.ok else 1
    if a.workload == "locks":
        if a.secure or a.reads != "linearizable" or a.keys is not None:
            p.error("--workload locks does not take --secure, --reads or --keys")
        from tests.jepsen.locks import run_locks  # locks imports this module

        locks = run_locks(a.nemesis, nodes=a.nodes, duration_s=a.duration, clients=a.clients, seed=a.seed,
                          client_timeout=a.client_timeout, quiet_s=a.quiet, recover_s=a.recover,
                          gap_s=_range(a.gap), hold_s=_range(a.hold), raft=_parse_raft(a.raft),
                          directory=Path(a.dir) if a.dir else None, history_dir=Path(a.history_dir),
                          keep=a.keep, log=log)
        print(locks.summary())
        return 0 if locks.ok else 1
    res = run(a.nemesis, nodes=a.nodes, duration_s=a.duration, clients=a.clients, keys=a.keys or 6, seed=a.seed,
              client_timeout=a.client_timeout, quiet_s=a.quiet, recover_s=a.recover,
              gap_s=_range(a.gap), hold_s=_range(a.hold),
              raft=_parse_raft(a.raft), directory=Path(a.dir) if a.dir else None,
              history_dir=Path(a.history_dir), keep=a.keep, check_timeout=a.check_timeout,
              read_consistency=a.reads, secure=a.secure, log=log)
    print(res.summary())
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
