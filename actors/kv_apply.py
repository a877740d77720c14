"""The writes of the state machine, on records with revisions, shared by both states.

KVState (in memory, actors/fsm.py) and DbState (RocksDB, actors/db_state.py) hold keys
differently but change them by the same rules, written once here against a :class:`RecordView`
(one key's record, set one, remove one). Every change of a user key appends one
:class:`~actors.watch_events.WatchEvent` to ``events``, in the order made (log order).

Revisions (issue 14): the revision of a change is the log index of the committed entry that
made it; a key keeps ``create_revision`` (the put that created it), ``mod_revision`` (its last
put) and ``version`` (puts since creation: 1 after the creating put; a delete resets it, the
next put creates the key again). Deleting an absent key changes nothing and emits nothing.
"""
from __future__ import annotations

from typing import Optional, Protocol

from raftkv.records import Compare, Txn, TxnOpResult
from raftkv.storage.kv_record import KeyRecord

from .watch_events import EventType, WatchEvent


class RecordView(Protocol):
    """What the write rules need of a state."""

    def record(self, key: str) -> Optional[KeyRecord]:
        """The key's current record (None: absent)."""

    def put_record(self, key: str, rec: KeyRecord) -> None:
        """Set the key's record."""

    def delete_record(self, key: str) -> None:
        """Remove the key (it is present)."""


_UNREAD = KeyRecord(b"", -1, -1, -1)  # put()'s "the caller has not read the old record"
# put() runs for every applied write on every node: its two records are built with tuple.__new__
# (the NamedTuple's own __new__ is a Python function: ~0.3 us more each) from fields in order.
_new = tuple.__new__
_PUT = EventType.PUT


def put(view: RecordView, events: list, rev: int, key: str, value: bytes,
        old: Optional[KeyRecord] = _UNREAD) -> KeyRecord:
    """Set ``key`` to ``value`` at revision ``rev``; returns the new record. ``old`` is the
    key's current record when the caller has read it already (saves a second read)."""
    if old is _UNREAD:
        old = view.record(key)
    rec = put_over(old, events, rev, key, value)
    view.put_record(key, rec)
    return rec


def put_over(old: Optional[KeyRecord], events: list, rev: int, key: str, value: bytes) -> KeyRecord:
    """The record of a put of ``value`` at revision ``rev`` over ``old`` (None: absent), its event
    appended to ``events``; the caller sets the record (:func:`put` does, through its view; the
    RocksDB state's plain put sets it in its batch directly, actors/db_state.py)."""
    if old is None:
        events.append(_new(WatchEvent, (rev, _PUT, key, value, None, rev, 1)))
        return _new(KeyRecord, (value, rev, rev, 1))
    create, version = old[1], old[3] + 1  # a KeyRecord's create_revision and version
    events.append(_new(WatchEvent, (rev, _PUT, key, value, old[0], create, version)))
    return _new(KeyRecord, (value, create, rev, version))


def delete(view: RecordView, events: list, rev: int, key: str) -> bool:
    """Remove ``key`` at revision ``rev``; False if it was absent (nothing changes then).

    The event of a delete carries the previous value, create revision 0 and version 0 (as
    etcd's: the key no longer exists)."""
    old = view.record(key)
    if old is None:
        return False
    view.delete_record(key)
    events.append(WatchEvent(rev, EventType.DELETE, key, None, old.value, 0, 0))
    return True


# A write's result, as the session table keeps it (Raft thesis 6.3: a retry gets it again):
# (status, value, revision, txn) where ``value`` is the current value of a failed cas, and
# ``txn`` is None or (succeeded, [TxnOpResult...]) for a transaction.
EXPIRED = ("expired", None, 0, None)


def normalize_result(r) -> tuple:
    """A stored result in the shape above: older builds stored (status, value); one loaded from
    msgpack has lists where tuples were."""
    r = tuple(r)
    if len(r) < 4:
        r = r + (None, 0, None)[len(r) - 1:]
    txn = r[3]
    if txn is not None:
        txn = (bool(txn[0]), [TxnOpResult(*x) for x in txn[1]])
    return (r[0], r[1], r[2], txn)


def execute(view: RecordView, events: list, rev: int, cmd) -> tuple:
    """Apply one client write ``cmd`` (a Command) at revision ``rev``: its result (see EXPIRED)."""
    op = cmd.op
    if op == "put":
        put(view, events, rev, cmd.key, cmd.value)
        return ("ok", None, rev, None)
    if op == "delete":
        delete(view, events, rev, cmd.key)
        return ("ok", None, rev, None)
    if op == "cas":
        cur = view.record(cmd.key)
        curv = None if cur is None else cur.value
        if (curv is None) if cmd.expect_absent else (curv == cmd.expected):
            put(view, events, rev, cmd.key, cmd.value, cur)
            return ("ok", None, rev, None)
        return ("cas_failed", curv, rev, None)
    if op == "txn" and cmd.txn is not None:
        return ("ok", None, rev, run_txn(view, events, rev, cmd.txn))
    return ("invalid", None, rev, None)


def compare_holds(view: RecordView, c: Compare) -> bool:
    """Whether ``c`` holds on the current state. An absent key has version and revisions 0 and
    no value: a value compare on it is false, whatever its result."""
    rec = view.record(c.key)
    a: object
    b: object
    if c.target == "value":
        if rec is None:
            return False
        a, b = rec.value, c.value or b""
    else:
        if rec is None:
            a = 0
        elif c.target == "version":
            a = rec.version
        elif c.target == "create":
            a = rec.create_revision
        else:
            a = rec.mod_revision
        b = c.number
    r = c.result
    if r == "=":
        return a == b
    if r == "!=":
        return a != b
    if r == "<":
        return a < b  # type: ignore[operator]  # both bytes or both int
    return a > b  # type: ignore[operator]


def run_txn(view: RecordView, events: list, rev: int, txn: Txn) -> tuple[bool, list]:
    """Evaluate the compares, then run one branch's ops in order (a get sees the branch's
    earlier puts); every change has revision ``rev``. Returns (succeeded, [TxnOpResult...])."""
    ok = all(compare_holds(view, c) for c in txn.compare)
    out = []
    for op in txn.success if ok else txn.failure:
        t, key = op.type, op.key
        if t == "get":
            rec = view.record(key)
            out.append(TxnOpResult(t, key) if rec is None else TxnOpResult(t, key, True, *rec))
        elif t == "put":
            rec = put(view, events, rev, key, op.value or b"")
            out.append(TxnOpResult(t, key, True, None, rec.create_revision, rec.mod_revision, rec.version))
        else:
            out.append(TxnOpResult(t, key, delete(view, events, rev, key)))
    return ok, out
