"""Leases in the deterministic simulation: the real lease table and the real leader desk and clock
(actors/lease_state.py, actors/lease_leader.py, actors/lease_clock.py) under the simulation's
faults, and the lease invariants.

:class:`LeaseSim` is the :class:`tests.sim.cluster.Sim` scenario plus lease holders. A holder
grants a lease (a TTL of 30-80 ticks; elections take 8-24) through a node that believes it leads,
attaches keys ``L<h>/<j>`` to it, and sends keepalives every quarter TTL to a node that believes it
leads (stale leaders included), each confirmed by that node's ReadIndex round as in the node. Some
holders die (stop renewing), some revoke their lease; at the heal every holder stops. Each node's
leader runs a LeaseDesk on its own skewed tick clock, promoted when it becomes leader; expiries are
proposed as the node proposes them. Each node's lease table is a real LeaseTable kept in its KV
state under the reserved key ``~leases`` (so snapshots, restarts and InstallSnapshot carry it, and
State Machine Safety compares it).

Checked:

* No lease expires while kept alive: when an expiry (a revoke the leader decided) is first
  committed, or a keepalive is answered "not found", the holder's last acknowledged keepalive (or
  grant) was sent at least its TTL before (within the clocks' 5 % rate skew), whatever leader
  changes, partitions, pauses and crashes happened in between.
* Every key of an ended lease is gone: after a node applies a revoke (expiry or client), none of
  the holder's keys remain in that node's state.
* At the end every lease of a stopped holder has expired and its keys are gone on every member.

Replay a seed: ``python -m tests.sim.lease_model --seed N [--nodes 5] [-v]``.
"""
from __future__ import annotations

import argparse
import random
import sys
from types import SimpleNamespace
from typing import Any, Optional

import msgpack

from raftkv.actors.lease_leader import LeaseDesk
from raftkv.actors.lease_state import LeaseTable, execute_with_lease
from raftkv.records import Op
from raftkv.wire.messages import Command, DecodeError, EntryKind, decode_record, encode_record

from .cluster import Sim
from .model import LEADER, Node, SimFailure, _h

TABLE_KEY = "~leases"  # where a node's lease table lives in its KV model (hex of msgpack records)
RATE_SLACK = 0.94  # clocks run within 5 % of each other: a TTL is at least this much real time
CLIENT = "simlease"


class Holder:
    """One lease holder (a client process)."""

    __slots__ = ("h", "ttl", "state", "lease", "grant_data", "grant_sent", "last_sent", "next_beat", "keys",
                 "stopped_at")

    def __init__(self, h: int, ttl: int) -> None:
        self.h = h
        self.ttl = ttl
        self.state = "new"  # new -> granting -> active -> dead | closed | lost
        self.lease = 0
        self.grant_data = b""
        self.grant_sent = 0.0
        self.last_sent = 0.0  # send time of the newest acknowledged keepalive (or of the grant)
        self.next_beat = 0.0
        self.keys = 0
        self.stopped_at: Optional[float] = None


class _View:
    """A node's AppliedView as the desk reads it: the applied index and the lease table."""

    def __init__(self, sim: "LeaseSim", nd: Node) -> None:
        self.sim, self.nd = sim, nd

    @property
    def index(self) -> int:
        return self.nd.applied

    @property
    def state(self) -> Any:
        return SimpleNamespace(leases=self.sim.table(self.nd))


class LeaseSim(Sim):
    """The simulation with lease holders and the lease invariants (module docstring)."""

    def __init__(self, seed: int, nodes: Optional[int] = None, **kw: Any) -> None:
        super().__init__(seed, nodes, **kw)
        # The holders draw from a stream of their own (as disk wipes do), so that the lease
        # workload does not change which faults a seed gets.
        rng = self.lease_rng = random.Random(f"lease:{seed}")
        self.holders: list = []
        self.by_lease: dict = {}  # lease id -> Holder
        self.lease_ops: dict = {}  # command data -> Holder, for the holders' grants
        self.lease_seq = 0
        self.max_holders = rng.choice((2, 4, 6))
        self.die_rate = rng.choice((0.0, 0.005, 0.02))  # per holder per tick
        self.close_rate = rng.choice((0.0, 0.003))
        self.desks: dict = {}  # node index -> (incarnation, term, LeaseDesk)
        self.tables: dict = {}  # node index -> (encoded table, LeaseTable)
        self.table_version = 0
        self.lease_stats = {"grants": 0, "keepalives": 0, "expiries": 0, "revokes": 0, "promotions": 0,
                            "failovers_kept": 0}

    # ------------------------------------------------------------------ the per-node lease table

    def table(self, nd: Node) -> LeaseTable:
        raw = nd.kv.get(TABLE_KEY)
        cached = self.tables.get(nd.i)
        if cached is not None and cached[0] == raw:
            return cached[1]
        t = LeaseTable()
        if raw is not None:
            t.load(msgpack.unpackb(bytes.fromhex(raw.decode()), raw=False))
        self.table_version += 1
        t.version = 1_000_000 * self.table_version  # never equal to a version a desk saw on another table
        self.tables[nd.i] = (raw, t)
        return t

    def _store_table(self, nd: Node, t: LeaseTable) -> None:
        raw = msgpack.packb(t.records(), use_bin_type=True).hex().encode() if t.ttl else None
        old = nd.kv.get(TABLE_KEY)
        nd.digest ^= _h(TABLE_KEY, old) ^ _h(TABLE_KEY, raw)
        if raw is None:
            nd.kv.pop(TABLE_KEY, None)
        else:
            nd.kv[TABLE_KEY] = raw
        self.tables[nd.i] = (raw, t)

    def _kv_exec(self, nd: Node, c: Command) -> tuple:
        old = nd.kv.get(c.key)
        if c.op == Op.DELETE.value:
            nd.digest ^= _h(c.key, old)
            nd.kv.pop(c.key, None)
        else:
            nd.digest ^= _h(c.key, old) ^ _h(c.key, c.value)
            nd.kv[c.key] = c.value
        return ("ok", None)

    def apply_command(self, nd: Node, idx: int, data: bytes) -> None:
        if data in self.ops:
            super().apply_command(nd, idx, data)
            return
        try:
            cmd = decode_record(data, Command)
        except DecodeError:
            self.fail(f"{nd.id} applies an unknown command at {idx}")
        first = idx > len(self.committed)  # the first node to apply it: it is committed now
        t = self.table(nd)
        if cmd.op == Op.LEASE_REVOKE.value and first:
            self.on_revoke_committed(cmd, idx)
        execute_with_lease(t, cmd, idx, lambda c: self._kv_exec(nd, c),
                           lambda key: self._kv_exec(nd, Command("delete", key)))
        self._store_table(nd, t)
        if cmd.op == Op.LEASE_GRANT.value and first:
            ho = self.lease_ops.get(data)
            if ho is not None and ho.state == "granting":
                ho.lease, ho.state, ho.last_sent = idx, "active", ho.grant_sent
                ho.next_beat = self.now + ho.ttl / 4
                self.by_lease[idx] = ho
                self.lease_stats["grants"] += 1
        if cmd.op == Op.LEASE_REVOKE.value:
            ho = self.by_lease.get(cmd.lease)
            if ho is not None and any(k.startswith(f"L{ho.h}/") for k in nd.kv):
                self.fail(f"{nd.id} applied the revoke of lease {cmd.lease} at {idx} but still holds keys "
                          f"{sorted(k for k in nd.kv if k.startswith(f'L{ho.h}/'))}")

    def on_revoke_committed(self, cmd: Command, idx: int) -> None:
        ho = self.by_lease.get(cmd.lease)
        if cmd.client_id:
            self.lease_stats["revokes"] += 1
            return
        self.lease_stats["expiries"] += 1
        if ho is not None and self.now < ho.last_sent + ho.ttl * RATE_SLACK:
            self.fail(f"lease {cmd.lease} (TTL {ho.ttl}) expired at {idx}, committed at t={self.now:.2f}, but its "
                      f"holder ({ho.state}) was last kept alive by a keepalive sent at t={ho.last_sent:.2f}")
        if self.verbose:
            self.trace(f"lease {cmd.lease} expired (committed at {idx})")

    # ------------------------------------------------------------------ each node's leader desk

    def desk(self, nd: Node) -> Optional[LeaseDesk]:
        core = nd.core
        if not nd.alive or core.role != LEADER:
            self.desks.pop(nd.i, None)
            return None
        d = self.desks.get(nd.i)
        if d is not None and d[0] == nd.incarnation and d[1] == core.term:
            return d[2]
        emin, emax = self.cfg.election_ticks_min, self.cfg.election_ticks_max
        ctx = SimpleNamespace(node_id=nd.id, core=core, applied_view=_View(self, nd),
                              tuning=SimpleNamespace(election_timeout_ms=(emin * 1000, emax * 1000)))
        desk = LeaseDesk(ctx, now=lambda: float(nd.ticks))  # the node's own (skewed) clock, in ticks
        desk.check_every = 1
        self.desks[nd.i] = (nd.incarnation, core.term, desk)
        return desk

    def tick(self, nd: Node) -> None:
        super().tick(nd)
        desk = self.desk(nd)
        if desk is None:
            return
        was = desk.clock.promoted
        props = desk.on_tick()
        if desk.clock.promoted and not was:
            self.lease_stats["promotions"] += 1
            if any(ho.state == "active" and ho.lease in desk.clock.deadline for ho in self.holders):
                self.lease_stats["failovers_kept"] += 1  # a new leader took over a lease being kept alive
        if props:
            try:
                nd.core.propose(props)
            except self.cm.NotLeader:
                return
            if self.verbose:
                self.trace(f"{nd.id}: proposes the expiry of {len(props)} lease(s)")

    # ------------------------------------------------------------------ keepalives (ReadIndex-confirmed)

    def node_reads(self, nd: Node, reads: list, failed: list) -> None:
        plain = []
        for ri, handles in reads:
            mine = [h for h in handles if type(h) is tuple]
            rest = [h for h in handles if type(h) is not tuple]
            for h in mine:
                self.keepalive_confirmed(nd, h)
            if rest:
                plain.append((ri, rest))
        super().node_reads(nd, plain, [h for h in failed if type(h) is not tuple])

    def keepalive_confirmed(self, nd: Node, h: tuple) -> None:
        _, holder_i, sent, lease_id = h
        ho = self.holders[holder_i]
        desk = self.desk(nd)
        if desk is None:
            return  # the node stopped leading in the same Ready: the client retries elsewhere
        rep = desk.answer(SimpleNamespace(op=Op.LEASE_KEEPALIVE.value, lease=lease_id))
        if rep.status == "ok":
            if ho.state == "active":
                ho.last_sent = max(ho.last_sent, sent)
            self.lease_stats["keepalives"] += 1
        elif rep.status == "not_found" and ho.state == "active":
            if self.now < ho.last_sent + ho.ttl * RATE_SLACK:
                self.fail(f"{nd.id} answered a keepalive of lease {lease_id} (TTL {ho.ttl}) 'expired' at "
                          f"t={self.now:.2f}, but a keepalive sent at t={ho.last_sent:.2f} was acknowledged")
            ho.state, ho.stopped_at = "lost", self.now

    # ------------------------------------------------------------------ the holders (clients)

    def _propose_lease(self, nd: Node, cmd: Command) -> bytes:
        data = encode_record(cmd)
        try:
            nd.core.propose([(EntryKind.COMMAND, data)])
        except self.cm.NotLeader:
            return b""
        self.after_input(nd)
        return data

    def chaos_events(self) -> None:
        super().chaos_events()
        rng = self.lease_rng
        leaders = self.leader_nodes()
        if len([x for x in self.holders if x.state in ("new", "granting", "active")]) < self.max_holders \
                and rng.random() < 0.05:
            self.holders.append(Holder(len(self.holders), rng.choice((30, 50, 80))))
        for ho in self.holders:
            if ho.state in ("new", "granting") and leaders and rng.random() < 0.2:
                # (re)send the grant: a new request each time (a retry may make a second lease)
                nd = rng.choice(leaders)
                self.lease_seq += 1
                ho.grant_sent = self.now if ho.state == "new" else ho.grant_sent
                data = self._propose_lease(nd, Command(Op.LEASE_GRANT.value, "", client_id=CLIENT,
                                                       seq=self.lease_seq, lease=ho.ttl))
                if data:
                    ho.state = "granting"
                    ho.grant_sent = self.now
                    self.lease_ops[data] = ho
            elif ho.state == "active":
                if rng.random() < self.die_rate:
                    ho.state, ho.stopped_at = "dead", self.now
                    if self.verbose:
                        self.trace(f"holder {ho.h} of lease {ho.lease} dies")
                    continue
                if self.close_rate and rng.random() < self.close_rate and leaders:
                    self.lease_seq += 1
                    if self._propose_lease(rng.choice(leaders), Command(Op.LEASE_REVOKE.value, "", client_id=CLIENT,
                                                                        seq=self.lease_seq, lease=ho.lease)):
                        ho.state, ho.stopped_at = "closed", self.now
                    continue
                if ho.keys < 3 and leaders and rng.random() < 0.1:
                    self.lease_seq += 1
                    if self._propose_lease(rng.choice(leaders), Command(Op.PUT.value, f"L{ho.h}/{ho.keys}", b"v",
                                                                        client_id=CLIENT, seq=self.lease_seq,
                                                                        lease=ho.lease)):
                        ho.keys += 1
                if self.now >= ho.next_beat and leaders:
                    ho.next_beat = self.now + ho.ttl / 4
                    nd = rng.choice(leaders)
                    desk = self.desk(nd)
                    if desk is None or desk.not_ready() is not None:
                        ho.next_beat = self.now + 1  # "unavailable": retry soon
                        continue
                    try:
                        nd.core.read_index([("ka", ho.h, self.now, ho.lease)])
                    except self.cm.NotLeader:
                        continue
                    self.after_input(nd)

    # ------------------------------------------------------------------ the end

    def heal(self) -> None:
        for ho in self.holders:
            if ho.state in ("new", "granting", "active"):
                ho.state, ho.stopped_at = "dead", self.now
        super().heal()

    def reference_state(self) -> dict:
        ref = Node(len(self.nodes) + 1000)  # a model FSM of its own, fed the whole committed history
        for idx, e in enumerate(self.committed, start=1):
            if e.kind == EntryKind.COMMAND:
                self.apply_command(ref, idx, e.data)
        self.tables.pop(ref.i, None)
        return ref.kv

    def check_converged(self) -> None:
        # Every holder has stopped: let time pass (healed) until each lease has expired.
        longest = max((ho.ttl for ho in self.holders), default=0) + 2 * self.cfg.election_ticks_max + 40
        end = self.tick_no + longest
        while self.tick_no < end:
            self.step()
            ld = self.current_leader()
            if ld is not None and not self.table(ld).ttl and ld.applied >= len(self.committed):
                break
        super().check_converged()
        ld = self.current_leader()
        members = {m.id for m in ld.core.members} if ld is not None else set()
        for nd in self.nodes:
            if not nd.alive or nd.stopped or nd.id not in members:
                continue
            left = self.table(nd).ttl
            if left:
                self.fail(f"{nd.id} still holds lease(s) {sorted(left)} long after every holder stopped")
            keys = sorted(k for k in nd.kv if k.startswith("L"))
            if keys:
                self.fail(f"{nd.id} still holds keys {keys} of ended leases")


def run_lease_seed(seed: int, nodes: Optional[int] = None, **kw: Any) -> tuple:
    sim = LeaseSim(seed, nodes, **kw)
    st = sim.run()
    return st, sim.lease_stats


def main(argv: Optional[list] = None) -> int:
    ap = argparse.ArgumentParser(description="Replay one seed of the lease simulation.")
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    try:
        st, ls = run_lease_seed(args.seed, args.nodes, verbose=args.verbose)
    except SimFailure as e:
        print(f"FAIL: {e}")
        return 1
    print(f"ok: {ls}; {st}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
