"""The replicated key-value state (the FSM's map and session table) in its own RocksDB database.

The database lives in its own directory inside the node's data dir (``<data_dir>/kv`` by
convention), apart from the Raft log's database: the log is the only synced write on the write
path, and the state is rebuilt from it, so nothing here is ever fsynced on the write path.

Layout (one column family, raw bytes keys; RocksDB's bytewise order is the order relied on):

- ``b"m/format"``: msgpack int, :data:`KV_FORMAT_VERSION`; an unknown version is refused.
- ``b"m/applied"``: msgpack int, the index of the last log entry whose effects are in the DB.
- ``b"m/meta/<name>"``: opaque bytes the caller stores with a batch (applied term, members...),
  so that a checkpoint carries everything a snapshot must carry.
- ``b"v" + key`` (UTF-8): the key's record, its value with its create/mod revision and version
  (:mod:`.kv_record`; format version 2). All data keys share one prefix, so a prefix scan is
  one seek plus ``limit`` steps, sorted by construction. Format version 1 stored the bare value
  under ``b"d" + key``; such a DB is converted when opened (:meth:`KvStore._upgrade_v1`).
- ``b"s" + len(client_id) u16 + client_id + seq``: one result of the session table, value
  msgpack ``[status, value]``. ``seq`` is a signed 64-bit int stored big-endian with its sign
  bit flipped, so one client's results sort by seq. The length prefix keeps one client's
  results contiguous whatever bytes its id holds. Format version 3: results that left the
  client's window are deleted in blocks, one range deletion for many (:class:`DropResultsBelow`),
  instead of a point deletion per write (which a restart's scan then stepped over, ~0.35 us
  each, until a compaction into the bottom level dropped them); rows of a few seqs below the
  window may remain, and the reader keeps the client's highest window's worth
  (actors/db_state.py). A format-2 DB (exact windows) is marked format 3 when opened.
- ``b"t" + client_id``: msgpack int, the log index of the client's last request.
- ``b"x" + client_id``: msgpack int, the log index at which the client's session expired.
- ``b"l" + ...``: the lease table (storage/kv_lease.py), never seen by get or list.

Atomicity: :meth:`KvStore.apply_batch` writes every change of a batch of committed entries
*and* the new applied index as ONE WriteBatch. A WriteBatch is one WAL record, and the DB is
opened with point-in-time WAL recovery, so after any crash (process or machine) the DB holds
the effects of exactly the entries up to its ``applied_index()``: a consistent prefix of the
log, and the node replays the rest from its log. The batch is not synced: losing a suffix of
applied batches in a power cut is harmless, since the log (which is synced) still has them.
"""
from __future__ import annotations

import fcntl
import logging
import os
import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Mapping, NamedTuple, Optional, Union, cast

import msgpack
import rocksdict

from .crc_warmer import WalSums
from .format import pack
from .kv_checkpoint import CheckpointError, CheckpointInfo, PendingCheckpoint, take_checkpoint
from .kv_db import (DEFAULT_CACHE_MB, K_APPLIED, K_FORMAT, KV_FORMAT_VERSION, kv_options, open_db,
                    read_format, read_header)
from .kv_record import HEADER, HEADER_BYTES, KeyRecord, decode_record, encode_record
from .kv_install import install, recover
from .kv_live_checkpoint import link_checkpoint, newest_wal
from .kv_lease import (LEASE_END, LEASE_PREFIX, LEASE_ROWS, LeaseDropRow, LeaseKeyRow, LeaseRow, read_lease_rows,
                       write_lease_row)
from .log_store import StorageError
from .rocks_manifest import TableFiles

log = logging.getLogger("storage.kv")

_META_PREFIX = b"m/meta/"
_DATA = b"v"
_DATA_END = b"w"
_V1_DATA = b"d"  # format version 1's bare values (converted on open)
_V1_DATA_END = b"e"
_UPGRADE_BATCH = 10_000
_RESULT = b"s"
_RESULT_END = b"t"
_TOUCH = b"t"
_TOUCH_END = b"u"
_EXPIRED = b"x"
_EXPIRED_END = b"y"
_SEQ = struct.Struct(">Q")
_SEQ_PACK = _SEQ.pack
_CID_LEN = struct.Struct(">H")
_SIGN = 1 << 63
_HEADER_PACK = HEADER.pack  # kv_record's header, inlined on the write path
# msgpack of ["ok", None]'s array header for three items and its first two: a plain "ok" result
# with its revision is stored as this + the revision's msgpack, the bytes packb(["ok", None, rev])
# gives (nearly every write's result; built without a list and a packb per write)
_OK_RESULT_HEAD = b"\x93\xa2ok\xc0"


# ---------------------------------------------------------------- the operations of a batch


class Put(NamedTuple):
    """Set ``key`` to ``value``, with its revisions (the defaults: a key of unknown history)."""

    key: str
    value: bytes
    create_revision: int = 0
    mod_revision: int = 0
    version: int = 1


class Delete(NamedTuple):
    """Remove ``key`` (nothing happens if it is absent)."""

    key: str


class SaveResult(NamedTuple):
    """Record the result of the client's request number ``seq``: ``status`` and ``value``, and
    when known the write's ``revision`` and a transaction's ``txn`` (actors/kv_apply.py's shape)."""

    client_id: str
    seq: int
    status: str
    value: Optional[bytes] = None
    revision: int = 0  # the log index of the write (0: unknown, as stored by format version 1)
    txn: Optional[tuple] = None  # a transaction's (succeeded, [TxnOpResult...]), msgpack-able


class DropResult(NamedTuple):
    """Forget one result: it left the client's window."""

    client_id: str
    seq: int


class DropResultsBelow(NamedTuple):
    """Forget every result of the client whose seq is below ``seq`` (one range deletion)."""

    client_id: str
    seq: int


class TouchSession(NamedTuple):
    """Record the log index of the client's last request (sessions expire by log position)."""

    client_id: str
    last_index: int


class ExpireSession(NamedTuple):
    """Drop the client's session (all its results and its last index) and remember that it
    expired at log index ``at_index`` (its later requests are answered "expired")."""

    client_id: str
    at_index: int


class ForgetExpired(NamedTuple):
    """Stop remembering that the client's session expired."""

    client_id: str


KvOp = Union[Put, Delete, SaveResult, DropResult, TouchSession, ExpireSession, ForgetExpired,
             LeaseRow, LeaseKeyRow, LeaseDropRow, DropResultsBelow]

NOT_PENDING = object()  # KvBatch.record: the batch neither puts nor deletes the key


class KvBatch:
    """The operations of a run of committed entries being applied, collected for one
    :meth:`KvStore.apply_batch`, and readable before they are written: :meth:`get` sees the
    batch's own puts and deletes (RocksDB's WriteBatch cannot be read), so that e.g. a
    compare-and-set after a put of the same key in the same batch sees the put.

    The user keys' puts and deletes are kept only as each key's record once the batch is
    applied (:meth:`records`; None: deleted), and written as one row per key
    (``apply_batch(batch.other, index, records=batch.records())``): no ``Put`` is built per
    write, and a key written several times in the batch is written once, with its last record,
    which is what the rows in order would leave. :attr:`other` holds every other operation (the
    session table's and the lease table's rows), in order; :attr:`ops` gives all of them as one
    list of operations, for :meth:`KvStore.apply_batch` alone."""

    __slots__ = ("_store", "other", "pending")

    def __init__(self, store: "KvStore") -> None:
        self._store = store
        self.other: list[KvOp] = []  # anything but Put and Delete (see add)
        # user key -> its record once the batch is applied (None: deleted); the FSM's plain put
        # reads and sets it directly (actors/db_state.py), as record() and put_record() would
        self.pending: dict[str, Optional[KeyRecord]] = {}

    @property
    def ops(self) -> list[KvOp]:
        """Every operation of the batch: one Put or Delete per user key written, then the others."""
        rows: list[KvOp] = [Delete(k) if r is None else Put(k, *r) for k, r in self.pending.items()]
        return rows + self.other

    def get(self, key: str) -> Optional[bytes]:
        """The value of ``key`` once this batch is applied (None: absent)."""
        rec = self.record(key)
        return None if rec is None else rec.value

    def record(self, key: str) -> Optional[KeyRecord]:
        """The record of ``key`` once this batch is applied (None: absent)."""
        rec = self.pending.get(key, NOT_PENDING)
        if rec is NOT_PENDING:
            return self._store.get_record(key)
        return rec  # type: ignore[return-value]  # a KeyRecord or None

    def put(self, key: str, value: bytes) -> None:
        """Set ``key`` to ``value`` (with the revisions of a key of unknown history)."""
        self.pending[key] = KeyRecord(value, 0, 0, 1)

    def put_record(self, key: str, rec: KeyRecord) -> None:
        """Set ``key``'s record."""
        self.pending[key] = rec

    def delete_record(self, key: str) -> None:
        """Remove ``key`` (the name the state machine's writes use, see actors/kv_apply.py)."""
        self.pending[key] = None

    def delete(self, key: str) -> None:
        """Remove ``key``."""
        self.pending[key] = None

    def add(self, op: KvOp) -> None:
        """Append any other operation (the session table's)."""
        if type(op) is Put or type(op) is Delete:
            raise TypeError("use put() or delete(), which keep get() up to date")
        self.other.append(op)

    def written(self) -> Iterable[str]:
        """Every key this batch puts or deletes."""
        return self.pending.keys()

    def records(self) -> Mapping[str, Optional[KeyRecord]]:
        """Every key this batch puts or deletes, with its record once applied (None: deleted)."""
        return self.pending


# ---------------------------------------------------------------- the session table, as loaded


@dataclass
class SessionRecord:
    """One client's session: its recent results by seq (in seq order) and its last index."""

    last_index: int = 0
    results: "OrderedDict[int, tuple]" = field(default_factory=OrderedDict)


@dataclass
class SessionTable:
    """The whole session table: live sessions, and expired ones ordered by expiry index (the
    order in which the FSM appended them, so sweeping from the front works as before)."""

    sessions: dict[str, SessionRecord] = field(default_factory=dict)
    expired: "OrderedDict[str, int]" = field(default_factory=OrderedDict)


# ---------------------------------------------------------------- key encoding


def _seq_bytes(seq: int) -> bytes:
    if not -_SIGN <= seq < _SIGN:
        raise ValueError(f"seq {seq} is outside the signed 64-bit range")
    return _SEQ.pack(seq + _SIGN)  # order-preserving: -2**63 -> 0, 0 -> 2**63


def _seq_from(b: bytes) -> int:
    u = _SEQ.unpack(b)[0]
    return u - _SIGN


def _client_prefix(client_id: str) -> bytes:
    cid = client_id.encode()
    return _RESULT + _CID_LEN.pack(len(cid)) + cid


def _result_key(client_id: str, seq: int) -> bytes:
    return _client_prefix(client_id) + _seq_bytes(seq)


def successor(prefix: bytes) -> Optional[bytes]:
    """The smallest key greater than every key starting with ``prefix`` (None: no bound)."""
    b = bytearray(prefix)
    while b:
        if b[-1] != 0xFF:
            b[-1] += 1
            return bytes(b)
        b.pop()
    return None


class KvStore:
    """The replicated key-value state and session table of one node, in RocksDB.

    Owned by one thread at a time (the FSM actor). Every method but :meth:`close` needs the
    store open. Opening takes ``<path>.lock`` (an flock held until :meth:`close`), then
    finishes or rolls back a checkpoint swap a crash interrupted
    (:func:`raftkv.storage.kv_install.recover`), then opens the DB.
    """

    def __init__(self, path: str, cache_mb: int = DEFAULT_CACHE_MB, statistics: bool = False) -> None:
        """Open (creating if needed) the store at ``path``.

        ``cache_mb`` sizes the block cache (index and filter blocks included). ``statistics``
        turns on RocksDB's counters (see :meth:`ticker`; for tests and benchmarks).
        Raises StorageError if the directory is locked by another process, KvFormatError if it
        holds an unknown format version.
        """
        self.path = path
        self.cache_mb = cache_mb
        self._statistics = statistics
        # Held while another thread assembles a checkpoint from the live files (begin_checkpoint)
        # and while the DB is closed or reopened; the generation counts the opens, so that a
        # checkpoint begun before a swap is not built from the new DB.
        self._files_lock = threading.Lock()
        self._generation = 0
        self._building: set = set()  # tokens of the checkpoints begun and not built yet
        self._manifest_tables = TableFiles()  # used under _files_lock, by one build at a time
        # Running CRC-32s of the growing WAL files, fed by the node's writeback thread
        # (storage/writeback.py): a checkpoint then sums only its WAL file's last megabyte.
        self.wal_sums = WalSums(path)
        self._lock = self._take_lock(path)
        self._open()

    @staticmethod
    def _take_lock(path: str) -> int:
        # A lock beside the DB, not RocksDB's LOCK inside it: the recovery below renames and
        # deletes the DB directory and its siblings, which only the owner of the store may do.
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
        fd = os.open(os.path.abspath(path) + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StorageError(f"cannot open key-value store at {path}: locked "
                               "(is another process using this data directory?)") from None
        return fd

    def _open(self) -> None:
        """Recover an interrupted swap and open the DB (the lock is held)."""
        path, cache_mb, statistics = self.path, self.cache_mb, self._statistics
        self._closed = True
        try:
            recover(path)
            os.makedirs(path, exist_ok=True)
            self._opts = kv_options(cache_mb, statistics)
            self._db = open_db(path, self._opts)
        except BaseException:
            self.close()  # releases the lock
            raise
        self._closed = False
        self._generation += 1
        self._wo = rocksdict.WriteOptions()
        self._wo.sync = False
        self._pack = msgpack.Packer(use_bin_type=True).pack  # reused on the write path (this store's thread)
        self._data_ro = rocksdict.ReadOptions()
        self._data_ro.set_iterate_upper_bound(_DATA_END)
        try:
            if self._is_empty():
                self._db.put(K_FORMAT, pack(KV_FORMAT_VERSION), self._wo)
                self._db.flush_wal(True)
                log.info("created a new key-value store at %s (format version %d)", path, KV_FORMAT_VERSION)
            self._applied = read_header(self._db, path)
            found = read_format(self._db)
            if found == 1:
                self._upgrade_v1()
            elif found == 2:
                self._upgrade_v2()
        except BaseException:
            self.close()
            raise

    def _upgrade_v1(self) -> None:
        """Convert a format-1 DB (bare values under ``d``) to format 2 (records under ``v``,
        revisions 0: unknown), a batch of keys per WriteBatch that moves them (a crash midway
        leaves some keys moved and the rest still under ``d``: opening again carries on), then
        write the new format version. Every node converts the same way, so their states agree."""
        moved = 0
        while True:
            ro = rocksdict.ReadOptions()
            ro.set_iterate_upper_bound(_V1_DATA_END)
            items = cast(Iterator[tuple[bytes, bytes]], self._db.items(from_key=_V1_DATA, read_opt=ro))
            chunk = []
            for kv in items:
                chunk.append(kv)
                if len(chunk) >= _UPGRADE_BATCH:
                    break
            del items
            if not chunk:
                break
            wb = rocksdict.WriteBatch(raw_mode=True)
            for key, value in chunk:
                wb.put(_DATA + key[1:], encode_record(KeyRecord(value, 0, 0, 1)))
                wb.delete(key)
            self._db.write(wb, self._wo)
            moved += len(chunk)
        self._db.put(K_FORMAT, pack(KV_FORMAT_VERSION), self._wo)
        self._db.flush_wal(True)
        log.warning("key-value store at %s converted from format version 1 to %d (%d keys; revisions of "
                    "keys written before are unknown: 0)", self.path, KV_FORMAT_VERSION, moved)

    def _upgrade_v2(self) -> None:
        """Mark a format-2 DB format 3: it holds exactly each client's window, which format 3
        reads the same way (see the layout above); nothing else changes."""
        self._db.put(K_FORMAT, pack(KV_FORMAT_VERSION), self._wo)
        self._db.flush_wal(True)
        log.info("key-value store at %s marked format version %d (was 2; no data changed)", self.path,
                 KV_FORMAT_VERSION)

    def _is_empty(self) -> bool:
        it = self._db.iter()
        it.seek_to_first()
        empty = not it.valid()
        del it  # a live iterator holds the DB (and its LOCK) open after close()
        return empty

    # ---------------------------------------------------------------- writes

    def batch(self) -> KvBatch:
        """An empty :class:`KvBatch` reading through to this store; write it with
        ``apply_batch(batch.other, index, records=batch.records())`` (or ``apply_batch(batch.ops,
        index)``)."""
        return KvBatch(self)

    def apply_batch(self, ops: Iterable[KvOp], applied_index: int, meta: Optional[dict[str, bytes]] = None,
                    records: Optional[Mapping[str, Optional[KeyRecord]]] = None) -> None:
        """Apply the changes of a run of committed entries ending at ``applied_index``, with the
        new applied index and ``meta`` (name -> bytes), as one unsynced WriteBatch: after a
        crash either all of it is in the DB or none of it is. ``records`` (user key -> its record,
        None: deleted; :meth:`KvBatch.records`) are written first, then ``ops`` in order: a key
        must not be both in ``records`` and in a Put or Delete of ``ops``.

        Raises ValueError (before anything is written) if ``applied_index`` goes backwards, or
        for an op of an unknown type or with an out-of-range seq.
        """
        if applied_index < self._applied:
            raise ValueError(f"applied index {applied_index} is below the store's {self._applied}")
        wb = rocksdict.WriteBatch(raw_mode=True)
        put = wb.put
        pack_ = self._pack
        if records:
            header = _HEADER_PACK
            for key, rec in records.items():  # one row per key: a KeyRecord is (value, create, mod, version)
                if rec is None:
                    wb.delete(_DATA + key.encode())
                else:
                    value, create, mod, version = rec
                    put(_DATA + key.encode(), header(create, mod, version) + value)
        prefixes: dict[str, bytes] = {}  # a batch holds many results of few clients
        for op in ops:
            # SaveResult first (one per write; the FSM's puts come as ``records``), unpacked once
            # rather than field by field
            if type(op) is SaveResult:
                cid, seq, status, value, revision, txn = op
                # format version 1 stored [status, value]: kept when there is nothing more to say
                if txn is None and value is None and revision and status == "ok":
                    val = _OK_RESULT_HEAD + pack_(revision)
                else:
                    res: list = [status, value] if txn is None else [status, value, revision, txn]
                    if revision and txn is None:
                        res.append(revision)
                    val = msgpack.packb(res, use_bin_type=True)
                prefix = prefixes.get(cid)
                if prefix is None:
                    prefix = prefixes[cid] = _client_prefix(cid)
                if type(seq) is int and -_SIGN <= seq < _SIGN:  # _seq_bytes, inlined (one per write)
                    put(prefix + _SEQ_PACK(seq + _SIGN), val)
                else:
                    put(prefix + _seq_bytes(seq), val)  # raises its error
            elif type(op) is Put:
                key, value, create, mod, version = op
                put(_DATA + key.encode(), _HEADER_PACK(create, mod, version) + value)
            elif isinstance(op, Delete):
                wb.delete(_DATA + op.key.encode())
            elif isinstance(op, DropResult):
                wb.delete(_result_key(op.client_id, op.seq))
            elif isinstance(op, TouchSession):
                put(_TOUCH + op.client_id.encode(), pack_(op.last_index))
            elif isinstance(op, DropResultsBelow):
                prefix = _client_prefix(op.client_id)
                wb.delete_range(prefix, prefix + _seq_bytes(op.seq))
            elif isinstance(op, ExpireSession):
                prefix = _client_prefix(op.client_id)
                wb.delete_range(prefix, successor(prefix))
                wb.delete(_TOUCH + op.client_id.encode())
                put(_EXPIRED + op.client_id.encode(), pack(op.at_index))
            elif isinstance(op, ForgetExpired):
                wb.delete(_EXPIRED + op.client_id.encode())
            elif isinstance(op, LEASE_ROWS):  # the lease table's reserved prefix (kv_lease.py)
                write_lease_row(wb, op)
            else:
                raise ValueError(f"not a key-value operation: {op!r}")
        if meta:
            for name, value in meta.items():
                put(_META_PREFIX + name.encode(), value)
        put(K_APPLIED, pack_(applied_index))
        self._db.write(wb, self._wo)
        self._applied = applied_index

    # ---------------------------------------------------------------- reads

    def applied_index(self) -> int:
        """Index of the last log entry whose effects the store holds (0: none)."""
        return self._applied

    def get(self, key: str) -> Optional[bytes]:
        """The value of ``key``, or None if it is absent."""
        raw = self._db.get(_DATA + key.encode())
        return None if raw is None else raw[HEADER_BYTES:]

    def get_record(self, key: str) -> Optional[KeyRecord]:
        """The value and revisions of ``key``, or None if it is absent."""
        raw = self._db.get(_DATA + key.encode())
        return None if raw is None else decode_record(raw)

    def scan(self, prefix: str, limit: int) -> list[tuple[str, bytes]]:
        """Up to ``limit`` (key, value) pairs whose key starts with ``prefix``, in key order
        (UTF-8 bytewise, which is code point order). One seek and at most ``limit`` steps,
        whatever the number of keys. ``limit <= 0`` means no limit (every matching key)."""
        start = _DATA + prefix.encode()
        ro = self._data_ro
        end = successor(start)
        if end is not None and end != _DATA_END:
            ro = rocksdict.ReadOptions()
            ro.set_iterate_upper_bound(end)
        out: list[tuple[str, bytes]] = []
        items = cast(Iterator[tuple[bytes, bytes]], self._db.items(from_key=start, read_opt=ro))
        if limit > 0:
            append = out.append
            for key, value in items:
                append((key[1:].decode(), value[HEADER_BYTES:]))
                if len(out) >= limit:
                    break
        else:
            out = [(key[1:].decode(), value[HEADER_BYTES:]) for key, value in items]
        del items  # releases the RocksDB iterator now (it pins memtables and files)
        return out

    def get_meta(self, name: str) -> Optional[bytes]:
        """Bytes stored with ``meta={name: ...}`` by :meth:`apply_batch`, or None."""
        return self._db.get(_META_PREFIX + name.encode())

    def session_result(self, client_id: str, seq: int) -> Optional[tuple]:
        """One stored result of the session table as stored: ``(status, value)``, ``(status, value,
        revision)`` or ``(status, value, revision, txn)`` (``kv_apply.normalize_result`` takes each);
        None if there is none."""
        raw = self._db.get(_result_key(client_id, seq))
        return None if raw is None else tuple(msgpack.unpackb(raw, raw=False))

    def sessions(self) -> SessionTable:
        """The whole session table as stored (tests and tools; a start reads
        :meth:`session_clients`). Each client's results come in seq order; since format 3 they
        may include a few rows below the client's window (see the layout above)."""
        table = SessionTable()
        sessions = table.sessions
        for key, value in self._range(_TOUCH, _TOUCH_END):
            sessions[key[1:].decode()] = SessionRecord(last_index=msgpack.unpackb(value))
        for key, value in self._range(_RESULT, _RESULT_END):
            n = _CID_LEN.unpack_from(key, 1)[0]
            cid = key[3:3 + n].decode()
            rec = sessions.get(cid)
            if rec is None:
                rec = sessions[cid] = SessionRecord()
            rec.results[_seq_from(key[3 + n:])] = tuple(msgpack.unpackb(value, raw=False))
        expired = [(msgpack.unpackb(v), k[1:].decode()) for k, v in self._range(_EXPIRED, _EXPIRED_END)]
        expired.sort(key=lambda p: p[0])  # stable: ties keep client id order
        table.expired = OrderedDict((cid, at) for at, cid in expired)
        return table

    def session_clients(self) -> SessionTable:
        """The session table without the results: every live client with its last index (each
        :class:`SessionRecord`'s ``results`` left empty) and the expired ones, as
        :meth:`sessions` gives them. Reads only the ``t`` and ``x`` rows (one a client), never the
        results, whose range also holds a deletion per write until compactions drop them (575k of
        them beside 10k results in a 10M-key DB): a restart reads each client's results when that
        client is next seen (:meth:`client_results`). Every client with results has a ``t`` row:
        the FSM writes it in the batch of each of its results, and the expiry that deletes it
        deletes the results with it (:class:`ExpireSession`)."""
        table = SessionTable()
        sessions = table.sessions
        for key, value in self._range(_TOUCH, _TOUCH_END):
            sessions[key[1:].decode()] = SessionRecord(last_index=msgpack.unpackb(value))
        expired = [(msgpack.unpackb(v), k[1:].decode()) for k, v in self._range(_EXPIRED, _EXPIRED_END)]
        expired.sort(key=lambda p: p[0])  # stable: ties keep client id order
        table.expired = OrderedDict((cid, at) for at, cid in expired)
        return table

    def client_results(self, client_id: str) -> "OrderedDict[int, tuple]":
        """One client's stored results by seq, in seq order, as stored (see
        :meth:`session_result`): one seek and a scan of that client's rows only."""
        prefix = _client_prefix(client_id)
        end = successor(prefix)
        assert end is not None  # the prefix starts with b"s"
        n = len(prefix)
        out: OrderedDict = OrderedDict()
        unpack = msgpack.unpackb
        for key, value in self._range(prefix, end):
            out[_seq_from(key[n:])] = tuple(unpack(value, raw=False))
        return out

    def leases(self) -> list[tuple[int, int, list[str]]]:
        """The lease table as ``(id, ttl, keys)`` (read at start-up; bounded, see kv_lease.py)."""
        return read_lease_rows(self._range(LEASE_PREFIX, LEASE_END))

    def _range(self, lo: bytes, hi: bytes) -> list[tuple[bytes, bytes]]:
        ro = rocksdict.ReadOptions()
        ro.set_iterate_upper_bound(hi)
        items = cast(Iterator[tuple[bytes, bytes]], self._db.items(from_key=lo, read_opt=ro))
        out = list(items)
        del items
        return out

    def ticker(self, name: str) -> int:
        """A RocksDB statistics counter, e.g. ``"rocksdb.number.db.next"`` (needs
        ``statistics=True``; 0 if the counter is not reported)."""
        text = self._opts.get_statistics() or ""
        for line in text.splitlines():
            if line.startswith(name + " COUNT"):
                return int(line.rsplit(":", 1)[1])
        return 0

    def sst_files(self) -> list[tuple[str, int]]:
        """(name, size) of the live SST files, as RocksDB records them (whole files of the current
        version only; names without a directory part)."""
        return [(f["name"].lstrip("/"), int(f["size"])) for f in self._db.live_files()]

    # ---------------------------------------------------------------- snapshots

    def prepare_checkpoint(self) -> None:
        """Start writing the memtable to disk in the background and return at once. Calling it
        a little before :meth:`checkpoint` (e.g. some entries before the snapshot threshold)
        leaves the checkpoint only the entries applied since to flush (or, for
        :meth:`begin_checkpoint`, a small WAL file to link, fsync, sum and send instead of up to
        a whole memtable's, 64 MB). Does nothing while a
        checkpoint begun by :meth:`begin_checkpoint` is not built: a switch now would flush the
        entries applied since its index, and its state would be gone."""
        if self._building:
            return
        self._db.flush(False)

    def checkpoint(self, directory: str, finish: bool = True) -> "CheckpointInfo":
        """Take a RocksDB checkpoint of the current state into ``directory`` (which must not
        exist): hard links to the immutable SST files plus a flush of the memtable, so its cost
        is bounded by the memtable size, not the data size (and by the entries applied since
        :meth:`prepare_checkpoint`, if it was called). The applied index (and meta) is in
        the checkpoint's own DB; it is also written beside it, see :mod:`.kv_checkpoint`
        (``finish=False``: by :func:`~.kv_checkpoint.finish_checkpoint`, later)."""
        return take_checkpoint(self._db, self._applied, directory, finish)

    def begin_checkpoint(self, directory: str) -> PendingCheckpoint:
        """Fix a checkpoint of the current state (at the applied index) for ``directory`` (which
        must not exist) and return at once: only the memtable is switched here (RocksDB flushes
        the old one in its background; the checkpoint does not wait for that, it links the old
        memtable's WAL file). Another thread builds its files without the GIL held
        (:func:`~.kv_checkpoint.finish_checkpoint`, see :mod:`.kv_live_checkpoint`); that
        raises CheckpointError if the state was replaced or its memtable switched again first.
        Once built, the checkpoint and the live DB up to this index are durable, as with
        :meth:`checkpoint`. Call it from the thread that applies batches."""
        directory = os.path.abspath(directory)
        if os.path.exists(directory):
            raise FileExistsError(directory)
        os.makedirs(os.path.dirname(directory), exist_ok=True)
        self._db.flush(False)  # the memtable switch happens in this call; its flush does not
        wal = newest_wal(self.path)
        generation = self._generation
        crcs: dict = {}
        token = object()
        self._building.add(token)  # set.add/discard: atomic for the two threads

        def build(partial: str, extra: dict) -> None:
            try:
                with self._files_lock:
                    if self._closed or self._generation != generation:
                        raise CheckpointError(f"key-value store at {self.path} was closed or replaced "
                                              "before its checkpoint was built")
                    link_checkpoint(self._db, self.path, partial, wal, crcs, extra, self._manifest_tables,
                                    self.wal_sums)
            finally:
                self._building.discard(token)

        return PendingCheckpoint(directory, self._applied, build, crcs)

    def install(self, staged: str) -> int:
        """Replace this store's state by the verified DB in ``staged`` (see
        :func:`raftkv.storage.kv_install.install`), atomically, and reopen; returns the new
        applied index. ``staged`` must be on the same filesystem as the store. If the swap
        fails, the store is reopened at the old or the new state (as after a crash) and the
        error is raised."""
        self._close_db()  # the lock stays held: no other process may open the store meanwhile
        self.wal_sums.clear()
        try:
            install(self.path, staged)
        finally:
            # reopening runs the recovery: a failed swap is completed or rolled back right away
            self._open()
        return self._applied

    def reopen(self) -> None:
        """Close and open the DB again (the lock stays held): after a failed write (a full
        disk), RocksDB refuses every later write until reopened; reopening recovers its WAL.
        Raises StorageError if it cannot be opened (yet); then the store stays closed and a
        later call may succeed."""
        with self._files_lock:
            if not getattr(self, "_closed", True):
                self._closed = True
                try:
                    self._db.close()
                except Exception:  # closing a DB in an error state may fail too
                    pass
            self._db = open_db(self.path, self._opts)
            self._closed = False
            self._generation += 1
        self._applied = read_header(self._db, self.path)

    def close(self) -> None:
        """Close the database (idempotent), syncing the WAL so that a clean shutdown loses no
        applied batch (then a restart replays nothing)."""
        if getattr(self, "_lock", None) is None:
            return
        try:
            self._close_db()
        finally:
            os.close(self._lock)  # releases the flock
            self._lock = None

    def _close_db(self) -> None:
        with self._files_lock:
            if not getattr(self, "_closed", True):
                self._closed = True
                try:
                    self._db.flush_wal(True)
                finally:
                    self._db.close()

    # ---------------------------------------------------------------- memtable

    def flush_running(self) -> bool:
        """True while a switched memtable is not flushed yet. A memtable switch now (a checkpoint's)
        would wait for that flush: RocksDB holds a switch that would leave more immutable memtables
        than ``max_write_buffer_number`` allows (storage/kv_db.py) until it would not stall writes."""
        return bool(self._db.property_int_value("rocksdb.num-immutable-mem-table"))

    def memtable_bytes(self) -> int:
        """Bytes in the active memtable: what a checkpoint taken now would flush first."""
        return int(self._db.property_int_value("rocksdb.cur-size-active-mem-table") or 0)
