"""A deterministic simulation of a Raft cluster over the pure core (docs/architecture.md section 3).

This module is the runner: the :class:`Sim` scenario (faults, clients, the event loop, the
end-of-run checks' driver) and the replay CLI. The parts it is made of live beside it:
tests/sim/model.py (per-node state, statistics), network.py, disk.py (the LogManager and
LogStore), node_model.py (the shell around each node's core: Ready execution, FSM, snapshots'
bytes, boot and crashes) and invariants.py (the safety, liveness and convergence checks).

N nodes (3 or 5, plus a few spares that may join) live in one thread. Everything random comes
from one ``random.Random(seed)`` (each core gets its own Random derived from the seed), so a seed
replays exactly::

    python -m tests.sim.cluster --seed 17 [--nodes 5] [-v]

Per node the model holds a :class:`RaftCore`, a *disk* with only what was synced (term, vote,
the log after its base (index, term), commit, and the newest durable snapshot) and an FSM (a
dict KV, the applied index and term, the configuration of the last applied CONFIG entry). Every
node starts like a bootstrapped kvnode: entry 1, a CONFIG entry of term 1 naming the initial
members, is on its disk. A Ready is executed the way the role actors execute it
(actors/role.py): ``send`` goes to the network at once, and so does ``readmission`` (the role actor
of a node without --secure sends it as a peer message); ``persist`` and ``send_after_persist``
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
snapshot is saved (durable, after a delay; one node's received snapshots complete in the order
they arrived, as the Snapshotter adopts them one after another), the FSM restored from it and
``install_snapshot`` called, as role.py does.

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
Some restarts are on an empty data directory (a new incarnation that joins through the leader,
``NodeModel.maybe_wipe``), and the leader's entry admitting it sometimes reaches it alone, so that a
leader of a later term lacks it and the node must ask again (``maybe_strand_admission``,
actors/readmission.py). Clocks tick with a small per-node skew. Clients (with a bounded window of writes in flight)
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
resume (first handling what their pause held, as at a planned resumption) and the network becomes
reliable: a leader must be elected and a new write and a read must complete within a bound
(liveness; the bound grows with the uncommitted backlog). A seed whose chaos committed no
membership change or installed no snapshot then gets one admin change (preferably a spare joining
behind the leader's compaction point). Finally every member must apply the same log to the same
state, holding every acknowledged write, with every learner promoted (but those added to stay
learners), within a bound that grows with the longest log (as the late writes lengthen it) over the
leader's batch size.

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
from typing import Any, Optional

from raftkv.wire.messages import Command, Entry, EntryKind, Member, encode_record

from .disk import DiskModel
from .invariants import Invariants
from . import txn_workload
from .model import (DISK, FOLLOWER, LEADER, MSG, RESUME, SNAPRECV, SNAPSAVE, STOP, Node, SimFailure, Stats, default_nodes,
                    replay_command)
from .network import NetworkModel
from .node_model import NodeModel

__all__ = ["Sim", "SimFailure", "Stats", "default_nodes", "replay_command", "run_seed", "main"]


class Sim(NetworkModel, DiskModel, NodeModel, Invariants):
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

        # Disk replacement (NodeModel.maybe_wipe): its own random stream, so that the other faults
        # of a seed are the same whether it wipes or not.
        self.wipe_rng = random.Random(f"wipe:{seed}")
        self.wipe_rate = self.wipe_rng.choice((0.0, 0.3, 0.6))  # of a member's restarts
        self.joiners: list = []  # wiped nodes not re-admitted yet
        # An admission that reaches the wiped member alone (NodeModel.maybe_strand_admission).
        self.strand_rng = random.Random(f"strand:{seed}")
        self.strand_rate = 1.0  # of the admissions of a new incarnation eligible (NodeModel.maybe_strand_admission)
        self.stranded = False
        for k, v in (overrides or {}).items():  # for experiments: fix a parameter
            if hasattr(self.cfg, k):
                setattr(self.cfg, k, v)
            else:
                assert hasattr(self, k), k
                setattr(self, k, v)
        self.nodes = [Node(i) for i in range(self.n + self.spares)]
        self.index = {nd.id: nd.i for nd in self.nodes}
        self.members = [Member(nd.id, nd.addr, incarnation=nd.inc) for nd in self.nodes[:self.n]]
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
        self.deferred: dict = {}  # seq of a deferred event -> the resume time it was queued for
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
        self.ops: dict = {}  # command data -> (key, value) of a put, or the Txn of a transaction
        self.txn_rng = random.Random(seed ^ 0x74786E)  # tests/sim/txn_workload.py
        self.op_no = 0
        self.acked: list = []  # (index, data)
        self.reads: dict = {}  # handle -> (node index, committed at registration, acked index, at a follower)
        self.read_no = 0
        self.max_acked = 0
        self.confirmed: set = set()  # handles of confirmed reads
        self.probes: set = set()  # data of the writes proposed to check liveness
        self.probes_acked = 0


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

    def committed_member_ids(self) -> set:
        """Ids of the newest committed configuration's members."""
        return {m.id for m in self.config_as_of(len(self.committed))}

    def change_membership(self, ld: Node, p_add: Optional[float] = None) -> bool:
        """An admin asks the leader to add a spare or remove a member (kvclient add-node/remove-node);
        the leader's core queues the change and proposes it (actors/membership.py)."""
        rng = self.rng
        self.flush(ld)
        core = ld.core
        if not ld.alive or core.role != LEADER or not core.can_change_config() or core.changes.pending:
            return False
        if self.awaiting_readmission():
            return False  # no admin change while a wiped member awaits re-admission (see maybe_wipe)
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
            change = self.cm.MembershipChange(Member(x.id, x.addr, "", "", not stay, x.inc))
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

    def propose(self, nd: Node, count: int) -> list:
        items = []
        for _ in range(count):
            self.op_no += 1
            key, value = f"k{self.rng.randrange(8)}", b"v%d" % self.op_no
            if self.txn_rng.random() < txn_workload.TXN_SHARE:  # its own stream: the schedule stays the same
                txn = txn_workload.make_txn(self.txn_rng, nd.kv)
                data = encode_record(Command("txn", "", client_id="sim", seq=self.op_no, txn=txn))
                self.ops[data] = txn
                self.stats.txns += 1
            else:
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
                nd = self.nodes[a]
                # An operator decommissions a removed server, not one admitted again since (a
                # wiped node's pending join: seed 956665 of the lease simulation).
                if nd.id not in self.committed_member_ids():
                    self.stop_node(nd, "operator")
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
        self.watch_admissions()
        if self.joiners:
            self.drive_joins()
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
        return self.finish()

    def finish(self) -> Stats:
        """After the chaos: heal, then the end-of-run checks (liveness, convergence)."""
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
        committed = self.committed_member_ids()
        for nd in self.nodes:
            if nd.started and not nd.stopped and nd.id in self.ever_member and nd.id not in committed:
                self.stop_node(nd, "operator")  # removed: decommissioned
        self.resume_early({nd.i for nd in self.nodes if nd.paused})
        for nd in self.nodes:
            if nd.paused:
                nd.paused = False
                nd.resume_at = self.now
                self.catch_up_clock(nd)
            if nd.started and not nd.stopped and not nd.alive:
                self.restart(nd)
        if self.verbose:
            self.trace("!!! healed: no partitions, every node up, reliable network")

    def resume_early(self, paused: set) -> None:
        """The events queued for these paused nodes' planned resumption come now, in the same
        order and spacing: a SIGCONTed process first reads what its sockets held during the pause,
        before anything sent after (seed 1123580 had a healed node handle newer messages, and
        complete a newer snapshot's save, before the ones its pause held)."""
        if not paused:
            return
        moved = []
        for ev in self.events:
            t, seq, kind, a, b, c = ev
            base = self.deferred.get(seq)
            if base is not None and (b if kind == MSG else a) in paused:
                ev = (self.now + (t - base), seq, kind, a, b, c)
            moved.append(ev)
        heapq.heapify(moved)
        self.events[:] = moved

    def backlog_ticks(self) -> int:
        """Extra time to replicate what is not committed yet, one batch per round trip or so."""
        longest = max((nd.core.log.last_index() if nd.alive else nd.disk.last_index()) for nd in self.active())
        return 4 * max(0, longest - len(self.committed)) // self.cfg.max_batch


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
