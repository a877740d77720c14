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
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from tests.integration.harness import wait_until
from tests.jepsen.checker import CheckTimeout, check
from tests.jepsen.history import HistoryRecorder
from tests.jepsen.nemesis import (PARTITIONS, Firewall, Nemesis, NemesisCluster, SecureNemesisCluster, expand_nemeses,
                                  require_nft)
from raftkv.wire.client import Client, InvalidRequest, NotFound

WRITES = ("put", "delete", "cas")


@dataclass
class RunResult:
    nemeses: List[str]
    nodes: int
    duration: float
    seed: int
    clients: int
    keys: int
    ops: Counter = field(default_factory=Counter)  # outcome -> count
    ops_by_kind: Dict[str, Counter] = field(default_factory=dict)  # kind -> outcome -> count
    ops_during_faults: int = 0  # ok ops completed between the first fault and the final heal
    faults: Counter = field(default_factory=Counter)  # nemesis kind -> injected
    skipped: Counter = field(default_factory=Counter)  # nemesis kind -> could not inject
    linearizable: Optional[bool] = None  # None: the checker gave no verdict in time
    explanation: str = ""
    check_seconds: float = 0.0
    longest_unavailable: float = 0.0  # seconds with no successful write, during the run
    unavailable_at: Tuple[float, float] = (0.0, 0.0)  # that window, seconds since the start
    recovered_after: Optional[float] = None  # final heal -> first ok write (s); None: never
    live: bool = False
    liveness: str = ""
    crashed: Dict[str, Optional[int]] = field(default_factory=dict)  # node -> exit code
    events: List[Tuple[float, str]] = field(default_factory=list)  # (s since start, text)
    history_path: Optional[str] = None
    cluster_dir: Optional[str] = None
    log_tail: str = ""  # the end of every node's log, kept when the run fails

    @property
    def ok(self) -> bool:
        return bool(self.linearizable) and self.live and not self.crashed

    def verdict(self) -> str:
        if self.linearizable is None:
            return "UNKNOWN (checker timeout)"
        return "linearizable" if self.linearizable else "NOT LINEARIZABLE"

    def summary(self) -> str:
        faults = ", ".join(f"{k}={v}" for k, v in sorted(self.faults.items())) or "none"
        lines = [
            f"nemesis {','.join(self.nemeses)} | {self.nodes} nodes | {self.duration:g}s | "
            f"seed {self.seed} | {self.clients} clients | {self.keys} keys",
            f"  ops: {sum(self.ops.values())} (ok {self.ops['ok']}, fail {self.ops['fail']}, "
            f"unknown {self.ops['unknown']}); ok during faults: {self.ops_during_faults}",
            "  by kind: " + ", ".join(
                f"{k} {c['ok']}/{c['fail']}/{c['unknown']}" for k, c in sorted(self.ops_by_kind.items()))
            + " (ok/fail/unknown)",
            f"  faults: {faults}" + (f"; skipped: {dict(self.skipped)}" if self.skipped else ""),
            f"  checker: {self.verdict()} ({self.check_seconds:.2f}s)",
            f"  longest unavailability (no ok write): {self.longest_unavailable:.2f}s "
            f"at t={self.unavailable_at[0]:.1f}..{self.unavailable_at[1]:.1f}s",
            f"  liveness after heal: {'OK' if self.live else 'FAILED'} ({self.liveness})",
        ]
        if self.crashed:
            lines.append(f"  CRASHED nodes (exited on their own): {self.crashed}")
        if not self.linearizable and self.explanation:
            lines.append("  " + self.explanation.replace("\n", "\n  "))
        if self.history_path:
            lines.append(f"  history saved: {self.history_path}  "
                         f"(replay: python -m tests.jepsen.checker {self.history_path})")
        if self.cluster_dir:
            lines.append(f"  cluster dir (node logs): {self.cluster_dir}")
        lines.append(f"  RESULT: {'PASS' if self.ok else 'FAIL'}")
        return "\n".join(lines)

    def table_row(self) -> str:
        faults = ",".join(f"{k}={v}" for k, v in sorted(self.faults.items()))
        return (f"| {','.join(self.nemeses)} | {self.nodes} | {sum(self.ops.values())} | "
                f"{self.ops['ok']}/{self.ops['fail']}/{self.ops['unknown']} | {faults} | "
                f"{self.verdict()} | {self.longest_unavailable:.2f}s | "
                f"{'live' if self.live else 'NOT LIVE'} |")


# --------------------------------------------------------------------------- clients


class _Worker:
    """One client thread: a Client of its own, random ops on the shared key space."""

    RECONNECT = 0.02  # chance per op of a fresh Client whose first server is a random node

    def __init__(self, idx: int, n_workers: int, servers: List[str], rec: HistoryRecorder,
                 keys: int, seed: int, timeout: float, stop: threading.Event,
                 known: Dict[str, Optional[bytes]], consistency: str = "linearizable",
                 token: Optional[str] = None) -> None:
        self.idx = idx
        self.token = token  # a secure cluster's client token
        self.consistency = consistency
        self.n_workers = n_workers
        self.process = idx
        self.servers = servers
        self.rec = rec
        self.keys = keys
        self.rng = random.Random(seed * 7919 + idx)
        self.timeout = timeout
        self.stop = stop
        self.known = known  # key -> a value recently seen (cas expectations)
        self.counter = 0
        self.last_ok = 0.0  # time.monotonic() of this thread's last ok op
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._run, name=f"jepsen-client-{idx}", daemon=True)

    def _value(self) -> bytes:
        self.counter += 1
        return f"{self.process}-{self.counter}".encode()

    def _client(self) -> Client:
        # Start from a random node rather than the cached leader: a client that lands on a
        # deposed or cut-off leader is exactly what a linearizable read must survive.
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
                self._one(kv)
        except BaseException as e:  # reported by the runner
            self.error = e
        finally:
            if kv is not None:
                kv.close()

    def _one(self, kv: Client) -> None:
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


def longest_gap(times: Sequence[float], start: float, end: float) -> Tuple[float, float, float]:
    """The longest interval inside [start, end] containing none of ``times``: (len, from, to)."""
    pts = [start] + sorted(t for t in times if start <= t <= end) + [end]
    best = (0.0, start, start)
    for a, b in zip(pts, pts[1:]):
        if b - a > best[0]:
            best = (b - a, a, b)
    return best


def _converge(cluster: NemesisCluster, timeout: float) -> Tuple[bool, str]:
    """Wait until every node names the same leader, which leads, and every node has applied
    the leader's commit index. (ok, description)."""
    start = time.monotonic()
    last: dict = {}
    while True:
        st = cluster.quick_statuses(timeout=1.0)
        last = st
        ids = {s.get("leader_id") for s in st.values()}
        if len(st) == len(cluster.nodes) and len(ids) == 1:
            lead = st.get(next(iter(ids)))
            if lead is not None and lead.get("state") == "leader" and \
                    all(s["applied_index"] >= lead["commit_index"] for s in st.values()):
                return True, (f"all {len(st)} nodes converged on leader {lead['id']} at index "
                              f"{lead['commit_index']} in {time.monotonic() - start:.1f}s")
        if time.monotonic() - start > timeout:
            view = {nid: (s.get("state"), s.get("term"), s.get("leader_id"), s.get("commit_index"),
                          s.get("applied_index")) for nid, s in sorted(last.items())}
            missing = sorted(set(cluster.nodes) - set(last))
            return False, (f"NOT CONVERGED after {timeout:g}s: (state, term, leader, commit, applied) "
                           f"= {view}" + (f"; not answering: {missing}" if missing else ""))
        time.sleep(0.2)


def drive_nemesis(nem: Nemesis, kinds: List[str], rng: random.Random, t0: float, duration_s: float,
                  gap_s: Tuple[float, float], hold_s: Tuple[float, float]) -> Optional[float]:
    """The fault schedule (shared by every workload): wait, inject one fault, hold it, heal,
    until ``t0 + duration_s``. Returns when the first fault was injected (None: never)."""
    end = t0 + duration_s
    order: List[str] = []
    first_fault = None
    while True:
        gap = rng.uniform(*gap_s)
        hold = rng.uniform(*hold_s)
        # Run until the deadline, but past it (up to twice the duration) until every chosen
        # kind has been injected once, so that a short run still covers each of them.
        missing = [k for k in kinds if nem.counts[k] == 0 and nem.skipped[k] < 3]
        limit = t0 + 2 * duration_s if missing else end
        if time.monotonic() + gap + 0.5 > limit:
            break
        time.sleep(gap)
        if not order:
            order = list(kinds)
            rng.shuffle(order)
        kind = order.pop()
        if missing and time.monotonic() > end and kind not in missing:
            order.append(kind)
            kind = missing[0]
            order = [k for k in order if k != kind]
        if nem.inject(kind) is not None and first_fault is None:
            first_fault = time.monotonic()
        time.sleep(max(0.0, min(hold, limit - time.monotonic())))
        nem.heal()
    return first_fault


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
    kinds = expand_nemeses(nemesis_names)
    say = log or (lambda s: None)
    if any(k in PARTITIONS for k in kinds):
        require_nft()
    res = RunResult(kinds, nodes, duration_s, seed, clients, keys)
    own_dir = directory is None
    cdir = Path(tempfile.mkdtemp(prefix=f"kvjepsen-seed{seed}-", dir="/tmp")) if own_dir else Path(directory)
    cluster = SecureNemesisCluster(cdir, n=nodes, raft=raft) if secure else NemesisCluster(cdir, n=nodes, raft=raft)
    firewall = Firewall() if any(k in PARTITIONS for k in kinds) else None
    rng = random.Random(seed)
    nem = Nemesis(cluster, rng, firewall, log=lambda s: say(f"[nemesis] {s}"))
    rec = HistoryRecorder()
    stop_clients = threading.Event()
    workers: List[_Worker] = []
    t0 = time.monotonic()
    heal_time = None
    try:
        cluster.start()
        say(f"{'secure ' if secure else ''}cluster of {nodes} on {cluster.subnet}.* in {cdir}")
        try:
            wait_until(lambda: cluster.current_leader(), 30, what="a first leader")
            with Client(cluster.servers, timeout=10, token=cluster.client_token) as kv:
                wait_until(lambda: kv.put("_warmup", b"1") is None, 30, what="a first write")
        except AssertionError as e:
            raise AssertionError(f"{e}: the cluster did not start (node logs in {cdir})\n"
                                 f"{cluster.logs()}") from None
        known: Dict[str, Optional[bytes]] = {}
        workers = [_Worker(i, clients, cluster.servers, rec, keys, seed, client_timeout, stop_clients, known,
                           read_consistency, cluster.client_token) for i in range(clients)]
        t0 = time.monotonic()
        for w in workers:
            w.thread.start()
        say(f"{clients} clients started; nemesis {','.join(kinds)} for {duration_s:g}s")

        # The nemesis runs in this thread: the clients are the other threads.
        end = t0 + duration_s
        first_fault = drive_nemesis(nem, kinds, rng, t0, duration_s, gap_s, hold_s)
        time.sleep(max(0.0, end - time.monotonic()))
        nem.heal_all()
        heal_time = time.monotonic()
        say("healed; quiet period")

        # Quiet period: the cluster must serve writes and reads again, to every client.
        def recovered() -> bool:
            ops = rec.ops()
            w = any(o.outcome == "ok" and o.kind in WRITES and o.invoke >= heal_time for o in ops)
            r = any(o.outcome == "ok" and o.kind == "get" and o.invoke >= heal_time for o in ops)
            return w and r and all(wk.last_ok > heal_time for wk in workers)

        deadline = heal_time + recover_s
        while time.monotonic() < deadline and not (recovered() and time.monotonic() >= heal_time + quiet_s):
            time.sleep(0.1)
        stop_clients.set()
        for w in workers:
            w.thread.join(timeout=client_timeout + 5)
        end_time = time.monotonic()
        # Convergence: with the clients stopped, every node must follow one leader and apply
        # everything it committed (a node that never catches up is a liveness bug too).
        conv_ok, conv_detail = _converge(cluster, recover_s)

        # Crashes: after heal_all every node must be running.
        for nid, n in cluster.nodes.items():
            if not n.alive():
                res.crashed[nid] = n.proc.returncode if n.proc is not None else None
        errors = [f"client {w.idx}: {w.error!r}" for w in workers if w.error is not None]
        hung = [w.idx for w in workers if w.thread.is_alive()]

        ops = rec.ops()
        for o in ops:
            res.ops[o.outcome] += 1
            res.ops_by_kind.setdefault(o.kind, Counter())[o.outcome] += 1
        ok_writes = [o.complete for o in ops if o.outcome == "ok" and o.kind in WRITES]
        if first_fault is not None:
            res.ops_during_faults = sum(1 for o in ops if o.outcome == "ok" and first_fault <= o.complete <= heal_time)
        gap, a, b = longest_gap(ok_writes, t0, heal_time)
        res.longest_unavailable, res.unavailable_at = gap, (a - t0, b - t0)
        after = [t for t in ok_writes if t >= heal_time]
        res.recovered_after = (min(after) - heal_time) if after else None
        if recovered():
            res.live = True
            res.liveness = (f"first ok write {res.recovered_after:.2f}s after the final heal; "
                            f"{sum(1 for o in ops if o.outcome == 'ok' and o.invoke >= heal_time)} ok ops "
                            f"in {end_time - heal_time:.1f}s")
        else:
            res.liveness = f"no ok write and read within {recover_s:g}s of the final heal"
        if not all(wk.last_ok > heal_time for wk in workers):
            res.live = False
            res.liveness += "; clients without an ok op after the heal: " + \
                str([wk.idx for wk in workers if wk.last_ok <= heal_time])
        if errors or hung:
            res.live = False
            res.liveness += f"; client thread errors: {errors}; hung: {hung}"
        res.liveness += "; " + conv_detail
        if not conv_ok:
            res.live = False
        res.faults = Counter(nem.counts)
        res.skipped = Counter(nem.skipped)
        res.events = [(t - t0, s) for t, s in nem.events]

        say(f"checking {len(ops)} ops")
        t_check = time.monotonic()
        try:
            cr = check(ops, timeout=check_timeout)
            res.linearizable = cr.ok
            res.explanation = cr.explanation
        except CheckTimeout as e:
            res.linearizable = None
            res.explanation = str(e)
        res.check_seconds = time.monotonic() - t_check
    finally:
        stop_clients.set()
        try:
            nem.close()
        finally:
            cluster.stop()
    if not res.ok:
        res.log_tail = cluster.logs()
        hdir = Path(history_dir or "/tmp")
        hdir.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name = f"kvjepsen-{'+'.join(_short(kinds))}-n{nodes}-seed{seed}-{stamp}"
        hpath = hdir / f"{name}.jsonl"
        rec.save(hpath)
        with open(hdir / f"{name}.nemesis.txt", "w") as f:
            f.write(f"# t0 = {t0!r} (history times are time.monotonic(); event = t0 + offset)\n")
            for t, s in res.events:
                f.write(f"{t0 + t:.6f}  +{t:8.3f}s  {s}\n")
            f.write("\n" + res.summary() + "\n")
        res.history_path = str(hpath)
        res.cluster_dir = str(cdir)
    elif own_dir and not keep:
        shutil.rmtree(cdir, ignore_errors=True)
    else:
        res.cluster_dir = str(cdir)
    return res


def _short(kinds: List[str]) -> List[str]:
    return [k.replace("partition-", "p-") for k in kinds][:4] + (["more"] if len(kinds) > 4 else [])


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
