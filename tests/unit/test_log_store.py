"""LogStore: the durable log and stable state survive a reopen, and every write is synced."""
from __future__ import annotations

import os
import re

import msgpack
import pytest
import rocksdict

from raftkv.storage import log_store
from raftkv.storage.log_store import FORMAT_VERSION, UNSET, LogStore, StableState, StorageError
from raftkv.wire.messages import Entry, EntryKind


def _e(term: int, n: int = 0) -> Entry:
    return Entry(term, EntryKind.COMMAND, b"cmd-%d-%d" % (term, n))


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "log")


@pytest.fixture
def store(path):
    s = LogStore(path)
    yield s
    s.close()


def reopen(s: LogStore) -> LogStore:
    s.close()
    return LogStore(s.path)


def test_fresh_store(store):
    assert store.first_index() == 1
    assert store.last_index() == 0
    assert store.base() == (0, 0)
    assert store.stable() == StableState(0, None, 0)
    assert store.all_entries() == []
    assert store.entries(1, 10) == []


def test_append_and_read_back_across_reopen(store):
    batch1 = [_e(1, i) for i in range(3)]
    batch2 = [_e(2, i) for i in range(4)]
    store.write(first_index=1, entries=batch1)
    store.write(entries=batch2)  # first_index=0: right after the end
    assert store.last_index() == 7
    store = reopen(store)
    try:
        assert store.first_index() == 1
        assert store.last_index() == 7
        assert store.all_entries() == batch1 + batch2
        assert all(type(e) is Entry for e in store.all_entries())
    finally:
        store.close()


def test_entries_ranges(store):
    es = [_e(1, i) for i in range(10)]
    store.write(entries=es)
    assert store.entries(1, 11) == es
    assert store.entries(3, 6) == es[2:5]
    assert store.entries(10, 11) == es[9:]
    assert store.entries(5, 5) == []
    assert store.entries(6, 3) == []
    assert store.entries(8, 100) == es[7:]  # hi is clamped to last_index + 1
    assert store.entries(11, 20) == []
    with pytest.raises(IndexError):
        store.entries(0, 3)


def test_entries_do_not_run_into_stable_state(store):
    # Stable-state keys sort after the entry keys; a read past the end must not see them.
    store.write(term=3, vote="n2", commit=2, entries=[_e(1), _e(1, 1)])
    assert store.entries(1, 2**40) == [_e(1), _e(1, 1)]


def test_truncate_conflicting_suffix(store):
    store.write(entries=[_e(1, i) for i in range(5)])
    replacement = [_e(2, 0), _e(2, 1)]
    store.write(truncate_from=3, first_index=3, entries=replacement)
    assert store.last_index() == 4
    expected = [_e(1, 0), _e(1, 1)] + replacement
    assert store.all_entries() == expected
    store = reopen(store)
    try:
        assert store.last_index() == 4
        assert store.all_entries() == expected
    finally:
        store.close()


def test_truncate_without_new_entries(store):
    store.write(entries=[_e(1, i) for i in range(5)])
    store.write(truncate_from=2)
    assert store.last_index() == 1
    assert store.all_entries() == [_e(1, 0)]
    store.write(truncate_from=1)
    assert store.last_index() == 0
    assert store.all_entries() == []
    store.write(truncate_from=7)  # past the end: nothing to do
    assert store.last_index() == 0


def test_write_rejects_gaps_overlaps_and_lower_terms(store):
    store.write(term=2, entries=[_e(1, i) for i in range(3)])
    with pytest.raises(ValueError, match="do not extend"):
        store.write(first_index=5, entries=[_e(2)])  # gap
    with pytest.raises(ValueError, match="do not extend"):
        store.write(first_index=2, entries=[_e(2)])  # overlap without truncation
    with pytest.raises(ValueError, match="lower than"):
        store.write(term=1)
    # nothing of the rejected writes reached the disk or the caches
    assert store.last_index() == 3
    assert store.stable().term == 2
    store = reopen(store)
    try:
        assert store.all_entries() == [_e(1, i) for i in range(3)]
    finally:
        store.close()


def test_term_vote_commit_persisted(store):
    store.write(term=5, vote="n3", commit=0)
    store.write(commit=4)
    assert store.stable() == StableState(5, "n3", 4)
    store = reopen(store)
    try:
        assert store.stable() == StableState(5, "n3", 4)
    finally:
        store.close()


def test_vote_unset_leaves_and_none_clears(store):
    store.write(term=1, vote="n1")
    store.write(term=2)  # vote=UNSET: left alone
    assert store.stable().vote == "n1"
    store.write(term=3, vote=None)
    assert store.stable() == StableState(3, None, 0)
    store = reopen(store)
    try:
        assert store.stable() == StableState(3, None, 0)
        store.write(vote="n2")
        store.write(vote=UNSET, commit=1)
        assert store.stable() == StableState(3, "n2", 1)
    finally:
        store.close()


def test_stable_returns_a_copy(store):
    store.write(term=1)
    s = store.stable()
    s.term = 99
    assert store.stable().term == 1


def test_term_vote_and_entries_in_one_batch(store, monkeypatch):
    calls = _record_writes(store, monkeypatch)
    store.write(term=4, vote="n1", commit=1, truncate_from=1, entries=[_e(4)])
    assert len(calls) == 1  # one WriteBatch, one fsync


def test_drop_prefix_across_reopen(store):
    store.write(entries=[_e(1, i) for i in range(10)])
    store.drop_prefix(4, 1)
    assert store.base() == (4, 1)
    assert store.first_index() == 5
    assert store.last_index() == 10
    assert store.entries(5, 11) == [_e(1, i) for i in range(4, 10)]
    with pytest.raises(IndexError):
        store.entries(4, 6)
    store = reopen(store)
    try:
        assert store.base() == (4, 1)
        assert store.first_index() == 5
        assert store.last_index() == 10
        assert store.all_entries() == [_e(1, i) for i in range(4, 10)]
        store.drop_prefix(3, 1)  # at or below the base: nothing happens
        assert store.base() == (4, 1)
        store.write(entries=[_e(2)])
        assert store.last_index() == 11
        with pytest.raises(ValueError):
            store.write(truncate_from=4)  # compacted entries are never truncated
    finally:
        store.close()


def test_drop_prefix_past_the_end_empties_the_log(store):
    # the install-snapshot case: the snapshot reaches past everything held
    store.write(entries=[_e(1, i) for i in range(3)])
    store.drop_prefix(20, 4)
    assert (store.first_index(), store.last_index(), store.base()) == (21, 20, (20, 4))
    assert store.all_entries() == []
    store = reopen(store)
    try:
        assert (store.first_index(), store.last_index(), store.base()) == (21, 20, (20, 4))
        store.write(first_index=21, entries=[_e(5)])
        assert store.entries(21, 22) == [_e(5)]
    finally:
        store.close()


def test_drop_prefix_with_other_term_discards_the_suffix(store):
    # Figure 13 rule 7: the log's entry at the snapshot's index has another term
    store.write(entries=[_e(1, i) for i in range(6)])
    store.drop_prefix(3, 2)
    assert (store.first_index(), store.last_index(), store.base()) == (4, 3, (3, 2))
    assert store.all_entries() == []


def test_term_at_the_base_an_entry_and_outside_the_log(store):
    assert store.term_at(0) == 0 and store.term_at(1) is None
    store.write(entries=[_e(1, 0), _e(1, 1), _e(2, 2), _e(3, 3)])
    store.drop_prefix(1, 1)
    assert [store.term_at(i) for i in range(6)] == [None, 1, 1, 2, 3, None]


def test_unknown_format_version_refused(path):
    s = LogStore(path)
    s.close()
    db = rocksdict.Rdict(path, rocksdict.Options(raw_mode=True))
    db[b"m/format"] = msgpack.packb(FORMAT_VERSION + 1)
    db.close()
    with pytest.raises(StorageError, match=r"format version 2, this build reads 1"):
        LogStore(path)
    # the failed open released the database
    db = rocksdict.Rdict(path, rocksdict.Options(raw_mode=True))
    db.close()


def test_data_without_format_version_refused(path):
    db = rocksdict.Rdict(path, rocksdict.Options(raw_mode=True))
    db[b"something"] = b"else"
    db.close()
    with pytest.raises(StorageError, match="no format version"):
        LogStore(path)


def test_second_open_refused_while_open(store):
    with pytest.raises(StorageError, match="cannot open log store"):
        LogStore(store.path)


def test_meta_roundtrip(store):
    assert store.get_meta("cluster_id") is None
    store.set_meta(cluster_id="c-1", node_id="node1", incarnation="ab12cd")
    store.set_meta(removed="1")
    store = reopen(store)
    try:
        assert store.get_meta("cluster_id") == "c-1"
        assert store.get_meta("node_id") == "node1"
        assert store.get_meta("incarnation") == "ab12cd"
        assert store.get_meta("removed") == "1"
        # metadata does not collide with the stable state
        assert store.stable() == StableState()
        with pytest.raises(TypeError):
            store.set_meta(removed=True)  # type: ignore[arg-type]
    finally:
        store.close()


class _Synced:
    """Stands for a write followed by a WAL sync (what LogStore._synced does)."""

    sync = True


class _RecordingDb:
    """Wraps the real Rdict; records the write options of each write."""

    def __init__(self, db, calls):
        self._db = db
        self._calls = calls

    def write(self, batch, write_opt=None):
        self._calls.append(write_opt)
        return self._db.write(batch, write_opt)

    def flush_wal(self, sync=False):
        if sync and self._calls:
            self._calls[-1] = _Synced()  # the write just made is now synced
        return self._db.flush_wal(sync)

    def __getattr__(self, name):
        return getattr(self._db, name)


def _record_writes(store, monkeypatch) -> list:
    calls: list = []
    monkeypatch.setattr(store, "_db", _RecordingDb(store._db, calls))
    return calls


def test_writes_are_synced(store, monkeypatch):
    calls = _record_writes(store, monkeypatch)
    store.write(term=1, vote="n1")
    store.write(entries=[_e(1)])
    store.write(commit=1)
    store.write(truncate_from=1)
    store.write(entries=[_e(1)])
    store.drop_prefix(1, 1)
    store.set_meta(node_id="n1")
    assert len(calls) == 7
    assert all(opt is not None and opt.sync for opt in calls)


def test_unsynced_write_only_when_asked(store, monkeypatch):
    calls = _record_writes(store, monkeypatch)
    store.write(entries=[_e(1)], sync=False)
    assert len(calls) == 1 and calls[0].sync is False


def test_format_version_written_synced(path, monkeypatch):
    seen = []
    real = rocksdict.Rdict

    class Spy:
        def __init__(self, *a, **kw):
            self._db = real(*a, **kw)

        def put(self, key, value, write_opt=None):
            seen.append((key, write_opt))
            return self._db.put(key, value, write_opt)

        def __getattr__(self, name):
            return getattr(self._db, name)

    monkeypatch.setattr(log_store.rocksdict, "Rdict", Spy)
    LogStore(path).close()
    assert [k for k, _ in seen] == [b"m/format"]
    assert seen[0][1] is not None and seen[0][1].sync


def test_empty_write_does_nothing(store, monkeypatch):
    calls = _record_writes(store, monkeypatch)
    store.write()
    assert calls == []


def _raw_put(path: str, key: bytes, value: bytes) -> None:
    db = rocksdict.Rdict(path, rocksdict.Options(raw_mode=True))
    db[key] = value
    db.close()


def test_entry_written_with_an_appended_field_is_read(path):
    # a newer build may append a field to the stored entry: this one reads what it knows
    s = LogStore(path)
    s.write(entries=[_e(1, 0), _e(1, 1)])
    s.close()
    _raw_put(path, log_store._entry_key(2), msgpack.packb([1, EntryKind.COMMAND, b"x", "newer"], use_bin_type=True))
    s = LogStore(path)
    assert s.all_entries() == [_e(1, 0), Entry(1, EntryKind.COMMAND, b"x")]
    s.close()


def test_damaged_entry_is_an_error_naming_its_index(path):
    s = LogStore(path)
    s.write(entries=[_e(1, i) for i in range(3)])
    s.close()
    _raw_put(path, log_store._entry_key(2), msgpack.packb([1, "one", b"x"]))
    s = LogStore(path)
    with pytest.raises(StorageError, match="entry 2 is unreadable: entry: wrong field types"):
        s.all_entries()
    assert s.entries(3, 4) == [_e(1, 2)]
    s.close()


def test_wrong_typed_stable_state_is_refused(path):
    LogStore(path).close()
    _raw_put(path, b"m/term", msgpack.packb("7"))
    with pytest.raises(StorageError, match="term: expected a non-negative int"):
        LogStore(path)


def test_a_log_made_with_other_options_is_reopened_with_this_builds(path, monkeypatch):
    # A log DB made by an earlier release (a 64 MB memtable) must take this build's memtable size
    # when reopened, or its WAL (replayed at every start) stays as large as that release's.
    monkeypatch.setattr(log_store, "WRITE_BUFFER_MB", 64)
    s = LogStore(path)
    s.write(first_index=1, entries=[_e(1)])
    s.close()
    monkeypatch.undo()
    s = LogStore(path)
    try:
        options = sorted(f for f in os.listdir(path) if f.startswith("OPTIONS-"))
        with open(os.path.join(path, options[-1])) as f:
            sizes = re.findall(r"^\s*write_buffer_size=(\d+)", f.read(), re.M)
        assert sizes == [str(log_store.WRITE_BUFFER_MB << 20)]
        assert s.all_entries() == [_e(1)]
    finally:
        s.close()


def _state(s: LogStore) -> tuple:
    return s.first_index(), s.last_index(), s.base(), s.all_entries(), s.stable()


@pytest.mark.parametrize("case", [
    # (entries held, the write's arguments, drop_to): a compaction riding on each kind of batch
    ("append, suffix kept", 10, {"entries": [_e(1, 10)]}, (4, 1)),
    ("append, other term at the index", 10, {"entries": [_e(1, 10)]}, (4, 2)),
    ("append right after the index", 4, {"entries": [_e(2)]}, (4, 1)),
    ("truncate past the index", 10, {"truncate_from": 8, "entries": [_e(3)]}, (5, 1)),
    ("term and vote only", 6, {"term": 3, "vote": "n2"}, (6, 1)),
    ("at or below the base", 6, {"entries": [_e(1, 6)]}, (0, 0)),
    ("past the end", 3, {"entries": [_e(1, 3)]}, (20, 4)),
    ("truncating the index", 10, {"truncate_from": 3, "entries": [_e(3)]}, (3, 1)),
    ("unsynced commit", 6, {"commit": 5, "sync": False}, (5, 1)),
])
def test_a_write_with_drop_to_equals_the_write_then_drop_prefix(tmp_path, case):
    _, held, kw, drop_to = case
    merged, apart = LogStore(str(tmp_path / "merged")), LogStore(str(tmp_path / "apart"))
    try:
        for s in (merged, apart):
            s.write(entries=[_e(1, i) for i in range(held)])
        merged.write(**kw, drop_to=drop_to)
        apart.write(**kw)
        apart.drop_prefix(*drop_to)
        assert _state(merged) == _state(apart)
        merged, apart = reopen(merged), reopen(apart)
        assert _state(merged) == _state(apart)
    finally:
        merged.close()
        apart.close()


def test_a_compaction_riding_on_an_append_takes_one_fsync(store, monkeypatch):
    store.write(entries=[_e(1, i) for i in range(10)])
    calls = _record_writes(store, monkeypatch)
    store.write(entries=[_e(1, 10)], commit=9, drop_to=(6, 1))
    assert len(calls) == 1 and calls[0].sync  # one WriteBatch, one fsync
    assert (store.first_index(), store.last_index(), store.base()) == (7, 11, (6, 1))
