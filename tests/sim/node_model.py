"""A node as the actors run it, around the real core: executing each Ready (as
RoleActor._process_ready), the FSM, reads, the Snapshotter's byte moving, boot, crash,
pause and restart."""
from __future__ import annotations

import random
from typing import Any, Optional

from raftkv.actors.core import CANDIDATE, COMMIT_FLUSH_TICKS, PRE_CANDIDATE
from raftkv.wire.messages import AppendEntries, EntryKind, InstallSnapshot, Member

from . import txn_workload
from .model import LEADER, MSG, RESUME, SNAPRECV, SNAPSAVE, Disk, Node, Snap, _h, decode_kv, kv_digest


class NodeModel:
    """The shell around each node's RaftCore (a mixin of :class:`tests.sim.cluster.Sim`)."""

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
            if r.readmission is not None:  # a peer message, as the role actor of a node without --secure sends it
                self.send(nd, [r.readmission])
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
                elif change.replaces is not None:
                    self.maybe_strand_admission(nd, change.member.id)
                if self.verbose:
                    self.trace(f"{nd.id}: membership change at {index}: {change.describe()}")
            if r.role_changed and core.role in (PRE_CANDIDATE, CANDIDATE) and not core.promotable() \
                    and core.needed_learner:
                self.stats.learner_campaigns += 1
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

    def tick(self, nd: Node) -> None:
        nd.core.tick()
        nd.ticks += 1
        if nd.ticks % COMMIT_FLUSH_TICKS == 0:
            self.maybe_write(nd, tick=True)

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
                self.apply_command(nd, idx, e.data)
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

    def apply_command(self, nd: Node, idx: int, data: bytes) -> None:
        """The FSM's effect of one committed command (tests/sim/lease_model.py adds lease commands)."""
        op = self.ops.get(data)
        if op is None:
            self.fail(f"{nd.id} applies an unknown command at {idx}")
        if type(op) is tuple:  # a put (the common case, inline)
            key, value = op
            nd.digest ^= _h(key, nd.kv.get(key)) ^ _h(key, value)
            nd.kv[key] = value
            return
        # a transaction: every node evaluates it on its own state
        changes = txn_workload.effects(nd.kv, op)
        for key, value in changes:
            nd.digest ^= _h(key, nd.kv.get(key)) ^ _h(key, value)
            if value is None:
                nd.kv.pop(key, None)
            else:
                nd.kv[key] = value
        problem = txn_workload.total_problem(nd.kv)
        if problem:
            self.fail(f"Transaction atomicity: {nd.id} after index {idx}: {problem}")
        if changes and idx > len(self.committed):
            self.stats.txn_transfers += 1

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
            # The snapshotter adopts received snapshots one after another (actors/snapshotter.py):
            # a save never completes before the one received ahead of it.
            due = nd.snaprecv_due = max(self.now + self.rng.uniform(0.05, self.snap_save_hi), nd.snaprecv_due)
            self.push(due, SNAPRECV, nd.i, nd.incarnation, (leader, s))

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

    def self_stop(self, nd: Node) -> None:
        """Ready.removed: our removal is committed: record it and stop for good (Node.on_removed)."""
        if nd.id not in self.ever_member:
            self.fail(f"{nd.id} stops as removed (its log's configuration {[m.id for m in nd.core.members]} at "
                      f"{nd.core.config_index()} is committed at {nd.core.commit}), but it was never in a "
                      f"committed configuration")
        conf = self.committed_member_ids()
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
        if s is not None and s.index > d.base_index and d.term_at(s.index) != s.term:
            # Node._finish_cut_install: a leader's snapshot saved, the log not yet compacted to it
            self.stats.cut_installs += 1
            self.drop_prefix(nd, (s.index, s.term))
            d.commit = max(d.commit, s.index)
        nd.core = self.cm.RaftCore(nd.id, self.cfg, term=d.term, vote=d.vote,
                                   log=MemLog(d.base_index, d.base_term, list(d.entries)),
                                   members=list(s.members) if s else [], commit=d.commit, rng=rng,
                                   incarnation=nd.inc)
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

    def maybe_wipe(self, nd: Node) -> None:
        """The disk-replacement fault: a member restarts on an empty data directory, a new
        incarnation of its id that must join again (through the leader, as kvnode --join) and be
        caught up; it must never count as the old member. At most one wiped member awaits
        re-admission at a time (two would be a lost quorum in 3 nodes, which needs recovery)."""
        rng = self.wipe_rng
        if not (self.chaos and self.wipe_rate and self.stats.wipes < 2 and not self.awaiting_readmission()
                and not nd.retired and rng.random() < self.wipe_rate):
            return
        conf = self.config_as_of(len(self.committed))
        if not any(m.id == nd.id and m.incarnation == nd.inc for m in conf):
            return
        # The others must keep a quorum without it (2 of 2 voters would be a lost quorum), in the
        # committed configuration and in any a node holds beyond it: a live node's, and the newest
        # on a crashed node's disk, which it comes back with (a leader that logged its own removal
        # and crashed holds a 2-voter configuration; the others cannot elect without its vote),
        # and any still on its way to a node: seed 1013156's leader sent {n1, n2} to n1 alone and
        # crashed unsynced; n2 was wiped, and the append reached n1 after: n1 could never win
        # without n2, nor vote for n3, whose log was behind. Whether that entry was committed, n1
        # cannot tell: it needs an operator, as any lost quorum does.
        confs = [conf] + [o.core.members if o.alive else self.disk_config(o.disk)
                          for o in self.nodes if o.alive or (o.started and not o.stopped)]
        confs += [list(self.cm.decode_config(e.data)) for _, _, kind, _, _, m in self.events
                  if kind == MSG and type(m) is AppendEntries for e in m.entries if e.kind == EntryKind.CONFIG]
        if any(sum(1 for m in c if m.voter) < 3 for c in confs if c):
            return
        self.wipe(nd)

    def awaiting_readmission(self) -> bool:
        """Whether a wiped member is not in the committed configuration as its new incarnation yet:
        still joining, or admitted only by an entry that may be truncated (its join loop has
        stopped; it must ask again, actors/readmission.py). Its voter slot is dead meanwhile."""
        if self.joiners:
            return True
        wiped = {nd.id: nd.inc for nd in self.nodes if nd.gen and not nd.retired and not nd.stopped}
        return bool(wiped) and any(m.id in wiped and m.incarnation != wiped[m.id]
                                   for m in self.config_as_of(len(self.committed)))

    def wipe(self, nd: Node) -> None:
        """Replace a stopped node's data directory by an empty one: it restarts as a new
        incarnation, which kvnode's join loop (drive_joins) asks the leader to admit."""
        nd.disk = Disk()
        nd.gen += 1
        nd.joining = True
        self.joiners.append(nd)
        self.stats.wipes += 1
        if self.verbose:
            self.trace(f"!!! {nd.id}'s data directory is wiped: it restarts as incarnation {nd.inc}")

    def maybe_strand_admission(self, ld: Node, joiner: str) -> None:
        """The fault behind re-admission (actors/readmission.py, sim seed 4095; scripted in
        tests/sim/test_readmission_sim.py): the leader's entry admitting a wiped member's new
        incarnation reaches that member alone. Everything else the leader sends is lost for a
        while (it still hears), so the others elect a leader of a later term without the entry,
        which addresses the member as its old incarnation. Its own random stream, at most once a
        seed, so that seeds it does not hit run as before."""
        emax = self.cfg.election_ticks_max
        # Only where the others can elect without the leader and the joiner (five voters or more),
        # before the chaos ends, long enough for them to notice and elect (maybe after split votes).
        voters = [m.id for m in ld.core.members if m.voter]
        if (len([v for v in voters if v not in (ld.id, joiner)]) < len(voters) // 2 + 1
                or self.now + 3 * emax > self.chaos_ticks):
            return
        rng = self.strand_rng
        if not (self.chaos and self.strand_rate and not self.stranded and rng.random() < self.strand_rate):
            return
        self.stranded = True
        j = self.index[joiner]
        self.blocked = {(ld.i, o.i) for o in self.nodes if o.i not in (ld.i, j)}
        self.partition_until = self.now + rng.uniform(3 * emax, max(self.part_hi, 6 * emax))
        self.stats.partitions += 1
        if self.verbose:
            self.trace(f"!!! {ld.id}'s admission of {joiner} reaches {joiner} alone: {ld.id} is not heard until "
                       f"{self.partition_until:.2f}")

    def disk_config(self, d: Disk) -> list:
        """The configuration a node restarting from ``d`` holds: its log's newest CONFIG entry, or
        else its snapshot's."""
        for e in reversed(d.entries):
            if e.kind == EntryKind.CONFIG:
                return list(self.cm.decode_config(e.data))
        return list(d.snap.members) if d.snap is not None else []

    def watch_admissions(self) -> None:
        """The watch of kvnode's join loop (Node._join_loop): a wiped node admitted once whose
        configuration lists its id as the old incarnation again (the admission was truncated, and
        a snapshot of a leader that never had it was installed) asks again (sim seed 987039)."""
        if self.tick_no % 5:
            return
        for nd in self.nodes:
            if (nd.gen and nd.alive and not nd.retired and not nd.stopped and nd not in self.joiners
                    and not any(m.id == nd.id and m.incarnation == nd.inc for m in nd.core.members)
                    and any(m.id == nd.id and m.incarnation != nd.inc for m in nd.core.members)):
                nd.joining = True
                self.joiners.append(nd)

    def drive_joins(self) -> None:
        """kvnode's join loop for wiped nodes: ask the leader (every few ticks) until the node's
        configuration lists it as its own incarnation."""
        for nd in list(self.joiners):
            if nd.retired or nd.stopped:
                self.joiners.remove(nd)
                continue
            if nd.alive and any(m.id == nd.id and m.incarnation == nd.inc for m in nd.core.members):
                nd.joining = False
                self.joiners.remove(nd)
                self.stats.rejoins += 1
                continue
            if self.tick_no % 5 or not nd.alive or nd.paused:
                continue
            ld = self.current_leader()
            if ld is None or ld.paused or ld is nd:
                continue
            try:
                ld.core.join(Member(nd.id, nd.addr, incarnation=nd.inc), None, nd.inc)
            except (self.cm.NotLeader, self.cm.MemberLive):
                pass  # no leader here, or the old incarnation answered it lately (replacement_guard): retry
            self.after_input(ld)

    def restart(self, nd: Node) -> None:
        self.maybe_wipe(nd)
        nd.incarnation += 1
        self.boot(nd, random.Random(f"{self.seed}:{nd.i}:{nd.incarnation}"))
        if self.verbose:
            self.trace(f"!!! restart {nd.id}")
        # kvnode runs its join loop at every start with --join that its disk does not admit
        # (Node.needs_join): a wiped node whose admission reached it alone, unsynced, and was lost
        # in a crash comes back with nothing and must ask again (sim seed 913961 of the lease
        # simulation: the loop had stopped at the admission and was never restarted).
        if (nd.gen and not nd.retired and not nd.stopped and nd not in self.joiners
                and not any(m.id == nd.id and m.incarnation == nd.inc for m in nd.core.members)):
            nd.joining = True
            self.joiners.append(nd)
        self.flush(nd)  # hands the committed prefix after the snapshot to the rebuilt FSM
