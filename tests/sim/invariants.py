"""The safety checks (Election Safety, Log Matching, Leader Completeness, commit safety,
State Machine Safety, snapshots, membership, durability, ReadIndex) and the end-of-run
liveness and convergence checks. See tests/sim/cluster.py's docstring for the list."""
from __future__ import annotations

import bisect
from typing import Any

from raftkv.wire.messages import EntryKind

from . import txn_workload
from .model import CRASH, LEADER, STOP, Node, Snap, kv_digest


class Invariants:
    """Checks run by the simulation (a mixin of :class:`tests.sim.cluster.Sim`)."""

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

    def check_base(self, nd: Node, what: str, idx: int, term: int) -> None:
        """A compaction point is a committed (index, term)."""
        if idx == 0:
            return
        if idx > len(self.committed):
            self.fail(f"{nd.id} compacts its {what} to {idx}, beyond anything applied ({len(self.committed)})")
        if self.committed[idx - 1].term != term:
            self.fail(f"{nd.id} compacts its {what} to ({idx}, term {term}), but the entry committed there has "
                      f"term {self.committed[idx - 1].term}")

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
        me = core.member(core.id)
        if me is not None and not me.voter:
            self.stats.learner_leads += 1  # a needed learner won (RaftCore._may_campaign)
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
            # A voter whose data directory was replaced since the configuration recorded it votes
            # for nobody as that voter (its messages are addressed to the old incarnation).
            gone = {mb.id for mb in conf if mb.incarnation and mb.incarnation != self.nodes[self.index[mb.id]].inc}
            lacking = [v for v in voters if v not in gone and not self.nodes[self.index[v]].disk.holds(m, e)]
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

    def reference_state(self) -> dict:
        """The KV state the committed history leads to (tests/sim/lease_model.py adds leases)."""
        ref: dict = {}
        for e in self.committed:
            if e.kind == EntryKind.COMMAND:
                for k, v in txn_workload.effects(ref, self.ops[e.data]):
                    if v is None:
                        ref.pop(k, None)
                    else:
                        ref[k] = v
        return ref

    def check_converged(self) -> None:
        """Every member applies the same log to the same state, with every acknowledged write, and
        every learner is promoted, within a bound."""
        start = self.tick_no
        longest = max(nd.core.log.last_index() for nd in self.nodes if nd.alive)
        budget = self.SETTLE_TICKS + 4 * longest // self.cfg.max_batch
        # A seed whose chaos committed no configuration change, or installed no snapshot, gets
        # one admin change in the healed cluster. Without an install so far, clients first write
        # until the leader has compacted its log behind a snapshot, and the change adds a spare,
        # which then needs a snapshot to catch up.
        late = bool(self.member_rate) and (self.stats.config_commits == 0 or self.stats.installs == 0)
        want_install = self.stats.installs == 0 and any(
            not nd.retired and not nd.stopped and not nd.started for nd in self.nodes[self.n:])
        give_up = self.tick_no + budget // 2
        while True:
            # The budget grows with the log, as the late writes and admissions below lengthen it
            # (seed 1030779: 9 entries at the start, 163 after the late writes, sent one entry
            # per round trip with max_batch 1); they stop at give_up, so the bound stays finite.
            longest = max([longest] + [nd.core.log.last_index() for nd in self.nodes if nd.alive])
            budget = self.SETTLE_TICKS + 4 * longest // self.cfg.max_batch
            deadline = start + budget
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
                        and not self.joiners  # wiped nodes are re-admitted
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
        ref = self.reference_state()
        for nd in mem:
            if nd.kv != ref:
                self.fail(f"{nd.id}'s state differs from the committed history's")
        for idx, data in self.acked:
            if idx > len(self.committed) or self.committed[idx - 1].data != data:
                self.fail(f"acknowledged write at index {idx} is lost")
