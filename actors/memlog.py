"""The in-memory view of the Raft log that the pure core reads and writes.

The durable copy lives in storage.log_store and is written by the LogManager actor; this view
runs ahead of it (entries are appended here first, then persisted in group-committed batches),
which is what lets the core stay free of I/O.
"""
from __future__ import annotations

from typing import Optional

from raftkv.wire.messages import Entry

from .deferred_free import SMALL, free_later


class MemLog:
    """Entries ``base_index+1 .. last_index`` plus the (index, term) of the entry before them."""

    __slots__ = ("base_index", "base_term", "entries")

    def __init__(self, base_index: int = 0, base_term: int = 0, entries: Optional[list] = None) -> None:
        self.base_index = base_index
        self.base_term = base_term
        self.entries: list[Entry] = list(entries or [])

    def last_index(self) -> int:
        return self.base_index + len(self.entries)

    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.base_term

    def first_index(self) -> int:
        return self.base_index + 1

    def term(self, index: int) -> Optional[int]:
        """Term of the entry at ``index``; None when it is compacted away or beyond the end."""
        if index == self.base_index:
            return self.base_term
        off = index - self.base_index - 1
        if off < 0 or off >= len(self.entries):
            return None
        return self.entries[off].term

    def entry(self, index: int) -> Entry:
        return self.entries[index - self.base_index - 1]

    def slice(self, lo: int, hi: int) -> list:
        """Entries with ``lo <= index < hi`` (clamped to what is held)."""
        b = self.base_index + 1
        return self.entries[max(lo - b, 0):max(hi - b, 0)]

    def append(self, entries: list) -> None:
        self.entries.extend(entries)

    def truncate_from(self, index: int) -> None:
        """Drop entries at ``index`` and after (a conflicting suffix)."""
        assert index > self.base_index, "cannot truncate into the snapshot"
        del self.entries[index - self.base_index - 1:]

    def compact(self, upto_index: int, upto_term: int) -> None:
        """Forget entries up to ``upto_index`` (they are in a snapshot)."""
        if upto_index <= self.base_index:
            return
        n = upto_index - self.base_index
        dropped = self.entries
        if n >= len(dropped):
            self.entries = []
        elif n < SMALL:
            del dropped[:n]
            dropped = []
        elif n > len(dropped) - n:
            # Keep the tail in a new list (a copy of references) and free the dropped head on a
            # background thread: freeing ~1M entries here held the GIL for 160-530 ms (a write
            # stall after every snapshot; actors/deferred_free.py).
            self.entries = dropped[n:]
            del dropped[n:]
        else:  # a long tail: copy the (shorter) head instead, the same way
            head = dropped[:n]
            del dropped[:n]  # the objects live on in ``head``: nothing is freed here
            dropped = head
        free_later(dropped)
        self.base_index, self.base_term = upto_index, upto_term

    def release(self) -> None:
        """Empty this view for good (it is being replaced): its entries are freed on the
        background thread, as a large compaction's are. A follower that installs a snapshot its
        log does not hold drops its whole log this way; after a preload that is ~1M entries,
        which ``del`` would free on the role thread with the GIL held."""
        dropped, self.entries = self.entries, []
        free_later(dropped)

    def first_index_of_term(self, index: int) -> int:
        """The first index of the run of entries that share the term of ``index`` (fast backtracking)."""
        t = self.term(index)
        while index - 1 > self.base_index and self.term(index - 1) == t:
            index -= 1
        return index

    def last_index_of_term(self, term: int) -> int:
        """The last index holding ``term``, or 0 if the log has none."""
        for off in range(len(self.entries) - 1, -1, -1):
            t = self.entries[off].term
            if t == term:
                return self.base_index + off + 1
            if t < term:
                break
        return 0
