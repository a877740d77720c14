"""The simulation's data: per-node state (disk, FSM, snapshots), statistics, failures."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional



LEADER = "leader"
FOLLOWER = "follower"


class SimFailure(AssertionError):
    """An invariant broke. ``seed`` and ``nodes`` say how to replay it."""

    def __init__(self, seed: int, nodes: int, t: float, what: str, as_is: tuple = ()) -> None:
        self.seed, self.nodes, self.t, self.what = seed, nodes, t, what
        super().__init__(f"seed {seed} ({nodes} nodes) at t={t:.2f}: {what}\n"
                         f"  replay: {replay_command(seed, nodes, as_is)} -v")


def replay_command(seed: int, nodes: int, as_is: tuple = ()) -> str:
    return (f"python -m tests.sim.cluster --seed {seed}" + (f" --nodes {nodes}" if nodes != 3 else "")
            + (f" --as-is {','.join(as_is)}" if as_is else ""))


def default_nodes(seed: int) -> int:
    """The test suite runs even seeds with 3 nodes and odd seeds with 5."""
    return 3 if seed % 2 == 0 else 5


@dataclass
class Stats:
    seed: int
    nodes: int
    elections: int = 0
    crashes: int = 0
    peer_hints: int = 0  # "connection dropped" hints handed to cores (true and false)
    pauses: int = 0
    lease_reads: int = 0
    partitions: int = 0
    proposals: int = 0
    acked: int = 0
    reads_ok: int = 0
    reads_failed: int = 0
    follower_reads_ok: int = 0
    follower_reads_failed: int = 0
    transfers: int = 0
    delivered: int = 0
    max_term: int = 0
    committed: int = 0
    ticks: int = 0
    snapshots: int = 0  # snapshots made durable by their own node
    compactions: int = 0  # disk compactions (own snapshots and installs)
    snapshot_streams: int = 0  # streams started by a leader's snapshotter
    snapshot_chunks: int = 0
    snapshot_failed: int = 0
    installs: int = 0  # snapshots installed by followers (install_snapshot)
    fsm_rewinds: int = 0  # installs that restored an FSM that had applied beyond the snapshot
    adds: int = 0  # learners proposed
    removes: int = 0
    leader_removes: int = 0  # removals of the leader that proposed them
    promotions: int = 0
    config_commits: int = 0  # configuration changes committed (beyond the bootstrap entry)
    self_stops: int = 0  # nodes that saw their removal committed and stopped
    operator_stops: int = 0
    store_rejects: int = 0  # batches LogStore.write would reject (see Sim.to_disk)
    stale_installs: int = 0  # installs of a snapshot older than the log's base (core asks for another)
    cut_installs: int = 0  # restarts that finished an install a crash cut short (Node._finish_cut_install)
    wipes: int = 0  # members restarted on an empty data directory (a new incarnation that must rejoin)
    rejoins: int = 0  # wiped members re-admitted under their new incarnation
    txns: int = 0  # transactions proposed (tests/sim/txn_workload.py)
    txn_transfers: int = 0  # transactions applied whose success branch moved money (by the first node applying)
    readmissions: int = 0  # JoinRequests of a node addressed as another incarnation (actors/readmission.py)
    learner_campaigns: int = 0  # learners that campaigned after refusing a candidate (RaftCore.needed_learner)
    learner_leads: int = 0  # ... and won: elections won by a learner of its own configuration

    def deep(self) -> bool:
        return self.elections >= 2 and self.crashes >= 1 and self.partitions >= 1


def _h(key: str, value: Optional[bytes]) -> int:
    return 0 if value is None else hash((key, value))


def kv_digest(kv: dict) -> int:
    """An order-free digest of a KV state, maintained incrementally by the FSM models."""
    d = 0
    for k, v in kv.items():
        d ^= _h(k, v)
    return d


def encode_kv(kv: dict) -> bytes:
    return b"".join(k.encode() + b"\0" + v + b"\n" for k, v in sorted(kv.items()))


def decode_kv(body: bytes) -> dict:
    out = {}
    for rec in body.split(b"\n"):
        if rec:
            k, _, v = rec.partition(b"\0")
            out[k.decode()] = v
    return out


class Snap:
    """A snapshot as the SnapshotStore holds it: metadata and the serialised KV."""

    __slots__ = ("index", "term", "members", "kv", "body")

    def __init__(self, index: int, term: int, members: list, kv: dict) -> None:
        self.index, self.term, self.members, self.kv = index, term, list(members), dict(kv)
        self.body = encode_kv(self.kv)


class Disk:
    """What survived the last sync: the only state a crash keeps."""

    __slots__ = ("term", "vote", "base_index", "base_term", "entries", "commit", "snap")

    def __init__(self) -> None:
        self.term = 0
        self.vote: Optional[str] = None
        self.base_index = 0
        self.base_term = 0
        self.entries: list = []  # entries base_index+1 ..
        self.commit = 0
        self.snap: Optional[Snap] = None  # the newest durable snapshot

    def last_index(self) -> int:
        return self.base_index + len(self.entries)

    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.base_term

    def term_at(self, i: int) -> Optional[int]:
        if i == self.base_index:
            return self.base_term
        k = i - self.base_index - 1
        return self.entries[k].term if 0 <= k < len(self.entries) else None

    def holds(self, m: int, e: Any) -> bool:
        """Whether this disk holds committed entry ``e`` at ``m`` (or a snapshot base covering it)."""
        if m <= self.base_index:
            return True
        k = m - self.base_index - 1
        return k < len(self.entries) and self.entries[k] == e


class Node:
    __slots__ = ("i", "id", "addr", "core", "disk", "started", "alive", "stopped", "retired", "incarnation",
                 "writing", "pending", "applied", "kv", "digest", "fsm_term", "fsm_members", "last_snap",
                 "snapshotting", "props", "leader_term", "rate", "acc", "restart_at", "paused", "resume_at",
                 "paused_at", "incoming", "snaprecv_due", "commit_seen", "ticks", "gen", "joining")

    def __init__(self, i: int) -> None:
        self.i = i
        self.id = f"n{i + 1}"
        self.addr = f"sim:{i + 1}"
        self.core: Any = None
        self.disk = Disk()
        self.started = False  # spares start when an admin adds them
        self.alive = False
        self.stopped = False  # removed (or judged removed) and stopped for good
        self.retired = False  # an admin proposed its removal: its id is never added again
        self.incarnation = 0  # process restarts (events of an earlier process are ignored)
        self.gen = 0  # data directory generations: a wipe starts a new one (RaftCore.incarnation)
        self.joining = False  # wiped: not admitted as its new incarnation yet (kvnode's join loop)
        self.writing: Optional[tuple] = None  # (PersistBatch, [sends]) of the write in flight
        self.pending: Optional[tuple] = None  # (PersistBatch, [sends]) waiting for the next write
        self.reset_volatile()
        self.leader_term = -1
        self.rate = 1.0
        self.acc = 0.0
        self.ticks = 0
        self.restart_at = 0.0
        self.paused = False  # SIGSTOPped: handles nothing; its messages and syncs wait for it
        self.resume_at = 0.0
        self.paused_at = 0.0

    @property
    def inc(self) -> str:
        """The incarnation of this node's data directory (actors/node.py stores a random one)."""
        return f"{self.id}.{self.gen}"

    def reset_volatile(self) -> None:
        self.applied = 0  # the FSM's applied index
        self.kv: dict = {}
        self.digest = 0
        self.fsm_term = 0
        self.fsm_members: list = []
        self.last_snap = 0
        self.snapshotting = False
        self.props: dict = {}  # index -> (term, data) proposed here, not yet seen committed
        self.incoming: Optional[list] = None  # [last_index, last_term, bytearray] being received
        self.snaprecv_due = 0.0  # when the last received snapshot's save completes (saves are in order)
        self.commit_seen = 0


# event kinds; those up to SNAPRECV belong to one node and wait while it is paused
MSG, DISK, SNAPSAVE, SNAPRECV, CRASH, RESUME, STOP = 0, 1, 2, 3, 4, 5, 6
