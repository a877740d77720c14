"""The FSM's state on RocksDB: the replicated map and session table in a KvStore.

Same rules as :class:`actors.fsm.KVState` (the in-memory model the simulation keeps), applied as
batches: the entries of one ``Apply`` are collected in a :class:`KvBatch` and written with the
applied index (and the applied term, and the members when a configuration was applied) as one
unsynced WriteBatch by :meth:`DbState.end_batch`. The session table is also kept in memory
(bounded by clients x window) so that duplicate detection costs no disk read; after a start
(or a snapshot install) a client's results are read from the DB at its first request only.

One difference from KVState, which evicts the oldest inserted result: a full window evicts the
lowest seq, which is what a table reloaded from the DB (in seq order) would evict, so that a
restarted node and one that never stopped evict the same result.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from collections import OrderedDict
from typing import Optional

from raftkv.storage.format import decode_int, decode_members, encode_members, pack
from raftkv.storage.kv_cache import ValueCache
from raftkv.storage.kv_checkpoint import CheckpointInfo
from raftkv.storage.kv_store import (NOT_PENDING, DropResultsBelow, ExpireSession, ForgetExpired, KvBatch, KvStore,
                                     SaveResult, TouchSession)
from raftkv.storage.checkpoint_store import CheckpointStore, stage_copy
from raftkv.storage.kv_lease import LeaseDropRow, LeaseKeyRow, LeaseRow
from raftkv.wire.messages import ClientReply, Command

from . import fsm as _fsm  # its limits are read at each use (tests change them)
from . import kv_apply
from .fsm import committed_command
from .kv_apply import put_over
from .lease_state import LeaseChange, LeaseOpRecord, LeaseTable, execute_with_lease
from .recent_records import RecentRecords
from .token_state import TOKEN_WRITE_OPS, TokenState
from .watch_events import WatchEvent

log = logging.getLogger("actors.fsm")

_PUT, _OK = "put", "ok"  # Op.PUT.value and Status.OK.value, without an enum property call per write
_new = tuple.__new__

# A client's results that left its window are deleted from the DB a block of seqs at a time (one
# range deletion when its lowest seq enters a new block; read at each use: tests change it), and
# a reader keeps the highest SESSION_WINDOW seqs of what is stored (_results_of). Deleting one
# result per write left a deletion per write in the DB, which every later scan of the client's
# results stepped over until a compaction into the bottom level dropped it.
RESULT_BLOCK = 1024

META_TERM = "term"
META_MEMBERS = "members"
META_TOKENS = "tokens"  # issue 11: the token table (actors/token_state.py), never a user key


class _Session:
    """One client's recent results (seq -> (status, value, revision, txn)) and the index of its last request."""

    __slots__ = ("results", "last_index", "ordered", "last_seq", "stored")

    def __init__(self, last_index: int = 0, results: Optional[OrderedDict] = None, stored: bool = False) -> None:
        self.results: OrderedDict = results if results is not None else OrderedDict()
        self.last_index = last_index
        self.ordered = True  # results were inserted in increasing seq order (the usual case)
        self.last_seq = -1  # the seq inserted last (while ``ordered``, the highest one held); -1: none
        # True: the results are still only in the DB (a session loaded at start-up: see
        # DbState._load); read on the client's next request, before anything uses them.
        self.stored = stored

    def lowest(self) -> int:
        return next(iter(self.results)) if self.ordered else min(self.results)


class DbState:
    """The replicated map and session table of one node, in ``store`` (owned by the FSM's thread;
    :meth:`read` with ``"get"`` may be called from any thread)."""

    def __init__(self, store: KvStore) -> None:
        self.store = store
        self._batch: Optional[KvBatch] = None
        self._touched: dict[str, int] = {}
        self.events: list[WatchEvent] = []  # changes applied since the last take_events()
        self.leases = LeaseTable(self._journal_lease)  # actors/lease_state.py; rows: storage/kv_lease.py
        self.cache = ValueCache()  # records for gets, never older than the DB's (storage/kv_cache.py)
        self.recent = RecentRecords(store)  # the records this thread wrote lately (actors/recent_records.py)
        self._load()

    def take_events(self) -> list[WatchEvent]:
        """The user-key changes applied since the last call, in log order (see watch_events)."""
        ev, self.events = self.events, []
        return ev

    def _load(self) -> None:
        st = self.store
        self.applied = st.applied_index()
        # The clients only: each one's results are read when it is next seen (_results_of), so a
        # restart does not scan the results' range, which holds a deletion per write until
        # compactions drop them (0.2-0.3 s at 10M keys), for clients that may never come back.
        table = st.session_clients()
        self.sessions = {cid: _Session(r.last_index, stored=True) for cid, r in table.sessions.items()}
        self.expired: OrderedDict = table.expired
        raw = st.get_meta(META_TERM)
        self.term = decode_int(raw, "applied term") if raw is not None else 0
        self._term_written: Optional[int] = self.term if raw is not None else None  # what the DB holds
        raw = st.get_meta(META_MEMBERS)
        self.members: list = decode_members(raw) if raw is not None else []
        self.leases.load(st.leases())
        self.tokens = TokenState.decode(st.get_meta(META_TOKENS))
        self._tokens_written = self.tokens.version

    # ---------------------------------------------------------------- applying

    def apply(self, index: int, kind: int, payload: bytes, cmd: Optional[Command] = None) -> Optional[tuple]:
        """Apply one committed entry into the open batch (see KVState.apply for the rules and
        ``cmd``)."""
        b = self._batch
        if b is None:
            # a put's old record comes from the records written lately before the DB
            b = self._batch = KvBatch(self.recent)  # type: ignore[arg-type]  # reads get_record only
        self.applied = index
        if index % _fsm.SWEEP_EVERY == 0:
            self._expire(index, b)
        if cmd is None:
            cmd = committed_command(index, kind, payload)
        if cmd is None:
            return None
        cid = cmd.client_id
        if not cid:
            return self._leased(cmd, b)
        sess = self.sessions.get(cid)
        seq = cmd.seq
        if sess is None:
            if cid in self.expired:
                return kv_apply.EXPIRED
            sess = self.sessions[cid] = _Session()
        else:
            if sess.stored:
                self._results_of(cid, sess)
            done = sess.results.get(seq)
            if done is not None:
                return done
            if sess.results and len(sess.results) >= _fsm.SESSION_WINDOW and seq < sess.lowest():
                return kv_apply.EXPIRED  # its result left the window: it may have been applied
        sess.last_index = index
        self._touched[cid] = index
        key = cmd.key
        if cmd.op == _PUT and not cmd.lease and key not in self.leases.owner:
            # Most writes: a put with no lease to check, attach or detach. What _leased would
            # do for it (execute_with_lease: no refusal, no lease change), without its layers.
            # kv_apply.put through the batch's record() and put_record(), without their calls
            pending = b.pending
            old = pending.get(key, NOT_PENDING)
            if old is NOT_PENDING:  # neither put nor deleted in this batch: as the DB holds it
                old = self.recent.get_record(key)
            pending[key] = put_over(old, self.events, index, key, cmd.value)  # type: ignore[arg-type]
            result = (_OK, None, index, None)
            save = _new(SaveResult, (cid, seq, _OK, None, index, None))  # without SaveResult's Python __new__
        else:
            result = self._leased(cmd, b)
            save = SaveResult(cid, seq, *result)
        res = sess.results
        if seq < sess.last_seq:
            sess.ordered = False
        sess.last_seq = seq
        res[seq] = result
        b.other.append(save)  # KvBatch.add's check is for Put and Delete
        if len(res) > _fsm.SESSION_WINDOW:
            low = sess.lowest()
            del res[low]
            new_low = sess.lowest()
            if low // RESULT_BLOCK != new_low // RESULT_BLOCK:
                b.add(DropResultsBelow(cid, new_low))
        return result

    def _results_of(self, cid: str, sess: _Session) -> None:
        """Read the stored results of a session loaded at start-up (in seq order: ``ordered``
        stays True). The open batch holds none of them: a session's results are read before
        its first request after the load is applied.

        The DB may also hold some results that left the window (see RESULT_BLOCK): the window
        is the highest SESSION_WINDOW seqs stored. That is the table a node that never stopped
        holds: each saved result enters its window unless the window is full and the seq is
        below its lowest, and a full window drops its lowest, so the window is always the
        highest SESSION_WINDOW seqs ever saved for the client; the DB drops only seqs below the
        window's lowest."""
        norm = kv_apply.normalize_result
        stored = list(self.store.client_results(cid).items())
        window = _fsm.SESSION_WINDOW
        if len(stored) > window:
            stored = stored[-window:]
        sess.results = OrderedDict((seq, norm(x)) for seq, x in stored)
        sess.last_seq = stored[-1][0] if stored else -1
        sess.stored = False

    def _expire(self, index: int, b: KvBatch) -> None:
        horizon = index - _fsm.SESSION_TTL
        gone = [cid for cid, s in self.sessions.items() if s.last_index < horizon]
        for cid in gone:
            del self.sessions[cid]
            self._touched.pop(cid, None)
            self.expired[cid] = index
            b.add(ExpireSession(cid, index))
        while self.expired:
            cid, at = next(iter(self.expired.items()))
            if at >= index - _fsm.EXPIRED_TTL:
                break
            del self.expired[cid]
            b.add(ForgetExpired(cid))

    def _execute(self, cmd: Command) -> tuple:
        return kv_apply.execute(self._batch, self.events, self.applied, cmd)

    def _delete_key(self, key: str) -> tuple:
        return kv_apply.execute(self._batch, self.events, self.applied, Command("delete", key))

    def _leased(self, cmd: Command, b: KvBatch) -> tuple:
        # The lease table's hooks around _execute (see KVState._leased); token commands never
        # touch user keys or leases (actors/token_state.py: written as a meta key by end_batch).
        # ``b`` is the open batch, which _execute and _delete_key write (bound methods: no
        # closures built per applied write).
        if cmd.op in TOKEN_WRITE_OPS:
            return kv_apply.normalize_result(self.tokens.apply(cmd))
        return execute_with_lease(self.leases, cmd, self.applied, self._execute, self._delete_key)

    def _journal_lease(self, rec: LeaseOpRecord) -> None:
        """A change of the lease table goes into the open batch as its DB row."""
        b = self._batch
        assert b is not None, "the lease table changes only while a batch is applied"
        if rec.change is LeaseChange.GRANT:
            b.add(LeaseRow(rec.lease, rec.ttl))
        elif rec.change is LeaseChange.DROP:
            b.add(LeaseDropRow(rec.lease))
        else:
            b.add(LeaseKeyRow(rec.lease, rec.key, rec.change is LeaseChange.ATTACH))

    def end_batch(self, term: int, members: Optional[list]) -> None:
        """Write the open batch with the applied index and term (and ``members`` if a
        configuration was applied in it) as one unsynced WriteBatch."""
        b = self._batch
        if b is None:
            return
        self._batch = None
        for cid, last in self._touched.items():
            b.add(TouchSession(cid, last))
        self._touched = {}
        meta = {}
        if term != self._term_written:  # the term changes once per election: not rewritten every batch
            meta[META_TERM] = pack(term)
            self._term_written = term
        self.term = term
        if members is not None:
            meta[META_MEMBERS] = encode_members(list(members))
            self.members = list(members)
        if self.tokens.version != self._tokens_written:
            meta[META_TOKENS] = self.tokens.encode()
            self._tokens_written = self.tokens.version
        self._write(b.other, meta, b)

    def _write(self, ops: list, meta: dict, b: Optional[KvBatch] = None) -> None:
        # The state must not skip a batch (it would diverge from the log): a failed write (a
        # full disk) is retried, the DB reopened in between, until it succeeds; the FSM (and
        # the reads it serves) waits meanwhile, as the log writer does.
        attempt = 0
        while True:
            try:
                with self.cache.lock:  # the write and dropping its keys from the cache as one, for gets
                    self.store.apply_batch(ops, self.applied, meta, None if b is None else b.records())
                    if b is not None:
                        self.cache.written(b.written())
                        self.recent.written(b.records())
                if attempt:
                    log.warning("fsm: the key-value state is written again (index %d)", self.applied)
                return
            except ValueError:
                raise
            except Exception as e:  # rocksdict raises a bare Exception for I/O errors
                if attempt == 0:
                    log.error("fsm: cannot write the key-value state at index %d: %s; retrying", self.applied, e)
                attempt += 1
                time.sleep(min(0.05 * attempt, 1.0))  # back-off while the disk is full
                try:
                    self.store.reopen()
                except Exception as e2:
                    log.debug("fsm: reopening the key-value store failed: %s", e2)

    # ---------------------------------------------------------------- reading

    def read(self, op: str, key: str, limit: int = 0) -> ClientReply:
        """Serve a read from the DB (``list`` is a bounded scan, sorted by construction)."""
        try:
            # the revision: the store's applied index read after the value (a batch may land
            # in between: then it is above the value's mod revision, never below)
            store = self.store
            if op == "get":
                rec = self.cache.get(key, store.get_record)
                rev = store.applied_index()
                if rec is None:
                    return ClientReply("not_found", revision=rev)
                return ClientReply("ok", value=rec.value, revision=rev, create_revision=rec.create_revision,
                                   mod_revision=rec.mod_revision, version=rec.version)
            if op == "list":
                items = store.scan(key, limit)
                return ClientReply("ok", items=items, revision=store.applied_index())
        except Exception:  # the DB is being swapped by a snapshot install: rare
            return ClientReply("unavailable", error="state being replaced by a snapshot; retry")
        return ClientReply("invalid", error=f"not a read: {op}")

    # ---------------------------------------------------------------- snapshots

    def prepare_snapshot(self) -> None:
        """Start flushing the memtable in the background, so that the coming checkpoint carries
        only a small WAL file (the entries applied since) to fsync, sum and send."""
        self.store.prepare_checkpoint()

    def switch_would_wait(self) -> bool:
        """Whether :meth:`snapshot_payload` would now wait for a running flush (see
        :meth:`KvStore.flush_running`)."""
        return self.store.flush_running()

    def snapshot_payload(self, path: str) -> CheckpointInfo:
        """Fix a checkpoint at the applied index for ``path`` (this thread applies batches: only
        the memtable is switched here); the snapshotter builds its files and finishes it, off
        this thread (storage/kv_live_checkpoint.py). One already there at this index
        (described) is reused."""
        if CheckpointStore.has(path):
            return CheckpointInfo(path, self.applied)
        if os.path.isdir(path):  # an undescribed leftover
            shutil.rmtree(path)
        return self.store.begin_checkpoint(path)

    def restored(self, checkpoint_dir: str, index: int, term: int, members: list) -> "DbState":
        """Replace the state by the checkpoint in ``checkpoint_dir`` (a verified snapshot),
        atomically across crashes; returns self."""
        staged = self.store.path + ".incoming"
        stage_copy(checkpoint_dir, staged)
        with self.cache.lock:  # gets wait for the swap, and none keeps a value of the old state
            try:
                self.store.install(staged)
            finally:
                self.cache.clear()
                self.recent.clear()
        self._batch = None
        self._touched = {}
        self._load()
        if self.applied != index:
            log.warning("fsm: installed checkpoint is at index %d, expected %d", self.applied, index)
        self.term = term
        self.members = list(members)
        return self
