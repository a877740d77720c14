"""A deterministic simulation of a Raft cluster over the pure core (DESIGN.md section 3).

N nodes (3 or 5, plus a few spares that may join) live in one thread. Everything random comes
from one ``random.Random(seed)`` (each core gets its own Random derived from the seed), so a seed
replays exactly::

    python -m tests.sim.cluster --seed 17 [--nodes 5] [-v]

Per node the model holds a :class:`RaftCore`, a *disk* with only what was synced (term, vote,
the log after its base (index, term), commit, and the newest durable snapshot) and an FSM (a
dict KV, the applied index and term, the configuration of the last applied CONFIG entry). Every
node starts like a bootstrapped kvnode: entry 1, a CONFIG entry of term 1 naming the initial
members, is on its disk. A Ready is executed the way the role actors execute it
(actors/role.py): ``send`` goes to the network at once; ``persist`` and ``send_after_persist``
go to a model of the LogManager (one synced write in flight, later batches merged into the next
write with ``PersistBatch.merge``; a write is applied to the disk like LogStore.write followed
by LogStore.drop_prefix); when a write completes its ``send_after_persist`` messages leave and
``on_persisted`` is called.

Snapshots (actors/fsm.py, actors/snapshotter.py): every K applied entries (K random per seed) the
FSM model hands a frozen copy of its state to a snapshotter model, whose save takes a while; once
it is durable the core is told (``set_snapshot``) and compacts (``compact(index - trailing)``,
trailing random per seed). A restart rebuilds the FSM from the newest snapshot and the core from
the log after it. Streaming a snapshot is the core's business (actors/snapshot_transfer.py: which
snapshot, which offset next, resend, give up, which chunks a follower accepts); the model only
moves bytes, as the Snapshotter actor does: ``Ready.chunks_to_send`` are read from the newest
durable snapshot (an older one is gone: ``snapshot_failed``) and sent over the same unreliable
network; ``Ready.chunks_to_store`` are appended to the follower's buffer, and on the last one the
snapshot is saved (durable, after a delay), the FSM restored from it and ``install_snapshot``
called, as role.py does.

Membership (the core's MembershipQueue, actors/membership.py): an admin asks the leader's core to
add spare nodes (to become voters: the core adds them as learners and promotes each once its
match reaches the commit index; in some seeds some stay learners) and to remove members (voters,
learners, the leader itself); the core applies them one at a time. A node whose core reports its
removal committed (``Ready.removed``) stops for good; an operator also stops a removed node some
time after its removal committed (it may never learn of it); a removed id never comes back.

The network delays every message by a random time (so it reorders), drops and duplicates some,
and suffers partitions that come and go (one node isolated, often the leader; random splits;
one-way links; a bridge node between two halves). Nodes crash (losing everything not synced;
a write in flight may or may not have reached the disk) and restart from their disk; syncs
sometimes stall. Nodes pause (SIGSTOP): nothing is handled until they resume, then each peer's
queued messages arrive in order, and a client read may be registered first. New leaders are
hunted: some are crashed or isolated right after their election (where Figure 8 lives).
Clocks tick with a small per-node skew. Clients (with a bounded window of writes in flight)
propose Set commands to every node that believes it leads, issue ReadIndex reads (at the leader,
or, in half the seeds, at followers through ReadIndexRequest) and sometimes ask for a leadership
transfer. Timing, batching, pre-vote, check-quorum, snapshot frequency and membership churn
vary per seed.

Checked incrementally, after every input:

* Election Safety: at most one leader per term over the whole run (whatever the configurations).
* Log Matching: every entry ever appended anywhere is identified by (index, term); the same
  (index, term) must always carry the same entry and follow the same previous term. Also a
  pairwise comparison of the live logs at intervals (over the range both still hold).
* Leader Completeness: a node becoming leader of term T holds every entry committed in a term
  before T (or a snapshot base that covers it, with the right term).
* Commit safety, the lemma behind Leader Completeness, checked against every possible candidate:
  every log lacking the newest committed entry (any live node's memory, any disk it may restart
  from) is less up-to-date than every disk holding it (a disk whose snapshot base covers it
  holds it); and the voters of the configuration in force that lack it on disk are fewer than a
  quorum of that configuration, so no candidate without it can collect a quorum. "In force" is
  the newest configuration committed at that index, and also the one committed at the highest
  commit index any live node knows: with single-server changes, one change at a time and the
  current-term rule before a change, the holders of a committed entry intersect every quorum of
  both (see ``check_commit_safe``); this holds while configurations change, no restriction to
  stable periods is needed.
* State Machine Safety: each node applies indexes in order without gaps (after a snapshot is
  restored, from the snapshot's index), no two nodes apply different entries at an index, and
  every node's FSM state after applying index i is the same (an incremental digest, compared at
  every index).
* Snapshots: a snapshot's (index, term, configuration, KV) equals the committed history at its
  index and the FSM state of every node that applied up to that index; a snapshot received by
  InstallSnapshot decodes to the sender's snapshot, and after ``install_snapshot`` the follower's
  FSM equals the leader's at that index; a compaction (memory or disk) lands on a committed
  (index, term) covered by a durable snapshot.
* Membership: a leader's log never holds more than one configuration entry beyond the committed
  prefix; each committed configuration differs from the previous one by one server (adding,
  removing, or promoting); each commit advance of a leader is backed by a quorum of the voters
  of its configuration, learners not counted; a node that stops as removed is not in the
  committed configuration.
* Durability: the synced term never decreases, a synced vote never changes within a term,
  the synced commit never exceeds the synced log nor decreases, committed entries are never
  truncated from the disk (except replaced by an installed snapshot that covers them), each
  synced batch is one that LogStore.write would accept, and no node grants its vote to two
  candidates in one term (across crashes).
* ReadIndex (and lease reads, in half the seeds; follower reads in half): a confirmed read's
  index is at least every index committed (so every write acknowledged) anywhere before the read
  was registered.

At the end all partitions heal, crashed members restart, removed nodes are stopped, paused ones
resume and the network becomes reliable: a leader must be elected and a new write and a read
must complete within a bound (liveness; the bound grows with the uncommitted backlog). A seed
whose chaos committed no membership change or installed no snapshot then gets one admin change
(preferably a spare joining behind the leader's compaction point). Finally every member must
apply the same log to the same state, holding every acknowledged write, with every learner
promoted (but those added to stay learners).

Every protocol decision runs in the real core: follower reads forwarded to the leader, the
membership queue and learner promotion, the removal rule and the snapshot-stream decisions
(once re-modelled here from the actors, where the simulation found three bugs). What remains
modelled is I/O: the network, the disk (LogManager/LogStore), the FSM and the Snapshotter's byte
moving. ``STRICT_STORE`` (False by default): a batch LogStore.write would reject kills the node
(seed 905 of 0-999 with it True); see the flag.
"""
from __future__ import annotations

import argparse
import bisect
import heapq
import importlib
import random
import sys
import time
from dataclasses import dataclass
from typing import Any, Optional

from raftkv.actors.core import COMMIT_FLUSH_TICKS
from raftkv.wire.messages import (Command, Entry, EntryKind, InstallSnapshot, Member, ReadIndexReply, VoteReply,
                                  encode_record)

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
                 "paused_at", "incoming", "commit_seen", "ticks")

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
        self.incarnation = 0
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
        self.commit_seen = 0


# event kinds; those up to SNAPRECV belong to one node and wait while it is paused
MSG, DISK, SNAPSAVE, SNAPRECV, CRASH, RESUME, STOP = 0, 1, 2, 3, 4, 5, 6


class Sim:
    """One seeded run. ``run()`` returns :class:`Stats` or raises :class:`SimFailure`."""

    CHAOS_TICKS = 300
    LIVENESS_TICKS = 400
    SETTLE_TICKS = 300
    PAIRWISE_EVERY = 20
    CHECK_COMMIT_SAFETY = True  # planted_bugs.py turns it off to measure the end-to-end checks alone
    # The direct membership rules (a new configuration only once the previous one and an entry of
    # the leader's term are committed; commits and elections backed by a quorum of voters):
    # planted_bugs.py turns them off to see whether the consequences of breaking them are caught.
    CHECK_MEMBERSHIP_RULES = True
    BATCH_WINDOW = 0.5  # in batched mode, inputs within this time share one Ready
    # Fail on a batch that LogStore.write would reject (LogManager re-raises the ValueError: the
    # node dies). Otherwise the disk model applies it as intended and counts it in
    # Stats.store_rejects. Known case: an install_snapshot that discards the log (truncate_from +
    # compact_to) merged, while an earlier write is in flight, with the appends after it: the
    # LogManager writes the entries (which then do not extend the truncated log) before it drops
    # the prefix. Not the core's to fix (actors/log_manager.py or role.py's merging), so off.
    STRICT_STORE = False

    def __init__(self, seed: int, nodes: Optional[int] = None, *, verbose: bool = False,
                 core_module: Any = None, chaos_ticks: Optional[int] = None,
                 overrides: Optional[dict] = None) -> None:
        self.seed = seed
        self.n = nodes if nodes is not None else default_nodes(seed)
        self.verbose = verbose
        self.cm = core_module or importlib.import_module("raftkv.actors.core")
        self.chaos_ticks = chaos_ticks if chaos_ticks is not None else self.CHAOS_TICKS
        rng = self.rng = random.Random(seed)
        self.stats = Stats(seed, self.n)

        # ---- per-seed parameters (all from the one rng)
        emin = rng.choice((8, 10, 12))
        self.cfg = self.cm.CoreConfig(
            election_ticks_min=emin, election_ticks_max=emin * 2,
            heartbeat_ticks=rng.choice((2, 3, 3, 4)),
            max_batch=rng.choice((1, 1, 2, 4, 64)), max_inflight=rng.choice((1, 2, 4, 64)),
            pre_vote=rng.random() < 0.8, check_quorum=rng.random() < 0.8)
        self.drop = rng.choice((0.0, 0.02, 0.05, 0.1, 0.2))
        self.dup = rng.choice((0.0, 0.02, 0.1))
        self.delay_hi = rng.choice((1.0, 2.0, 3.0))
        self.tail = rng.choice((0.0, 0.02, 0.05))  # chance of a long delay (heavy reordering)
        self.disk_hi = rng.choice((0.3, 1.0, 2.0))
        self.disk_stall = rng.choice((0.0, 0.05, 0.15))  # chance that a sync takes up to 5 ticks
        self.crash_rate = rng.choice((0.002, 0.004, 0.008))  # per node per tick
        self.leader_crash_rate = rng.choice((0.005, 0.01, 0.02))  # extra, for the leader
        self.pause_rate = rng.choice((0.0, 0.01, 0.02))  # per tick, a node (often the leader) pauses
        self.propose_rate = rng.choice((0.2, 0.4, 0.7))
        self.client_window = rng.choice((8, 32, 128))  # writes a leader may have in flight
        self.read_rate = rng.choice((0.05, 0.15))
        self.transfer_rate = rng.choice((0.0, 0.003, 0.01))
        self.batch_inputs = rng.random() < 0.3  # several inputs before one take_ready
        # Lease reads (thesis 6.4.1) count on the leader's clock: the node must catch its ticks up
        # after a stall (SIGSTOP, GC) before it serves one. Seeds with lease reads model a ticker
        # driven by a monotonic clock (missed ticks are delivered first on resume); the others a
        # timer that just resumes, which is where ReadIndex's round tagging matters.
        self.lease_reads = hasattr(self.cm.RaftCore, "lease_read") and rng.random() < 0.5
        self.cfg.lease_reads = self.lease_reads
        # The transport's "connection dropped" hints (RaftCore.peer_unreachable): most crashes
        # are noticed by most peers at once; some hints are false (a reconnect, a live peer).
        self.hint_crash = rng.choice((0.0, 0.5, 0.9))
        self.hint_false = rng.choice((0.0, 0.0, 0.005, 0.02))  # per tick
        self.follower_reads = rng.random() < 0.5  # half the reads go to followers (ReadIndexRequest)
        # snapshots: every K applied entries, compaction keeps ``trailing`` entries behind them
        self.snap_every = rng.randrange(10, 61)
        self.trailing = rng.randrange(0, 31)
        self.snap_save_hi = rng.choice((0.5, 2.0, 5.0))  # how long writing a snapshot takes
        self.chunk_bytes = rng.choice((16, 48, 4096))  # snapshot stream chunk (a KV is ~10-90 bytes)
        # the core's snapshot stream timers, in ticks: resend an unanswered chunk; give up without progress
        self.cfg.snapshot_resend_ticks = rng.choice((3, 6, 12))
        self.cfg.snapshot_give_up_ticks = rng.choice((25, 50))
        self.admin_snap_rate = rng.choice((0.0, 0.01, 0.03))  # kvclient snapshot, to a random node
        # membership: spares that may join; admin changes per tick
        self.spares = rng.choice((1, 2, 3))
        self.member_rate = rng.choice((0.01, 0.02, 0.03, 0.05))
        self.max_members = self.n + rng.choice((1, 2))
        self.remove_leader = rng.choice((0.1, 0.3))  # chance that a removal targets the leader
        self.stay_learner = rng.choice((0.0, 0.0, 0.3))  # chance that an add is of a learner that stays one
        self.stay_ids: set = set()  # spares added to stay learners
        self.down_lo, self.down_hi = 5.0, 50.0  # how long a crashed node stays down
        self.part_lo, self.part_hi = 10.0, 60.0  # how long a partition lasts
        self.gap_lo, self.gap_hi = 5.0, 40.0  # time between partitions
        self.stop_lo, self.stop_hi = 5.0, 60.0  # an operator stops a removed node this long after
        # targeted faults: crash (or isolate) a leader soon after its election, while its
        # no-op and the entries it inherited are still being synced and replicated
        self.hunt_crash = rng.choice((0.0, 0.15, 0.3))
        self.hunt_isolate = rng.choice((0.05, 0.15, 0.3))

        for k, v in (overrides or {}).items():  # for experiments: fix a parameter
            if hasattr(self.cfg, k):
                setattr(self.cfg, k, v)
            else:
                assert hasattr(self, k), k
                setattr(self, k, v)
        self.nodes = [Node(i) for i in range(self.n + self.spares)]
        self.index = {nd.id: nd.i for nd in self.nodes}
        self.members = [Member(nd.id, nd.addr) for nd in self.nodes[:self.n]]
        boot = Entry(1, EntryKind.CONFIG, self.cm.encode_config(self.members))
        for nd in self.nodes:
            nd.rate = 1.0 + rng.uniform(-0.05, 0.05)
        for nd in self.nodes[:self.n]:
            # kvnode --bootstrap: entry 1 (term 1) names the initial members, on every node's disk
            nd.disk.term = 1
            nd.disk.entries = [boot]
            self.boot(nd, random.Random(seed * 1000 + nd.i))

        self.now = 0.0  # time of the event being handled
        self.tick_no = 0
        self.events: list = []
        self.seq = 0
        self.blocked: set = set()  # (src index, dst index) links that drop everything
        self.partition_until = 0.0
        self.next_partition = rng.uniform(10, 60)
        self.chaos = True
        self.dirty: list = []
        self.defer_off: dict = {}  # (paused node, sender) -> delivery offset after resuming
        self.defer_n = 0
        self.batch_from = 0.0

        # ---- invariant state
        self.leaders: dict = {}  # term -> node id
        self.committed: list = []  # entry at index i is committed[i - 1] (applied somewhere)
        self.digests: list = []  # FSM digest after applying index i, at digests[i - 1]
        # the term in which index i was committed: that of the newest entry of the batch that first
        # applied it (the committing leader applies first, and only entries of its own term are
        # commit points); nondecreasing along the log
        self.commit_terms: list = []
        self.config_idx: list = []  # indexes of committed CONFIG entries, ascending
        self.configs: list = []  # their configurations
        self.ever_member: set = set()  # ids in some committed configuration
        self.snap_states: dict = {}  # index -> the first Snap taken at that index anywhere
        self.ids: dict = {(1, 1): (boot, 0)}  # (index, term) -> (Entry, previous entry's term)
        self.granted: dict = {}  # (term, voter) -> candidate
        self.ops: dict = {}  # command data -> (key, value)
        self.op_no = 0
        self.acked: list = []  # (index, data)
        self.reads: dict = {}  # handle -> (node index, committed at registration, acked index, at a follower)
        self.read_no = 0
        self.max_acked = 0
        self.confirmed: set = set()  # handles of confirmed reads
        self.probes: set = set()  # data of the writes proposed to check liveness
        self.probes_acked = 0

    # ------------------------------------------------------------------ utilities

    def fail(self, what: str) -> None:
        as_is = tuple(a for a, flag in AS_IS_FLAGS.items() if getattr(self, flag))
        raise SimFailure(self.seed, self.n, self.now, what, as_is)

    def trace(self, text: str) -> None:
        print(f"[{self.now:8.2f}] {text}")

    def push(self, t: float, kind: int, a: Any, b: Any, c: Any) -> None:
        self.seq += 1
        heapq.heappush(self.events, (t, self.seq, kind, a, b, c))

    def leader_nodes(self) -> list:
        return [nd for nd in self.nodes if nd.alive and not nd.paused and nd.core.role == LEADER]

    def current_leader(self) -> Optional[Node]:
        ls = self.leader_nodes()
        return max(ls, key=lambda nd: nd.core.term) if ls else None

    def active(self) -> list:
        """Nodes that run or may run again (started, not stopped for good)."""
        return [nd for nd in self.nodes if nd.started and not nd.stopped]

    def config_as_of(self, k: int) -> list:
        """The configuration of the newest CONFIG entry at or below ``k`` in the committed history."""
        j = bisect.bisect_right(self.config_idx, k) - 1
        return self.configs[j] if j >= 0 else []

    # ------------------------------------------------------------------ network

    def send(self, src: Node, msgs: list) -> None:
        rng = self.rng
        for to, msg in msgs:
            dst = self.index[to]
            tm = type(msg)
            if tm is VoteReply and msg.granted and not msg.pre_vote:
                key = (msg.term, src.id)
                prev = self.granted.setdefault(key, to)
                if prev != to:
                    self.fail(f"{src.id} granted its vote in term {msg.term} to {prev} and to {to}")
            elif tm is ReadIndexReply and msg.ok and msg.index > src.core.commit:
                self.fail(f"ReadIndex: {src.id} answers a follower's read at {msg.index} beyond its commit "
                          f"{src.core.commit}")
            copies = 1
            if self.drop and rng.random() < self.drop:
                copies = 0
            elif self.dup and rng.random() < self.dup:
                copies = 2
            for _ in range(copies):
                if self.tail and rng.random() < self.tail:
                    d = rng.uniform(self.delay_hi, 10.0)
                else:
                    d = rng.uniform(0.05, self.delay_hi)
                self.push(self.now + d, MSG, src.i, dst, msg)
            if self.verbose:
                self.trace(f"{src.id} -> {to} {msg!r}" + ("" if copies == 1 else f"  [x{copies}]"))

    def deliver(self, src: int, dst: int, msg: Any) -> None:
        nd = self.nodes[dst]
        if not nd.alive or (src, dst) in self.blocked:
            return
        self.stats.delivered += 1
        if self.verbose:
            self.trace(f"{nd.id} <- n{src + 1} {msg!r}")
        nd.core.step(self.nodes[src].id, msg)
        self.after_input(nd)

    # ------------------------------------------------------------------ executing a Ready

    def after_input(self, nd: Node) -> None:
        core = nd.core
        if core.role == LEADER and nd.leader_term != core.term:
            self.new_leader(nd)
        if self.batch_inputs:
            if not self.dirty:
                self.batch_from = self.now
            if nd not in self.dirty:
                self.dirty.append(nd)
        else:
            self.flush(nd)

    def flush_dirty(self) -> None:
        while self.dirty:
            self.flush(self.dirty.pop(0))

    def flush(self, nd: Node, after: Optional[list] = None) -> None:
        """Execute the core's Ready like RoleActor._process_ready (and the Leader's hooks).
        ``after`` are messages to send once everything persisted so far is synced."""
        while nd.alive:
            core = nd.core
            if not core.has_ready():
                if after:
                    self.after_persist(nd, after)
                return
            r = core.take_ready()
            p = r.persist
            if p.entries:
                self.check_appended(nd, p)
            if p.compact_to is not None:
                self.check_base(nd, "memory log", core.log.base_index, core.log.base_term)
            if r.send:
                self.send(nd, r.send)
            sap = r.send_after_persist
            if after:
                sap = sap + after
                after = None
            if p.empty():
                if sap:
                    self.after_persist(nd, sap)
            else:
                if nd.pending is None:
                    nd.pending = (p, list(sap))
                else:
                    nd.pending[0].merge(p)
                    nd.pending[1].extend(sap)
                self.maybe_write(nd)
            if r.committed:
                self.apply(nd, r.committed)
                if not nd.alive:  # an operator stopped it on seeing its removal committed
                    return
            if r.reads or r.reads_failed:
                self.node_reads(nd, r.reads, r.reads_failed)
            for c in r.chunks_to_send:
                self.snap_send_chunk(nd, c)
            for c in r.chunks_to_store:
                self.snap_store(nd, c)
            for change, index in r.config_proposed:
                if change.origin.value == "promotion":
                    self.stats.promotions += 1
                if self.verbose:
                    self.trace(f"{nd.id}: membership change at {index}: {change.describe()}")
            self.after_ready(nd, r)
            if r.removed:
                self.self_stop(nd)
                return

    def after_persist(self, nd: Node, sends: list) -> None:
        if nd.pending is not None:
            nd.pending[1].extend(sends)
        elif nd.writing is not None:
            nd.writing[1].extend(sends)
        else:
            self.send(nd, sends)

    def after_ready(self, nd: Node, r: Any) -> None:
        """Checks after each Ready."""
        core = nd.core
        if core.role == LEADER:
            c = core.commit
            if c > nd.commit_seen and self.CHECK_MEMBERSHIP_RULES:
                # Learners never count: the commit index must be on a quorum of the voters of the
                # configuration it was decided in (a change proposed in this Ready came after it).
                members = core.members
                if r.config_proposed:
                    first = min(i for _, i in r.config_proposed)
                    older = [m for i, m in core.config_log if i < first]
                    members = older[-1] if older else core.base_members
                voters = [m.id for m in members if m.voter]
                acks = sum(1 for v in voters if (core.persisted if v == nd.id else
                                                 (core.progress[v].match if v in core.progress else 0)) >= c)
                if acks < len(voters) // 2 + 1:
                    self.fail(f"{nd.id} (leader of term {core.term}) commits {c} with the acknowledgement of only "
                              f"{acks} of its voters {voters}")
            unc = sum(1 for i, _ in core.config_log if i > len(self.committed))
            if unc > 1:
                self.fail(f"{nd.id} (leader of term {core.term}) holds {unc} uncommitted configuration entries: "
                          f"{[i for i, _ in core.config_log]}, committed {len(self.committed)}")
        nd.commit_seen = core.commit

    # ------------------------------------------------------------------ the LogManager and disk

    def start_write(self, nd: Node) -> None:
        nd.writing, nd.pending = nd.pending, None
        rng = self.rng
        d = rng.uniform(self.disk_hi, 5.0) if self.disk_stall and rng.random() < self.disk_stall else rng.uniform(0.01, self.disk_hi)
        self.push(self.now + d, DISK, nd.i, nd.incarnation, None)

    def write_done(self, i: int, incarnation: int) -> None:
        nd = self.nodes[i]
        if not nd.alive or nd.incarnation != incarnation:
            return
        b, sends = nd.writing
        nd.writing = None
        self.to_disk(nd, b)
        if self.verbose:
            self.trace(f"{nd.id} synced {self.describe(b)}")
        if sends:
            self.send(nd, sends)
        if b.entries:
            nd.core.on_persisted(b.first + len(b.entries) - 1, b.entries[-1].term)
            self.after_input(nd)
            self.flush(nd)
        if nd.alive:
            self.maybe_write(nd)

    def maybe_write(self, nd: Node, tick: bool = False) -> None:
        """RoleActor.flush_persist: start the next write unless one is in flight; a commit index
        alone waits for a batch to ride with, or (every COMMIT_FLUSH_TICKS) is written unsynced.
        Such a write survives a crash or not: either way here (written now as if it had, or left
        pending to be lost with the node's memory)."""
        if nd.writing is not None or nd.pending is None:
            return
        b, sends = nd.pending
        if b.commit_only() and not sends and not (tick and self.rng.random() < 0.5):
            return
        self.start_write(nd)

    def tick(self, nd: Node) -> None:
        nd.core.tick()
        nd.ticks += 1
        if nd.ticks % COMMIT_FLUSH_TICKS == 0:
            self.maybe_write(nd, tick=True)

    @staticmethod
    def describe(b: Any) -> str:
        parts = []
        if b.term is not None:
            parts.append(f"term={b.term} vote={b.vote}")
        if b.truncate_from is not None:
            parts.append(f"truncate_from={b.truncate_from}")
        if b.entries:
            parts.append(f"entries {b.first}..{b.first + len(b.entries) - 1}")
        if b.commit is not None:
            parts.append(f"commit={b.commit}")
        if b.compact_to is not None:
            parts.append(f"compact_to={b.compact_to}")
        return ", ".join(parts) or "(barrier)"

    def to_disk(self, nd: Node, b: Any) -> None:
        """One PersistRequest as the LogManager writes it: LogStore.write (truncate, entries,
        term/vote, commit) as one atomic batch, then LogStore.drop_prefix(compact_to)."""
        d = nd.disk
        ct = b.compact_to
        last = d.last_index()
        reject = None
        tf = b.truncate_from
        if tf is not None:
            if tf <= d.base_index:
                reject = f"truncate_from={tf} is below its first index {d.base_index + 1}"
            elif tf <= d.commit and not (ct is not None and ct[0] >= d.commit):
                self.fail(f"{nd.id} truncates its synced log from {tf}, below its synced commit {d.commit}")
            last = min(last, tf - 1)
        if b.entries and b.first != last + 1:
            reject = (f"entries at {b.first} do not extend the log ending at {last} "
                      f"(base {d.base_index}, truncate_from {tf}, compact_to {ct})")
        if reject is not None:
            self.stats.store_rejects += 1
            if self.STRICT_STORE:
                self.fail(f"{nd.id}: LogStore.write would reject the batch [{self.describe(b)}]: {reject}")
        compacted_first = False
        if reject is not None and ct is not None and b.entries and b.first == ct[0] + 1:
            # an installed snapshot followed by the entries after it: compact first (as intended)
            self.drop_prefix(nd, ct)
            compacted_first = True
        if tf is not None and tf > d.base_index:
            del d.entries[tf - d.base_index - 1:]
        if b.entries:
            f = b.first
            if f - 1 > d.last_index():
                self.fail(f"{nd.id} writes entries at {f} past its synced log end {d.last_index()}")
            k = f - d.base_index - 1
            if k < 0:
                self.fail(f"{nd.id} writes entries at {f} into its compacted log (base {d.base_index})")
            d.entries[k:] = b.entries
        if b.term is not None:
            if b.term < d.term:
                self.fail(f"{nd.id} synced term goes back from {d.term} to {b.term}")
            if b.term == d.term and d.vote is not None and b.vote != d.vote:
                self.fail(f"{nd.id} synced vote in term {d.term} changes from {d.vote} to {b.vote}")
            d.term, d.vote = b.term, b.vote
        if b.commit is not None:
            if b.commit < d.commit:
                self.fail(f"{nd.id} synced commit goes back from {d.commit} to {b.commit}")
            d.commit = b.commit
        if ct is not None and not compacted_first:
            self.drop_prefix(nd, ct)
        if d.commit > d.last_index():
            self.fail(f"{nd.id} synced commit {d.commit} exceeds its synced log ({d.last_index()})")

    def drop_prefix(self, nd: Node, ct: tuple) -> None:
        """LogStore.drop_prefix: keep the suffix only if it follows (index, term)."""
        d = nd.disk
        idx, term = ct
        if idx <= d.base_index:
            return
        if d.snap is None or d.snap.index < idx:
            self.fail(f"{nd.id} compacts its disk log to {idx} without a durable snapshot covering it "
                      f"(newest: {d.snap.index if d.snap else None})")
        if idx < d.last_index() and d.term_at(idx) == term:
            del d.entries[:idx - d.base_index]
        else:
            d.entries = []
        d.base_index, d.base_term = idx, term
        self.check_base(nd, "disk", idx, term)
        self.stats.compactions += 1

    def check_base(self, nd: Node, what: str, idx: int, term: int) -> None:
        """A compaction point is a committed (index, term)."""
        if idx == 0:
            return
        if idx > len(self.committed):
            self.fail(f"{nd.id} compacts its {what} to {idx}, beyond anything applied ({len(self.committed)})")
        if self.committed[idx - 1].term != term:
            self.fail(f"{nd.id} compacts its {what} to ({idx}, term {term}), but the entry committed there has "
                      f"term {self.committed[idx - 1].term}")

    # ------------------------------------------------------------------ invariants

    def new_leader(self, nd: Node) -> None:
        core = nd.core
        t = core.term
        nd.leader_term = t
        nd.commit_seen = core.commit  # commit advances from here on are this leader's decisions
        other = self.leaders.setdefault(t, nd.id)
        if other != nd.id:
            self.fail(f"Election Safety: {other} and {nd.id} are both leader in term {t}")
        # Only voters' votes count (learners and strangers never do): a quorum of its configuration.
        voters = [m.id for m in core.members if m.voter]
        granted = [v for v in voters if core.votes.get(v) is True]
        if len(granted) < len(voters) // 2 + 1 and self.CHECK_MEMBERSHIP_RULES:
            self.fail(f"{nd.id} leads term {t} with the votes of only {granted} of its voters {voters} "
                      f"(all votes: {core.votes})")
        self.stats.elections += 1
        if t > self.stats.max_term:
            self.stats.max_term = t
        log = core.log
        if self.verbose:
            self.trace(f"*** {nd.id} is leader of term {t} (log {log.first_index()}..{log.last_index()}, "
                       f"commit {core.commit}, voters {core.voters()})")
        # Leader Completeness: every entry committed in an earlier term is in the new leader's log
        # (or under its snapshot base). (A stale candidate of an older term may still win its old
        # election late, e.g. after a pause; it can commit nothing, and owes nothing to entries
        # committed in later terms.)
        n = bisect.bisect_left(self.commit_terms, t)
        base = log.base_index
        if 1 <= base <= n and self.committed[base - 1].term != log.base_term:
            self.fail(f"Leader Completeness: {nd.id} leads term {t} with its log based at ({base}, "
                      f"{log.base_term}), but the entry committed there has term {self.committed[base - 1].term}")
        if base < n and not (log.entries[:n - base] == self.committed[base:n]):
            for i in range(base + 1, n + 1):
                if log.term(i) != self.committed[i - 1].term or log.entry(i) != self.committed[i - 1]:
                    self.fail(f"Leader Completeness: {nd.id} leads term {t} without entry {i} "
                              f"{self.committed[i - 1]!r}, committed in term {self.commit_terms[i - 1]} "
                              f"(its log has term {log.term(i)} there)")
        n = len(self.committed)
        if self.chaos:
            # Targeted faults: crash (or isolate) a leader soon after its election, while its no-op
            # is being synced and replicated; likelier when it inherits uncommitted entries of
            # earlier terms, which is where Figure 8 lives.
            rng = self.rng
            r = rng.random()
            hunt = self.hunt_crash
            if log.last_index() - 1 > n:
                hunt = min(1.0, 2 * hunt)
            if r < hunt:
                self.push(self.now + rng.uniform(0.0, 3.0), CRASH, nd.i, nd.incarnation, None)
            elif r < hunt + self.hunt_isolate and not self.blocked:
                self.new_partition(isolate=nd.i)

    def check_appended(self, nd: Node, p: Any) -> None:
        """Log Matching, incrementally: each (index, term) names one entry after one previous term."""
        log = nd.core.log
        first, ents = p.first, p.entries
        lo = max(first, log.base_index + 1)  # an install may have compacted part of it since
        if log.slice(lo, first + len(ents)) != ents[lo - first:]:
            self.fail(f"{nd.id}: the persist batch for {first}..{first + len(ents) - 1} differs from its log")
        prev_t = log.term(first - 1)
        ids = self.ids
        core = nd.core
        for k, e in enumerate(ents):
            key = (first + k, e.term)
            seen = ids.get(key)
            if seen is None:
                ids[key] = (e, prev_t)
                if (e.kind == EntryKind.CONFIG and core.role == LEADER and e.term == core.term
                        and self.CHECK_MEMBERSHIP_RULES):
                    # a new configuration: the previous one is committed, and so is an entry of this term
                    older = [i for i, _ in core.config_log if i < first + k]
                    if older and older[-1] > core.commit or core.log.term(core.commit) != core.term:
                        self.fail(f"{nd.id} appends a configuration at {first + k} while the one at "
                                  f"{older[-1] if older else None} is uncommitted (commit {core.commit}) or "
                                  f"nothing of term {core.term} is committed")
            elif seen[0] != e or (seen[1] != prev_t and seen[1] is not None and prev_t is not None):
                self.fail(f"Log Matching: {nd.id} has {e!r} after term {prev_t} at index {first + k}; "
                          f"elsewhere ({first + k}, {e.term}) is {seen[0]!r} after term {seen[1]}")
            prev_t = e.term

    def check_pairwise(self) -> None:
        live = [nd for nd in self.nodes if nd.alive]
        for x in range(len(live)):
            la = live[x].core.log
            for y in range(x + 1, len(live)):
                lb = live[y].core.log
                lo = max(la.base_index, lb.base_index)
                k = min(la.last_index(), lb.last_index())
                while k > lo and la.term(k) != lb.term(k):
                    k -= 1
                if k < lo or la.term(k) != lb.term(k):
                    continue
                if la.term(lo) != lb.term(lo) or la.slice(lo + 1, k + 1) != lb.slice(lo + 1, k + 1):
                    j = next((j for j in range(lo + 1, k + 1) if la.entry(j) != lb.entry(j)), lo)
                    self.fail(f"Log Matching: {live[x].id} and {live[y].id} agree on (index {k}, term "
                              f"{la.term(k)}) but differ at index {j}: {la.term(j)} vs {lb.term(j)}")

    def apply(self, nd: Node, committed: list) -> None:
        """State Machine Safety, FSM states, snapshots of the FSM, acknowledgements of this node's proposals."""
        gc = self.committed
        grew = len(gc)
        decode_config = self.cm.decode_config
        snaps = self.snap_states
        for idx, e in committed:
            if idx != nd.applied + 1:
                self.fail(f"{nd.id} applies index {idx} after {nd.applied}")
            if e.kind == EntryKind.COMMAND:
                kv = self.ops.get(e.data)
                if kv is None:
                    self.fail(f"{nd.id} applies an unknown command at {idx}")
                key, value = kv
                nd.digest ^= _h(key, nd.kv.get(key)) ^ _h(key, value)
                nd.kv[key] = value
            elif e.kind == EntryKind.CONFIG:
                nd.fsm_members = decode_config(e.data)
            nd.applied = idx
            nd.fsm_term = e.term
            if idx <= len(gc):
                if gc[idx - 1] != e:
                    self.fail(f"State Machine Safety: {nd.id} applies {e!r} at {idx}, "
                              f"another node applied {gc[idx - 1]!r}")
                if self.digests[idx - 1] != nd.digest:
                    self.fail(f"State Machine Safety: the FSM of {nd.id} after index {idx} differs from another "
                              f"node's after the same index")
            else:
                gc.append(e)
                self.digests.append(nd.digest)
                if e.kind == EntryKind.CONFIG:
                    self.config_committed(idx, nd.fsm_members)
            if idx in snaps and snaps[idx].kv != nd.kv:
                self.fail(f"Snapshot: the snapshot at {idx} differs from the FSM of {nd.id} after applying {idx}")
            if nd.props:
                pr = nd.props.pop(idx, None)
                if pr is not None and pr[0] == e.term and pr[1] == e.data:
                    self.acked.append((idx, e.data))
                    if e.data in self.probes:
                        self.probes_acked += 1
                    self.stats.acked += 1
                    if idx > self.max_acked:
                        self.max_acked = idx
        if self.verbose:
            self.trace(f"{nd.id} applied up to {nd.applied}")
        if len(gc) > grew:
            self.commit_terms.extend([gc[-1].term] * (len(gc) - grew))
            if self.CHECK_COMMIT_SAFETY:
                self.check_commit_safe()
        if nd.applied - nd.last_snap >= self.snap_every and not nd.snapshotting:
            self.take_snapshot(nd)

    def config_committed(self, idx: int, members: list) -> None:
        """A configuration entry is committed (first applied anywhere)."""
        prev = self.configs[-1] if self.configs else None
        self.config_idx.append(idx)
        self.configs.append(members)
        self.ever_member.update(m.id for m in members)
        if prev is None:
            return
        self.stats.config_commits += 1
        old_ids, new_ids = {m.id for m in prev}, {m.id for m in members}
        old_v, new_v = {m.id for m in prev if m.voter}, {m.id for m in members if m.voter}
        if len(old_ids ^ new_ids) > 1 or len(old_v ^ new_v) > 1:
            self.fail(f"Membership: the configuration committed at {idx} ({[(m.id, m.voter) for m in members]}) "
                      f"changes more than one server of the previous one ({[(m.id, m.voter) for m in prev]})")
        for x in sorted(old_ids - new_ids):  # an operator decommissions the removed server
            nd = self.nodes[self.index[x]]
            if not nd.stopped:
                delay = self.rng.uniform(self.stop_lo, self.stop_hi) if self.chaos else 0.0
                self.push(self.now + delay, STOP, nd.i, None, None)

    def check_commit_safe(self) -> None:
        """The lemma behind Leader Completeness, checked against every possible candidate.

        (1) Every log that lacks the newest committed entry e (a live node's memory, or the disk of
        a node that may run again, which is what it restarts with) must be less up-to-date than
        every disk holding it: otherwise the holder would vote for a candidate without it. In
        correct Raft the newest committed entry is a leader's commit point, of that leader's term,
        so this holds at every moment, whatever the configurations.

        (2) The voters lacking e on disk must not form a quorum of the configuration in force, so
        that every quorum a candidate needs contains a holder, which (1) makes refuse its vote.
        With single-server changes, a new one only once the previous one is committed and an entry
        of the leader's term is committed, an entry committed by counting votes of configuration C
        or its successor C' (appended later, effective at once) is on a quorum of C or C'; either
        intersects every quorum of C. So the holders of e block the newest configuration committed
        at or below e's index, and also the one committed at the highest commit index any live
        node knows (the holders of that entry hold e). Both are checked.
        """
        m = len(self.committed)
        if not m:
            return
        e = self.committed[-1]
        floor = None
        low = ""
        for nd in self.nodes:
            if not nd.started:
                continue
            d = nd.disk
            if d.holds(m, e):
                ut = (d.last_term(), d.last_index())
                if floor is None or ut < floor:
                    floor, low = ut, nd.id
        confs = [self.config_as_of(m)]
        top = max((nd for nd in self.nodes if nd.alive), key=lambda nd: nd.core.commit, default=None)
        if top is not None and top.core.commit > m:
            k = top.core.commit
            later = [c for i, c in top.core.config_log if m < i <= k]
            if later:
                confs.append(later[-1])
        for conf in confs:
            voters = [mb.id for mb in conf if mb.voter]
            lacking = [v for v in voters if not self.nodes[self.index[v]].disk.holds(m, e)]
            if len(lacking) >= len(voters) // 2 + 1:
                self.fail(f"Durability: entry {m} {e!r} is committed but the voters {lacking} of {voters} lack "
                          f"it on disk: a quorum")
        if floor is None:
            self.fail(f"Durability: entry {m} {e!r} is committed but on no disk")
        for nd in self.nodes:
            if not nd.started or nd.stopped:
                continue
            if nd.alive:
                log = nd.core.log
                if not (m <= log.base_index or (log.term(m) == e.term and log.entry(m) == e)):
                    ut = (log.last_term(), log.last_index())
                    if ut >= floor:
                        self.lemma_failure(nd, "memory", m, e, ut, floor, low)
            d = nd.disk
            if not d.holds(m, e):
                ut = (d.last_term(), d.last_index())
                if ut >= floor:
                    self.lemma_failure(nd, "disk", m, e, ut, floor, low)

    def lemma_failure(self, nd: Node, name: str, m: int, e: Any, ut: tuple, floor: tuple, low: str) -> None:
        self.fail(f"Commit safety: entry {m} {e!r} is committed, but the {name} log of "
                  f"{nd.id} lacks it and is as up-to-date (last term {ut[0]}, index "
                  f"{ut[1]}) as the disk of {low} (last term {floor[0]}, index {floor[1]}), "
                  f"which holds it: {low} would vote for {nd.id}")

    # ------------------------------------------------------------------ reads

    def node_reads(self, nd: Node, reads: list, failed: list) -> None:
        """Reads confirmed (or failed) by a node's core: at a leader, or at a follower with the
        read index its leader answered (served once applied, which the FSM model need not wait for)."""
        for ri, handles in reads:
            for h in handles:
                reg = self.reads.pop(h, None)
                if reg is None:
                    self.fail(f"{nd.id} confirms unknown or already answered read {h}")
                if reg[0] != nd.i:
                    self.fail(f"{nd.id} confirms read {h} registered at n{reg[0] + 1}")
                if ri < reg[1]:
                    self.fail(f"ReadIndex: {nd.id} confirms {'follower ' if reg[3] else ''}read {h} at index {ri}, "
                              f"but index {reg[1]} (acknowledged up to {reg[2]}) was committed before it was "
                              f"registered")
                if not reg[3] and ri > nd.core.commit:
                    self.fail(f"ReadIndex: {nd.id} confirms read {h} at {ri} beyond its commit {nd.core.commit}")
                if reg[3]:
                    self.stats.follower_reads_ok += 1
                else:
                    self.stats.reads_ok += 1
                self.confirmed.add(h)
                if self.verbose:
                    self.trace(f"{nd.id} read {h} confirmed at index {ri}")
        for h in failed:
            reg = self.reads.pop(h, None)
            if reg is not None:
                if reg[3]:
                    self.stats.follower_reads_failed += 1
                else:
                    self.stats.reads_failed += 1

    def follower_read(self, nd: Node) -> None:
        """Follower.on_client for one linearizable read: the core forwards it to the leader."""
        self.read_no += 1
        h = self.read_no
        self.reads[h] = (nd.i, len(self.committed), self.max_acked, True)
        try:
            nd.core.read_index([h])
        except self.cm.NotLeader:
            del self.reads[h]
            return
        if self.verbose:
            self.trace(f"client -> {nd.id}: follower read {h} (committed {len(self.committed)} so far)")
        self.after_input(nd)

    # ------------------------------------------------------------------ snapshots

    def take_snapshot(self, nd: Node) -> None:
        """Fsm._snapshot: a frozen copy goes to the snapshotter, which makes it durable."""
        s = Snap(nd.applied, nd.fsm_term, nd.fsm_members, nd.kv)
        self.check_snapshot(nd, s, "takes")
        nd.snapshotting = True
        if self.verbose:
            self.trace(f"{nd.id} takes a snapshot at {s.index} (term {s.term})")
        self.push(self.now + self.rng.uniform(0.05, self.snap_save_hi), SNAPSAVE, nd.i, nd.incarnation, s)

    def admin_snapshot(self, nd: Node) -> None:
        """kvclient snapshot: TakeSnapshot to the node's FSM (refused while one is being taken)."""
        if nd.snapshotting or nd.applied == 0 or nd.applied == nd.last_snap:
            return
        if self.verbose:
            self.trace(f"admin -> {nd.id}: snapshot")
        self.take_snapshot(nd)

    def check_snapshot(self, nd: Node, s: Snap, what: str) -> None:
        """A snapshot equals the committed history and the FSM state of everyone at its index."""
        i = s.index
        if i > len(self.committed):
            self.fail(f"Snapshot: {nd.id} {what} a snapshot at {i}, beyond anything applied ({len(self.committed)})")
        if self.committed[i - 1].term != s.term:
            self.fail(f"Snapshot: {nd.id} {what} a snapshot at ({i}, term {s.term}); the entry committed there "
                      f"has term {self.committed[i - 1].term}")
        if self.digests[i - 1] != kv_digest(s.kv):
            self.fail(f"Snapshot: {nd.id} {what} a snapshot at {i} whose state differs from the FSM state "
                      f"of the nodes that applied up to {i}")
        if s.members != self.config_as_of(i):
            self.fail(f"Snapshot: {nd.id} {what} a snapshot at {i} with configuration {s.members}, "
                      f"but the one committed at {i} is {self.config_as_of(i)}")
        first = self.snap_states.setdefault(i, s)
        if first is not s and (first.kv != s.kv or first.term != s.term or first.members != s.members):
            self.fail(f"Snapshot: {nd.id} {what} a snapshot at {i} that differs from another one at {i}")

    def snap_saved(self, nd: Node, incarnation: int, s: Snap) -> None:
        """The snapshotter wrote the snapshot: SnapshotDone to the FSM, SnapshotSaved to the role."""
        if not nd.alive or nd.incarnation != incarnation:
            return
        nd.snapshotting = False
        nd.last_snap = max(nd.last_snap, s.index)
        d = nd.disk
        if d.snap is None or s.index > d.snap.index:
            d.snap = s
        self.stats.snapshots += 1
        if self.verbose:
            self.trace(f"{nd.id} snapshot at {s.index} durable; compact to {s.index - self.trailing}")
        nd.core.set_snapshot(self.cm.SnapshotRef(s.index, s.term, len(s.body)))
        nd.core.compact(s.index - self.trailing)
        self.after_input(nd)

    def snap_send_chunk(self, nd: Node, c: Any) -> None:
        """Snapshotter._send_chunk: the bytes at ``c.offset`` of snapshot ``c.index``, if it is
        still here (only the newest is kept in the model)."""
        s = nd.disk.snap
        if s is None or s.index != c.index:
            self.stats.snapshot_failed += 1
            if self.verbose:
                self.trace(f"{nd.id}: snapshot {c.index} for {c.peer} is gone")
            nd.core.snapshot_failed(c.peer)
            return
        if c.offset == 0:
            self.stats.snapshot_streams += 1
            if self.verbose:
                self.trace(f"{nd.id}: streaming snapshot {s.index} ({len(s.body)} bytes) to {c.peer}")
        data = s.body[c.offset:c.offset + self.chunk_bytes]
        done = c.offset + len(data) >= len(s.body)
        self.stats.snapshot_chunks += 1
        self.send(nd, [(c.peer, InstallSnapshot(c.term, s.index, s.term, c.offset, data, done, list(s.members)))])

    def snap_store(self, nd: Node, c: Any) -> None:
        """Snapshotter._store_chunk on the follower: write what the core accepted; save it when done."""
        m, leader = c.msg, c.leader
        if m.offset == 0:
            nd.incoming = [m.last_index, m.last_term, bytearray()]
        inc = nd.incoming
        if inc is None or (inc[0], inc[1]) != (m.last_index, m.last_term) or len(inc[2]) != m.offset:
            self.fail(f"{nd.id}'s core accepted chunk {m.offset} of snapshot ({m.last_index}, {m.last_term}) "
                      f"that does not extend what it stored ({inc[:2] if inc else None}, {len(inc[2]) if inc else 0})")
        buf = inc[2]
        buf += m.data
        if m.done:
            nd.incoming = None
            s = Snap(m.last_index, m.last_term, m.members, decode_kv(bytes(buf)))
            if bytes(buf) != s.body:
                self.fail(f"{nd.id} received a snapshot at {s.index} that does not decode to what was sent")
            self.check_snapshot(nd, s, "receives")
            if self.verbose:
                self.trace(f"{nd.id} received snapshot {s.index} from {leader}; saving")
            self.push(self.now + self.rng.uniform(0.05, self.snap_save_hi), SNAPRECV, nd.i, nd.incarnation,
                      (leader, s))

    def snap_received(self, nd: Node, incarnation: int, leader: str, s: Snap) -> None:
        """SnapshotReceived -> RoleActor._install: the snapshot is durable; restore the FSM from it,
        then the core (whose done reply leaves once the compaction is synced)."""
        if not nd.alive or nd.incarnation != incarnation:
            return
        d = nd.disk
        if d.snap is None or s.index > d.snap.index:
            d.snap = s
        if nd.applied > s.index:
            self.stats.fsm_rewinds += 1
        nd.kv = dict(s.kv)
        nd.digest = kv_digest(nd.kv)
        nd.applied = s.index
        nd.fsm_term = s.term
        nd.fsm_members = list(s.members)
        nd.last_snap = s.index
        if self.digests[s.index - 1] != nd.digest or self.snap_states[s.index].kv != nd.kv:
            self.fail(f"Snapshot: after installing the snapshot at {s.index}, the FSM of {nd.id} differs from "
                      f"the leader's at {s.index}")
        if nd.props:
            nd.props = {i: v for i, v in nd.props.items() if i > s.index}
        core = nd.core
        core.install_snapshot(s.index, s.term, list(s.members), leader=leader, size=len(s.body))
        self.stats.installs += 1
        if core.want_snapshot:
            self.stats.stale_installs += 1
        if self.verbose:
            self.trace(f"{nd.id} installed snapshot {s.index} (term {s.term}) from {leader}")
        self.flush(nd)

    # ------------------------------------------------------------------ membership

    def change_membership(self, ld: Node, p_add: Optional[float] = None) -> bool:
        """An admin asks the leader to add a spare or remove a member (kvclient add-node/remove-node);
        the leader's core queues the change and proposes it (actors/membership.py)."""
        rng = self.rng
        self.flush(ld)
        core = ld.core
        if not ld.alive or core.role != LEADER or not core.can_change_config() or core.changes.pending:
            return False
        members = core.members
        ids = {m.id for m in members}
        voters = [m for m in members if m.voter]
        spares = [nd for nd in self.nodes[self.n:] if not nd.retired and not nd.stopped and nd.id not in ids]
        removable = [m for m in members if not m.voter or len(voters) >= 3]
        if p_add is None:
            p_add = 0.7 if self.stats.adds == 0 else 0.5
        if spares and len(members) < self.max_members and (len(voters) <= 2 or not removable or rng.random() < p_add):
            started = [nd for nd in spares if nd.started]
            x = started[0] if started else spares[0]  # a joiner retries until it is a member
            if not x.started:
                x.started = True
                self.boot(x, random.Random(f"{self.seed}:{x.i}:0"))
            stay = x.id in self.stay_ids or (self.chaos and rng.random() < self.stay_learner)
            if stay:
                self.stay_ids.add(x.id)
            change = self.cm.MembershipChange(Member(x.id, x.addr, "", "", not stay))
            what = f"adds {x.id} as a {'learner' if stay else 'voter-to-be'}"
            self.stats.adds += 1
        elif removable:
            lm = [m for m in removable if m.id == ld.id]
            target = lm[0] if lm and rng.random() < self.remove_leader else rng.choice(removable)
            change = self.cm.MembershipChange(None, target.id)
            self.nodes[self.index[target.id]].retired = True
            what = f"removes {target.id}"
            self.stats.removes += 1
            if target.id == ld.id:
                self.stats.leader_removes += 1
        else:
            return False
        core.request_change(change)
        if self.verbose:
            self.trace(f"admin -> {ld.id}: {what}")
        self.after_input(ld)
        return True

    def self_stop(self, nd: Node) -> None:
        """Ready.removed: our removal is committed: record it and stop for good (Node.on_removed)."""
        if nd.id not in self.ever_member:
            self.fail(f"{nd.id} stops as removed (its log's configuration {[m.id for m in nd.core.members]} at "
                      f"{nd.core.config_index()} is committed at {nd.core.commit}), but it was never in a "
                      f"committed configuration")
        conf = {m.id for m in self.config_as_of(len(self.committed))}
        if nd.id in conf:
            self.fail(f"{nd.id} stops as removed (its log's configuration {[m.id for m in nd.core.members]} at "
                      f"{nd.core.config_index()} is committed at {nd.core.commit}), but it is in the committed "
                      f"configuration {sorted(conf)}")
        self.stats.self_stops += 1
        self.stop_node(nd, "removed")

    def stop_node(self, nd: Node, why: str) -> None:
        if nd.stopped:
            return
        if why == "operator":
            self.stats.operator_stops += 1
        if self.verbose:
            self.trace(f"!!! {nd.id} stops for good ({why})")
        if nd.alive:
            self.crash(nd, count=False)
        nd.stopped = True

    # ------------------------------------------------------------------ faults

    def boot(self, nd: Node, rng: random.Random) -> None:
        """Start a node from its disk like kvnode: the FSM from the newest snapshot, the core from
        the log after the log's base (actors/node.py _restore_snapshot, _build_core)."""
        from raftkv.actors.memlog import MemLog
        d = nd.disk
        nd.started = True
        nd.alive = True
        nd.acc = 0.0
        nd.reset_volatile()
        s = d.snap
        if s is not None and s.index < d.base_index:
            self.fail(f"{nd.id}: its log starts after {d.base_index} but its newest snapshot is at {s.index}")
        nd.core = self.cm.RaftCore(nd.id, self.cfg, term=d.term, vote=d.vote,
                                   log=MemLog(d.base_index, d.base_term, list(d.entries)),
                                   members=list(s.members) if s else [], commit=d.commit, rng=rng)
        if s is not None:
            nd.core.handed = max(nd.core.handed, s.index)  # the FSM starts from the snapshot
            nd.core.set_snapshot(self.cm.SnapshotRef(s.index, s.term, len(s.body)))
            nd.kv = dict(s.kv)
            nd.digest = kv_digest(nd.kv)
            nd.applied = nd.last_snap = s.index
            nd.fsm_term = s.term
            nd.fsm_members = list(s.members)

    def crash(self, nd: Node, count: bool = True) -> None:
        if nd.writing is not None and self.rng.random() < 0.5:
            self.to_disk(nd, nd.writing[0])  # synced, but the process died before hearing so
        nd.alive = False
        nd.paused = False
        nd.core = None
        nd.writing = nd.pending = None
        nd.reset_volatile()
        nd.leader_term = -1
        if nd in self.dirty:
            self.dirty.remove(nd)
        nd.restart_at = self.now + self.rng.uniform(self.down_lo, self.down_hi)
        for o in self.nodes:
            if o.alive and not o.paused and self.rng.random() < self.hint_crash:
                self.hint(o, nd.id)
        if count:
            self.stats.crashes += 1
        if self.verbose and count:
            d = nd.disk
            self.trace(f"!!! crash {nd.id} (disk: term {d.term} vote {d.vote} log {d.base_index}+{len(d.entries)} "
                       f"commit {d.commit} snapshot {d.snap.index if d.snap else None})")

    def hint(self, nd: Node, peer: str) -> None:
        if self.verbose:
            self.trace(f"{nd.id} lost its connection to {peer}")
        self.stats.peer_hints += 1
        nd.core.peer_unreachable(peer)
        self.after_input(nd)

    def defer(self, kind: int, a: int, b: int, c: Any) -> None:
        """An event for a stopped process waits until it resumes. Its sockets then hand over each
        peer's messages in the order they were sent (one TCP stream per peer), the peers' streams
        interleaved at random; the syncs' completions come in order too."""
        nd = self.nodes[b if kind == MSG else a]
        src = a if kind == MSG else nd.i
        off = self.defer_off.get((nd.i, src))
        if off is None:
            off = self.defer_off[(nd.i, src)] = self.rng.uniform(0.001, 0.5)
        self.defer_n += 1
        self.push(nd.resume_at + off + self.defer_n * 1e-6, kind, a, b, c)

    def pause(self, nd: Node) -> None:
        nd.paused = True
        for src in range(len(self.nodes)):
            self.defer_off.pop((nd.i, src), None)
        nd.paused_at = self.now
        nd.resume_at = self.now + self.rng.uniform(5, 60)
        self.push(nd.resume_at, RESUME, nd.i, nd.incarnation, None)
        self.stats.pauses += 1
        if self.verbose:
            self.trace(f"!!! pause {nd.id} until {nd.resume_at:.2f}")

    def resume(self, nd: Node, incarnation: int) -> None:
        if not nd.paused or nd.incarnation != incarnation:
            return
        nd.paused = False
        if self.verbose:
            self.trace(f"!!! resume {nd.id}")
        self.catch_up_clock(nd)
        # A client read that waited in the front door is registered before the queued peer
        # messages are handled (they arrive just after): acks of rounds sent before the pause
        # must not confirm it.
        if nd.alive and nd.core.role == LEADER and self.rng.random() < 0.5:
            self.read(nd)

    def catch_up_clock(self, nd: Node) -> None:
        """A resumed node's monotonic clock has moved on: in seeds with lease reads the ticker
        delivers the ticks it missed first (Node._ticker), so a lease never outlives a pause."""
        if self.lease_reads and nd.alive:
            for _ in range(int((self.now - nd.paused_at) * nd.rate)):
                self.tick(nd)
                self.after_input(nd)
                if not nd.alive:
                    return

    def restart(self, nd: Node) -> None:
        nd.incarnation += 1
        self.boot(nd, random.Random(f"{self.seed}:{nd.i}:{nd.incarnation}"))
        if self.verbose:
            self.trace(f"!!! restart {nd.id}")
        self.flush(nd)  # hands the committed prefix after the snapshot to the rebuilt FSM

    def new_partition(self, isolate: Optional[int] = None) -> None:
        rng = self.rng
        ids = [nd.i for nd in self.active()]
        n = len(ids)
        if n < 2:
            return
        kind = rng.randrange(5) if isolate is None else 1
        blocked = set()
        leader = self.current_leader()
        if kind <= 1:  # isolate one node (the leader on kind 0 when there is one)
            if isolate is not None:
                x = isolate
            else:
                x = leader.i if (kind == 0 and leader is not None) else rng.choice(ids)
            side = [x]
            desc = f"isolate n{x + 1}"
        elif kind == 2:  # random split
            rng.shuffle(ids)
            side = ids[:rng.randrange(1, n)]
            desc = f"split {sorted(side)}"
        elif kind == 3:  # one-way links
            side = None
            for a in ids:
                for b in ids:
                    if a != b and rng.random() < 0.3:
                        blocked.add((a, b))
            if leader is not None and rng.random() < 0.5:  # the leader hears but is not heard, or vice versa
                out = rng.random() < 0.5
                for b in ids:
                    if b != leader.i:
                        blocked.add((leader.i, b) if out else (b, leader.i))
            desc = f"one-way {sorted(blocked)}"
        elif n >= 3:  # a bridge: two halves that only one node connects
            rng.shuffle(ids)
            bridge = ids[0]
            rest = ids[1:]
            half = rng.randrange(1, len(rest))
            a_side, b_side = rest[:half], rest[half:]
            for a in a_side:
                for b in b_side:
                    blocked.add((a, b))
                    blocked.add((b, a))
            side = None
            desc = f"bridge n{bridge + 1} between {sorted(a_side)} and {sorted(b_side)}"
        else:
            side = [ids[0]]
            desc = f"isolate n{ids[0] + 1}"
        if side is not None:
            other = [i for i in range(len(self.nodes)) if i not in side]
            for a in side:
                for b in other:
                    blocked.add((a, b))
                    blocked.add((b, a))
        self.blocked = blocked
        self.partition_until = self.now + rng.uniform(self.part_lo, self.part_hi)
        self.stats.partitions += 1
        if self.verbose:
            self.trace(f"!!! partition: {desc}")

    # ------------------------------------------------------------------ clients

    def propose(self, nd: Node, count: int) -> list:
        items = []
        for _ in range(count):
            self.op_no += 1
            key, value = f"k{self.rng.randrange(8)}", b"v%d" % self.op_no
            data = encode_record(Command("put", key, value, client_id="sim", seq=self.op_no))
            self.ops[data] = (key, value)
            items.append((EntryKind.COMMAND, data))
        try:
            first, last = nd.core.propose(items)
        except self.cm.NotLeader:
            return []
        for k, (_, data) in enumerate(items):
            nd.props[first + k] = (nd.core.term, data)
        self.stats.proposals += count
        if self.verbose:
            self.trace(f"client -> {nd.id}: propose {first}..{last}")
        self.after_input(nd)
        return [d for _, d in items]

    def read(self, nd: Node) -> int:
        self.read_no += 1
        h = self.read_no
        self.reads[h] = (nd.i, len(self.committed), self.max_acked, False)
        try:
            if self.lease_reads and self.rng.random() < 0.5:
                self.stats.lease_reads += 1
                nd.core.lease_read([h])
            else:
                nd.core.read_index([h])
        except self.cm.NotLeader:
            del self.reads[h]
            return 0
        if self.verbose:
            self.trace(f"client -> {nd.id}: read {h} (committed {len(self.committed)} so far)")
        self.after_input(nd)
        return h

    # ------------------------------------------------------------------ time

    def run_events(self, until: float) -> None:
        ev = self.events
        while ev and ev[0][0] <= until:
            t, _, kind, a, b, c = heapq.heappop(ev)
            self.now = t
            if kind <= SNAPRECV and self.nodes[b if kind == MSG else a].paused:
                self.defer(kind, a, b, c)
            elif kind == MSG:
                self.deliver(a, b, c)
            elif kind == DISK:
                self.write_done(a, b)
            elif kind == SNAPSAVE:
                self.snap_saved(self.nodes[a], b, c)
            elif kind == SNAPRECV:
                self.snap_received(self.nodes[a], b, c[0], c[1])
            elif kind == RESUME:
                self.resume(self.nodes[a], b)
            elif kind == STOP:
                self.stop_node(self.nodes[a], "operator")
            else:
                nd = self.nodes[a]
                if (self.chaos and nd.alive and nd.incarnation == b
                        and sum(1 for x in self.nodes if x.alive) >= 2):
                    self.crash(nd)
            if self.dirty and (not ev or ev[0][0] > min(until, self.batch_from + self.BATCH_WINDOW)):
                self.flush_dirty()
        self.flush_dirty()

    def step(self) -> None:
        """One unit of simulated time: faults and clients, due events, then a tick on every node."""
        self.tick_no += 1
        t = float(self.tick_no)
        rng = self.rng
        if self.chaos:
            self.now = t - 1.0
            self.chaos_events()
        self.run_events(t)
        self.now = t
        for nd in self.nodes:
            if not nd.alive or nd.paused:
                continue
            nd.acc += nd.rate
            while nd.acc >= 1.0:
                nd.acc -= 1.0
                self.tick(nd)
                self.after_input(nd)
                if not nd.alive:
                    break
            if not nd.alive:
                continue
            if rng.random() < 0.01:
                nd.rate = 1.0 + rng.uniform(-0.05, 0.05)
        self.flush_dirty()
        if self.tick_no % self.PAIRWISE_EVERY == 0:
            self.check_pairwise()
            if self.CHECK_COMMIT_SAFETY:
                self.check_commit_safe()

    def chaos_events(self) -> None:
        rng = self.rng
        t = self.now
        half = self.chaos_ticks / 2
        # partitions come and go
        if self.blocked and t >= self.partition_until:
            self.blocked = set()
            self.next_partition = t + rng.uniform(self.gap_lo, self.gap_hi)
            if self.verbose:
                self.trace("!!! partition healed")
        elif not self.blocked and (t >= self.next_partition or (self.stats.partitions == 0 and t >= half)):
            self.new_partition()
        if self.hint_false and rng.random() < self.hint_false:
            live = [nd for nd in self.nodes if nd.alive and not nd.paused]
            if live:
                nd = rng.choice(live)
                self.hint(nd, rng.choice([o.id for o in self.nodes if o is not nd]))
        # crashes and restarts
        up = sum(1 for nd in self.nodes if nd.alive)
        for nd in self.nodes:
            if not nd.started or nd.stopped:
                continue
            if not nd.alive:
                if t >= nd.restart_at:
                    self.restart(nd)
                    up += 1
            elif up >= 2:
                rate = self.crash_rate + (self.leader_crash_rate if nd.core.role == LEADER else 0.0)
                if rng.random() < rate or (self.stats.crashes == 0 and t >= half and nd.core.role == LEADER):
                    self.crash(nd)
                    up -= 1
        if self.pause_rate and rng.random() < self.pause_rate:
            cands = [nd for nd in self.nodes if nd.alive and not nd.paused]
            if cands:
                ld = [nd for nd in cands if nd.core.role == LEADER]
                self.pause(rng.choice(ld) if ld and rng.random() < 0.7 else rng.choice(cands))
        if self.stats.crashes == 0 and t >= half + 20:
            live = [nd for nd in self.nodes if nd.alive]
            if len(live) >= 2:
                self.crash(rng.choice(live))
        # clients
        for nd in self.leader_nodes():  # clients retry everywhere: stale leaders get writes too
            if rng.random() < self.propose_rate and len(nd.props) < self.client_window:
                self.propose(nd, rng.randint(1, 3))
        if rng.random() < self.read_rate:
            if self.follower_reads and rng.random() < 0.5:
                fs = [nd for nd in self.nodes if nd.alive and not nd.paused and nd.core.role == FOLLOWER]
                if fs:
                    self.follower_read(rng.choice(fs))
            else:
                ls = self.leader_nodes()
                if ls:
                    self.read(rng.choice(ls))
        if self.transfer_rate and rng.random() < self.transfer_rate:
            ls = self.leader_nodes()
            if ls:
                nd = rng.choice(ls)
                targets = [m.id for m in nd.core.members if m.id != nd.id]
                if targets:
                    target = rng.choice(targets)
                    try:
                        nd.core.transfer_leadership(target)
                        self.stats.transfers += 1
                        if self.verbose:
                            self.trace(f"admin -> {nd.id}: transfer leadership to {target}")
                    except (self.cm.NotLeader, ValueError):
                        pass
                    self.after_input(nd)
        if self.admin_snap_rate and rng.random() < self.admin_snap_rate:
            cands = [nd for nd in self.nodes if nd.alive]
            if cands:
                self.admin_snapshot(rng.choice(cands))
        # membership changes (at least one attempt in the last third of the chaos, if none so far)
        if self.member_rate and (rng.random() < self.member_rate or (
                self.stats.adds + self.stats.removes == 0 and t >= 2 * self.chaos_ticks / 3)):
            ld = self.current_leader()
            if ld is not None:
                self.change_membership(ld)

    # ------------------------------------------------------------------ the run

    def run(self) -> Stats:
        if self.verbose:
            c = self.cfg
            print(f"seed {self.seed}: {self.n} nodes + {self.spares} spares, election {c.election_ticks_min}-"
                  f"{c.election_ticks_max}, heartbeat {c.heartbeat_ticks}, batch {c.max_batch}, inflight "
                  f"{c.max_inflight}, pre_vote {c.pre_vote}, check_quorum {c.check_quorum}; drop {self.drop}, "
                  f"dup {self.dup}, delay <{self.delay_hi} (tail {self.tail}), disk <{self.disk_hi}, "
                  f"batched inputs {self.batch_inputs}; snapshot every {self.snap_every} (trailing "
                  f"{self.trailing}, chunk {self.chunk_bytes}); membership rate {self.member_rate}; "
                  f"lease reads {self.lease_reads}, follower reads {self.follower_reads}")
        for _ in range(self.chaos_ticks):
            self.step()
        self.heal()
        self.check_liveness()
        self.check_converged()
        self.stats.ticks = self.tick_no
        self.stats.committed = len(self.committed)
        return self.stats

    def heal(self) -> None:
        self.chaos = False
        self.now = float(self.tick_no)
        self.blocked = set()
        self.drop = self.dup = self.tail = 0.0
        self.delay_hi = min(self.delay_hi, 1.0)
        committed = {m.id for m in self.config_as_of(len(self.committed))}
        for nd in self.nodes:
            if nd.started and not nd.stopped and nd.id in self.ever_member and nd.id not in committed:
                self.stop_node(nd, "operator")  # removed: decommissioned
        for nd in self.nodes:
            if nd.paused:
                nd.paused = False
                nd.resume_at = self.now  # its deferred messages are already queued
                self.catch_up_clock(nd)
            if nd.started and not nd.stopped and not nd.alive:
                self.restart(nd)
        if self.verbose:
            self.trace("!!! healed: no partitions, every node up, reliable network")

    def backlog_ticks(self) -> int:
        """Extra time to replicate what is not committed yet, one batch per round trip or so."""
        longest = max((nd.core.log.last_index() if nd.alive else nd.disk.last_index()) for nd in self.active())
        return 4 * max(0, longest - len(self.committed)) // self.cfg.max_batch

    def check_liveness(self) -> None:
        """After healing, a leader must be elected and a new write and a read must complete."""
        budget = self.LIVENESS_TICKS + self.backlog_ticks()
        deadline = self.tick_no + budget
        wrote_at = read_at = None  # (core, term) the probe write / read was last issued at
        read_h = 0
        while True:
            ld = self.current_leader()
            if ld is not None:
                here = (ld.core, ld.core.term)
                if not self.probes_acked and wrote_at != here:
                    data = self.propose(ld, 1)
                    if data:
                        self.probes.update(data)
                        wrote_at = here
                if read_h not in self.confirmed and (read_at != here or read_h not in self.reads):
                    read_h = self.read(ld)
                    read_at = here
            if self.probes_acked and read_h in self.confirmed:
                return
            if self.tick_no >= deadline:
                ls = [(nd.id, nd.core.role, nd.core.term, nd.core.commit, nd.core.log.last_index(),
                       [m.id + ("" if m.voter else "(l)") for m in nd.core.members])
                      for nd in self.nodes if nd.alive]
                self.fail(f"liveness: no write and read completed within {budget} ticks "
                          f"of healing (nodes: {ls})")
            self.step()

    def check_converged(self) -> None:
        """Every member applies the same log to the same state, with every acknowledged write, and
        every learner is promoted, within a bound."""
        longest = max(nd.core.log.last_index() for nd in self.nodes if nd.alive)
        budget = self.SETTLE_TICKS + 4 * longest // self.cfg.max_batch
        deadline = self.tick_no + budget
        # A seed whose chaos committed no configuration change, or installed no snapshot, gets
        # one admin change in the healed cluster. Without an install so far, clients first write
        # until the leader has compacted its log behind a snapshot, and the change adds a spare,
        # which then needs a snapshot to catch up.
        late = bool(self.member_rate) and (self.stats.config_commits == 0 or self.stats.installs == 0)
        want_install = self.stats.installs == 0 and any(
            not nd.retired and not nd.stopped and not nd.started for nd in self.nodes[self.n:])
        give_up = self.tick_no + budget // 2
        while True:
            ld = self.current_leader()
            if late and self.tick_no >= give_up:
                late = False
            if late and ld is not None:
                if want_install and ld.core.log.base_index == 0:
                    if len(ld.props) < self.client_window:
                        self.propose(ld, 3)
                    self.admin_snapshot(ld)
                elif self.change_membership(ld, p_add=1.0 if want_install else 0.7):
                    late = False
                    continue
            if ld is not None:
                c = ld.core.commit
                mem = [self.nodes[self.index[m.id]] for m in ld.core.members]
                if (not late and c == ld.core.log.last_index() and ld.core.can_change_config()
                        # caught-up learners get promoted (but those added to stay learners)
                        and all(m.voter or m.id in self.stay_ids for m in ld.core.members)
                        and all(nd.alive and nd.applied == c for nd in mem)):
                    break
            if self.tick_no >= deadline:
                ls = [(nd.id, nd.core.role, nd.core.term, nd.core.commit, nd.applied, nd.core.log.last_index())
                      for nd in self.nodes if nd.alive]
                self.fail(f"nodes did not converge within {budget} ticks of liveness: {ls}")
            self.step()
        self.check_pairwise()
        if c != len(self.committed):
            self.fail(f"the leader's commit {c} is not the committed history's end {len(self.committed)}")
        ref = {}
        for e in self.committed:
            if e.kind == EntryKind.COMMAND:
                k, v = self.ops[e.data]
                ref[k] = v
        for nd in mem:
            if nd.kv != ref:
                self.fail(f"{nd.id}'s state differs from the committed history's")
        for idx, data in self.acked:
            if idx > len(self.committed) or self.committed[idx - 1].data != data:
                self.fail(f"acknowledged write at index {idx} is lost")


AS_IS_FLAGS = {"store": "STRICT_STORE"}


def run_seed(seed: int, nodes: Optional[int] = None, as_is: tuple = (), **kw: Any) -> Stats:
    """Run one seed; ``as_is`` names actor behaviours to model as the code has them (AS_IS_FLAGS)."""
    cls = Sim
    if as_is:
        cls = type("SimAsIs", (Sim,), {AS_IS_FLAGS[a]: True for a in as_is})
    return cls(seed, nodes, **kw).run()


def main(argv: Optional[list] = None) -> int:
    ap = argparse.ArgumentParser(description="Replay one seed of the Raft simulation.")
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--nodes", type=int, default=None, help="3 or 5 (default: 3; the test suite uses 5 for odd seeds)")
    ap.add_argument("--chaos-ticks", type=int, default=None)
    ap.add_argument("-v", "--verbose", action="store_true", help="print a trace of every event")
    ap.add_argument("--as-is", default="", metavar="LIST",
                    help="model these actor behaviours as the code has them, not fixed: a comma-separated "
                         f"subset of {', '.join(AS_IS_FLAGS)} (see the module docstring)")
    args = ap.parse_args(argv)
    nodes = args.nodes if args.nodes is not None else 3
    as_is = tuple(a for a in args.as_is.split(",") if a)
    for a in as_is:
        if a not in AS_IS_FLAGS:
            ap.error(f"--as-is: unknown {a!r} (one of {', '.join(AS_IS_FLAGS)})")
    t0 = time.perf_counter()
    try:
        st = run_seed(args.seed, nodes, as_is, verbose=args.verbose, chaos_ticks=args.chaos_ticks)
    except SimFailure as e:
        print(f"FAIL: {e}")
        return 1
    print(f"ok in {time.perf_counter() - t0:.3f}s: {st}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
