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


def put(view: RecordView, events: list, rev: int, key: str, value: bytes,
        old: Optional[KeyRecord] = _UNREAD) -> KeyRecord:
    """Set ``key`` to ``value`` at revision ``rev``; returns the new record. ``old`` is the
    key's current record when the caller has read it already (saves a second read)."""
    if old is _UNREAD:
        old = view.record(key)
    if old is None:
        rec = KeyRecord(value, rev, rev, 1)
        prev = None
    else:
        rec = KeyRecord(value, old.create_revision, rev, old.version + 1)
        prev = old.value
    view.put_record(key, rec)
    events.append(WatchEvent(rev, EventType.PUT, key, value, prev, rec.create_revision, rec.version))
    return rec


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


def execute(view: RecordView, events: list, rev: int, cmd) -> tuple:
    """Apply one client write ``cmd`` (a Command) at revision ``rev``: its (status, value)."""
    op = cmd.op
    if op == "put":
        put(view, events, rev, cmd.key, cmd.value)
        return ("ok", None)
    if op == "delete":
        delete(view, events, rev, cmd.key)
        return ("ok", None)
    if op == "cas":
        cur = view.record(cmd.key)
        curv = None if cur is None else cur.value
        if (curv is None) if cmd.expect_absent else (curv == cmd.expected):
            put(view, events, rev, cmd.key, cmd.value, cur)
            return ("ok", None)
        return ("cas_failed", curv)
    return ("invalid", None)
