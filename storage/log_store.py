"""The durable Raft log and stable state, in one RocksDB database (rocksdict, raw bytes keys).

Layout (all keys are bytes, so RocksDB's bytewise order is the order we rely on):

- ``b"e" + index`` (8-byte big-endian): one log entry, value = msgpack ``[term, kind, data]``
  (the encodings of every value are in :mod:`raftkv.storage.format`).
  Big-endian makes iteration order equal index order, so a range read is one seek.
- ``b"m/..."``: stable state and identity: term, vote, commit index, the snapshot base
  (index, term of the entry just before ``first_index``), the on-disk format version, and
  free-form string metadata (cluster_id, node_id, incarnation, removed) under ``b"m/meta/"``.

Entries and stable state share one database so that a single WriteBatch can truncate a
conflicting suffix, append new entries and record the term/vote/commit atomically, with one
fsync. RocksDB does not sync unless asked (docs/architecture.md section 8), so every write that Raft
relies on goes through :meth:`LogStore._synced` (write, then sync the WAL).

A LogStore is owned by one thread at a time (the log manager actor): the cached indexes and
the shared entry packer are not guarded by locks.
"""
from __future__ import annotations

import itertools
import logging
import os
import struct
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple, cast

import rocksdict

from raftkv.records import Entry

from .format import (LOG_FORMAT_VERSION, READABLE_LOG_FORMATS, FormatError, check_version, decode_base, decode_entries,
                     decode_entry, decode_int, decode_vote, encode_base, entry_packer, pack)

FORMAT_VERSION = LOG_FORMAT_VERSION  # the old name

log = logging.getLogger("storage.log")

_ENTRY_PREFIX = b"e"
_ENTRY_END = b"f"  # first key after every b"e..." key: the exclusive end of "all entries"
_ENTRY_KEY = struct.Struct(">cQ")

_K_FORMAT = b"m/format"
_K_TERM = b"m/term"
_K_VOTE = b"m/vote"
_K_COMMIT = b"m/commit"
_K_BASE = b"m/base"
_META_PREFIX = b"m/meta/"
# The memtable (and so the write-ahead log a restart replays) is flushed every this many MB of
# log writes, not at RocksDB's 64 MB: after a kill -9 the open re-inserts the whole WAL into a
# memtable (50 MB: 0.3 s of CPU), while a flush here writes only the entries compaction left
# (the trailing window), the rest being covered by drop_prefix's range deletions.
WRITE_BUFFER_MB = 8
# WAL files kept for reuse once their memtable is flushed (RocksDB's recycle_log_file_num):
# at most this many times WRITE_BUFFER_MB of disk beside the log.
LOG_FILES_RECYCLED = 4


class StorageError(Exception):
    """The data on disk cannot be used by this build: wrong format version, locked by another
    process, inconsistent contents, or (raised by callers) data that belongs to another node."""


class _Unset:
    """Type of :data:`UNSET`, the default of ``write(vote=...)``: "leave the vote as it is"
    (``None`` is a real value there: it clears the vote)."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


@dataclass
class StableState:
    """Raft's persistent per-server state besides the log: current term, the vote cast in it
    (``None`` for no vote) and the highest index known committed."""

    term: int = 0
    vote: Optional[str] = None
    commit: int = 0


def _entry_key(index: int) -> bytes:
    return _ENTRY_KEY.pack(_ENTRY_PREFIX, index)


def _entry_index(key: bytes) -> int:
    return _ENTRY_KEY.unpack(key)[1]


class LogStore:
    """The durable Raft log plus term, vote, commit index and identity metadata.

    Indexes are 1-based as in the Raft paper. After :meth:`drop_prefix` the log starts at
    ``base()[0] + 1``; ``last_index() == base()[0]`` means the log is empty.
    """

    def __init__(self, path: str) -> None:
        """Open (creating if needed) the store at ``path``.

        Raises StorageError if the directory is in use by another process, or holds data of
        another format version, or its contents are inconsistent.
        """
        self.path = path
        os.makedirs(path, exist_ok=True)
        opts = rocksdict.Options(raw_mode=True)
        opts.create_if_missing(True)
        # RocksDB's info LOG files otherwise accumulate forever in the data directory.
        opts.set_keep_log_file_num(3)
        opts.set_write_buffer_size(WRITE_BUFFER_MB << 20)
        # Every acknowledged write waits for an fdatasync of this WAL. Appending to a new file
        # changes its size, so on ext4 each such sync is also a journal commit; a recycled WAL
        # file is overwritten in place and its sync writes only the data (+4 % PUT c=64 in the
        # cluster, docs/performance.md, round 17). Safe with the default point-in-time
        # recovery since RocksDB 9.1 (before, RocksDB turned recycling off by itself); the
        # key-value DB must not recycle (storage/kv_db.py), this one is never checkpointed.
        opts.set_recycle_log_file_num(LOG_FILES_RECYCLED)
        try:
            # The default column family's options too: without them rocksdict reopens an existing
            # DB with the column family options of its OPTIONS file, so a log made by an earlier
            # release kept that release's memtable size (64 MB before round 8) for good.
            self._db = rocksdict.Rdict(path, opts, column_families={"default": opts})
        except Exception as e:  # rocksdict raises a bare Exception for every I/O error
            busy = "lock" in str(e).lower()
            hint = " (is another process using this data directory?)" if busy else ""
            raise StorageError(f"cannot open log store at {path}: {e}{hint}") from None
        self._closed = False
        self._sync_opts = rocksdict.WriteOptions()
        self._sync_opts.sync = True
        self._nosync_opts = rocksdict.WriteOptions()
        self._nosync_opts.sync = False
        self._pack_entry = entry_packer()
        # Bounds range reads to entry keys, so a short log never reads stable state as entries.
        self._entries_ro = rocksdict.ReadOptions()
        self._entries_ro.set_iterate_upper_bound(_ENTRY_END)
        try:
            self._load()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ opening

    def _load(self) -> None:
        """Check the format version and fill the in-memory caches."""
        db = self._db
        if self._is_empty():
            db.put(_K_FORMAT, pack(FORMAT_VERSION), self._sync_opts)
            log.info("created a new log store at %s (format version %d)", self.path, FORMAT_VERSION)
        try:
            raw = db.get(_K_FORMAT)
            check_version(None if raw is None else decode_int(raw, "format version"), READABLE_LOG_FORMATS)
            raw = db.get(_K_TERM)
            term = 0 if raw is None else decode_int(raw, "term")
            raw = db.get(_K_VOTE)
            vote = None if raw is None else decode_vote(raw)
            raw = db.get(_K_COMMIT)
            commit = 0 if raw is None else decode_int(raw, "commit index")
            raw = db.get(_K_BASE)
            base_index, base_term = (0, 0) if raw is None else decode_base(raw)
        except FormatError as e:
            raise StorageError(f"log store at {self.path}: {e}") from None
        self._stable = StableState(term, vote, commit)
        self._base: tuple[int, int] = (base_index, base_term)
        self._first = self._base[0] + 1

        lowest, highest = self._entry_bounds()
        if lowest is None:
            self._last = self._base[0]
        else:
            # drop_prefix and truncations are single batches, so the log is always contiguous
            # from first_index; anything else means the files were tampered with or damaged.
            if lowest != self._first:
                raise StorageError(
                    f"log store at {self.path} is inconsistent: first entry is {lowest}, "
                    f"expected {self._first} (snapshot base {self._base})"
                )
            self._last = highest

    def _is_empty(self) -> bool:
        """True if the database holds no key at all (a new store, or one whose creation
        crashed before the format version was written)."""
        it = self._db.iter()
        it.seek_to_first()
        return not it.valid()

    def _entry_bounds(self) -> tuple[Optional[int], Optional[int]]:
        """Lowest and highest entry index on disk, (None, None) if there is no entry.

        Iterators live only inside helpers like this one: a live iterator (even one kept by a
        traceback) holds the database open, and its LOCK, after close().
        """
        it = self._db.iter()
        it.seek(_ENTRY_PREFIX)
        if not (it.valid() and it.key()[:1] == _ENTRY_PREFIX):
            return None, None
        lowest = _entry_index(it.key())
        it.seek_for_prev(_entry_key(2**64 - 1))
        return lowest, _entry_index(it.key())

    # ------------------------------------------------------------------ reads

    def stable(self) -> StableState:
        """The persisted term, vote and commit index (a copy; served from memory)."""
        s = self._stable
        return StableState(s.term, s.vote, s.commit)

    def first_index(self) -> int:
        """Index of the first entry held: 1 for a fresh log, ``base_index + 1`` after a drop."""
        return self._first

    def last_index(self) -> int:
        """Index of the last entry held; equals ``base()[0]`` when the log is empty."""
        return self._last

    def base(self) -> tuple[int, int]:
        """(index, term) of the entry just before :meth:`first_index`: the last entry covered by
        the snapshot the log was compacted to; ``(0, 0)`` if never compacted."""
        return self._base

    def term_at(self, index: int) -> Optional[int]:
        """The term of the entry at ``index`` (the base's at the base); None if not held."""
        if index == self._base[0]:
            return self._base[1]
        if index < self._first or index > self._last:
            return None
        return self.entries(index, index + 1)[0].term

    def entries(self, lo: int, hi: int) -> list[Entry]:
        """Entries with index in ``[lo, hi)``; ``hi`` is clamped to ``last_index() + 1``.

        Raises IndexError if ``lo`` is below :meth:`first_index` (those entries are compacted
        into a snapshot; the caller must send or use the snapshot instead).
        """
        if lo < self._first:
            raise IndexError(f"entry {lo} is compacted: the log starts at {self._first}")
        hi = min(hi, self._last + 1)
        if hi <= lo:
            return []
        out = self._read_range(lo, hi - lo)
        if len(out) != hi - lo:
            raise StorageError(f"log store at {self.path} is missing entries in [{lo}, {hi})")
        return out

    def _read_range(self, lo: int, n: int) -> list[Entry]:
        """Up to ``n`` consecutive entries from ``lo``, stopping short at a gap.

        One seek, then RocksDB's own iterator (faster than stepping an RdictIter from Python),
        the values decoded in one pass (:func:`decode_entries`). Keys are unique and sorted, so
        n entries whose first and last keys are lo and lo+n-1 are exactly lo..lo+n-1: two
        comparisons check contiguity.
        """
        items = self._db.items(from_key=_entry_key(lo), read_opt=self._entries_ro)
        pairs = list(itertools.islice(items, n))
        if not pairs or pairs[0][0] != _entry_key(lo) or pairs[-1][0] != _entry_key(lo + len(pairs) - 1):
            return []
        try:
            return decode_entries([v for _, v in pairs])
        except FormatError:
            pass
        for key, value in pairs:  # find which one, for the message
            try:
                decode_entry(value)
            except FormatError as e:
                index = _entry_index(cast(bytes, key))
                raise StorageError(f"log store at {self.path}: entry {index} is unreadable: {e}") from None
        raise StorageError(f"log store at {self.path}: entries from {lo} are unreadable")  # not reached

    def all_entries(self) -> list[Entry]:
        """Every entry held, from :meth:`first_index` to :meth:`last_index` (used at startup)."""
        return self.entries(self._first, self._last + 1)

    # ------------------------------------------------------------------ writes

    def write(
        self,
        *,
        term: Optional[int] = None,
        vote: Any = UNSET,
        commit: Optional[int] = None,
        truncate_from: Optional[int] = None,
        first_index: int = 0,
        entries: Sequence[Entry] = (),
        sync: bool = True,
        drop_to: Optional[Tuple[int, int]] = None,
    ) -> None:
        """Apply one atomic change, as a single RocksDB WriteBatch, fsynced unless ``sync=False``.

        In batch order: delete every entry with index >= ``truncate_from``; put ``entries`` at
        ``first_index, first_index + 1, ...`` (``first_index=0`` means right after the log's end,
        after the truncation); set ``term`` (never lowered), ``vote`` (``None`` clears it,
        :data:`UNSET` leaves it; a new term does not clear the vote by itself) and ``commit``.

        The entries must extend the (truncated) log without a gap or an overlap: to replace a
        conflicting suffix, pass ``truncate_from``. Raises ValueError on a misuse, before
        anything is written. Returns once the batch is durable (when ``sync``).

        ``drop_to=(index, term)``: then :meth:`drop_prefix` of it, with the same result. In the
        same batch and fsync when the entry at ``index`` is stored and this batch leaves it alone
        (a snapshot's compaction riding on an append: one fsync instead of two, and the appends of
        the writes waiting behind it are not held up by a second one); otherwise after it.
        """
        last = self._last
        if truncate_from is not None:
            if truncate_from < self._first:
                raise ValueError(
                    f"truncate_from={truncate_from} is below first_index {self._first}: "
                    "compacted entries are committed and never truncated"
                )
            last = min(last, truncate_from - 1)
        if entries:
            if first_index == 0:
                first_index = last + 1
            elif first_index != last + 1:
                raise ValueError(
                    f"entries at {first_index} do not extend the log ending at {last} "
                    "(pass truncate_from to replace a suffix)"
                )
            last = first_index + len(entries) - 1
        if term is not None and term < self._stable.term:
            raise ValueError(f"term {term} is lower than the persisted term {self._stable.term}")
        if vote is not UNSET and vote is not None and not isinstance(vote, str):
            raise TypeError(f"vote must be a str, None or UNSET, not {type(vote).__name__}")

        wb = rocksdict.WriteBatch(raw_mode=True)
        if truncate_from is not None and truncate_from <= self._last:
            wb.delete_range(_entry_key(truncate_from), _ENTRY_END)
        if entries:
            put = wb.put
            pack_entry = self._pack_entry
            key = _ENTRY_KEY.pack
            index = first_index
            for e in entries:
                # Entry is a NamedTuple, so it packs as the array [term, kind, data]
                put(key(_ENTRY_PREFIX, index), pack_entry(e))
                index += 1
        if term is not None:
            wb.put(_K_TERM, pack(term))
        if vote is not UNSET:
            if vote is None:
                wb.delete(_K_VOTE)
            else:
                wb.put(_K_VOTE, pack(vote))
        if commit is not None:
            wb.put(_K_COMMIT, pack(commit))
        dropped = None
        if (drop_to is not None and sync and drop_to[0] <= self._last
                and (truncate_from is None or drop_to[0] < truncate_from)
                and (not entries or first_index > drop_to[0])):
            dropped = self._drop_ops(wb, drop_to[0], drop_to[1], last)
            drop_to = None
        if not wb.is_empty():
            self._synced(wb) if sync else self._db.write(wb, self._nosync_opts)

            # Only after the write succeeded: a failed write must leave the caches as the disk is.
            self._last = last
            if term is not None:
                self._stable.term = term
            if vote is not UNSET:
                self._stable.vote = vote
            if commit is not None:
                self._stable.commit = commit
            if dropped is not None:
                self._base, self._first, self._last = dropped
        if drop_to is not None:
            self.drop_prefix(*drop_to)

    def drop_prefix(self, upto_index: int, upto_term: int) -> None:
        """Delete every entry with index <= ``upto_index`` and record ``(upto_index, upto_term)``
        as the base, in one synced batch. Call it only once a snapshot covering ``upto_index``
        is durable (its file renamed and its directory fsynced).

        If ``upto_index >= last_index()``, or the entry at ``upto_index`` has a term other than
        ``upto_term`` (Raft Figure 13, rules 6-7: the suffix only survives if it follows the
        snapshot's last entry), the log becomes empty with that base (the install-snapshot
        case). A drop at or below the current base does nothing.
        """
        wb = rocksdict.WriteBatch(raw_mode=True)
        dropped = self._drop_ops(wb, upto_index, upto_term, self._last)
        if dropped is None:
            return
        self._synced(wb)
        self._base, self._first, self._last = dropped

    def _drop_ops(self, wb: "rocksdict.WriteBatch", upto_index: int, upto_term: int,
                  last: int) -> Optional[Tuple[Tuple[int, int], int, int]]:
        """Add :meth:`drop_prefix`'s deletion to ``wb``, for a log ending at ``last`` once ``wb``
        is written (the entry at ``upto_index`` already stored, if ``upto_index < last``), and
        return the base, first and last index it leaves; None if there is nothing to drop."""
        if upto_index <= self._base[0]:
            return None
        keep_suffix = False
        if upto_index < last:
            (held,) = self.entries(upto_index, upto_index + 1)
            keep_suffix = held.term == upto_term
        end = _entry_key(upto_index + 1) if keep_suffix else _ENTRY_END
        wb.delete_range(_entry_key(0), end)
        wb.put(_K_BASE, encode_base(upto_index, upto_term))
        return (upto_index, upto_term), upto_index + 1, (last if keep_suffix else upto_index)

    def get_meta(self, name: str) -> Optional[str]:
        """A stored metadata string (cluster_id, node_id, incarnation, removed, ...) or None."""
        raw = self._db.get(_META_PREFIX + name.encode())
        return None if raw is None else raw.decode()

    def set_meta(self, **values: str) -> None:
        """Store metadata strings, e.g. ``set_meta(cluster_id="c1", node_id="n1")``, in one synced
        batch: identity must be on disk before the node acts on it."""
        wb = rocksdict.WriteBatch(raw_mode=True)
        for name, value in values.items():
            if not isinstance(value, str):
                raise TypeError(f"metadata {name!r} must be a str, not {type(value).__name__}")
            wb.put(_META_PREFIX + name.encode(), value.encode())
        if not wb.is_empty():
            self._synced(wb)

    def _synced(self, wb: "rocksdict.WriteBatch") -> None:
        """Write ``wb`` durably. Not with ``WriteOptions.sync``: rocksdict holds the GIL through
        that fsync, freezing every thread of the node (heartbeats included) for each group
        commit. Writing unsynced and then syncing the WAL with ``flush_wal(True)``, which
        releases the GIL, gives the same durability (RocksDB's SyncWAL) without the stall."""
        self._db.write(wb, self._nosync_opts)
        self._db.flush_wal(True)

    def close(self) -> None:
        """Close the database (idempotent), syncing the WAL first so that writes made with
        ``sync=False`` survive a clean shutdown too."""
        if not self._closed:
            self._closed = True
            try:
                self._db.flush_wal(True)
            finally:
                self._db.close()
