"""An interaction environment for RaftCore, after etcd-io/raft's rafttest.InteractionEnv.

It holds several cores and a network (an ordered list of messages in flight), and plays the
part of the shell around each core the way the actors do (actors/role.py, leader.py,
follower.py, snapshotter.py): a Ready is persisted synchronously (then ``on_persisted``), its
messages are queued, and its snapshot chunks are executed as the Snapshotter does: a SendChunk
reads bytes from the node's in-memory snapshot store and sends them as an InstallSnapshot, a
StoreChunk writes bytes into the partial snapshot and, on the last chunk, saves it and reports
it to the core (``install_snapshot``). Every protocol decision is the core's: the environment
forwards no reads, chooses no membership change and decides nothing about snapshot streams.
Nothing runs unless a command says so, so every step is visible.

Each node has a disk model written only from ``Ready.persist``; after every Ready it must equal
the core's hard state and log (a DISK MISMATCH line otherwise), and ``restart`` rebuilds the
core from it.

Commands (node arguments are numbers: ``1`` means node ``n1``)::

    add-nodes <count> [voters=(1,2,3)] [learners=(4)] [index=<k>] [pre-vote=true]
              [check-quorum=true] [uptime=<ticks>] [chunk-bytes=<n>] [snapshot-resend=<ticks>]
              [incarnations=true]
        New nodes n<next>... with that configuration (none: an empty one, as for a node that
        will receive a snapshot). index=k: every node starts from a snapshot at k (term 1, so
        the nodes start in term 1). uptime: ticks on the node's clock at start (default the
        minimum election timeout, so it does not ignore votes as a node that has just started does).
        chunk-bytes: the snapshotter's chunk size (default: a whole test snapshot in one chunk).
        snapshot-resend: the core's snapshot_resend_ticks (default 100, the core's default).
        incarnations=true: each node's data directory has an incarnation (``n2.0``), which the
        configuration records (default: none, as a legacy cluster).
    wipe <id>                           the node's data directory is replaced: it restarts
                                        empty, as its next incarnation (``n2.1``), and must join
    campaign <id>                       start an election (pre-vote first if enabled)
    tick <id> [count=<n>]               n ticks of logical time
    tick-heartbeat <id>                 tick until the leader's next heartbeat is due
    tick-election <id>                  tick until the node's election timeout (a leader: its
                                        check-quorum round) fires
    propose <id> <data>                 a client write
    read-index <id> <label>             a linearizable read (core.read_index); a follower's core
                                        forwards it to the leader itself
    transfer-leadership from=<id> to=<id>
    request-change <id> add=<id> [voter=false] | remove=<id>
                                        a client's add-node / remove-node at the leader
                                        (core.request_change); voter=false: a learner that stays one
    join <id> <joiner>                  a joiner's JoinRequest at the leader (core.join): added as a
                                        learner, promoted by the core once caught up
    compact <id> <index>                take a snapshot at index (clamped by the core) and compact
    process-ready <id>...               handle one Ready of each node
    deliver-msgs <id>... [from=<id>] [type=<MsgType>]   deliver queued messages to these nodes
    drop-msgs [from=<id>] [to=<id>] [type=<MsgType>]    drop queued messages
    stabilize [<id>...]                 handle Readies and deliver messages until nothing is left
    isolate <id> / cut <id> <id> / heal partition the network and heal it: a message is lost if
                                        its link is cut when it is sent or when it is delivered;
                                        one sent before a cut and delivered after the heal gets
                                        through (a delayed message)
    restart <id> [uptime=<ticks>]       rebuild the core from what it persisted (default uptime 0:
                                        a node that has just started ignores candidates for the
                                        minimum election timeout)
    raft-state / raft-log <id> / status <id> / msgs   print roles, a log, a leader's progress,
                                        the messages in flight
    log-level none|info                 none: print nothing but errors (for set-up)
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Optional

from raftkv.actors.core import LEADER, CoreConfig, NotLeader, PersistBatch, RaftCore
from raftkv.actors.membership import ChangeOrigin, MembershipChange
from raftkv.actors.memlog import MemLog
from raftkv.actors.replacement_guard import MemberLive
from raftkv.actors.snapshot_transfer import SendChunk, SnapshotRef, StoreChunk
from raftkv.wire.messages import EntryKind, InstallSnapshot, Member

from .datadriven import TestCase, parse_line
from .printing import format_entry, format_members, format_progress, format_ready, format_send

ELECTION_MIN, ELECTION_MAX, HEARTBEAT = 10, 20, 3
CHUNK_BYTES = 1 << 20  # a test snapshot is a few bytes: one chunk unless a scenario asks for less


@dataclass
class Snapshot:
    """A durable snapshot in a node's snapshot store."""

    index: int
    term: int
    members: list
    data: bytes


@dataclass
class Disk:
    """What a node has synced (the log store): hard state, commit index and the log."""

    term: int
    vote: Optional[str]
    commit: int
    log: MemLog

    def write(self, p: PersistBatch) -> None:
        """Apply one persisted batch, in the order the log writer does: truncate, append, compact."""
        if p.term is not None:
            self.term, self.vote = p.term, p.vote
        if p.truncate_from is not None and p.truncate_from <= self.log.last_index():
            self.log.truncate_from(max(p.truncate_from, self.log.base_index + 1))
        if p.entries:
            if p.first <= self.log.last_index():
                self.log.truncate_from(p.first)
            assert p.first == self.log.last_index() + 1, "a gap in the persisted log"
            self.log.append(list(p.entries))
        if p.compact_to is not None:
            self.log.compact(*p.compact_to)
        if p.commit is not None:
            self.commit = max(self.commit, p.commit)


@dataclass
class Node:
    """One core and the shell state around it."""

    id: str
    core: RaftCore
    cfg: CoreConfig
    members: list  # the configuration it was started with
    disk: Disk
    snapshots: dict = field(default_factory=dict)  # index -> Snapshot: the node's snapshot store
    partial: Optional[bytearray] = None  # the snapshot being received (the snapshotter's temp file)
    chunk_bytes: int = CHUNK_BYTES
    applied: int = 0
    stopped: bool = False  # its removal committed (Ready.removed): the process has stopped

    @property
    def snapshot(self) -> Optional[Snapshot]:
        """The newest snapshot in the store (what a restart restores)."""
        return self.snapshots[max(self.snapshots)] if self.snapshots else None

    def save_snapshot(self, s: Snapshot) -> None:
        self.snapshots[s.index] = s


@dataclass
class InFlight:
    frm: str
    to: str
    msg: Any


def node_id(arg: str) -> str:
    return arg if arg.startswith("n") else f"n{arg}"


def member(nid: str, voter: bool = True) -> Member:
    return Member(nid, f"{nid}:7000", voter=voter)


def _bool(v: str) -> bool:
    if v not in ("true", "false"):
        raise ValueError(f"expected true or false, got {v!r}")
    return v == "true"


class InteractionEnv:
    """Cores, a network and an output buffer; :meth:`handle` runs one test case."""

    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self.net: list[InFlight] = []
        self.cut: set = set()  # (a, b) pairs: messages from a to b are dropped
        self.quiet = False
        self.out: list = []
        self.requests = 0  # client requests (membership changes), numbered as their handles
        self.incs: dict = {}  # node id -> the incarnation of its data directory (none: "")

    # ------------------------------------------------------------------ running cases

    def handle(self, case: TestCase) -> str:
        self.out = []
        lines = [(case.cmd, case.args)] + [parse_line(ln) for ln in case.input]
        for cmd, args in lines:
            fn = getattr(self, "cmd_" + cmd.replace("-", "_"), None)
            if fn is None:
                raise ValueError(f"line {case.line}: unknown command {cmd!r}")
            try:
                fn(args)
            except (NotLeader, ValueError, AssertionError) as e:
                self.out.append(f"error: {type(e).__name__}: {e}")
        return "\n".join(self.out) if self.out else "ok"

    def emit(self, line: str) -> None:
        if not self.quiet:
            self.out.append(line)

    # ------------------------------------------------------------------ argument helpers

    @staticmethod
    def positional(args: list) -> list:
        return [a.key for a in args if not a.vals]

    @staticmethod
    def opt(args: list, key: str, default: Any = None) -> Any:
        for a in args:
            if a.key == key and a.vals:
                return a.vals[0] if len(a.vals) == 1 else list(a.vals)
        return default

    @staticmethod
    def opt_list(args: list, key: str) -> list:
        for a in args:
            if a.key == key:
                return list(a.vals)
        return []

    def ids(self, args: list) -> list:
        ids = [node_id(a) for a in self.positional(args)]
        for i in ids:
            if i not in self.nodes:
                raise ValueError(f"no node {i}")
        return ids

    def one(self, args: list) -> Node:
        """The node named by the first positional argument."""
        pos = self.positional(args)
        if not pos:
            raise ValueError("a node id is required")
        nid = node_id(pos[0])
        if nid not in self.nodes:
            raise ValueError(f"no node {nid}")
        return self.nodes[nid]

    def live(self, args: list) -> Node:
        """Like :meth:`one`, for an input: a stopped (removed) node takes none."""
        nd = self.one(args)
        if nd.stopped:
            raise ValueError(f"{nd.id} has stopped")
        return nd

    # ------------------------------------------------------------------ set-up

    def cmd_log_level(self, args: list) -> None:
        level = self.positional(args)[0].lower()
        self.quiet = level == "none"

    def cmd_add_nodes(self, args: list) -> None:
        count = int(self.positional(args)[0])
        voters = [node_id(v) for v in self.opt_list(args, "voters")]
        learners = [node_id(v) for v in self.opt_list(args, "learners")]
        members = [member(v) for v in voters] + [member(v, voter=False) for v in learners]
        if _bool(self.opt(args, "incarnations", "false")):
            for v in voters + learners:
                self.incs.setdefault(v, f"{v}.0")
            members = [m._replace(incarnation=self.incs[m.id]) for m in members]
        index = int(self.opt(args, "index", "0"))
        cfg = CoreConfig(election_ticks_min=ELECTION_MIN, election_ticks_max=ELECTION_MAX,
                         heartbeat_ticks=HEARTBEAT,
                         pre_vote=_bool(self.opt(args, "pre-vote", "true")),
                         check_quorum=_bool(self.opt(args, "check-quorum", "true")))
        cfg.snapshot_resend_ticks = int(self.opt(args, "snapshot-resend", str(cfg.snapshot_resend_ticks)))
        chunk_bytes = int(self.opt(args, "chunk-bytes", str(CHUNK_BYTES)))
        uptime = int(self.opt(args, "uptime", str(ELECTION_MIN)))
        for _ in range(count):
            nid = f"n{len(self.nodes) + 1}"
            term = 1 if index else 0
            core = RaftCore(nid, cfg, term=term, log=MemLog(index, term), members=members, commit=index,
                            rng=random.Random(len(self.nodes) + 1), incarnation=self.incs.get(nid, ""))
            core.sync_clock(uptime)
            core.read_ids = 0  # scenario files number a node's forwarded reads from 1
            nd = Node(nid, core, cfg, list(members), Disk(term, None, index, MemLog(index, term)), applied=index,
                      chunk_bytes=chunk_bytes)
            if index:
                nd.save_snapshot(Snapshot(index, term, list(members), f"snap@{index}".encode()))
                self.announce_snapshot(nd)
            self.nodes[nid] = nd
            self.emit(f"{nid}: {core.role} term={core.term} commit={core.commit} "
                      f"last={core.log.last_term()}/{core.log.last_index()} {format_members(core.members)}")

    def cmd_restart(self, args: list) -> None:
        """The process restarts: memory is lost, the core is rebuilt from what was synced (and the
        state machine from the newest snapshot). Messages in flight to it are still delivered."""
        nd = self.one(args)
        d = nd.disk
        members = nd.snapshot.members if nd.snapshot is not None else nd.members
        core = RaftCore(nd.id, nd.cfg, term=d.term, vote=d.vote,
                        log=MemLog(d.log.base_index, d.log.base_term, list(d.log.entries)),
                        members=list(members), commit=d.commit, rng=random.Random(int(nd.id[1:])),
                        incarnation=self.incs.get(nd.id, ""))
        core.sync_clock(int(self.opt(args, "uptime", "0")))
        core.read_ids = 0  # scenario files number a node's forwarded reads from 1
        nd.core = core
        nd.partial = None  # a partial snapshot is a temporary file: gone with the process
        nd.applied = d.log.base_index
        if nd.snapshot is not None:
            self.announce_snapshot(nd)
        self.emit(f"{nd.id}: restarted: {core.role} term={core.term} vote={core.vote} commit={core.commit} "
                  f"last={core.log.last_term()}/{core.log.last_index()} {format_members(core.members)}")

    def cmd_wipe(self, args: list) -> None:
        """The node's data directory is lost and replaced by an empty one (a new incarnation); the
        process restarts on it with no configuration, as a joiner. Messages in flight to it are
        still delivered."""
        nd = self.one(args)
        old = self.incs.get(nd.id, f"{nd.id}.0")
        gen = int(old.rpartition(".")[2]) + 1
        self.incs[nd.id] = f"{nd.id}.{gen}"
        nd.core = RaftCore(nd.id, nd.cfg, rng=random.Random(int(nd.id[1:]) + 100 * gen), incarnation=self.incs[nd.id])
        nd.core.sync_clock(int(self.opt(args, "uptime", "0")))
        nd.core.read_ids = 0  # scenario files number a node's forwarded reads from 1
        nd.disk = Disk(0, None, 0, MemLog())
        nd.members = []
        nd.snapshots = {}
        nd.partial = None
        nd.applied = 0
        self.emit(f"{nd.id}: wiped: incarnation {self.incs[nd.id]}, {nd.core.role} term={nd.core.term} "
                  f"last={nd.core.log.last_term()}/{nd.core.log.last_index()} {format_members(nd.core.members)}")

    @staticmethod
    def announce_snapshot(nd: Node) -> None:
        """Tell the core its newest durable snapshot (node.py at start-up, SnapshotSaved later)."""
        s = nd.snapshot
        nd.core.set_snapshot(SnapshotRef(s.index, s.term, len(s.data)))

    # ------------------------------------------------------------------ inputs

    def cmd_campaign(self, args: list) -> None:
        self.live(args).core.campaign()

    def cmd_tick(self, args: list) -> None:
        nd = self.live(args)
        for _ in range(int(self.opt(args, "count", "1"))):
            nd.core.tick()

    def cmd_tick_heartbeat(self, args: list) -> None:
        c = self.live(args).core
        n = c.cfg.heartbeat_ticks - c.hb_elapsed if c.role == LEADER else c.cfg.heartbeat_ticks
        for _ in range(n):
            c.tick()

    def cmd_tick_election(self, args: list) -> None:
        c = self.live(args).core
        n = (c.cfg.election_ticks_min if c.role == LEADER else c.timeout) - c.elapsed
        for _ in range(max(n, 1)):
            c.tick()

    def cmd_propose(self, args: list) -> None:
        nd = self.live(args)
        data = self.positional(args)[1]
        first, last = nd.core.propose([(EntryKind.COMMAND, data.encode())])
        self.emit(f"{nd.id}: proposed at {first}")

    def cmd_read_index(self, args: list) -> None:
        nd = self.live(args)
        nd.core.read_index([self.positional(args)[1]])

    def cmd_transfer_leadership(self, args: list) -> None:
        c = self.nodes[node_id(self.opt(args, "from"))].core
        c.transfer_leadership(node_id(self.opt(args, "to")))

    def cmd_request_change(self, args: list) -> None:
        """A client's add-node / remove-node, as actors/leader.py hands it to the core."""
        nd = self.one(args)
        self.requests += 1
        handle = f"req{self.requests}"
        if self.opt(args, "add"):
            new = member(node_id(self.opt(args, "add")), voter=_bool(self.opt(args, "voter", "true")))
            change = MembershipChange(new, None, handle, ChangeOrigin.CLIENT)
        elif self.opt(args, "remove"):
            change = MembershipChange(None, node_id(self.opt(args, "remove")), handle, ChangeOrigin.CLIENT)
        else:
            raise ValueError("request-change needs add= or remove=")
        nd.core.request_change(change)
        self.emit(f"{nd.id}: queued {handle}: {change.describe()}")

    def cmd_join(self, args: list) -> None:
        """A joiner's JoinRequest, as actors/leader.py hands it to the core."""
        nd = self.one(args)
        joiner = node_id(self.positional(args)[1])
        try:
            already = nd.core.join(member(joiner), f"join:{joiner}", self.incs.get(joiner, ""))
        except MemberLive as e:
            self.emit(f"{nd.id}: join of {joiner} refused: {e}")
            return
        if already:
            self.emit(f"{nd.id}: {joiner} is a member already")
        else:
            self.emit(f"{nd.id}: join of {joiner} queued")

    def cmd_compact(self, args: list) -> None:
        nd = self.one(args)
        c = nd.core
        c.compact(int(self.positional(args)[1]))
        base = c.log.base_index
        if nd.snapshot is None or base > nd.snapshot.index:
            nd.save_snapshot(Snapshot(base, c.log.base_term, list(c.base_members), f"snap@{base}".encode()))
            self.announce_snapshot(nd)
        self.emit(f"{nd.id}: snapshot at {c.log.base_term}/{base}, log {c.log.first_index()}..{c.log.last_index()}")

    # ------------------------------------------------------------------ Ready and messages

    def cmd_process_ready(self, args: list) -> None:
        for nid in self.ids(args):
            self.emit(f"> {nid} handling Ready")
            self.process_ready(self.nodes[nid], indent="  ")

    def process_ready(self, nd: Node, indent: str) -> None:
        """Take one Ready and carry it out as the actors do (actors/role.py _process_ready)."""
        if nd.stopped:
            raise ValueError(f"{nd.id} has stopped")
        c = nd.core
        rd = c.take_ready()
        for line in format_ready(nd.id, c, rd) or ["(empty)"]:
            self.emit(indent + line)
        for to, m in rd.send:
            self.send(nd.id, to, m, indent)
        if rd.readmission is not None:
            self.send(nd.id, *rd.readmission, indent)
        # The persist is synced here and now; then what waited for it may leave.
        p = rd.persist
        for to, m in rd.send_after_persist:
            self.send(nd.id, to, m, indent)
        nd.disk.write(p)
        self.check_disk(nd, indent)
        if p.entries:
            c.on_persisted(p.first + len(p.entries) - 1, p.entries[-1].term)
        if rd.committed:
            nd.applied = rd.committed[-1][0]
        for sc in rd.chunks_to_send:
            self.send_chunk(nd, sc, indent)
        for st in rd.chunks_to_store:
            self.store_chunk(nd, st, indent)
        if rd.removed:
            nd.stopped = True
            self.emit(f"{indent}{nd.id} records its removal and stops")

    def check_disk(self, nd: Node, indent: str) -> None:
        """After a Ready is persisted, the disk must hold exactly the core's hard state and log:
        the PersistBatch is the core's whole account of its durable state."""
        c, d = nd.core, nd.disk
        problems = []
        if (d.term, d.vote) != (c.term, c.vote):
            problems.append(f"hard state on disk {d.term}/{d.vote}, in the core {c.term}/{c.vote}")
        if (d.log.base_index, d.log.base_term, d.log.entries) != (c.log.base_index, c.log.base_term, c.log.entries):
            problems.append(f"log on disk {d.log.base_term}/{d.log.base_index}+{len(d.log.entries)}, in the core "
                            f"{c.log.base_term}/{c.log.base_index}+{len(c.log.entries)}")
        for problem in problems:
            self.out.append(f"{indent}DISK MISMATCH {nd.id}: {problem}")  # shown even with log-level none

    def send_chunk(self, nd: Node, sc: SendChunk, indent: str) -> None:
        """The snapshotter's SendChunk: read chunk_bytes at the offset of the snapshot in the store
        and send them; done on the last chunk. A snapshot no longer stored is reported failed."""
        s = nd.snapshots.get(sc.index)
        if s is None:
            self.emit(f"{indent}snapshot {sc.index} is not in {nd.id}'s store: snapshot_failed({sc.peer})")
            nd.core.snapshot_failed(sc.peer)
            return
        data = s.data[sc.offset:sc.offset + nd.chunk_bytes]
        done = sc.offset + len(data) >= len(s.data)
        self.send(nd.id, sc.peer, InstallSnapshot(sc.term, s.index, s.term, sc.offset, data, done, list(s.members)),
                  indent)

    def store_chunk(self, nd: Node, st: StoreChunk, indent: str) -> None:
        """The snapshotter's StoreChunk: write the accepted bytes (offset 0 starts a new file); on
        the last chunk save the snapshot and report it, as the role actor does on SnapshotReceived
        (the core's done reply leaves after the next persist)."""
        m = st.msg
        if m.offset == 0:
            nd.partial = bytearray()
        if nd.partial is None or len(nd.partial) != m.offset:
            raise AssertionError(f"{nd.id}: the core accepted a chunk at offset {m.offset} out of order")
        nd.partial += m.data
        if not m.done:
            return
        data, nd.partial = bytes(nd.partial), None
        nd.save_snapshot(Snapshot(m.last_index, m.last_term, list(m.members), data))
        self.emit(f"{indent}snapshot {m.last_term}/{m.last_index} saved ({len(data)} bytes): installing")
        nd.core.install_snapshot(m.last_index, m.last_term, list(m.members), leader=st.leader, size=len(data))
        nd.applied = m.last_index

    def send(self, frm: str, to: str, msg: Any, indent: str) -> None:
        """Put a message on the network, unless the link is cut (then it is lost, and said so)."""
        if (frm, to) in self.cut:
            self.emit(f"{indent}dropped: {format_send(frm, to, msg)}  (partitioned)")
            return
        self.net.append(InFlight(frm, to, msg))

    def has_work(self, nd: Node) -> bool:
        return not nd.stopped and nd.core.has_ready()

    def take_msgs(self, to: str, frm: Optional[str] = None, kind: Optional[str] = None) -> list:
        keep, out = [], []
        for f in self.net:
            if f.to == to and (frm is None or f.frm == frm) and (kind is None or type(f.msg).__name__ == kind):
                out.append(f)
            else:
                keep.append(f)
        self.net = keep
        return out

    def deliver(self, to: str, frm: Optional[str], kind: Optional[str], indent: str) -> int:
        msgs = self.take_msgs(to, frm, kind)
        nd = self.nodes.get(to)
        for f in msgs:
            line = indent + format_send(f.frm, f.to, f.msg)
            if nd is None or nd.stopped or (f.frm, f.to) in self.cut:
                why = "no such node" if nd is None else "stopped" if nd.stopped else "partitioned"
                self.emit(f"{line}  (dropped: {why})")
                continue
            self.emit(line)
            nd.core.step(f.frm, f.msg)
        return len(msgs)

    def cmd_deliver_msgs(self, args: list) -> None:
        frm = self.opt(args, "from")
        kind = self.opt(args, "type")
        targets = self.ids(args) or list(self.nodes)
        src = node_id(frm) if frm else None
        for to in targets:
            if any(f.to == to and (src is None or f.frm == src) and (kind is None or type(f.msg).__name__ == kind)
                   for f in self.net):
                self.emit(f"> {to} receiving messages")
                self.deliver(to, src, kind, "  ")

    def cmd_drop_msgs(self, args: list) -> None:
        frm, to, kind = self.opt(args, "from"), self.opt(args, "to"), self.opt(args, "type")
        keep = []
        for f in self.net:
            if ((frm is None or f.frm == node_id(frm)) and (to is None or f.to == node_id(to))
                    and (kind is None or type(f.msg).__name__ == kind)):
                self.emit("dropped: " + format_send(f.frm, f.to, f.msg))
            else:
                keep.append(f)
        self.net = keep

    def cmd_stabilize(self, args: list) -> None:
        """Handle Readies, then deliver messages, until neither has anything to do (etcd's order)."""
        ids = self.ids(args) or list(self.nodes)
        for _ in range(1000):
            done = True
            for nid in ids:
                nd = self.nodes[nid]
                if self.has_work(nd):
                    done = False
                    self.emit(f"> {nid} handling Ready")
                    self.process_ready(nd, "  ")
            for nid in ids:
                if any(f.to == nid for f in self.net):
                    done = False
                    self.emit(f"> {nid} receiving messages")
                    self.deliver(nid, None, None, "  ")
            if done:
                return
        raise AssertionError("stabilize did not settle in 1000 rounds")

    # ------------------------------------------------------------------ the network

    def cmd_isolate(self, args: list) -> None:
        for nid in self.ids(args):
            for other in self.nodes:
                if other != nid:
                    self.cut |= {(nid, other), (other, nid)}

    def cmd_cut(self, args: list) -> None:
        a, b = self.ids(args)
        self.cut |= {(a, b), (b, a)}

    def cmd_heal(self, args: list) -> None:
        self.cut = set()

    # ------------------------------------------------------------------ inspection

    def cmd_raft_state(self, args: list) -> None:
        for nid, nd in self.nodes.items():
            c = nd.core
            self.emit(f"{nid}: {c.role} term={c.term} vote={c.vote} lead={c.leader_id} commit={c.commit} "
                      f"applied={nd.applied} last={c.log.last_term()}/{c.log.last_index()} {format_members(c.members)}"
                      f"{' (stopped: removed)' if nd.stopped else ''}")

    def cmd_raft_log(self, args: list) -> None:
        c = self.one(args).core
        if c.log.base_index:
            self.emit(f"snapshot {c.log.base_term}/{c.log.base_index}")
        for i in range(c.log.first_index(), c.log.last_index() + 1):
            self.emit(format_entry(i, c.log.entry(i)))
        if c.log.last_index() == c.log.base_index:
            self.emit("log is empty")

    def cmd_status(self, args: list) -> None:
        c = self.one(args).core
        if c.role != LEADER:
            self.emit(f"{c.id} is {c.role}, not leader")
            return
        for line in format_progress(c):
            self.emit(line)

    def cmd_msgs(self, args: list) -> None:
        """Print the messages in flight."""
        for f in self.net:
            self.emit(format_send(f.frm, f.to, f.msg))
        if not self.net:
            self.emit("no messages in flight")


__all__ = ["InteractionEnv"]
