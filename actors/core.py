"""Raft's decisions as plain, deterministic code (docs/architecture.md section 3).

:class:`RaftCore` holds one node's persistent and volatile state. Every input goes through one
of a few entry points: :meth:`step` (a peer message), :meth:`tick` (one unit of logical time),
:meth:`propose` (client writes), :meth:`read_index` (client reads), :meth:`on_persisted` (the log
manager synced up to an index) and the admin calls. Outputs accumulate in a :class:`Ready`
that the caller takes with :meth:`take_ready`, persists, and sends, as etcd-io/raft does:

* ``send`` may leave at once;
* ``send_after_persist`` (votes, append acknowledgements) may leave only after everything in
  ``persist`` and before it is synced ("persistence before speech");
* ``committed`` entries are known committed and go to the FSM in order.

No threads, sockets, wall clock or randomness other than the injected ``rng``: the Pykka actors
and the simulation (tests/sim) drive the same code.
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

from raftkv.wire.messages import (AppendEntries, AppendReply, Configuration, Entry, EntryKind, Heartbeat,
                           HeartbeatReply, InstallSnapshot, InstallSnapshotReply, Member, ReadIndexReply,
                           ReadIndexRequest, RequestVote, TimeoutNow, VoteReply, decode_record, encode_record)
from raftkv.records import INDEX_LIMIT

from .membership import (ChangeOrigin, MembershipChange, MembershipQueue, has_promotable_learners,
                         record_incarnations)
from .config_guard import is_secure, keyless_config
from .memlog import MemLog
from .read_rounds import ReadRoundPeers
from .readmission import readmission_request
from .replacement_guard import MemberLive, live_refusal
from .snapshot_transfer import OutgoingStream, SendChunk, SnapshotRef, StoreChunk, receive_decision

log = logging.getLogger(__name__)

# Messages a node answers only as its own incarnation: they carry the addressee's incarnation as
# the sender's configuration knows it (``to_incarnation``), stamped in take_ready. Replies carry
# the sender's own (``from_incarnation``), so that a leader never counts an acknowledgement of
# another incarnation of a member (a reply the replaced one sent before it died).
_ADDRESSED = frozenset({RequestVote, AppendEntries, Heartbeat, TimeoutNow, InstallSnapshot, ReadIndexRequest})
_LEADER_MESSAGES = frozenset({AppendEntries, Heartbeat, InstallSnapshot})  # sent only by a leader of their term
_REPLIES = frozenset({VoteReply, AppendReply, HeartbeatReply, InstallSnapshotReply, ReadIndexReply})
_LEARNER_REPLIES = frozenset({AppendReply, HeartbeatReply, InstallSnapshotReply})  # see RaftCore._outsider
# At most one "addressed as another incarnation" WARNING per this many ticks (10 s at 10 ms).
MISADDRESSED_WARN_TICKS = 1000

FOLLOWER = "follower"
PRE_CANDIDATE = "pre_candidate"
CANDIDATE = "candidate"
LEADER = "leader"

# Replication state of one follower as seen by the leader (etcd-io/raft's Progress states).
PROBE = "probe"  # one append in flight until the follower's position is known
REPLICATE = "replicate"  # pipelined: appends sent optimistically, bounded by max_inflight
SNAPSHOT = "snapshot"  # the entries it needs are compacted away: a snapshot is being streamed


class NotLeader(Exception):
    """The core is not the leader (or is transferring leadership away)."""


@dataclass
class CoreConfig:
    """Timing in ticks and replication limits. ``election_ticks`` is randomised in [min, max).

    Not validated here: a node builds it with ``raftkv.config.core_config`` from a validated
    ``RaftTuning`` (the one conversion from milliseconds); tests and the simulation set ticks directly.
    """

    election_ticks_min: int = 30
    election_ticks_max: int = 60
    heartbeat_ticks: int = 5
    max_batch: int = 512
    max_inflight: int = 64
    pre_vote: bool = True
    check_quorum: bool = True
    # Leaders serve lease reads (docs/architecture.md 5): a follower then never cuts the leader's lease short
    # (see peer_unreachable).
    lease_reads: bool = False
    # Snapshot streams (actors/snapshot_transfer.py): resend a chunk unanswered this long; give
    # up on a follower that made no progress this long (the core starts over when it needs one).
    snapshot_resend_ticks: int = 100
    snapshot_give_up_ticks: int = 3000


# A commit index alone is written at most this many ticks late (see PersistBatch.commit_only).
COMMIT_FLUSH_TICKS = 10
# How many terms ahead of ours a candidate our configuration does not know yet may be and still
# get our vote (RaftCore._maybe_unknown_voter): honest terms rise at most one per election
# timeout, so this is a bound no honest gap reaches, and a forged request cannot raise our term
# by more.
UNKNOWN_CANDIDATE_MAX_JUMP = 1024


@dataclass
class PersistBatch:
    """What must reach the disk: log changes from ``first`` on, and the hard state.

    ``truncate_from`` (if set) deletes that index and everything after it before ``entries`` are
    written at ``first``. Batches merge (group commit): see :meth:`merge`.
    """

    term: Optional[int] = None
    vote: Any = None  # node id, or None; meaningful only when term is not None
    truncate_from: Optional[int] = None
    first: int = 0
    entries: list = field(default_factory=list)
    commit: Optional[int] = None
    compact_to: Optional[tuple] = None  # (index, term): drop the log up to here (a snapshot covers it)

    def empty(self) -> bool:
        return (self.term is None and self.truncate_from is None and not self.entries and self.commit is None
                and self.compact_to is None)

    def commit_only(self) -> bool:
        """Nothing but a commit index: needs no sync, and may wait for the next batch (see
        LogWriter._write and RoleActor.flush_persist)."""
        return (self.commit is not None and self.term is None and self.truncate_from is None and not self.entries
                and self.compact_to is None)

    def merge(self, other: "PersistBatch") -> None:
        """Fold a later batch into this one, so both become one synced write."""
        if other.term is not None:
            self.term, self.vote = other.term, other.vote
        if other.commit is not None:
            self.commit = other.commit if self.commit is None else max(self.commit, other.commit)
        if other.compact_to is not None and (self.compact_to is None or other.compact_to[0] > self.compact_to[0]):
            self.compact_to = other.compact_to
        if other.truncate_from is not None:
            self.truncate_from = (other.truncate_from if self.truncate_from is None
                                  else min(self.truncate_from, other.truncate_from))
        if other.entries:
            if not self.entries:
                self.first, self.entries = other.first, list(other.entries)
            elif other.first <= self.first:
                self.first, self.entries = other.first, list(other.entries)
            else:
                del self.entries[other.first - self.first:]
                self.entries.extend(other.entries)
        elif other.truncate_from is not None and self.entries:
            del self.entries[max(other.truncate_from - self.first, 0):]


@dataclass
class Ready:
    """Outputs accumulated since the last :meth:`RaftCore.take_ready`."""

    persist: PersistBatch = field(default_factory=PersistBatch)
    send: list = field(default_factory=list)  # (to, msg)
    send_after_persist: list = field(default_factory=list)  # (to, msg)
    committed: list = field(default_factory=list)  # (index, Entry), in order
    reads: list = field(default_factory=list)  # (read_index, handles): confirmed, serve once applied
    reads_failed: list = field(default_factory=list)  # handles: leadership lost before confirmation
    role_changed: bool = False
    chunks_to_send: list = field(default_factory=list)  # SendChunk: snapshot bytes for a follower
    chunks_to_store: list = field(default_factory=list)  # StoreChunk: accepted snapshot bytes from the leader
    config_proposed: list = field(default_factory=list)  # (MembershipChange, index) proposed by this leader
    config_dropped: list = field(default_factory=list)  # MembershipChange never proposed: leadership lost
    removed: bool = False  # this node's removal is committed: record it and stop (once)
    # (leader, JoinRequest): ask that leader to admit this incarnation again (actors/readmission.py).
    # Apart from ``send`` because a secure node sends it another way (actors/secure_readmission.py),
    # and finding it among every outgoing message would cost a type check per message.
    readmission: Optional[tuple] = None

    def empty(self) -> bool:
        return (self.persist.empty() and not self.send and not self.send_after_persist
                and not self.committed and not self.reads and not self.reads_failed and not self.role_changed
                and not self.chunks_to_send and not self.chunks_to_store and not self.config_proposed
                and not self.config_dropped and not self.removed and self.readmission is None)


class RemoteRead:
    """A read handle standing for a follower's ReadIndexRequest (thesis 6.4.1)."""

    __slots__ = ("peer", "req_id")

    def __init__(self, peer: str, req_id: int) -> None:
        self.peer = peer
        self.req_id = req_id


class Progress:
    """The leader's view of one follower."""

    __slots__ = ("next", "match", "state", "inflight", "probe_sent", "active", "acked_round", "sent_commit", "inc",
                 "heard", "replaced")

    def __init__(self, next_index: int, inc: str = "", heard: int = 0) -> None:
        self.inc = inc  # the follower's incarnation this progress is about: a new one starts over
        self.next = next_index
        self.match = 0
        self.state = PROBE
        self.inflight: list[int] = []  # last index of each append in flight (REPLICATE)
        self.probe_sent = False
        self.active = False  # heard from since the last check-quorum round
        self.acked_round = 0
        self.sent_commit = 0
        # The tick of the last reply from this incarnation (from creation: a new leader counts
        # every member as just heard): whether it is live (actors/replacement_guard.py).
        self.heard = heard
        # A join of a new incarnation of this member passed the replacement guard: its data
        # directory is gone, so what it acknowledged no longer counts for commit (RaftCore.join).
        self.replaced = False

    def __repr__(self) -> str:
        return f"Progress(next={self.next}, match={self.match}, {self.state})"


def encode_config(members: list) -> bytes:
    return encode_record(Configuration(list(members)))


def decode_config(data: bytes) -> list:
    return list(decode_record(data, Configuration).members)


class RaftCore:
    """One node's Raft state machine. See the module docstring for the calling convention."""

    def __init__(self, node_id: str, config: CoreConfig, *, term: int = 0, vote: Optional[str] = None,
                 log: Optional[MemLog] = None, members: Optional[list] = None, commit: int = 0,
                 rng: Optional[random.Random] = None, incarnation: str = "") -> None:
        self.id = node_id
        # This node's data directory's random id ("" = unchecked). Its identity is id plus this:
        # it answers only messages addressed to it, and counts as a member only where the
        # configuration lists it with this incarnation (or an unknown one: a legacy record).
        self.incarnation = incarnation
        self._incs_of: tuple = (None, {})  # (configuration, {id: incarnation}), for stamping
        self._index_of: tuple = (None, {}, [])  # see _index
        self.misaddressed_warned_at: Optional[int] = None
        self.readmission_asked_at: Optional[int] = None  # see _ask_readmission
        self.keyless_logged_at: Optional[int] = None  # the last "configuration without keys" ERROR
        self._secure_of: tuple = (None, False)  # (configuration, whether it carries CURVE keys)
        # A leader's record of the incarnations members without one in the configuration reply
        # with (a whole-cluster bootstrap knows none but its own): proposed into the configuration.
        self.learned_incs: dict = {}
        self.cfg = config
        self.rng = rng or random.Random()
        self.term = term
        self.vote = vote
        self.log = log or MemLog()
        # The configuration in force before any CONFIG entry still in the log (bootstrap or snapshot).
        self.base_members: list = list(members or [])
        self.config_log: list = []  # (index, members) for each CONFIG entry in the log, ascending
        for i, e in enumerate(self.log.entries, start=self.log.first_index()):
            if e.kind == EntryKind.CONFIG:
                self.config_log.append((i, decode_config(e.data)))
        self.commit = max(commit, self.log.base_index)
        # Entries after the snapshot are handed out again at start: the FSM is rebuilt from them.
        self.handed = self.log.base_index
        self.persisted = self.log.last_index()  # everything in the log at start came from disk
        self.role = FOLLOWER
        self.leader_id: Optional[str] = None
        self.elapsed = 0
        self.timeout = self._random_timeout()
        self.hb_elapsed = 0
        self.votes: dict[str, bool] = {}
        self.progress: dict[str, Progress] = {}
        self.round = 0
        self.pending_reads: list = []  # (read_index, round, handles)
        self.reads_awaiting_noop: list = []  # handles registered before this term's first commit
        self.transferee: Optional[str] = None
        self.transfer_elapsed = 0
        # Set when the FSM cannot be rebuilt from the local snapshot and log (a corrupt newest
        # snapshot whose log is compacted): ask the leader for a snapshot instead of applying a gap.
        self.want_snapshot = False
        self.now = 0  # ticks since start: the clock of lease reads
        self.round_started: dict[int, int] = {}  # heartbeat round -> tick it started (recent ones)
        self.confirmed_round = 0  # the newest round a majority has acknowledged
        self.read_peers = ReadRoundPeers()  # the followers a read round goes to (actors/read_rounds.py)
        self.lease_until = 0  # a leader may serve lease reads while now < lease_until
        # A follower's linearizable reads forwarded to the leader (thesis 6.4.1): request id ->
        # (deadline tick, handles). Ids are never reused in the core's lifetime, so a late reply
        # to an earlier request can never answer a newer one. Nor across a restart: ids start at
        # a random point of each boot (sim seed 6494: a reply still in flight to the previous
        # boot's request 1 answered the new boot's request 1 with a stale read index), drawn
        # without consuming the core's rng, so simulated schedules are unchanged.
        self.forwarded: dict = {}
        self.read_ids = random.Random(hash(self.rng.getstate()[1])).getrandbits(62)
        self.changes = MembershipQueue()  # the leader's queued membership changes
        self._learners_of: tuple = (None, False)  # (configuration, whether a learner awaits promotion)
        # Snapshot streams: the newest durable local snapshot, the leader's streams, the follower's
        # receiving stream (actors/snapshot_transfer.py).
        self.snapshot: Optional[SnapshotRef] = None
        self.snap_out: dict = {}  # peer -> OutgoingStream
        self.snap_in = None  # IncomingStream or None
        # The removal rule: only a committed configuration naming us makes us a member (an
        # uncommitted one can be truncated), and only such a member can later be removed.
        self.was_member = self.member(self.id) is not None and self.config_index() <= self.commit
        self.removed = False
        # A learner that refused a candidate because its own log is more up-to-date, since it last
        # heard a leader: it may hold the only log a quorum can elect (see _may_campaign).
        self.needed_learner = False
        self.ready = Ready()

    # ------------------------------------------------------------------ membership helpers

    @property
    def members(self) -> list:
        """The latest configuration in the log (effective when appended, thesis 4.1)."""
        return self.config_log[-1][1] if self.config_log else self.base_members

    def member(self, node_id: str) -> Optional[Member]:
        return self._index()[1].get(node_id)

    def voters(self) -> list:
        return list(self._index()[2])

    def member_ids(self) -> Mapping[str, Member]:
        """The members by id (read-only: for ``in`` tests and lookups by callers)."""
        return self._index()[1]

    def _index(self) -> tuple:
        # (configuration, {id: first member of that id}, [voter ids]), cached per configuration
        # object (configurations are replaced, never changed in place): member() and voters()
        # run several times for every write.
        members = self.members
        idx = self._index_of
        if idx[0] is not members:
            by_id: dict = {}
            for m in members:
                by_id.setdefault(m.id, m)
            idx = self._index_of = (members, by_id, [m.id for m in members if m.voter])
        return idx

    def promotable(self) -> bool:
        m = self.member(self.id)
        return m is not None and m.voter and self.is_me(m)

    def is_me(self, m: Member) -> bool:
        """Whether the record ``m`` (of our id) stands for this incarnation of us: a record of
        another incarnation is the member our replaced data directory was, never us."""
        return not m.incarnation or not self.incarnation or m.incarnation == self.incarnation

    def quorum(self) -> int:
        return len(self._index()[2]) // 2 + 1

    def config_index(self) -> int:
        return self.config_log[-1][0] if self.config_log else 0

    # ------------------------------------------------------------------ outputs

    def take_ready(self) -> Ready:
        """Hand over everything produced since the last call."""
        self._advance()
        self._collect_committed()
        r, self.ready = self.ready, Ready()
        if r.send:
            self._stamp(r.send)
        if r.send_after_persist:
            self._stamp(r.send_after_persist)
        return r

    def _stamp(self, sends: list) -> None:
        """Address each request to the incarnation our configuration knows for its addressee, and
        sign each reply with our own. Every message object here is built for one addressee."""
        members = self.members
        if members is not self._incs_of[0]:
            self._incs_of = (members, {m.id: m.incarnation for m in members})
        incs = self._incs_of[1]
        me = self.incarnation
        for to, msg in sends:
            t = type(msg)
            if t in _ADDRESSED:
                msg.to_incarnation = incs.get(to, "")
            elif t in _REPLIES:
                msg.from_incarnation = me

    def has_ready(self) -> bool:
        self._advance()
        return not self.ready.empty() or (self.commit > self.handed and not self.want_snapshot)

    def _advance(self) -> None:
        """Decisions taken on the state reached after the inputs: the next membership change,
        and whether our own removal is now committed."""
        if self.role == LEADER:
            self._advance_membership()
        self._check_removed()

    def _send(self, to: str, msg: Any) -> None:
        self.ready.send.append((to, msg))

    def _persist_hard_state(self) -> None:
        self.ready.persist.merge(PersistBatch(term=self.term, vote=self.vote))

    def _collect_committed(self) -> None:
        if self.commit > self.handed and not self.want_snapshot:
            lo = self.handed + 1
            ents = self.log.slice(lo, self.commit + 1)
            self.ready.committed.extend(zip(range(lo, lo + len(ents)), ents))
            self.handed = self.commit
            self.ready.persist.merge(PersistBatch(commit=self.commit))

    # ------------------------------------------------------------------ role changes

    def _random_timeout(self) -> int:
        return self.rng.randrange(self.cfg.election_ticks_min, self.cfg.election_ticks_max)

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = None
            self._persist_hard_state()
        self.leader_id = None
        self.elapsed = 0
        self.timeout = self._random_timeout()
        self.votes = {}
        self.transferee = None
        self.lease_until = 0
        self._fail_reads()
        self._fail_forwarded_reads()
        self.snap_out = {}
        if self.changes.pending:
            self.ready.config_dropped.extend(self.changes.take_all())

    def become_follower(self, term: int, leader: Optional[str]) -> None:
        changed = self.role != FOLLOWER
        self._reset(term)
        self.role = FOLLOWER
        self.leader_id = leader
        self.progress = {}
        self.ready.role_changed |= changed

    def _fail_reads(self) -> None:
        for _, _, handles in self.pending_reads:
            self._reads_failed(handles)
        self._reads_failed(self.reads_awaiting_noop)
        self.pending_reads = []
        self.reads_awaiting_noop = []

    def _reads_done(self, index: int, handles: list) -> None:
        """Confirmed reads: a follower's (RemoteRead) are answered with the read index, the
        others go out in Ready.reads."""
        remote = [h for h in handles if type(h) is RemoteRead]
        if remote:
            for h in remote:
                self._send(h.peer, ReadIndexReply(self.term, h.req_id, index, True))
            handles = [h for h in handles if type(h) is not RemoteRead]
            if not handles:
                return
        self.ready.reads.append((index, handles))

    def _reads_failed(self, handles: list) -> None:
        for h in handles:
            if type(h) is RemoteRead:
                self._send(h.peer, ReadIndexReply(self.term, h.req_id, 0, False))
            else:
                self.ready.reads_failed.append(h)

    def _fail_forwarded_reads(self) -> None:
        # Forwarded reads belong to one follower term: a reply of an older term never arrives
        # (step drops it), so their clients are told to retry now instead of at the deadline.
        if self.forwarded:
            for _, handles in self.forwarded.values():
                self.ready.reads_failed.extend(handles)
            self.forwarded = {}

    def _become_pre_candidate(self) -> None:
        # Pre-vote (thesis 9.6): ask whether we could win before disturbing anyone's term.
        self.role = PRE_CANDIDATE
        self.ready.role_changed = True
        self.leader_id = None
        self._fail_forwarded_reads()
        self.elapsed = 0
        self.timeout = self._random_timeout()
        self.votes = {self.id: True}
        for v in self.voters():
            if v != self.id:
                self._send(v, RequestVote(self.term + 1, self.log.last_index(), self.log.last_term(), pre_vote=True))
        self._tally()

    def _become_candidate(self, transfer: bool = False) -> None:
        self._reset(self.term + 1)
        self.vote = self.id
        self._persist_hard_state()
        self.role = CANDIDATE
        self.ready.role_changed = True
        self.votes = {self.id: True}
        for v in self.voters():
            if v != self.id:
                # after persist: our own vote must be durable before we ask for others'
                self.ready.send_after_persist.append(
                    (v, RequestVote(self.term, self.log.last_index(), self.log.last_term(), transfer=transfer)))
        self._tally()

    def _become_leader(self) -> None:
        self.role = LEADER
        self.ready.role_changed = True
        self.leader_id = self.id
        self.elapsed = 0
        self.hb_elapsed = 0
        self.needed_learner = False
        self.progress = {m.id: Progress(self.log.last_index() + 1, m.incarnation, self.now) for m in self.members
                         if m.id != self.id}
        self.confirmed_round = self.round  # rounds of an earlier term confirm nothing now
        self.read_peers.reset()
        # A no-op of our own term lets us commit (and so serve reads for) entries of earlier terms.
        self._append([Entry(self.term, EntryKind.NOOP, b"")])
        self._broadcast_append()

    def campaign(self, transfer: bool = False) -> None:
        """Start an election (through pre-vote unless disabled or asked by TimeoutNow)."""
        if not self._may_campaign() or self.role == LEADER:
            return
        if self.term + 1 >= INDEX_LIMIT:
            # No peer decodes a term of 2^63 or more: campaigning would only crash or be refused.
            log.critical("%s: term %d is the largest there is: refusing to campaign (this cluster's terms "
                         "are exhausted; its data must be restored into a new cluster)", self.id, self.term)
            self.elapsed = 0
            return
        if self.cfg.pre_vote and not transfer:
            self._become_pre_candidate()
        else:
            self._become_candidate(transfer)

    def _may_campaign(self) -> bool:
        """A voter campaigns; so does a voter whose removal is pending (_removal_pending), and a
        learner of this incarnation that is needed (needed_learner): its log has entries a
        candidate it refused lacks, and the voters that hold them may all be gone (a leader that
        replicated them to it, then lost its disk), so no voter may ever win again. Election
        Safety holds for any candidate: it still needs a quorum of its configuration's voters,
        its own vote uncounted when it is none, and a learner leads only until an entry of its
        term commits (_maybe_commit), which brings the voters' logs up to its own."""
        if self.promotable() or self._removal_pending():
            return True
        m = self.member(self.id)
        return self.needed_learner and m is not None and not m.voter and self.is_me(m)

    def _removal_pending(self) -> bool:
        """Whether we are a voter whose removal our log holds but does not hold committed. Such a
        server "might still be needed until the C_new entry is committed" (Raft dissertation 4.2.2):
        a leader that logged its own removal and crashed may hold the only log a quorum of C_new
        can elect (the others lag it, and refuse each other). It campaigns among C_new's voters
        without counting its own vote (_tally counts voters only), leads only until its removal
        commits (_maybe_commit steps it down), and a committed removal stops it (_check_removed)."""
        if self.member(self.id) is not None or self.config_index() <= self.commit:
            return False
        prev = self.config_log[-2][1] if len(self.config_log) >= 2 else self.base_members
        return any(m.id == self.id and m.voter and self.is_me(m) for m in prev)

    def _tally(self) -> None:
        granted = sum(1 for v in self.voters() if self.votes.get(v) is True)
        rejected = sum(1 for v in self.voters() if self.votes.get(v) is False)
        if granted >= self.quorum():
            if self.role == PRE_CANDIDATE:
                self._become_candidate()
            elif self.role == CANDIDATE:
                self._become_leader()
        elif rejected >= self.quorum():
            self.become_follower(self.term, None)

    # ------------------------------------------------------------------ time

    def tick(self) -> None:
        """Advance logical time by one tick."""
        self.now += 1
        self.elapsed += 1
        if self.role == LEADER:
            self.hb_elapsed += 1
            if self.hb_elapsed >= self.cfg.heartbeat_ticks:
                self.hb_elapsed = 0
                self._broadcast_heartbeat()
            else:
                self._send_commit_hints()
                if (self.pending_reads and self.confirmed_round < self.round
                        and self.read_peers.overdue(self.now, self.round_started.get(self.round))):
                    self._broadcast_heartbeat()  # the chosen followers are slow: ask every one
            if self.transferee is not None:
                self.transfer_elapsed += 1
                if self.transfer_elapsed >= self.cfg.election_ticks_min:
                    self.transferee = None  # the target did not take over in time: resume
            if self.elapsed >= self.cfg.election_ticks_min:
                self.elapsed = 0
                if self.cfg.check_quorum and not self._quorum_active():
                    self.become_follower(self.term, None)
                    return
                for pr in self.progress.values():
                    pr.active = False
            if self.snap_out:
                self._poll_snapshot_streams()
        else:
            if self.forwarded:
                self._expire_forwarded_reads()
            if self.elapsed >= self.timeout:
                self.elapsed = 0
                if self.role == FOLLOWER and self.leader_id is not None and not self._may_campaign():
                    self._leader_silent()
                self.campaign()

    def _leader_silent(self) -> None:
        """A node that may not campaign (a learner, a voter of another incarnation) heard no
        leader for an election timeout: it has none (Figure 2's rule for followers, short of
        campaigning). Otherwise it would keep the last leader for good, and with it the lease of
        step's vote check: its elapsed time restarts every timeout, so it refuses every vote that
        arrives within the minimum election timeout of each restart; a pre-vote and the vote that
        follows it a sync later rarely both miss that window (sim seed 14260: the only other
        voters a candidate could win with were a wiped node and a learner in its own log, promoted
        in entries it lacked: no leader, ever)."""
        self.leader_id = None

    def _expire_forwarded_reads(self) -> None:
        # No answer from the leader: let the clients go to the leader (or elsewhere) themselves.
        late = [i for i, (deadline, _) in self.forwarded.items() if deadline <= self.now]
        for i in late:
            self.ready.reads_failed.extend(self.forwarded.pop(i)[1])

    def peer_unreachable(self, peer: str) -> None:
        """The transport saw its connection to ``peer`` drop. A crashed process's kernel closes its
        sockets at once, so for our leader this is a strong hint: stop waiting out the election
        timeout's minimum (the leader's stickiness), campaign after the random rest of it, and
        grant votes meanwhile. Only a hint: a leader that is alive heartbeats again within a
        heartbeat interval and nothing happens (pre-vote keeps a stray candidate from raising
        terms). Ignored with lease reads: their safety rests on followers waiting out the minimum."""
        if (self.role == FOLLOWER and peer == self.leader_id and not self.cfg.lease_reads
                and self.elapsed < self.cfg.election_ticks_min):
            self.elapsed = self.cfg.election_ticks_min

    def _quorum_active(self) -> bool:
        n = sum(1 for v in self.voters() if v == self.id or (v in self.progress and self.progress[v].active))
        return n >= self.quorum()

    def _in_lease(self) -> bool:
        """A follower that heard from a leader within the minimum election timeout ignores
        candidates (check-quorum's stickiness), so a rejoining partitioned node cannot depose it."""
        # A node that just started behaves as if it had just heard from a leader: it may have, before
        # a restart, and a leader's read lease counts on that (docs/architecture.md 5).
        return self.cfg.check_quorum and (self.leader_id is not None and self.elapsed < self.cfg.election_ticks_min
                                          or self.now < self.cfg.election_ticks_min)

    # ------------------------------------------------------------------ messages

    def _misaddressed(self, sender: str, msg: Any) -> bool:
        """Whether ``msg`` is for another incarnation of our id (or, a reply, from another
        incarnation of its sender than our configuration holds): then it must be dropped."""
        t = type(msg)
        if t in _ADDRESSED:
            to = msg.to_incarnation
            if not to or not self.incarnation or to == self.incarnation:
                return False
            if self.misaddressed_warned_at is None or self.now - self.misaddressed_warned_at >= MISADDRESSED_WARN_TICKS:
                self.misaddressed_warned_at = self.now
                log.warning("%s: %s addressed this id as incarnation %s, but this data directory is incarnation "
                            "%s: the data directory was replaced, so this node is a new member that must be "
                            "re-admitted (it joins through the leader; start it with --join); ignoring such "
                            "messages", self.id, sender, to, self.incarnation)
            self._ask_readmission(sender, msg)
            self._refused_as_misaddressed(msg)
            return True
        if t in _REPLIES:
            frm = msg.from_incarnation
            if not frm:
                return False
            m = self.member(sender)
            if m is None:
                return False
            if not m.incarnation:
                if self.role == LEADER and msg.term == self.term:
                    self.learned_incs[sender] = frm
                return False
            return m.incarnation != frm
        return False

    def _heard_a_leader_of_another_incarnation(self, sender: str, msg: Any) -> None:
        """A leader's append or heartbeat addressed to another incarnation of our id is not ours to
        act on (it is still dropped: no term taken, nothing answered or persisted), but it says a
        leader of that term is alive. So a node that would campaign waits out an election timeout
        from now, as a follower hearing its leader does. Without this, a replacement whose own log
        makes it a voter (its admission reached it alone and was truncated) never hears a leader
        and campaigns every timeout; with neither pre-vote nor check-quorum each campaign deposed
        the leader before the replacement guard let that leader re-admit it, one election timeout
        after winning: no leader lasted long enough to commit the re-admission (sim seed 921613).
        Only the timer moves, so a forged message can at most delay a campaign, never win a vote or
        change a term."""
        if (type(msg) in _LEADER_MESSAGES and msg.term >= self.term and self.role != LEADER
                and self._may_campaign()):
            self.elapsed = 0

    def _refused_as_misaddressed(self, msg: Any) -> None:
        """A vote request addressed to another incarnation of our id is refused without an answer
        (the old incarnation's votes are not ours to know). When we are a learner of this
        incarnation in our own log and the candidate's log is behind ours, that refusal is the
        one of _on_request_vote: our log may be the only one holding committed entries, so we
        may campaign (needed_learner, _may_campaign). Sim seed 10517: a wiped member's
        replacement, a learner in its log only, held the newest log; the others still listed its
        old incarnation as a voter, which they needed for a quorum, so none could win, and the
        learner never heard a request it could refuse."""
        if (type(msg) is RequestVote and msg.term >= self.term and not self.promotable()
                and (msg.last_log_term, msg.last_log_index) < (self.log.last_term(), self.log.last_index())):
            self.needed_learner = True

    def _ask_readmission(self, sender: str, msg: Any) -> None:
        """A leader addresses us as another incarnation of our id although our own log admits this
        one: the entry that admitted us was truncated (sim seed 4095). Ask that leader to admit us
        again (actors/readmission.py; the leader's replacement guard still decides)."""
        me = self.member(self.id)
        ci = self.config_index()
        config_term = None if ci <= max(self.commit, self.log.base_index) else self.log.term(ci)
        req = readmission_request(me, self.incarnation, config_term, msg, self.now, self.readmission_asked_at,
                                  self.cfg.election_ticks_min)
        if req is None:
            return
        self.readmission_asked_at = self.now
        log.info("%s: term %d: leader %s of term %d lists another incarnation of this id (%s); its entry admitting "
                 "this incarnation was truncated: asking it to admit this one again", self.id, self.term, sender,
                 msg.term, msg.to_incarnation)
        self.ready.readmission = (sender, req)

    def _outsider(self, sender: str, msg: Any) -> bool:
        """Whether ``sender`` may not raise our term: we have a configuration and it is no voter
        in it. Only voters campaign and lead, so a higher term from anyone else is noise or
        hostile (a term of 2^63-1 would leave us no term to campaign in). A node without a
        configuration (joining) must accept its leader's. A voter whose configuration lags (a
        voter added since leads) learns the term from the voters it knows: their replies to its
        pre-votes carry it. A node that never campaigns (a learner, a new incarnation not yet
        re-admitted) has no such way, so it refuses only elections from outsiders and follows
        a leader its stale configuration does not know yet. A leader takes the higher term of a
        learner's reply to its appends (Figure 2): a learner whose log still promotes it (the
        promotion was overwritten) campaigns, and without pre-vote its term runs past the
        leader's; it then refuses every append of the leader, which would never catch it up
        (sim seed 1546). The new election, in a term past the learner's, makes it follow."""
        members = self.members
        if not members:
            return False
        if not self.promotable() and type(msg) not in (RequestVote, TimeoutNow):
            return False
        if self._maybe_unknown_voter(msg) or self._maybe_promoted_leader(sender, msg):
            return False
        for m in members:
            if m.id == sender:
                if m.voter or (self.role == LEADER and type(msg) in _LEARNER_REPLIES):
                    return False
                break
        return not self._voter_of_an_uncommitted_past(sender)

    def _voter_of_an_uncommitted_past(self, sender: str) -> bool:
        """Whether ``sender`` is a voter of the configuration in force at our commit index or of
        one after it in our log: our newer configuration entries are not known committed, and a
        leader that lacks them truncates them, and we revert to an older configuration
        (dissertation 4.1), in which the sender leads legitimately. Sim seed 15342: a leader
        logged the removal of n2 and lost leadership before it committed; n2 won the next term
        without that entry, but the old leader took n2 for an outsider, dropped its higher-term
        appends, and (the only other voter it knew having been removed for good) never learned
        the term or caught up. Members of the configuration only: no stranger gains anything."""
        if self.config_index() <= self.commit:
            return False
        in_force = self.base_members
        for index, ms in self.config_log:
            if index <= self.commit:
                in_force = ms
            elif any(m.id == sender and m.voter for m in ms):
                return True
        return any(m.id == sender and m.voter for m in in_force)

    def _maybe_unknown_voter(self, msg: Any) -> bool:
        """Whether a vote request from a non-voter of our configuration may come from a voter
        added (or promoted) in entries we lack. Its log is then more up-to-date than ours, and its
        election may need our vote (a lagging voter in a quorum that lost another member): Raft
        grants votes to candidates outside the latest configuration (dissertation 4.1), or a
        cluster with a quorum up can stay leaderless for good. Such a candidate's term can be
        several ahead of ours: we drop its requests while they fail this test and it is no voter
        of ours to learn the term from, so without pre-vote its term rises every timeout (sim
        seed 2722); with pre-vote too, when the voters we know that could tell us the term are
        gone (sim seed 8512: one removed, one wiped; the leader-to-be was a learner in our log
        and two elections ahead). So it may be up to UNKNOWN_CANDIDATE_MAX_JUMP terms ahead: only
        its strictly more up-to-date log admits it, which a member stranded outside the
        configuration (its promotion overwritten) stops having once a leader's entries reach us,
        the bound keeps a forged term from exhausting ours, and the lease check in step still
        refuses disruptive elections while we hear a leader."""
        if type(msg) is not RequestVote or msg.last_log_term > msg.term:
            return False
        if msg.pre_vote and not self.cfg.pre_vote:
            return False
        if not self.term < msg.term <= self.term + UNKNOWN_CANDIDATE_MAX_JUMP:
            return False
        return (msg.last_log_term, msg.last_log_index) > (self.log.last_term(), self.log.last_index())

    def _maybe_promoted_leader(self, sender: str, msg: Any) -> bool:
        """Whether a leader's message of a higher term from a learner of our configuration may
        come from a voter promoted in entries we lack, and so be a leader we must follow. Only
        a node that won an election sends these, so following it is safe (Raft has a leader's
        messages accepted from any sender). Without it a lagging voter whose other known voters
        are gone never hears the term: sim seed 1084818 (check-quorum off) had n3's log end just
        before the promotion of n5, the old leader removed itself, and n5, leading {n3, n5}, sent
        heartbeats n3 dropped for good. With check-quorum on, such a leader steps down and its
        vote request gets through (_maybe_unknown_voter); the same bound on the term's jump."""
        if type(msg) not in (AppendEntries, Heartbeat, InstallSnapshot):
            return False
        if not self.term < msg.term <= self.term + UNKNOWN_CANDIDATE_MAX_JUMP:
            return False
        m = self.member(sender)
        return m is not None and not m.voter

    def step(self, sender: str, msg: Any) -> None:
        """Handle one peer message."""
        if self._misaddressed(sender, msg):
            self._heard_a_leader_of_another_incarnation(sender, msg)
            return
        mt = msg.term
        if mt > self.term and self._outsider(sender, msg):
            return
        if mt > self.term:
            if type(msg) is RequestVote:
                if not msg.transfer and self._in_lease() and self.leader_id != sender:
                    return
                if not msg.pre_vote:
                    waited = (self.elapsed, self.timeout)
                    self.become_follower(mt, None)
                    if not self._is_up_to_date(msg):
                        # A candidate whose log is behind ours gets no vote, and does not restart
                        # our wait either (Figure 2: only a granted vote or a leader does): with
                        # each stale campaign restarting it, the one voter that could win always
                        # timed out a message's delay after the stale ones and found them voted
                        # for themselves (sim seed 980757, no pre-vote: 30 split terms).
                        self.elapsed, self.timeout = waited
            elif type(msg) is VoteReply and msg.pre_vote and msg.granted:
                pass  # a granted pre-vote carries the term we would campaign in, not a newer leader
            elif type(msg) in (AppendEntries, Heartbeat, TimeoutNow, InstallSnapshot):
                self.become_follower(mt, sender)
            else:
                self.become_follower(mt, None)
        elif mt < self.term:
            # Tell a stale leader or pre-candidate about the newer term so it steps down.
            if type(msg) is AppendEntries:
                self._send(sender, AppendReply(self.term, False, reject_index=msg.prev_index))
            elif type(msg) is Heartbeat:
                self._send(sender, HeartbeatReply(self.term, msg.round, self.log.last_index()))
            elif type(msg) is InstallSnapshot:
                self._send(sender, InstallSnapshotReply(self.term, msg.last_index, 0, False))
            elif type(msg) is RequestVote:
                # Figure 2: a stale candidate learns the term and stops campaigning in the past.
                # Without it a candidate that only campaigns against peers of a newer term (a
                # configuration change it holds and they lack) can fall behind them forever.
                self._send(sender, VoteReply(self.term, False, pre_vote=msg.pre_vote))
            return
        handler = self._HANDLERS.get(type(msg))
        if handler is not None:
            handler(self, sender, msg)

    def _is_up_to_date(self, m: RequestVote) -> bool:
        """Section 5.4.1: the candidate's log is at least as up-to-date as ours."""
        return (m.last_log_term, m.last_log_index) >= (self.log.last_term(), self.log.last_index())

    def _on_request_vote(self, sender: str, m: RequestVote) -> None:
        up_to_date = self._is_up_to_date(m)
        if not up_to_date and not self.promotable():
            self.needed_learner = True  # sim seed 3699: see _may_campaign
        if m.pre_vote:
            can = m.term > self.term or self.vote in (None, sender) and self.leader_id is None
            self._send(sender, VoteReply(m.term if (can and up_to_date) else self.term, can and up_to_date, True))
            return
        can = self.vote == sender or (self.vote is None and self.leader_id is None)
        if can and up_to_date:
            self.vote = sender
            if self._defers_to(sender):
                self.elapsed = 0
            self._persist_hard_state()
            self.ready.send_after_persist.append((sender, VoteReply(self.term, True)))
        else:
            self._send(sender, VoteReply(self.term, False))

    def _on_vote_reply(self, sender: str, m: VoteReply) -> None:
        if m.pre_vote and self.role == PRE_CANDIDATE and (m.term == self.term + 1 or not m.granted):
            self.votes.setdefault(sender, m.granted)
            self._tally()
        elif not m.pre_vote and self.role == CANDIDATE and m.term == self.term:
            self.votes.setdefault(sender, m.granted)
            self._tally()

    def _defers_to(self, candidate: str) -> bool:
        """Whether granting ``candidate`` our vote restarts our election timeout (Figure 2: we
        wait for the election we voted in). Not for a candidate that is no voter of our
        configuration (a needed learner, _may_campaign) when we may campaign ourselves: it is the
        way out when no voter can win, and it needs every vote we can give, while our log is as
        up-to-date as its. Sim seed 40844 (no pre-vote): a voter kept granting such a learner its
        vote, so never campaigned itself, though it could win; the learner lost every term to a
        voter whose log was behind and that, campaigning a few ticks earlier each time, had
        voted for itself first: no leader for 500 ticks."""
        m = self.member(candidate)
        return (m is not None and m.voter) or not self._may_campaign()

    def _follow(self, sender: str) -> None:
        if self.role != FOLLOWER:
            self.become_follower(self.term, sender)
        self.leader_id = sender
        self.elapsed = 0
        self.needed_learner = False

    def _on_append(self, sender: str, m: AppendEntries) -> None:
        self._follow(sender)
        log = self.log
        match = m.prev_index + len(m.entries)  # what a success confirms: exactly this request
        if m.prev_index < self.commit:
            # The committed prefix matches the leader's log (Leader Completeness): skip it.
            skip = self.commit - m.prev_index
            if skip >= len(m.entries):
                self.ready.send_after_persist.append((sender, AppendReply(self.term, True, match_index=match)))
                return
            m = AppendEntries(m.term, self.commit, log.term(self.commit), m.entries[skip:], m.commit)
        prev_term = log.term(m.prev_index)
        if prev_term is None:  # our log is too short
            self._send(sender, AppendReply(self.term, False, reject_index=m.prev_index,
                                           conflict_index=log.last_index() + 1))
            return
        if prev_term != m.prev_term:
            self._send(sender, AppendReply(self.term, False, reject_index=m.prev_index,
                                           conflict_index=log.first_index_of_term(m.prev_index),
                                           conflict_term=prev_term))
            return
        if self._refuses_keyless_config(sender, m):
            return
        # Skip entries we already hold; truncate at the first conflict (Figure 2, rules 3-4).
        idx = m.prev_index + 1
        ents = m.entries
        i = 0
        last = log.last_index()
        while i < len(ents) and idx + i <= last:
            if log.term(idx + i) != ents[i].term:
                assert idx + i > self.commit, "a committed entry conflicts with the leader's log"
                self._truncate(idx + i)
                break
            i += 1
        if i < len(ents):
            self._append(ents[i:])
        new_commit = min(m.commit, match)
        if new_commit > self.commit:
            self.commit = new_commit
        self.ready.send_after_persist.append((sender, AppendReply(self.term, True, match_index=match,
                                                                  need_snapshot=self.want_snapshot)))

    def _refuses_keyless_config(self, sender: str, m: AppendEntries) -> bool:
        """A secure cluster's follower appends no configuration in which a member lacks a valid
        CURVE key (actors/config_guard.py): the whole append is refused, unacknowledged, with one
        ERROR per MISADDRESSED_WARN_TICKS."""
        members = self.members
        if members is not self._secure_of[0]:
            self._secure_of = (members, is_secure(members))
        if not self._secure_of[1] or not m.entries:
            return False
        why = keyless_config(members, m.entries, decode_config)
        if why is None:
            return False
        if self.keyless_logged_at is None or self.now - self.keyless_logged_at >= MISADDRESSED_WARN_TICKS:
            self.keyless_logged_at = self.now
            log.error("%s: term %d: refusing an append from %s: %s (a leader never proposes one: %s is buggy "
                      "or hostile)", self.id, self.term, sender, why, sender)
        return True

    def _on_heartbeat(self, sender: str, m: Heartbeat) -> None:
        self._follow(sender)
        c = min(m.commit, self.log.last_index())
        if c > self.commit:
            self.commit = c
        self._send(sender, HeartbeatReply(self.term, m.round, self.log.last_index()))

    def _on_timeout_now(self, sender: str, m: TimeoutNow) -> None:
        if self.role == FOLLOWER:
            self.campaign(transfer=True)

    def _on_append_reply(self, sender: str, m: AppendReply) -> None:
        pr = self.progress.get(sender) if self.role == LEADER else None
        if pr is None:
            return
        pr.active = True
        pr.heard = self.now
        if m.need_snapshot and pr.state != SNAPSHOT:
            self._start_snapshot(sender)
            return
        if pr.state == SNAPSHOT:
            return  # appends resume once the snapshot is installed
        if m.success:
            if m.match_index > pr.match:
                pr.match = m.match_index
                if pr.next <= pr.match:
                    pr.next = pr.match + 1
                self._maybe_commit()
                if self.member(sender) is None:
                    self._release_removed()
                    if sender not in self.progress:
                        return
            pr.inflight = [i for i in pr.inflight if i > m.match_index]
            if pr.state == PROBE:
                pr.state = REPLICATE
                pr.probe_sent = False
                pr.inflight = []
                pr.next = max(pr.next, pr.match + 1)
            if self.transferee == sender and pr.match == self.log.last_index():
                self._send(sender, TimeoutNow(self.term))
            self._send_append(sender)
            return
        # Ignore stale rejections (etcd-io/raft's maybeDecrTo): in REPLICATE anything at or
        # below match; in PROBE anything but the answer to the probe in flight.
        if m.reject_index <= pr.match or (pr.state == PROBE and m.reject_index != pr.next - 1):
            return
        nxt = m.conflict_index
        if m.conflict_term:
            last_of_term = self.log.last_index_of_term(m.conflict_term)
            if last_of_term:
                nxt = last_of_term + 1
        pr.next = max(pr.match + 1, min(nxt, m.reject_index))
        pr.state = PROBE
        pr.probe_sent = False
        pr.inflight = []
        self._send_append(sender)

    def _on_heartbeat_reply(self, sender: str, m: HeartbeatReply) -> None:
        pr = self.progress.get(sender) if self.role == LEADER else None
        if pr is None:
            return
        pr.active = True
        pr.heard = self.now
        if m.round > pr.acked_round:
            pr.acked_round = m.round
            self.read_peers.acked(sender, m.round)
            self._confirm_reads()
        if pr.match < self.log.last_index() and pr.state != SNAPSHOT:
            # A lost append would otherwise stall this follower: re-probe a paused PROBE, and in
            # REPLICATE send an (empty if need be) append whose rejection reveals a gap.
            pr.probe_sent = False
            if pr.state == REPLICATE and len(pr.inflight) >= self.cfg.max_inflight:
                pr.inflight.pop(0)
            self._send_append(sender, allow_empty=True)

    def _on_install_snapshot(self, sender: str, m: InstallSnapshot) -> None:
        self._follow(sender)
        if m.last_index <= self.commit and not self.want_snapshot:
            # Figure 13: nothing to gain from a snapshot we already cover; let the leader move on.
            self._send(sender, InstallSnapshotReply(self.term, m.last_index, m.offset + len(m.data), True))
            return
        inc, accept = receive_decision(self.snap_in, m)
        if inc is None:
            # A stream we have no state for (we restarted): ask for it from the start.
            self._send(sender, InstallSnapshotReply(self.term, m.last_index, 0, False))
            return
        self.snap_in = inc
        if accept:
            inc.offset += len(m.data)
            self.ready.chunks_to_store.append(StoreChunk(sender, m))
            if m.done:
                self.snap_in = None  # the done reply follows install_snapshot, once it is durable
                return
        self._send(sender, InstallSnapshotReply(self.term, m.last_index, inc.offset, False))

    def _on_install_snapshot_reply(self, sender: str, m: InstallSnapshotReply) -> None:
        pr = self.progress.get(sender) if self.role == LEADER else None
        if pr is None:
            return
        pr.active = True
        pr.heard = self.now
        if pr.state != SNAPSHOT:
            return
        if m.done:
            self.snapshot_sent(sender, m.last_index)
            return
        out = self.snap_out.get(sender)
        if out is None or m.last_index != out.snap.index:
            return  # an answer to a stream we no longer run
        if out.on_ack(m.next_offset, self.now):
            self._send_chunk(sender, out)

    def _on_read_index_request(self, sender: str, m: ReadIndexRequest) -> None:
        if self.role != LEADER:
            self._send(sender, ReadIndexReply(self.term, m.req_id, 0, False))
            return
        self.read_index([RemoteRead(sender, m.req_id)])

    def _on_read_index_reply(self, sender: str, m: ReadIndexReply) -> None:
        p = self.forwarded.pop(m.req_id, None)
        if p is None:
            return  # late, or failed already
        if m.ok:
            self.ready.reads.append((m.index, p[1]))  # served once the FSM has applied m.index
        else:
            self.ready.reads_failed.extend(p[1])

    _HANDLERS: dict[type, Callable[..., None]] = {
        RequestVote: _on_request_vote,
        VoteReply: _on_vote_reply,
        AppendEntries: _on_append,
        AppendReply: _on_append_reply,
        Heartbeat: _on_heartbeat,
        HeartbeatReply: _on_heartbeat_reply,
        TimeoutNow: _on_timeout_now,
        InstallSnapshot: _on_install_snapshot,
        InstallSnapshotReply: _on_install_snapshot_reply,
        ReadIndexRequest: _on_read_index_request,
        ReadIndexReply: _on_read_index_reply,
    }

    # ------------------------------------------------------------------ the log

    def _append(self, entries: list) -> None:
        first = self.log.last_index() + 1
        self.log.append(entries)
        for i, e in enumerate(entries, start=first):
            if e.kind == EntryKind.CONFIG:
                self._apply_config(i, decode_config(e.data))
        self.ready.persist.merge(PersistBatch(first=first, entries=entries))

    def _truncate(self, index: int) -> None:
        self.log.truncate_from(index)
        self.persisted = min(self.persisted, index - 1)
        if self.config_log and self.config_log[-1][0] >= index:
            # a truncated configuration entry reverts to the previous configuration
            self.config_log = [(i, c) for i, c in self.config_log if i < index]
            self._on_config_changed()
        self.ready.persist.merge(PersistBatch(truncate_from=index))

    def _apply_config(self, index: int, members: list) -> None:
        self.config_log.append((index, members))
        self._on_config_changed()

    def _on_config_changed(self) -> None:
        if self.role != LEADER:
            return
        self._release_removed()
        for m in self.members:
            i = m.id
            if i == self.id:
                continue
            pr = self.progress.get(i)
            if pr is not None and not pr.inc and m.incarnation:
                pr.inc = m.incarnation  # recorded from this follower's own replies: the same one
            elif pr is None or pr.inc != m.incarnation:
                # A new member, or a new incarnation of one: what the old one held is not its.
                self.progress[i] = Progress(self.log.last_index() + 1, m.incarnation, self.now)
                self.snap_out.pop(i, None)

    def on_persisted(self, index: int, term: int) -> None:
        """The log manager has synced the log up to ``index`` (whose entry has ``term``)."""
        if self.log.term(index) == term and index > self.persisted:
            self.persisted = index
            if self.role == LEADER:
                self._maybe_commit()

    def _release_removed(self) -> None:
        """A removed member keeps its progress (and gets appends) until the change is committed and
        it holds the change itself, so that it learns of its removal and stops instead of
        campaigning forever; a last heartbeat tells it the commit index."""
        ci = self.config_index()
        if ci > self.commit:
            return
        ids = {m.id for m in self.members}
        for i in [i for i in self.progress if i not in ids]:
            pr = self.progress[i]
            if pr.match >= ci:
                del self.progress[i]
                self.snap_out.pop(i, None)
                self._send(i, Heartbeat(self.term, min(pr.match, self.commit), self.round))

    def _maybe_commit(self) -> None:
        # The leader counts itself only for what it has synced (persistence before counting).
        progress = self.progress
        matches = sorted((self.persisted if v == self.id else
                          (progress[v].match if v in progress and not progress[v].replaced else 0))
                         for v in self._index()[2])
        if not matches:
            return
        n = matches[len(matches) - self.quorum()]
        # Only an entry of the current term is committed by counting (Figure 8).
        if n > self.commit and self.log.term(n) == self.term:
            self.commit = n
            if self.reads_awaiting_noop:
                handles, self.reads_awaiting_noop = self.reads_awaiting_noop, []
                self.read_index(handles)
            if self.config_index() <= n and not self.promotable():
                # We removed ourselves and that is now committed, or we led as a needed learner
                # (_may_campaign) and the voters now hold our log: tell the others first.
                for pid in self.progress:
                    self._send(pid, Heartbeat(self.term, min(self.progress[pid].match, self.commit), self.round))
                self.become_follower(self.term, None)
                return
            if self.config_log and self.config_log[-1][0] <= n:
                self._on_config_changed()

    def _send_commit_hints(self) -> None:
        # Followers learn the commit index from the next append; when none went out since it
        # advanced, a heartbeat on the next tick carries it, so followers' FSMs lag one tick, not
        # one heartbeat interval, and a loaded leader sends no extra messages.
        for pid, pr in self.progress.items():
            if pr.sent_commit < self.commit and pr.match > pr.sent_commit:
                self._send(pid, Heartbeat(self.term, min(pr.match, self.commit), self.round))
                pr.sent_commit = min(pr.match, self.commit)

    # ------------------------------------------------------------------ replication

    def _send_append(self, to: str, allow_empty: bool = False) -> None:
        pr = self.progress.get(to)
        if pr is None:
            return  # e.g. we just stepped down because our own removal committed
        last = self.log.last_index()
        if pr.state == PROBE:
            if pr.probe_sent:
                return
        elif len(pr.inflight) >= self.cfg.max_inflight:
            return
        if pr.next > last and not allow_empty and pr.state == REPLICATE:
            return
        if pr.state == SNAPSHOT:
            return
        prev = pr.next - 1
        prev_term = self.log.term(prev)
        if prev_term is None:
            # What the follower needs next is compacted away: stream it a snapshot.
            self._start_snapshot(to)
            return
        hi = min(last + 1, pr.next + self.cfg.max_batch)
        ents = self.log.slice(pr.next, hi)
        self._send(to, AppendEntries(self.term, prev, prev_term, ents, self.commit))
        pr.sent_commit = min(self.commit, hi - 1)
        if pr.state == PROBE:
            pr.probe_sent = True
        elif ents:
            pr.next = hi
            pr.inflight.append(hi - 1)

    def _broadcast_append(self) -> None:
        for pid in self.progress:
            self._send_append(pid, allow_empty=True)

    def _broadcast_heartbeat(self, to: Optional[list] = None) -> None:
        """Start a heartbeat round: to every follower, or only to those in ``to`` (a read round,
        see :meth:`_read_round`)."""
        self.round += 1
        self.round_started[self.round] = self.now
        if len(self.round_started) > 64:
            for r in [r for r in self.round_started if r < self.round - 32]:
                del self.round_started[r]
        self.read_peers.started(self.round, to is not None)
        for pid, pr in self.progress.items():
            if to is not None and pid not in to:
                continue
            pr.sent_commit = min(pr.match, self.commit)
            self._send(pid, Heartbeat(self.term, pr.sent_commit, self.round))
        self._confirm_reads()

    # ------------------------------------------------------------------ client-facing

    def propose(self, items: list) -> tuple:
        """Append ``(kind, data)`` items as entries of this term; returns (first, last) index."""
        if self.role != LEADER or self.transferee is not None:
            raise NotLeader(self.leader_id)
        first = self.log.last_index() + 1
        self._append([Entry(self.term, k, d) for k, d in items])
        for pid in self.progress:
            self._send_append(pid)
        return first, self.log.last_index()

    def read_index(self, handles: list) -> None:
        """Register linearizable reads (thesis 6.4). Once confirmed they come out in
        ``Ready.reads`` with the index the FSM must have applied before serving them (or in
        ``Ready.reads_failed``: ask the client to retry at the leader).

        A follower that knows a leader forwards them as one ReadIndexRequest and serves them
        itself once its FSM reaches the leader's answer (thesis 6.4.1), so read load spreads
        over the cluster; with no known leader it raises NotLeader."""
        if self.role == FOLLOWER:
            self._forward_reads(handles)
            return
        if self.role != LEADER:
            raise NotLeader(self.leader_id)
        if self.log.term(self.commit) != self.term:
            self.reads_awaiting_noop.extend(handles)  # a new leader serves reads after its no-op commits
            return
        # A round started after registration is the only one that may confirm these reads. At
        # most one round is in flight: reads arriving meanwhile share the next one, started as
        # soon as the current one is confirmed, so read load does not multiply heartbeats.
        self.pending_reads.append((self.commit, self.round + 1, list(handles)))
        if self.confirmed_round >= self.round:
            self._read_round()

    def _read_round(self) -> None:
        """Start a heartbeat round for reads: to as many of the followers that answered the last
        confirmed round first as make a majority with us, or to all (actors/read_rounds.py)."""
        self._broadcast_heartbeat(self.read_peers.targets(self.id, self.voters(), self.progress))

    def _forward_reads(self, handles: list) -> None:
        leader = self.leader_id
        if leader is None or leader == self.id or self.member(leader) is None:
            raise NotLeader(leader)
        self.read_ids += 1
        self.forwarded[self.read_ids] = (self.now + self.cfg.election_ticks_max, list(handles))
        self._send(leader, ReadIndexRequest(self.term, self.read_ids))

    def _confirm_reads(self) -> None:
        voters = self._index()[2]
        rounds = sorted((self.round if v == self.id else
                         (self.progress[v].acked_round if v in self.progress else 0)) for v in voters)
        confirmed = rounds[len(rounds) - self.quorum()]
        if confirmed > self.confirmed_round:
            self.confirmed_round = confirmed
            self.read_peers.confirmed(confirmed, voters)
        started = self.round_started.get(confirmed)
        if started is not None:
            # A majority heard us at ``started``; none of them votes for another candidate before
            # election_ticks_min ticks after that (check-quorum stickiness). Assuming clocks that
            # drift apart by less than the margin (docs/architecture.md 5), we lead until then.
            self.lease_until = max(self.lease_until, started + self.cfg.election_ticks_min - self._lease_margin())
        if not self.pending_reads:
            return
        keep = []
        for r in self.pending_reads:
            if r[1] <= confirmed:
                self._reads_done(r[0], r[2])
            else:
                keep.append(r)
        self.pending_reads = keep
        if keep and confirmed >= self.round:
            self._read_round()  # reads that waited for the round in flight get theirs

    def _lease_margin(self) -> int:
        return max(2, self.cfg.election_ticks_min // 5)  # 20 % for clock drift and tick jitter

    def sync_clock(self, ticks: int) -> None:
        """Catch ``now`` up with real time (in ticks since start) after ticks were lost to a
        pause or a backlog. Only ever moves forward; used before serving lease reads, so that a
        leader resumed from a stall does not trust a lease that has expired in real time."""
        if ticks > self.now:
            self.now = ticks

    def lease_read(self, handles: list) -> None:
        """Serve reads at the commit index without a heartbeat round while the lease holds
        (thesis 6.4.1); otherwise fall back to ReadIndex. Never while transferring leadership."""
        if (self.role == LEADER and self.transferee is None and self.now < self.lease_until
                and self.log.term(self.commit) == self.term):
            self._reads_done(self.commit, list(handles))
        else:
            self.read_index(handles)

    def can_change_config(self) -> bool:
        """One change at a time, and only after an entry of this term committed (the 2015 bug);
        not while leadership is being transferred (propose_config would raise NotLeader)."""
        return (self.role == LEADER and self.transferee is None and self.log.term(self.commit) == self.term
                and self.config_index() <= self.commit)

    def propose_config(self, members: list) -> int:
        """Append a configuration entry (single-server change); returns its index."""
        if not self.can_change_config():
            raise NotLeader(self.leader_id)
        old = {m.id for m in self.members}
        new = {m.id for m in members}
        assert len(old ^ new) <= 1 or old == new, "one server at a time"
        old_voters = {m.id for m in self.members if m.voter}
        new_voters = {m.id for m in members if m.voter}
        assert len(old_voters ^ new_voters) <= 1, "one voter at a time"
        return self.propose([(EntryKind.CONFIG, encode_config(members))])[0]

    def transfer_leadership(self, target: str) -> None:
        """Hand leadership to ``target`` (thesis 3.10): catch it up, then TimeoutNow."""
        if self.role != LEADER:
            raise NotLeader(self.leader_id)
        if target == self.id or target not in self.progress or not self.member(target).voter:
            raise ValueError(f"cannot transfer leadership to {target!r}")
        self.transferee = target
        self.transfer_elapsed = 0
        self.lease_until = 0  # the target may lead before our lease would run out
        pr = self.progress[target]
        if pr.match == self.log.last_index():
            self._send(target, TimeoutNow(self.term))
        else:
            self._send_append(target)

    # ------------------------------------------------------------------ membership

    def request_change(self, change: MembershipChange) -> None:
        """Queue a single-server change (add ``change.member``, or remove ``change.removed``).
        Changes are proposed one at a time, each once the previous one committed; each proposal
        comes out in ``Ready.config_proposed``, and changes still queued when leadership is lost
        in ``Ready.config_dropped``."""
        if self.role != LEADER:
            raise NotLeader(self.leader_id)
        self.changes.queue(change)

    def join(self, member: Member, handle: object, incarnation: str = "") -> bool:
        """A node asks to join (JoinRequest). True when it is a member at that address already,
        as this incarnation (answer it now); otherwise its addition is queued (once: the joiner
        retries) and the answer follows in ``Ready.config_proposed``. It joins as a learner and
        is promoted to voter once caught up.

        A member's id with a different incarnation is a replacement (its data directory was
        wiped): the old record is replaced by a learner with the new incarnation (see
        MembershipQueue.next_configuration), never answered as the old member; it raises MemberLive
        while the leader still hears from the member (actors/replacement_guard.py). A member recorded
        without an incarnation (``kvclient add-node``, a whole-cluster bootstrap) at the same
        address is this node: it is answered now, and its incarnation recorded."""
        if self.role != LEADER:
            raise NotLeader(self.leader_id)
        incarnation = incarnation or member.incarnation
        member = member._replace(incarnation=incarnation, voter=True, promote=True)
        cur = self.member(member.id)
        replaces = None
        if cur is not None:
            if cur.incarnation and incarnation and cur.incarnation != incarnation:
                pr = self.progress.get(cur.id)
                refusal = live_refusal(cur.id, self.id, pr.heard if pr is not None else None, self.now,
                                       self.cfg.election_ticks_max)
                if refusal is not None:
                    raise MemberLive(refusal)
                if pr is not None:
                    # Its data directory was replaced: the entries it acknowledged are no longer
                    # on its disk, so they must not count towards a quorum any more (sim seed
                    # 15879: the leader committed the entry that promoted a sixth voter with the
                    # old incarnation's acknowledgement, after the join told it that disk was
                    # gone, and so on 3 of 6 voters' disks; it then proposed the replacement on
                    # the strength of that commit). Only fewer acknowledgements count: a join can
                    # delay commits, never hasten them.
                    pr.replaced = True
                replaces = cur
                member = member._replace(voter=cur.promote)  # a learner that stays one stays one
            elif cur.addr == member.addr:
                # Added by add-node and now started with --join: it is that member. Record its
                # incarnation if the configuration has none yet (the one IDENTITY entry replies
                # would lead to anyway; a wiped disk is then told apart from the start); its
                # voter or learner status stays as it is.
                if not cur.incarnation and incarnation:
                    self.learned_incs.setdefault(cur.id, incarnation)
                return True
            else:
                member = member._replace(incarnation=incarnation or cur.incarnation)
        if not self.changes.queued(member.id):
            self.changes.queue(MembershipChange(member, None, handle, ChangeOrigin.JOIN, replaces))
        return False

    def _advance_membership(self) -> None:
        """Propose the next queued change, else promote a caught-up learner, when a change may
        be made now (one at a time, thesis 4.1)."""
        q = self.changes
        if not q.pending and not self._has_promotable_learners() and not self._unrecorded_incarnations():
            return
        if not self.can_change_config():
            return
        nxt = q.next_configuration(self.members)
        if nxt is None:
            nxt = q.promotion(self.members, {pid: pr.match for pid, pr in self.progress.items()}, self.commit)
        if nxt is None:
            nxt = record_incarnations(self.members, self.learned_incs)
            self.learned_incs = {}
        if nxt is not None:
            change, members = nxt
            self.ready.config_proposed.append((change, self.propose_config(members)))

    def _unrecorded_incarnations(self) -> bool:
        """Whether this leader learned an incarnation its configuration does not record (its own
        included: a whole-cluster bootstrap records none)."""
        if self.incarnation and not self.learned_incs:
            me = self.member(self.id)
            if me is not None and not me.incarnation:
                self.learned_incs[self.id] = self.incarnation
        return bool(self.learned_incs)

    def _has_promotable_learners(self) -> bool:
        # Cached per configuration object: this runs for every Ready of the leader.
        members = self.members
        if members is not self._learners_of[0]:
            self._learners_of = (members, has_promotable_learners(members))
        return self._learners_of[1]

    def _check_removed(self) -> None:
        """The removal rule (docs/architecture.md 3): a member whose removal is committed stops for good.
        A removed node keeps getting appends until it holds its removal (see _release_removed);
        a leader that removed itself steps down once that commits (see _maybe_commit)."""
        if self.removed:
            return
        committed = self.commit >= self.config_index()
        if self.member(self.id) is not None:
            if committed:
                self.was_member = True
        elif self.was_member and committed:
            self.removed = True
            self.ready.removed = True

    # ------------------------------------------------------------------ snapshots

    def set_snapshot(self, snap: SnapshotRef) -> None:
        """A local snapshot is durable (taken here, or at start-up): the one to stream if newer."""
        if self.snapshot is None or snap.index > self.snapshot.index:
            self.snapshot = snap

    def _start_snapshot(self, to: str) -> None:
        """The follower needs a snapshot: stream it the newest durable one from offset 0 (a
        stream of an older snapshot or term is replaced)."""
        pr = self.progress[to]
        pr.inflight = []
        if self.snapshot is None:
            # None here (a corrupt newest snapshot at start-up): retry on a later probe.
            self.snap_out.pop(to, None)
            pr.state = PROBE
            pr.probe_sent = False
            return
        pr.state = SNAPSHOT
        out = self.snap_out[to] = OutgoingStream(self.term, self.snapshot, progressed_at=self.now)
        self._send_chunk(to, out)

    def _send_chunk(self, to: str, out: OutgoingStream) -> None:
        out.sent_at = self.now
        self.ready.chunks_to_send.append(SendChunk(to, out.term, out.snap.index, out.offset))

    def _poll_snapshot_streams(self) -> None:
        cfg = self.cfg
        for peer, out in list(self.snap_out.items()):
            pr = self.progress.get(peer)
            if pr is None or pr.state != SNAPSHOT:
                del self.snap_out[peer]
                continue
            what = out.due(self.now, cfg.snapshot_resend_ticks, cfg.snapshot_give_up_ticks)
            if what == "give_up":
                self.snapshot_failed(peer)  # the follower is gone; start over when it is back
            elif what == "resend":
                self._send_chunk(peer, out)

    def snapshot_sent(self, to: str, last_index: int) -> None:
        """The follower installed our snapshot up to ``last_index``: replicate from there."""
        self.snap_out.pop(to, None)
        pr = self.progress.get(to) if self.role == LEADER else None
        if pr is None:
            return
        pr.match = max(pr.match, last_index)
        pr.next = pr.match + 1
        pr.state = PROBE
        pr.probe_sent = False
        pr.inflight = []
        self._maybe_commit()
        self._send_append(to, allow_empty=True)

    def snapshot_failed(self, to: str) -> None:
        """Sending a snapshot failed (the transport lost the file, or the follower vanished):
        retry later."""
        self.snap_out.pop(to, None)
        pr = self.progress.get(to) if self.role == LEADER else None
        if pr is not None and pr.state == SNAPSHOT:
            pr.state = PROBE
            pr.probe_sent = False

    def compact(self, upto: int) -> None:
        """Forget the log up to ``upto`` (a durable snapshot covers it). Only synced entries are
        compacted, so the durable log never has to drop what it has not yet written."""
        upto = min(upto, self.persisted, self.commit)
        if upto <= self.log.base_index:
            return
        term = self.log.term(upto)
        # Configurations older than the compaction point become the base configuration.
        older = [c for c in self.config_log if c[0] <= upto]
        if older:
            self.base_members = older[-1][1]
            self.config_log = [c for c in self.config_log if c[0] > upto]
        self.log.compact(upto, term)
        self.ready.persist.merge(PersistBatch(compact_to=(upto, term)))

    def install_snapshot(self, last_index: int, last_term: int, members: list, *, leader: Optional[str] = None,
                         size: int = 0) -> None:
        """A snapshot received from the leader is durable and the FSM restored from it
        (Figure 13, rules 6-7): keep the log suffix after it if the log holds its last entry,
        otherwise discard the whole log.

        The FSM is now at ``last_index`` even if it had applied further (a duplicate or late
        snapshot accepted while an earlier copy was being saved): the committed entries after it
        are handed out again. If they are compacted away here, ask the leader for a new snapshot.

        With ``leader``, the done reply to it leaves once the compaction is durable."""
        if leader is not None:
            self.ready.send_after_persist.append((leader, InstallSnapshotReply(self.term, last_index, size, True)))
        self.set_snapshot(SnapshotRef(last_index, last_term, size))
        if last_index < self.log.base_index:
            self.handed = last_index
            self.want_snapshot = True
            return
        if self.log.term(last_index) == last_term and last_index <= self.log.last_index():
            self.config_log = [c for c in self.config_log if c[0] > last_index]
            self.log.compact(last_index, last_term)
        else:
            if self.log.entries:
                self.ready.persist.merge(PersistBatch(truncate_from=self.log.first_index()))
            self.config_log = []
            self.log.release()  # freed in the background (actors/deferred_free.py)
            self.log = MemLog(last_index, last_term)
            self.persisted = last_index
        self.base_members = list(members)
        self.commit = max(self.commit, last_index)
        self.handed = last_index
        self.want_snapshot = False
        self.ready.persist.merge(PersistBatch(compact_to=(last_index, last_term), commit=self.commit))

    def status(self) -> dict:
        return {
            "id": self.id,
            "state": CANDIDATE if self.role == PRE_CANDIDATE else self.role,
            "term": self.term,
            "leader_id": self.leader_id,
            "commit_index": self.commit,
            "last_log_index": self.log.last_index(),
            "first_log_index": self.log.first_index(),
            "snapshot_index": self.log.base_index,
        }
