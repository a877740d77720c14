"""What every Jepsen-style workload shares: the result's common fields and summary lines, the fault
schedule, and the drive loop (cluster, clients, nemesis, heal, quiet period, convergence, check,
keeping what a failing run needs to be replayed).

A workload (the register one in ``runner.py``, ``bank.py``, ``locks.py``) is a :class:`Workload`:
its clients, what "recovered after the heal" means for it, its final read, its tally and its
checker. :func:`run_workload` runs one.
"""
from __future__ import annotations

import random
import shutil
import tempfile
import threading
import time
from collections import Counter
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from raftkv.wire.client import Client
from tests.integration.harness import wait_until
from tests.jepsen.nemesis import PARTITIONS, Firewall, Nemesis, NemesisCluster, expand_nemeses, require_nft


@dataclass
class WorkloadResult:
    """What a run did and found, whatever the workload (each adds its counts and its verdict)."""

    nemeses: List[str]
    nodes: int
    duration: float
    seed: int
    clients: int
    _: KW_ONLY
    ops_during_faults: int = 0  # ok ops completed between the first fault and the final heal
    faults: Counter = field(default_factory=Counter)  # nemesis kind -> injected
    skipped: Counter = field(default_factory=Counter)  # nemesis kind -> could not inject
    longest_unavailable: float = 0.0  # seconds with no successful write, during the run
    unavailable_at: Tuple[float, float] = (0.0, 0.0)  # that window, seconds since the start
    live: bool = False
    liveness: str = ""
    crashed: Dict[str, Optional[int]] = field(default_factory=dict)  # node -> exit code
    events: List[Tuple[float, str]] = field(default_factory=list)  # (s since start, text)
    history_path: Optional[str] = None
    cluster_dir: Optional[str] = None
    log_tail: str = ""  # the end of every node's log, kept when the run fails

    @property
    def consistent(self) -> bool:
        """The checker's verdict (each workload says what it is)."""
        raise NotImplementedError

    @property
    def ok(self) -> bool:
        return self.consistent and self.live and not self.crashed

    def replay(self, path: str) -> str:
        """The command that checks a saved history again."""
        raise NotImplementedError

    def summary(self) -> str:
        """What the run did and found, for a person."""
        raise NotImplementedError

    def run_line(self, workload: str) -> str:
        """The summary's first line: ``workload`` (with its " | "), nemeses and run parameters."""
        return (f"{workload}nemesis {','.join(self.nemeses)} | {self.nodes} nodes | {self.duration:g}s | "
                f"seed {self.seed} | {self.clients} clients")

    @staticmethod
    def checker_line(ok: Optional[bool], counts: str) -> str:
        """A consistency checker's verdict (None: none) and what it counted."""
        return "  checker: " + ("no verdict" if ok is None else
                                f"{'consistent' if ok else 'NOT CONSISTENT'} ({counts})")

    def faults_line(self) -> str:
        faults = ", ".join(f"{k}={v}" for k, v in sorted(self.faults.items())) or "none"
        return f"  faults: {faults}" + (f"; skipped: {dict(self.skipped)}" if self.skipped else "")

    def availability_lines(self, what: str, when: bool = False) -> List[str]:
        """The longest time without an ok ``what`` (``when``: and where in the run), and liveness."""
        at = f" at t={self.unavailable_at[0]:.1f}..{self.unavailable_at[1]:.1f}s" if when else ""
        return [f"  longest unavailability (no ok {what}): {self.longest_unavailable:.2f}s{at}",
                f"  liveness after heal: {'OK' if self.live else 'FAILED'} ({self.liveness})"]

    def tail_lines(self, explanation: Optional[str]) -> List[str]:
        """The summary's last lines: crashes, the checker's explanation, where the history and
        the node logs are, the result."""
        lines = []
        if self.crashed:
            lines.append(f"  CRASHED nodes (exited on their own): {self.crashed}")
        if explanation:
            lines.append("  " + explanation.replace("\n", "\n  "))
        if self.history_path:
            lines.append(f"  history saved: {self.history_path}  (replay: {self.replay(self.history_path)})")
        if self.cluster_dir:
            lines.append(f"  cluster dir (node logs): {self.cluster_dir}")
        lines.append(f"  RESULT: {'PASS' if self.ok else 'FAIL'}")
        return lines


class ClientThread:
    """One client thread of a workload: a Client of its own, a seeded random stream, and what
    the run reads back (``last_ok``, ``error``). Subclasses define :meth:`step` (one op), or
    override :meth:`_run`."""

    RECONNECT = 0.02  # chance per op of a fresh Client whose first server is a random node

    def __init__(self, idx: int, n_workers: int, servers: List[str], rec, seed: int, timeout: float,
                 stop: threading.Event, token: Optional[str], name: str) -> None:
        self.idx = idx
        self.n_workers = n_workers
        self.process = idx  # the history's process id; a new one after an op of unknown outcome
        self.servers = servers
        self.rec = rec
        self.rng = random.Random(seed * 7919 + idx)
        self.timeout = timeout
        self.stop = stop
        self.token = token  # a secure cluster's client token
        self.last_ok = 0.0  # time.monotonic() of this thread's last ok op
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._run, name=f"{name}-{idx}", daemon=True)

    def _client(self) -> Client:
        # Start from a random node rather than the cached leader: a client that lands on a
        # deposed or cut-off leader is exactly what a linearizable read must survive.
        i = self.rng.randrange(len(self.servers))
        return Client(self.servers[i:] + self.servers[:i], timeout=self.timeout, token=self.token)

    def step(self, kv: Client) -> None:
        """One op (or a few) through ``kv``."""
        raise NotImplementedError

    def _run(self) -> None:
        kv = None
        try:
            kv = self._client()
            while not self.stop.is_set():
                if self.rng.random() < self.RECONNECT:
                    kv.close()
                    kv = self._client()
                self.step(kv)
        except BaseException as e:  # reported by the run
            self.error = e
        finally:
            if kv is not None:
                kv.close()


class Workload:
    """One workload's part of a run (see :func:`run_workload`); its client threads are objects
    with ``idx``, ``thread``, ``last_ok`` (time.monotonic() of their last ok op) and ``error``."""

    tag = ""  # in the names of the run's directory and of a failing history: kvjepsen-<tag>...
    clients_word = "clients"  # "<n> <clients_word> started"
    ops_word = "ops"  # "checking <n> <ops_word>"
    history_suffix = ".jsonl"
    join_extra = 5.0  # seconds a client thread may take to stop, beyond one call's timeout

    def cluster(self, cdir: Path, nodes: int, raft: Optional[dict]) -> NemesisCluster:
        return NemesisCluster(cdir, n=nodes, raft=raft)

    def started(self, cluster: NemesisCluster, nodes: int, cdir: Path) -> str:
        return f"cluster of {nodes} on {cluster.subnet}.* in {cdir}"

    def setup(self, cluster: NemesisCluster) -> None:
        """After the first leader, before the clients (an AssertionError: the cluster did not start)."""

    def workers(self, cluster: NemesisCluster, stop: threading.Event) -> list:
        """The client threads, not started yet."""
        raise NotImplementedError

    def ops(self) -> list:
        """The recorded history so far (each op has kind, outcome, invoke, complete)."""
        raise NotImplementedError

    def recovered(self, heal: float, workers: list) -> bool:
        """The clients have been served again after the final heal (``heal``)."""
        raise NotImplementedError

    def final(self, cluster: NemesisCluster, res: WorkloadResult, recover_s: float) -> bool:
        """With the clients stopped and the cluster converged: a final read into ``res``; False
        when it could not be made within ``recover_s``."""
        return True

    def ok_times(self, ops: list) -> List[float]:
        """When the ops that count for availability (ok writes) completed."""
        raise NotImplementedError

    def tally(self, res: WorkloadResult, ops: list, workers: list, heal: float) -> None:
        """The workload's counts into ``res``."""

    def liveness(self, res: WorkloadResult, live: bool, ops: list, workers: list, heal: float,
                 end: float, recover_s: float) -> Tuple[bool, str]:
        """(live, what was seen after the heal), before thread errors and convergence are added."""
        raise NotImplementedError

    def check(self, res: WorkloadResult, ops: list) -> None:
        """Run the workload's checker on the history; its verdict into ``res``."""
        raise NotImplementedError

    def save(self, path: Path, res: WorkloadResult) -> None:
        """Save the history of a failing run for a replay."""
        raise NotImplementedError


def read_until(cluster: NemesisCluster, timeout: float, read: Callable[[Client], bool]) -> bool:
    """Call ``read(kv)`` (a final read, clients stopped, cluster healed) until it returns True;
    False if it has not within ``timeout`` seconds."""
    with Client(cluster.servers, timeout=5, token=cluster.client_token) as kv:
        try:
            wait_until(lambda: read(kv), timeout, what="a final read")
        except AssertionError:
            return False
    return True


def run_workload(wl: Workload, make_result: Callable[[List[str]], WorkloadResult], nemesis_names,
                 nodes: int, duration_s: float, seed: int, *, client_timeout: float, quiet_s: float,
                 recover_s: float, gap_s: Tuple[float, float], hold_s: Tuple[float, float],
                 raft: Optional[dict], directory: Optional[Path], history_dir: Optional[Path], keep: bool,
                 log: Optional[Callable[[str], None]]) -> WorkloadResult:
    """One run: cluster + the workload's clients + nemesis for ``duration_s``, heal, quiet
    period, convergence, the workload's final read and check. A failing run keeps its history,
    the nemesis timeline and the cluster directory. Raises NftUnavailable for a partition
    nemesis without nftables (never skips)."""
    kinds = expand_nemeses(nemesis_names)
    say = log or (lambda s: None)
    if any(k in PARTITIONS for k in kinds):
        require_nft()
    res = make_result(kinds)
    own_dir = directory is None
    cdir = Path(tempfile.mkdtemp(prefix=f"kvjepsen-{wl.tag}seed{seed}-", dir="/tmp")) if own_dir else Path(directory)
    cluster = wl.cluster(cdir, nodes, raft)
    firewall = Firewall() if any(k in PARTITIONS for k in kinds) else None
    rng = random.Random(seed)
    nem = Nemesis(cluster, rng, firewall, log=lambda s: say(f"[nemesis] {s}"))
    stop = threading.Event()
    workers: list = []
    t0 = time.monotonic()
    try:
        cluster.start()
        say(wl.started(cluster, nodes, cdir))
        try:
            wait_until(lambda: cluster.current_leader(), 30, what="a first leader")
            wl.setup(cluster)
        except AssertionError as e:
            raise AssertionError(f"{e}: the cluster did not start (node logs in {cdir})\n{cluster.logs()}") from None
        workers = wl.workers(cluster, stop)
        t0 = time.monotonic()
        for w in workers:
            w.thread.start()
        say(f"{len(workers)} {wl.clients_word} started; nemesis {','.join(kinds)} for {duration_s:g}s")

        # The nemesis runs in this thread: the clients are the other threads.
        end = t0 + duration_s
        first_fault = drive_nemesis(nem, kinds, rng, t0, duration_s, gap_s, hold_s)
        time.sleep(max(0.0, end - time.monotonic()))
        nem.heal_all()
        heal = time.monotonic()
        say("healed; quiet period")

        # Quiet period: the cluster must serve the clients again.
        deadline = heal + recover_s
        while time.monotonic() < deadline and not (wl.recovered(heal, workers) and time.monotonic() >= heal + quiet_s):
            time.sleep(0.1)
        stop.set()
        for w in workers:
            w.thread.join(timeout=client_timeout + wl.join_extra)
        end_time = time.monotonic()
        live = wl.recovered(heal, workers)
        # Convergence: with the clients stopped, every node must follow one leader and apply
        # everything it committed (a node that never catches up is a liveness bug too).
        conv_ok, conv_detail = converge(cluster, recover_s)
        live = wl.final(cluster, res, recover_s) and live

        # Crashes: after heal_all every node must be running.
        for nid, n in cluster.nodes.items():
            if not n.alive():
                res.crashed[nid] = n.proc.returncode if n.proc is not None else None
        errors = [f"client {w.idx}: {w.error!r}" for w in workers if w.error is not None]
        hung = [w.idx for w in workers if w.thread.is_alive()]
        ops = wl.ops()
        wl.tally(res, ops, workers, heal)
        if first_fault is not None:
            res.ops_during_faults = sum(1 for o in ops if o.outcome == "ok" and o.complete is not None
                                        and first_fault <= o.complete <= heal)
        gap, a, b = longest_gap(wl.ok_times(ops), t0, heal)
        res.longest_unavailable, res.unavailable_at = gap, (a - t0, b - t0)
        live, text = wl.liveness(res, live, ops, workers, heal, end_time, recover_s)
        res.live = live and conv_ok and not errors and not hung
        res.liveness = (text + (f"; client thread errors: {errors}; hung: {hung}" if errors or hung else "")
                        + "; " + conv_detail)
        res.faults = Counter(nem.counts)
        res.skipped = Counter(nem.skipped)
        res.events = [(tm - t0, s) for tm, s in nem.events]
        say(f"checking {len(ops)} {wl.ops_word}")
        wl.check(res, ops)
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
        name = f"kvjepsen-{wl.tag}{'+'.join(short_kinds(kinds))}-n{nodes}-seed{seed}-{time.strftime('%Y%m%d-%H%M%S')}"
        hpath = hdir / f"{name}{wl.history_suffix}"
        wl.save(hpath, res)
        with open(hdir / f"{name}.nemesis.txt", "w") as f:
            f.write(f"# t0 = {t0!r} (history times are time.monotonic(); event = t0 + offset)\n")
            for tm, s in res.events:
                f.write(f"{t0 + tm:.6f}  +{tm:8.3f}s  {s}\n")
            f.write("\n" + res.summary() + "\n")
        res.history_path = str(hpath)
        res.cluster_dir = str(cdir)
    elif own_dir and not keep:
        shutil.rmtree(cdir, ignore_errors=True)
    else:
        res.cluster_dir = str(cdir)
    return res


# --------------------------------------------------------------------------- the schedule and analysis


def longest_gap(times: Sequence[float], start: float, end: float) -> Tuple[float, float, float]:
    """The longest interval inside [start, end] containing none of ``times``: (len, from, to)."""
    pts = [start] + sorted(t for t in times if start <= t <= end) + [end]
    best = (0.0, start, start)
    for a, b in zip(pts, pts[1:]):
        if b - a > best[0]:
            best = (b - a, a, b)
    return best


def converge(cluster: NemesisCluster, timeout: float) -> Tuple[bool, str]:
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


def short_kinds(kinds: List[str]) -> List[str]:
    """The kinds, shortened for a file name."""
    return [k.replace("partition-", "p-") for k in kinds][:4] + (["more"] if len(kinds) > 4 else [])
