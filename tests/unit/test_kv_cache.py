"""The value cache in front of the key-value store: gets through it always answer what the DB
holds (after writes, deletes, large values, evictions and a snapshot install), and a get never
returns an older value than a get or a list that already returned, while a writer runs."""
from __future__ import annotations

import random
import threading

from raftkv.actors.db_state import DbState
from raftkv.actors.fsm import KVState
from raftkv.storage.kv_checkpoint import finish_checkpoint
from raftkv.storage.kv_cache import MAX_CACHED_VALUE, ValueCache
from raftkv.storage.kv_record import KeyRecord
from raftkv.storage.kv_store import KvStore
from raftkv.wire.messages import Command, EntryKind, encode_record


def _put(key: str, value: bytes) -> bytes:
    return encode_record(Command("put", key, value))


def _delete(key: str) -> bytes:
    return encode_record(Command("delete", key))


def _rec(v: bytes) -> KeyRecord:
    return KeyRecord(v, 1, 1, 1)


def test_cache_loads_once_forgets_written_keys_and_stays_bounded():
    loads = []
    db = {"a": _rec(b"1"), "b": None}

    def load(k):
        loads.append(k)
        return db.get(k)

    c = ValueCache(max_keys=3, max_bytes=10)
    assert c.get("a", load) == _rec(b"1") and c.get("a", load) == _rec(b"1")
    assert c.get("b", load) is None and c.get("b", load) is None  # absence is cached too
    assert loads == ["a", "b"]
    db["a"], db["b"] = _rec(b"2"), _rec(b"3")
    with c.lock:
        c.written(["a", "b", "never-read"])
    assert c.get("a", load) == _rec(b"2") and c.get("b", load) == _rec(b"3") and loads == ["a", "b", "a", "b"]
    db.update({"k1": _rec(b"12345"), "k2": _rec(b"123456")})
    c.get("k1", load)
    c.get("k2", load)  # 1 + 1 + 5 + 6 bytes > 10, and 4 keys > 3: the least recently used go
    assert len(c) <= 3
    assert c.get("k2", load) == _rec(b"123456") and loads[-1] == "k2"
    db["big"] = _rec(b"x" * (MAX_CACHED_VALUE + 1))
    assert c.get("big", load) == db["big"] and c.get("big", load) == db["big"]
    assert loads[-2:] == ["big", "big"]  # a large value is read from the DB every time


def test_gets_through_the_cache_answer_what_the_model_holds(tmp_path):
    rng = random.Random(3)
    db = DbState(KvStore(str(tmp_path / "kv")))
    model = KVState()
    keys = [f"k{i}" for i in range(20)]
    index = 0
    for _ in range(60):
        for _ in range(rng.randint(1, 8)):
            k = rng.choice(keys)
            r = rng.random()
            payload = (_delete(k) if r < 0.2 else
                       _put(k, b"L" * (MAX_CACHED_VALUE + rng.randint(1, 10))) if r < 0.3 else
                       _put(k, b"v%d" % rng.randint(0, 1000)))
            index += 1
            db.apply(index, EntryKind.COMMAND, payload)
            model.apply(index, EntryKind.COMMAND, payload)
        db.end_batch(1, None)
        for k in rng.sample(keys, 8):  # gets warm the cache between batches
            assert db.read("get", k) == model.read("get", k)
    for k in keys:
        assert db.read("get", k) == model.read("get", k)
    db.store.close()


def test_cache_is_emptied_by_a_snapshot_install(tmp_path):
    other = DbState(KvStore(str(tmp_path / "other")))
    other.apply(1, EntryKind.COMMAND, _put("k", b"theirs"))
    other.end_batch(1, None)
    ckpt = str(tmp_path / "ckpt")
    finish_checkpoint(other.snapshot_payload(ckpt))  # the snapshotter's part
    other.store.close()
    db = DbState(KvStore(str(tmp_path / "kv")))
    db.apply(1, EntryKind.COMMAND, _put("k", b"ours"))
    db.end_batch(1, None)
    assert db.read("get", "k").value == b"ours"  # cached now
    db.restored(ckpt, 1, 1, [])
    assert db.read("get", "k").value == b"theirs"
    db.store.close()


def test_gets_never_go_back_in_time_while_a_writer_applies(tmp_path):
    db = DbState(KvStore(str(tmp_path / "kv")))
    n = 400
    problems: list = []
    done = threading.Event()

    def reader():
        seen = -1
        while not done.is_set():
            rep = db.read("get", "k")
            got = int(rep.value) if rep.value is not None else -1
            listed = db.read("list", "k", 1).items
            after = int(listed[0][1]) if listed else -1
            if got < seen or after < got:  # a list after a get, a get after a get: never older
                problems.append((seen, got, after))
            seen = max(got, after)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for i in range(1, n + 1):
        db.apply(i, EntryKind.COMMAND, _put("k", b"%d" % i))
        db.end_batch(1, None)
    done.set()
    for t in threads:
        t.join()
    assert problems == []
    assert db.read("get", "k").value == b"%d" % n
    db.store.close()
