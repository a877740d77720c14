"""The FSM's records of keys written lately (actors/recent_records.py): a write reads its old
record from them instead of RocksDB, so they must equal the DB for every key they hold, within
their bounds, across deletes, large values, evictions and a snapshot install."""
from __future__ import annotations

import random

from raftkv.actors.db_state import DbState
from raftkv.actors.fsm import KVState
from raftkv.actors.recent_records import MAX_VALUE, RecentRecords
from raftkv.storage.kv_record import KeyRecord
from raftkv.storage.kv_store import KvStore
from raftkv.wire.messages import Command, EntryKind, encode_record


def _check_held_records_equal_the_db(db: DbState) -> None:
    for key, rec in db.recent.held().items():
        assert db.store.get_record(key) == rec, key


def test_results_and_records_match_the_in_memory_state_through_evictions(tmp_path):
    rng = random.Random(12)
    db, mem = DbState(KvStore(str(tmp_path / "kv"))), KVState()
    db.recent = RecentRecords(db.store, max_keys=4, max_bytes=3 * MAX_VALUE)  # tiny: evicts all the time
    index = 0
    for _batch in range(300):
        for _ in range(rng.randint(1, 8)):
            index += 1
            key = f"k{rng.randint(0, 9)}"
            value = b"x" * rng.choice([1, 100, MAX_VALUE, MAX_VALUE + 1])
            op = rng.choice(["put", "put", "delete", "cas"])
            cmd = Command(op, key, None if op == "delete" else value, value if op == "cas" else None,
                          op == "cas" and rng.random() < 0.3, "c", index)
            data = encode_record(cmd)
            assert db.apply(index, EntryKind.COMMAND, data) == mem.apply(index, EntryKind.COMMAND, data)
        db.end_batch(1, None)
        assert len(db.recent) <= 4 and db.recent.held_bytes() <= 3 * MAX_VALUE
        _check_held_records_equal_the_db(db)
    assert db.take_events() == mem.take_events()
    for i in range(10):
        assert db.store.get_record(f"k{i}") == mem.record(f"k{i}")


def test_a_snapshot_install_forgets_the_records_of_the_replaced_db(tmp_path):
    other = DbState(KvStore(str(tmp_path / "other")))
    other.apply(1, EntryKind.COMMAND, encode_record(Command("put", "k", b"theirs", client_id="c", seq=1)))
    other.end_batch(1, None)
    checkpoint = str(tmp_path / "cp")
    other.store.checkpoint(checkpoint)
    db = DbState(KvStore(str(tmp_path / "kv")))
    for i in (1, 2):
        db.apply(i, EntryKind.COMMAND, encode_record(Command("put", "k", b"mine%d" % i, client_id="d", seq=i)))
    db.end_batch(1, None)
    assert db.recent.held()["k"].value == b"mine2"
    db.restored(checkpoint, 1, 1, [])
    assert db.recent.held() == {}
    res = db.apply(2, EntryKind.COMMAND, encode_record(Command("put", "k", b"next", client_id="c", seq=2)))
    db.end_batch(1, None)
    assert res[0] == "ok" and db.store.get_record("k")[1:] == (1, 2, 2)  # created at 1 by the snapshot's put


class _Db:
    """A stand-in store: the records a DB would hold, and how often it was read."""

    def __init__(self) -> None:
        self.records: dict = {}
        self.reads = 0

    def get_record(self, key):
        self.reads += 1
        return self.records.get(key)


def test_both_generations_answer_as_the_db_within_their_bounds():
    rng = random.Random(7)
    db = _Db()
    recent = RecentRecords(db, max_keys=8, max_bytes=4 * MAX_VALUE)
    keys = [f"k{i}" for i in range(20)]
    for _batch in range(2000):
        batch: dict = {}
        for _ in range(rng.randint(1, 3)):  # at most two generation changes in a batch: all held
            key = rng.choice(keys[:6] if rng.random() < 0.7 else keys)  # a few hot keys, some cold
            size = rng.choice([0, 10, MAX_VALUE, MAX_VALUE + 1, 2 * MAX_VALUE + 1])
            batch[key] = None if size == 0 else KeyRecord(b"v" * size, 1, _batch, 1)
        db.records.update(batch)  # the batch is in the DB first, then written() is told
        for key, rec in batch.items():
            if rec is None:
                del db.records[key]
        recent.written(batch)
        assert len(recent) <= 8 and recent.held_bytes() <= 4 * MAX_VALUE
        for key in keys:
            assert recent.get_record(key) == db.records.get(key), key
        for key, rec in batch.items():  # what was just written and small enough is held
            if rec is None or len(rec.value) <= MAX_VALUE:
                before = db.reads
                recent.get_record(key)
                assert db.reads == before, key


def test_a_key_aged_out_of_both_generations_is_read_from_the_db():
    db = _Db()
    recent = RecentRecords(db, max_keys=4, max_bytes=1 << 20)
    db.records["a"] = KeyRecord(b"1", 1, 1, 1)
    recent.written({"a": db.records["a"]})
    for i in range(4):  # two generations of two keys each push "a" out
        db.records[f"b{i}"] = KeyRecord(b"x", 2, 2, 1)
        recent.written({f"b{i}": db.records[f"b{i}"]})
    assert "a" not in recent.held()
    before = db.reads
    assert recent.get_record("a") == KeyRecord(b"1", 1, 1, 1) and db.reads == before + 1
