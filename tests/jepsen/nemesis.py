"""Fault injection against real ``kvnode`` processes (the Jepsen "nemesis").

Faults
------
``kill-random`` / ``kill-leader``
    ``kill -9`` a random node / the current leader; the heal restarts it with the same
    command line (so it recovers from its data directory).
``pause-random`` / ``pause-leader``
    ``SIGSTOP`` a random node / the leader; the heal sends ``SIGCONT``.  A paused leader
    comes back believing it still leads: exactly the case where a read must not be
    answered from stale state.
``partition-leader`` / ``partition-follower``
    Cut the leader / a random follower off from every other node.
``partition-halves``
    A random majority/minority split (3 nodes: 2|1, 5 nodes: 3|2).
``partition-bridge``
    Two halves that cannot see each other plus one *bridge* node that sees both
    (the topology that breaks implementations electing on "I can reach a majority").
``wipe-random``
    ``kill -9`` a random node and delete its data directory; the heal restarts it with its
    command line plus ``--join`` (a member's address: README, "A dead disk"). It comes back as a
    new incarnation of its id, which the leader admits as a learner in place of the old record
    and promotes once caught up; the old member's acknowledged writes must survive on the
    others. Injected only while every member is a voter with a recorded incarnation (otherwise
    skipped): wiping a second node before the first is re-admitted leaves no quorum to admit
    either, and a record without an incarnation would take the wiped node for the old one.
Groups: ``kill``, ``pause``, ``partition`` (all four above), ``wipe``, ``all``.

Real network partitions
-----------------------
:class:`NemesisCluster` gives every node its own loopback address ``127.<a>.<b>.<i>`` (a
random ``a.b`` per cluster, so concurrent clusters never share addresses) for both its peer
``addr`` and its ``client`` address.  A node's peer transport connects *from* its own bind
address, so the kernel sees node-to-node packets with ``saddr`` = sender node and ``daddr`` =
receiver node.  :class:`Firewall` owns one nftables table (``inet kvnem_<pid>_<hex>``) with an
``input`` hook chain; a cut between nodes A and B is the pair of rules
``ip saddr A ip daddr B drop`` / ``ip saddr B ip daddr A drop``; healing flushes the chain;
the table is deleted on close (and by an ``atexit`` hook; tables left behind by a process
that died are removed the next time a Firewall is made).  Clients connect from 127.0.0.1, so
they still reach every node, including a cut-off old leader.

Partitions need the ``nft`` binary (apt package ``nftables``) and root: :func:`require_nft`
raises :class:`NftUnavailable` with the reason instead of letting a test skip silently.
"""
from __future__ import annotations

import atexit
import os
import random
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Sequence, Set, Tuple

from tests.integration.harness import Cluster, SecureCluster
from raftkv.wire.client import Client, ClientError

__all__ = [
    "NEMESES", "GROUPS", "PARTITIONS", "expand_nemeses", "NftUnavailable", "nft_problem",
    "require_nft", "Firewall", "NemesisCluster", "SecureNemesisCluster", "Nemesis", "split_cut", "bridge_cut",
]

KILLS = ("kill-random", "kill-leader")
PAUSES = ("pause-random", "pause-leader")
PARTITIONS = ("partition-leader", "partition-follower", "partition-halves", "partition-bridge")
WIPES = ("wipe-random",)
NEMESES = KILLS + PAUSES + PARTITIONS + WIPES
GROUPS = {
    "kill": KILLS,
    "pause": PAUSES,
    "partition": PARTITIONS,
    "wipe": WIPES,
    "all": NEMESES,
}


def expand_nemeses(names: Iterable[str] | str) -> List[str]:
    """``"partition-leader,kill"`` -> ``["partition-leader", "kill-random", "kill-leader"]``.

    Accepts single nemeses, groups and a comma-separated string; keeps the order, drops
    duplicates, raises ValueError on an unknown name."""
    if isinstance(names, str):
        names = names.split(",")
    out: List[str] = []
    for raw in names:
        name = raw.strip()
        if not name:
            continue
        if name in GROUPS:
            items = GROUPS[name]
        elif name in NEMESES:
            items = (name,)
        else:
            raise ValueError(f"unknown nemesis {name!r} (known: {', '.join(NEMESES)}; "
                             f"groups: {', '.join(GROUPS)})")
        for it in items:
            if it not in out:
                out.append(it)
    if not out:
        raise ValueError("no nemesis given")
    return out


_RECORDED = re.compile(r"recording the incarnations of ([^\n]+)")
_REPLACED = re.compile(r"replacing (\S+) \(incarnation .* by incarnation")

# --------------------------------------------------------------------------- nftables


class NftUnavailable(RuntimeError):
    """Real partitions cannot be made on this machine (no ``nft``, or not root)."""


def nft_problem() -> Optional[str]:
    """Why nftables partitions cannot be used here, or None if they can."""
    if shutil.which("nft") is None:
        return "the nft binary is not installed (apt-get install -y nftables)"
    if os.geteuid() != 0:
        return "nftables needs root (running as uid %d)" % os.geteuid()
    r = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True)
    if r.returncode != 0:
        return f"`nft list tables` failed: {r.stderr.strip() or r.returncode}"
    return None


def require_nft() -> None:
    """Raise :class:`NftUnavailable` (loudly: a partition test must fail, not skip)."""
    why = nft_problem()
    if why:
        raise NftUnavailable(f"cannot inject network partitions: {why}")


def _nft(script: str) -> None:
    r = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"nft failed ({r.returncode}): {r.stderr.strip()}\nscript:\n{script}")


_TABLE_RE = re.compile(r"^table inet (kvnem_(\d+)_[0-9a-f]+)$")
_live_firewalls: "set[Firewall]" = set()
_atexit_lock = threading.Lock()
_atexit_done = False


def _close_all_firewalls() -> None:
    for fw in list(_live_firewalls):
        try:
            fw.close()
        except Exception:  # best effort at exit
            pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_tables() -> List[str]:
    """Delete ``kvnem_<pid>_*`` tables whose owner process is gone (killed before cleanup)."""
    r = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True)
    removed = []
    for line in r.stdout.splitlines():
        m = _TABLE_RE.match(line.strip())
        if m and not _pid_alive(int(m.group(2))):
            d = subprocess.run(["nft", "delete", "table", "inet", m.group(1)], capture_output=True)
            if d.returncode == 0:
                removed.append(m.group(1))
    return removed


class Firewall:
    """One nftables table of our own with an input-hook chain; rules drop node-to-node links.

    Use as a context manager or call :meth:`close`; an atexit hook closes it too."""

    def __init__(self) -> None:
        global _atexit_done
        require_nft()
        remove_stale_tables()
        self.table = f"kvnem_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        self.blocked: Set[Tuple[str, str]] = set()  # directed (saddr, daddr)
        self._closed = False
        with _atexit_lock:
            if not _atexit_done:
                atexit.register(_close_all_firewalls)
                _atexit_done = True
        _nft(f"add table inet {self.table}\n"
             f"add chain inet {self.table} input "
             "{ type filter hook input priority -10; policy accept; }\n")
        _live_firewalls.add(self)

    def __enter__(self) -> "Firewall":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def cut(self, pairs: Iterable[Tuple[str, str]]) -> None:
        """Replace the current rules (atomically) by symmetric cuts of the given IP pairs."""
        directed: Set[Tuple[str, str]] = set()
        for a, b in pairs:
            if a != b:
                directed.add((a, b))
                directed.add((b, a))
        lines = [f"flush chain inet {self.table} input"]
        for a, b in sorted(directed):
            lines.append(f"add rule inet {self.table} input ip saddr {a} ip daddr {b} drop")
        _nft("\n".join(lines) + "\n")
        self.blocked = directed

    def heal(self) -> None:
        if self._closed:
            return
        _nft(f"flush chain inet {self.table} input\n")
        self.blocked = set()

    def rules(self) -> str:
        r = subprocess.run(["nft", "list", "table", "inet", self.table], capture_output=True, text=True)
        return r.stdout

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        _live_firewalls.discard(self)
        subprocess.run(["nft", "delete", "table", "inet", self.table], capture_output=True)


# --------------------------------------------------------------------------- topologies


def split_cut(groups: Sequence[Iterable[str]]) -> Set[Tuple[str, str]]:
    """Every pair of nodes in different groups (unordered, as sorted tuples)."""
    gs = [sorted(set(g)) for g in groups]
    out: Set[Tuple[str, str]] = set()
    for i, a in enumerate(gs):
        for b in gs[i + 1:]:
            for x in a:
                for y in b:
                    out.add(tuple(sorted((x, y))))
    return out


def bridge_cut(nodes: Sequence[str], rng: random.Random) -> Tuple[str, List[str], List[str], Set[Tuple[str, str]]]:
    """A bridge topology: (bridge, half A, half B, cut pairs); the bridge sees both halves."""
    order = list(nodes)
    rng.shuffle(order)
    bridge, rest = order[0], order[1:]
    half = len(rest) // 2
    a, b = sorted(rest[:half]), sorted(rest[half:])
    return bridge, a, b, split_cut([a, b])


# --------------------------------------------------------------------------- the cluster


class NemesisCluster(Cluster):
    """A :class:`Cluster` whose nodes each have their own loopback IP (``127.<a>.<b>.<i>``),
    for both the peer and the client address, so that nftables can cut node-to-node links.

    ``subnet``: the ``"127.a.b"`` prefix; random when None."""

    id_prefix = "jepsen"

    def __init__(self, directory: Path, n: int = 3, http: bool = False, raft: Optional[dict] = None,
                 extra_args: tuple = (), subnet: Optional[str] = None) -> None:
        if subnet is None:
            sr = random.SystemRandom()
            subnet = f"127.{sr.randint(1, 254)}.{sr.randint(1, 254)}"
        self.subnet = subnet
        super().__init__(directory, n=n, http=http, raft=raft, extra_args=extra_args)
        self.ips: dict[str, str] = {nid: self.host_for(i) for i, nid in enumerate(self.nodes, start=1)}

    def host_for(self, i: int) -> str:
        return f"{self.subnet}.{i}"

    @property
    def client_token(self) -> Optional[str]:
        """The token the run's clients use (None: a cluster made without --secure)."""
        return None

    def quick_statuses(self, skip: Iterable[str] = (), timeout: float = 0.5) -> dict:
        """Status of every live node not in ``skip`` (e.g. paused ones), with a short timeout."""
        out = {}
        for nid, n in self.nodes.items():
            if nid in skip or not n.alive():
                continue
            try:
                with Client([n.client], timeout=timeout, connect_timeout=0.1, token=self.status_token()) as c:
                    out[nid] = c.status(n.client)
            except ClientError:
                pass
        return out

    def current_leader(self, skip: Iterable[str] = ()) -> Optional[str]:
        """The node claiming leadership in the highest term (paused nodes skipped), or None."""
        st = self.quick_statuses(skip)
        leaders = [s for s in st.values() if s.get("state") == "leader"]
        if not leaders:
            return None
        return max(leaders, key=lambda s: s["term"])["id"]


class SecureNemesisCluster(SecureCluster, NemesisCluster):
    """A :class:`NemesisCluster` made as a secure cluster (issue 11): node1 ``--bootstrap
    --secure``, the others ``--join --token``, so the nemesis also runs with CurveZMQ on both
    doors, and clients and status polls use the bootstrap's admin token (``client_token``)."""

    id_prefix = "jepsen-secure"

    def __init__(self, directory: Path, n: int = 3, raft: Optional[dict] = None) -> None:
        super().__init__(directory, n=n, raft=raft)  # SecureCluster, then NemesisCluster's subnet
        self.ips = {nid: self.host_for(i) for i, nid in enumerate(self.nodes, start=1)}

    @property
    def client_token(self) -> Optional[str]:
        return self.admin_token


# --------------------------------------------------------------------------- the nemesis


class Nemesis:
    """Injects one fault at a time into a :class:`NemesisCluster` and heals it.

    ``inject(kind)`` returns a description, or None when the fault could not be made (no
    leader found in time); ``heal()`` undoes the current fault; ``heal_all()`` undoes
    everything (every node resumed, restarted, every link restored).  ``events`` is a
    timeline ``(time.monotonic(), text)`` in the clock of the history recorder; ``counts``
    counts the injected faults by kind."""

    def __init__(self, cluster: NemesisCluster, rng: random.Random,
                 firewall: Optional[Firewall] = None,
                 log: Optional[Callable[[str], None]] = None, leader_wait: float = 5.0) -> None:
        self.cluster = cluster
        self.rng = rng
        self.firewall = firewall
        self.log = log or (lambda s: None)
        self.leader_wait = leader_wait
        self.paused: Set[str] = set()
        self.killed: Set[str] = set()
        self.wiped: dict[str, str] = {}  # node -> the --join address it is restarted with since its wipe
        self._readmitting: dict[str, int] = {}  # the last wiped node -> its replacements seen before the wipe
        self.current: Optional[str] = None
        self.events: List[Tuple[float, str]] = []
        self.counts: Counter = Counter()
        self.skipped: Counter = Counter()
        self._lock = threading.RLock()

    # -- helpers ------------------------------------------------------------
    def _event(self, text: str) -> None:
        self.events.append((time.monotonic(), text))
        self.log(text)

    def _ids(self) -> List[str]:
        return list(self.cluster.nodes)

    def _leader(self) -> Optional[str]:
        deadline = time.monotonic() + self.leader_wait
        while True:
            lead = self.cluster.current_leader(skip=self.paused)
            if lead is not None or time.monotonic() > deadline:
                return lead
            time.sleep(0.1)

    def _target(self, kind: str) -> Optional[str]:
        if kind.endswith("-leader"):
            return self._leader()
        if kind == "partition-follower":
            lead = self._leader()
            ids = [i for i in self._ids() if i != lead]
            return self.rng.choice(ids)
        return self.rng.choice(self._ids())

    # -- faults -------------------------------------------------------------
    def inject(self, kind: str) -> Optional[str]:
        with self._lock:
            assert self.current is None, f"fault {self.current} still active"
            if kind.startswith("partition") and self.firewall is None:
                raise NftUnavailable("partition nemesis without a Firewall")
            if kind == "partition-halves":
                ids = self._ids()
                self.rng.shuffle(ids)
                minority = sorted(ids[: len(ids) // 2])
                majority = sorted(ids[len(ids) // 2:])
                desc = f"partition-halves: {majority} | {minority}"
                self._cut(split_cut([majority, minority]))
            elif kind == "partition-bridge":
                bridge, a, b, pairs = bridge_cut(self._ids(), self.rng)
                desc = f"partition-bridge: {a} | {b} bridged by {bridge}"
                self._cut(pairs)
            else:
                target = self._target(kind)
                if target is None:
                    self.skipped[kind] += 1
                    self._event(f"{kind}: skipped (no leader found)")
                    return None
                if kind.startswith("wipe"):
                    join = self._wipe_join(target)
                    if join is None:
                        self.skipped[kind] += 1
                        self._event(f"{kind}: skipped (a member is not yet a voter with a recorded incarnation)")
                        return None
                    self.cluster.nodes[target].kill(signal.SIGKILL)
                    shutil.rmtree(self.cluster.data_dir / target)
                    self.killed.add(target)
                    self.wiped[target] = join
                    desc = f"{kind}: kill -9 {target}, delete its data directory"
                elif kind.startswith("kill"):
                    self.cluster.nodes[target].kill(signal.SIGKILL)
                    self.killed.add(target)
                    desc = f"{kind}: kill -9 {target}"
                elif kind.startswith("pause"):
                    self.cluster.nodes[target].pause()
                    self.paused.add(target)
                    desc = f"{kind}: SIGSTOP {target}"
                elif kind in ("partition-leader", "partition-follower"):
                    others = [i for i in self._ids() if i != target]
                    self._cut(split_cut([[target], others]))
                    desc = f"{kind}: isolate {target}"
                else:
                    raise ValueError(f"unknown nemesis {kind!r}")
            self.current = kind
            self.counts[kind] += 1
            self._event(desc)
            return desc

    def _wipe_join(self, target: str) -> Optional[str]:
        """The peer address of a live member other than ``target`` to rejoin through, or None
        if a wipe now could not be healed (see the module docstring)."""
        others = [n for nid, n in self.cluster.nodes.items() if nid != target and nid not in self.paused
                  and n.alive()]
        if not others:
            return None
        try:
            with Client([n.client for n in others], timeout=2.0) as c:
                members = c.members()
        except ClientError:
            return None
        ids = {m.get("id") for m in members}
        if ids != set(self.cluster.nodes) or not all(m.get("voter") for m in members):
            return None
        recorded, replaced = self._incarnation_events()
        if not set(self.cluster.nodes) <= recorded:
            return None
        if any(replaced[nid] <= seen for nid, seen in self._readmitting.items()):
            return None  # the last wiped node's old record is still the one listed
        self._readmitting = {target: replaced[target]}
        return self.rng.choice(others).addr

    def _incarnation_events(self) -> Tuple[Set[str], Counter]:
        """From the nodes' logs (``members`` does not show incarnations): the members whose
        incarnation a leader recorded ("recording the incarnations of A, B" after a whole-cluster
        start, "replacing X ... by incarnation" when a wiped node is re-admitted), and how many
        times each was replaced."""
        recorded: Set[str] = set()
        replaced: Counter = Counter()
        for n in self.cluster.nodes.values():
            text = n.log_text()
            for names in _RECORDED.findall(text):
                recorded.update(x.strip() for x in names.split(","))
            replaced.update(_REPLACED.findall(text))
        return recorded | set(replaced), replaced

    def _cut(self, node_pairs: Iterable[Tuple[str, str]]) -> None:
        ips = self.cluster.ips
        self.firewall.cut((ips[a], ips[b]) for a, b in node_pairs)

    def heal(self) -> None:
        """Undo the current fault (and anything else still broken)."""
        with self._lock:
            if self.current is None and not (self.paused or self.killed or
                                             (self.firewall and self.firewall.blocked)):
                return
            what = []
            if self.firewall is not None and self.firewall.blocked:
                self.firewall.heal()
                what.append("links restored")
            for nid in sorted(self.paused):
                try:
                    self.cluster.nodes[nid].resume()
                except ProcessLookupError:
                    pass
                what.append(f"SIGCONT {nid}")
            self.paused.clear()
            for nid in sorted(self.killed):
                node = self.cluster.nodes[nid]
                if not node.alive():
                    node.start(extra=("--join", self.wiped[nid]) if nid in self.wiped else ())
                what.append(f"restart {nid}" + (" with --join" if nid in self.wiped else ""))
            self.killed.clear()
            self.current = None
            self._event("heal: " + (", ".join(what) or "nothing to do"))

    heal_all = heal

    def close(self) -> None:
        """Heal and drop the firewall table (always call, e.g. in a finally)."""
        try:
            self.heal()
        finally:
            if self.firewall is not None:
                self.firewall.close()
