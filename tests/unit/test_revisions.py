"""Revisions and watch events (issue 14): both states (in memory and on RocksDB) give every key
the same create/mod revision and version and emit the same events, in log order, as a plain
reference model of the rules; and both keep revisions across a snapshot, a restart and the
conversion of an older store."""
from __future__ import annotations

import rocksdict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftkv.actors.db_state import DbState
from raftkv.actors.fsm import KVState
from raftkv.actors.watch_events import EventType, WatchEvent
from raftkv.storage.kv_db import K_APPLIED, K_FORMAT, KV_FORMAT_VERSION, kv_options, read_format
from raftkv.records import Compare, Txn, TxnOp, TxnOpResult
from raftkv.storage.kv_record import KeyRecord
from raftkv.storage.kv_store import KvStore
from raftkv.storage.format import pack
from raftkv.wire.messages import Command, EntryKind, encode_record

_keys = st.sampled_from(["a", "b", "c/1", "é"])
_cmd = st.one_of(
    st.builds(lambda k, v: Command("put", k, v), _keys, st.binary(max_size=3)),
    st.builds(lambda k: Command("delete", k), _keys),
    st.builds(lambda k, e, v: Command("cas", k, v, expected=e), _keys, st.binary(max_size=1), st.binary(max_size=2)),
    st.builds(lambda k, v: Command("cas", k, v, expect_absent=True), _keys, st.binary(max_size=2)),
)
_compare = st.one_of(
    st.builds(lambda k, r, v: Compare("value", r, k, v), _keys, st.sampled_from(["=", "!=", "<", ">"]),
              st.binary(max_size=2)),
    st.builds(lambda t, k, r, n: Compare(t, r, k, None, n), st.sampled_from(["version", "create", "mod"]), _keys,
              st.sampled_from(["=", "!=", "<", ">"]), st.integers(0, 12)))
_op = st.one_of(st.builds(lambda k, v: TxnOp("put", k, v), _keys, st.binary(max_size=2)),
                st.builds(lambda k: TxnOp("delete", k), _keys), st.builds(lambda k: TxnOp("get", k), _keys))
_txn = st.builds(lambda c, s, f: Command("txn", "", txn=Txn(c, s, f)), st.lists(_compare, max_size=3),
                 st.lists(_op, max_size=4), st.lists(_op, max_size=4))
_cmd = st.one_of(_cmd, _txn)
# entries: a command, or a no-op (which takes an index and changes nothing)
_entries = st.lists(st.lists(st.one_of(_cmd, st.none()), min_size=1, max_size=6), min_size=1, max_size=10)


class Reference:
    """The rules of docs/architecture.md "Revisions", written as plainly as possible."""

    def __init__(self) -> None:
        self.keys: dict[str, KeyRecord] = {}
        self.events: list[WatchEvent] = []

    def holds(self, c: Compare) -> bool:
        rec = self.keys.get(c.key)
        if c.target == "value":
            if rec is None:
                return False
            a, b = rec.value, c.value
        else:
            a = 0 if rec is None else {"version": rec.version, "create": rec.create_revision,
                                       "mod": rec.mod_revision}[c.target]
            b = c.number
        return {"=": a == b, "!=": a != b, "<": a < b, ">": a > b}[c.result]

    def apply(self, rev: int, c: Command) -> None:
        if c.op == "txn":
            ok = all(self.holds(x) for x in c.txn.compare)
            for op in c.txn.success if ok else c.txn.failure:
                if op.type == "put":
                    self.apply(rev, Command("put", op.key, op.value))
                elif op.type == "delete":
                    self.apply(rev, Command("delete", op.key))
            return
        old = self.keys.get(c.key)
        if c.op == "cas":
            ok = old is None if c.expect_absent else (old is not None and old.value == c.expected)
            if not ok:
                return
        if c.op in ("put", "cas"):
            rec = (KeyRecord(c.value, rev, rev, 1) if old is None
                   else KeyRecord(c.value, old.create_revision, rev, old.version + 1))
            self.keys[c.key] = rec
            self.events.append(WatchEvent(rev, EventType.PUT, c.key, c.value, old.value if old else None,
                                          rec.create_revision, rec.version))
        elif old is not None:
            del self.keys[c.key]
            self.events.append(WatchEvent(rev, EventType.DELETE, c.key, None, old.value, 0, 0))


def _payload(c):
    return (EntryKind.NOOP, b"") if c is None else (EntryKind.COMMAND, encode_record(c))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=_entries, reopen_after=st.integers(0, 10))
def test_both_states_keep_the_same_revisions_and_events_as_the_rules(tmp_path_factory, batches, reopen_after):
    path = str(tmp_path_factory.mktemp("kv") / "kv")
    mem, ref = KVState(), Reference()
    store = KvStore(path)
    db = DbState(store)
    index = 0
    try:
        for n, batch in enumerate(batches):
            for c in batch:
                index += 1
                kind, data = _payload(c)
                assert db.apply(index, kind, data) == mem.apply(index, kind, data)
                if c is not None:
                    ref.apply(index, c)
            db.end_batch(1, None)
            assert db.take_events() == mem.take_events()
            if n == reopen_after:  # a restart: the DB alone carries the revisions on
                store.close()
                store = KvStore(path)
                db = DbState(store)
        assert mem.take_events() == [] and db.take_events() == []
        for key in ["a", "b", "c/1", "é"]:
            assert mem.record(key) == store.get_record(key) == ref.keys.get(key)
        # a snapshot of the in-memory state restores the same records
        back = KVState.restore(mem.frozen().chunks(per_chunk=2))
        assert {k: back.record(k) for k in back.data} == ref.keys
    finally:
        store.close()


def test_events_come_in_log_order_with_revisions_and_versions():
    s = KVState()
    s.apply(1, EntryKind.COMMAND, encode_record(Command("put", "k", b"1")))
    s.apply(2, EntryKind.NOOP, b"")
    s.apply(3, EntryKind.COMMAND, encode_record(Command("put", "k", b"2")))
    s.apply(4, EntryKind.COMMAND, encode_record(Command("delete", "k")))
    s.apply(5, EntryKind.COMMAND, encode_record(Command("delete", "k")))  # absent: no event
    s.apply(6, EntryKind.COMMAND, encode_record(Command("put", "k", b"3")))
    assert s.take_events() == [
        WatchEvent(1, EventType.PUT, "k", b"1", None, 1, 1),
        WatchEvent(3, EventType.PUT, "k", b"2", b"1", 1, 2),
        WatchEvent(4, EventType.DELETE, "k", None, b"2", 0, 0),
        WatchEvent(6, EventType.PUT, "k", b"3", None, 6, 1),
    ]
    assert s.record("k") == KeyRecord(b"3", 6, 6, 1)
    assert s.take_events() == []


def test_a_format_1_store_is_converted_and_keeps_its_values(tmp_path):
    path = str(tmp_path / "kv")
    db = rocksdict.Rdict(path, kv_options())  # what the previous release wrote
    db[K_FORMAT] = pack(1)
    db[K_APPLIED] = pack(42)
    for i in range(25):
        db[b"dk%02d" % i] = b"value %d" % i
    db[b"d\xc3\xa9"] = b"\x00\xff"
    db.close()
    import raftkv.storage.kv_store as kv_store
    old_batch, kv_store._UPGRADE_BATCH = kv_store._UPGRADE_BATCH, 10  # several batches
    try:
        store = KvStore(path)
    finally:
        kv_store._UPGRADE_BATCH = old_batch
    try:
        assert store.applied_index() == 42
        assert read_format(store._db) == KV_FORMAT_VERSION == 3
        assert store.get("k07") == b"value 7"
        assert store.get_record("é") == KeyRecord(b"\x00\xff", 0, 0, 1)  # history unknown
        assert len(store.scan("k", 0)) == 25
        st = DbState(store)
        st.apply(43, EntryKind.COMMAND, encode_record(Command("put", "k07", b"new")))
        st.end_batch(1, None)
        assert store.get_record("k07") == KeyRecord(b"new", 0, 43, 2)
    finally:
        store.close()
    store = KvStore(path)  # opening again converts nothing more
    try:
        assert store.get_record("k07") == KeyRecord(b"new", 0, 43, 2) and len(store.scan("", 0)) == 26
    finally:
        store.close()


def test_a_version_2_memory_snapshot_restores_with_unknown_revisions():
    import msgpack
    body = [msgpack.packb(["state", 2, 9], use_bin_type=True),
            msgpack.packb(["kv", [("x", b"1")]], use_bin_type=True),
            msgpack.packb(["sessions", {}, {}], use_bin_type=True)]
    st = KVState.restore(body)
    assert st.record("x") == KeyRecord(b"1", 0, 0, 1) and st.applied == 9


def test_a_txn_runs_one_branch_atomically_and_answers_its_gets():
    s = KVState()
    s.apply(1, EntryKind.COMMAND, encode_record(Command("put", "from", b"10")))
    move = Txn([Compare("value", "=", "from", b"10"), Compare("version", "=", "to", None, 0)],
               [TxnOp("delete", "from"), TxnOp("put", "to", b"10"), TxnOp("get", "to")],
               [TxnOp("get", "from")])
    res = s.apply(2, EntryKind.COMMAND, encode_record(Command("txn", "", txn=move, client_id="c", seq=1)))
    assert res == ("ok", None, 2, (True, [TxnOpResult("delete", "from", True),
                                          TxnOpResult("put", "to", True, None, 2, 2, 1),
                                          TxnOpResult("get", "to", True, b"10", 2, 2, 1)]))
    assert [(e.revision, e.type, e.key) for e in s.take_events()][1:] == [(2, EventType.DELETE, "from"),
                                                                         (2, EventType.PUT, "to")]
    again = s.apply(3, EntryKind.COMMAND, encode_record(Command("txn", "", txn=move, client_id="c", seq=2)))
    assert again == ("ok", None, 3, (False, [TxnOpResult("get", "from")]))  # absent: the failure branch
    assert s.take_events() == []
    # a retry of the first (same session and seq) answers the stored result, applying nothing
    assert s.apply(4, EntryKind.COMMAND, encode_record(Command("txn", "", txn=move, client_id="c", seq=1))) == res
