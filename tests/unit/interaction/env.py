"""An interaction environment for RaftCore, after etcd-io/raft's rafttest.InteractionEnv.

It holds several cores and a network (an ordered list of messages in flight), and plays the
part of the shell around each core the way the actors do (actors/role.py, leader.py,
follower.py, snapshotter.py): a Ready is persisted synchronously (then ``on_persisted``), its
messages are queued, confirmed reads are answered, snapshots are streamed in one chunk and
installed at once. Nothing runs unless a command says so, so every step is visible.

Each node has a disk model written only from ``Ready.persist``; after every Ready it must equal
the core's hard state and log (a DISK MISMATCH line otherwise), and ``restart`` rebuilds the
core from it.

Commands (node arguments are numbers: ``1`` means node ``n1``)::

    add-nodes <count> [voters=(1,2,3)] [learners=(4)] [index=<k>] [pre-vote=true]
              [check-quorum=true] [uptime=<ticks>]
        New nodes n<next>... with that configuration (none: an empty one, as for a node that
        will receive a snapshot). index=k: every node starts from a snapshot at k (term 1, so
        the nodes start in term 1). uptime: ticks on the node's clock at start (default the
        minimum election timeout, so it does not ignore votes as a node that has just started does).
    campaign <id>                       start an election (pre-vote first if enabled)
    tick <id> [count=<n>]               n ticks of logical time
    tick-heartbeat <id>                 tick until the leader's next heartbeat is due
    tick-election <id>                  tick until the node's election timeout (a leader: its
                                        check-quorum round) fires
    propose <id> <data>                 a client write
    read-index <id> <label>             a linearizable read; on a follower it is forwarded to the
                                        leader as a ReadIndexRequest (as actors/follower.py does)
    transfer-leadership from=<id> to=<id>
    propose-conf-change <id> add-learner=<id> | add-voter=<id> | promote=<id> | remove=<id>
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

from raftkv.actors.core import LEADER, CoreConfig, NotLeader, PersistBatch, RaftCore, RemoteRead
from raftkv.actors.memlog import MemLog
from raftkv.wire.messages import (EntryKind, InstallSnapshot, InstallSnapshotReply, Member, ReadIndexReply,
                                  ReadIndexRequest)

from .datadriven import TestCase, parse_line
from .printing import format_entry, format_members, format_progress, format_ready, format_send

ELECTION_MIN, ELECTION_MAX, HEARTBEAT = 10, 20, 3


@dataclass
class Snapshot:
    """A durable snapshot a node can stream (the snapshotter's newest)."""

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
    snapshot: Optional[Snapshot] = None
    read_ids: int = 0  # ReadIndexRequest ids, as the Follower actor numbers them
    forwarded: dict = field(default_factory=dict)  # req_id -> label of a read forwarded to the leader
    after_next_persist: list = field(default_factory=list)  # (to, msg) to send once the next Ready is synced
    applied: int = 0


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

    # ------------------------------------------------------------------ set-up

    def cmd_log_level(self, args: list) -> None:
        level = self.positional(args)[0].lower()
        self.quiet = level == "none"

    def cmd_add_nodes(self, args: list) -> None:
        count = int(self.positional(args)[0])
        voters = [node_id(v) for v in self.opt_list(args, "voters")]
        learners = [node_id(v) for v in self.opt_list(args, "learners")]
        members = [member(v) for v in voters] + [member(v, voter=False) for v in learners]
        index = int(self.opt(args, "index", "0"))
        cfg = CoreConfig(election_ticks_min=ELECTION_MIN, election_ticks_max=ELECTION_MAX,
                         heartbeat_ticks=HEARTBEAT,
                         pre_vote=_bool(self.opt(args, "pre-vote", "true")),
                         check_quorum=_bool(self.opt(args, "check-quorum", "true")))
        uptime = int(self.opt(args, "uptime", str(ELECTION_MIN)))
        for _ in range(count):
            nid = f"n{len(self.nodes) + 1}"
            term = 1 if index else 0
            core = RaftCore(nid, cfg, term=term, log=MemLog(index, term), members=members, commit=index,
                            rng=random.Random(len(self.nodes) + 1))
            core.sync_clock(uptime)
            nd = Node(nid, core, cfg, list(members), Disk(term, None, index, MemLog(index, term)), applied=index)
            if index:
                nd.snapshot = Snapshot(index, term, list(members), f"snap@{index}".encode())
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
                        members=list(members), commit=d.commit, rng=random.Random(int(nd.id[1:])))
        core.sync_clock(int(self.opt(args, "uptime", "0")))
        nd.core = core
        nd.after_next_persist, nd.forwarded = [], {}
        nd.applied = d.log.base_index
        self.emit(f"{nd.id}: restarted: {core.role} term={core.term} vote={core.vote} commit={core.commit} "
                  f"last={core.log.last_term()}/{core.log.last_index()} {format_members(core.members)}")

    # ------------------------------------------------------------------ inputs

    def cmd_campaign(self, args: list) -> None:
        self.one(args).core.campaign()

    def cmd_tick(self, args: list) -> None:
        nd = self.one(args)
        for _ in range(int(self.opt(args, "count", "1"))):
            nd.core.tick()

    def cmd_tick_heartbeat(self, args: list) -> None:
        c = self.one(args).core
        n = c.cfg.heartbeat_ticks - c.hb_elapsed if c.role == LEADER else c.cfg.heartbeat_ticks
        for _ in range(n):
            c.tick()

    def cmd_tick_election(self, args: list) -> None:
        c = self.one(args).core
        n = (c.cfg.election_ticks_min if c.role == LEADER else c.timeout) - c.elapsed
        for _ in range(max(n, 1)):
            c.tick()

    def cmd_propose(self, args: list) -> None:
        nd = self.one(args)
        data = self.positional(args)[1]
        first, last = nd.core.propose([(EntryKind.COMMAND, data.encode())])
        self.emit(f"{nd.id}: proposed at {first}")

    def cmd_read_index(self, args: list) -> None:
        nd = self.one(args)
        label = self.positional(args)[1]
        c = nd.core
        if c.role == LEADER:
            c.read_index([label])
        elif c.leader_id is not None:
            nd.read_ids += 1
            nd.forwarded[nd.read_ids] = label
            self.emit(f"{nd.id}: read {label} forwarded to {c.leader_id} as req {nd.read_ids}")
            self.send(nd.id, c.leader_id, ReadIndexRequest(c.term, nd.read_ids), "")
        else:
            raise NotLeader(None)

    def cmd_transfer_leadership(self, args: list) -> None:
        c = self.nodes[node_id(self.opt(args, "from"))].core
        c.transfer_leadership(node_id(self.opt(args, "to")))

    def cmd_propose_conf_change(self, args: list) -> None:
        nd = self.one(args)
        c = nd.core
        members = list(c.members)
        if self.opt(args, "add-learner"):
            members.append(member(node_id(self.opt(args, "add-learner")), voter=False))
        elif self.opt(args, "add-voter"):
            members.append(member(node_id(self.opt(args, "add-voter"))))
        elif self.opt(args, "promote"):
            nid = node_id(self.opt(args, "promote"))
            members = [m._replace(voter=True) if m.id == nid else m for m in members]
        elif self.opt(args, "remove"):
            nid = node_id(self.opt(args, "remove"))
            members = [m for m in members if m.id != nid]
        else:
            raise ValueError("propose-conf-change needs add-learner=, add-voter=, promote= or remove=")
        index = c.propose_config(members)
        self.emit(f"{nd.id}: proposed {format_members(members)} at {index}")

    def cmd_compact(self, args: list) -> None:
        nd = self.one(args)
        c = nd.core
        c.compact(int(self.positional(args)[1]))
        base = c.log.base_index
        if nd.snapshot is None or base > nd.snapshot.index:
            nd.snapshot = Snapshot(base, c.log.base_term, list(c.base_members), f"snap@{base}".encode())
        self.emit(f"{nd.id}: snapshot at {c.log.base_term}/{base}, log {c.log.first_index()}..{c.log.last_index()}")

    # ------------------------------------------------------------------ Ready and messages

    def cmd_process_ready(self, args: list) -> None:
        for nid in self.ids(args):
            self.emit(f"> {nid} handling Ready")
            self.process_ready(self.nodes[nid], indent="  ")

    def process_ready(self, nd: Node, indent: str) -> None:
        """Take one Ready and carry it out as the actors do."""
        c = nd.core
        rd = c.take_ready()
        for line in format_ready(nd.id, c, rd) or ["(empty)"]:
            self.emit(indent + line)
        for to, m in rd.send:
            self.send(nd.id, to, m, indent)
        # The persist is synced here and now; then what waited for it may leave.
        p = rd.persist
        for to, m in rd.send_after_persist:
            self.send(nd.id, to, m, indent)
        for to, m in nd.after_next_persist:
            self.emit(f"{indent}Snapshot installed, reply after persist: {format_send(nd.id, to, m)}")
            self.send(nd.id, to, m, indent)
        nd.after_next_persist = []
        nd.disk.write(p)
        self.check_disk(nd, indent)
        if p.entries:
            c.on_persisted(p.first + len(p.entries) - 1, p.entries[-1].term)
        if rd.committed:
            nd.applied = rd.committed[-1][0]
        self.answer_reads(nd, rd, indent)
        self.snapshot_outputs(nd, rd, indent)

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

    def answer_reads(self, nd: Node, rd: Any, indent: str) -> None:
        """Leader: answer forwarded reads (actors/leader.py on_reads). Follower: the leader's answers."""
        # getattr: Ready's fields are being reworked (issue 15); a field that goes away must not
        # break the environment, only change what the scenarios print.
        for index, handles in getattr(rd, "reads", []):
            for h in handles:
                if type(h) is RemoteRead:
                    self.send(nd.id, h.peer, ReadIndexReply(nd.core.term, h.req_id, index, True), indent)
        for h in getattr(rd, "reads_failed", []):
            if type(h) is RemoteRead:
                self.send(nd.id, h.peer, ReadIndexReply(nd.core.term, h.req_id, 0, False), indent)
        for m in getattr(rd, "read_index_replies", []):
            label = nd.forwarded.pop(m.req_id, None)
            if label is not None:
                self.emit(f"{indent}read {label}: {'serve at index ' + str(m.index) if m.ok else 'failed'}")

    def snapshot_outputs(self, nd: Node, rd: Any, indent: str) -> None:
        """The snapshotter: stream the newest snapshot in one chunk; install a received one at once."""
        c = nd.core
        for peer in getattr(rd, "snapshots_to_send", []):
            s = nd.snapshot
            if s is None:
                self.emit(f"{indent}no snapshot to send to {peer}")
                c.snapshot_failed(peer)
                continue
            self.emit(f"{indent}sending snapshot {s.term}/{s.index} to {peer}")
            self.send(nd.id, peer, InstallSnapshot(c.term, s.index, s.term, 0, s.data, True, list(s.members)),
                      indent)
        for leader, m in getattr(rd, "snapshot_chunks", []):
            if not m.done or m.offset != 0:
                raise ValueError("the environment streams snapshots in one chunk")
            nd.snapshot = Snapshot(m.last_index, m.last_term, list(m.members), m.data)
            c.install_snapshot(m.last_index, m.last_term, list(m.members))
            nd.applied = m.last_index
            nd.after_next_persist.append((leader, InstallSnapshotReply(c.term, m.last_index, len(m.data), True)))

    def send(self, frm: str, to: str, msg: Any, indent: str) -> None:
        """Put a message on the network, unless the link is cut (then it is lost, and said so)."""
        if (frm, to) in self.cut:
            self.emit(f"{indent}dropped: {format_send(frm, to, msg)}  (partitioned)")
            return
        self.net.append(InFlight(frm, to, msg))

    def has_work(self, nd: Node) -> bool:
        return nd.core.has_ready() or bool(nd.after_next_persist)

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
            if nd is None or (f.frm, f.to) in self.cut:
                self.emit(line + "  (dropped: partitioned)" if nd else line + "  (dropped: no such node)")
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
                      f"applied={nd.applied} last={c.log.last_term()}/{c.log.last_index()} {format_members(c.members)}")

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
