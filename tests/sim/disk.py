"""The simulated LogManager and disk: one synced write in flight, later batches merged into the
next; a write applied like LogStore.write then LogStore.drop_prefix; durability checks."""
from __future__ import annotations

from typing import Any


from .model import DISK, Node


class DiskModel:
    """The LogManager and LogStore of each node (a mixin of :class:`tests.sim.cluster.Sim`)."""

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
