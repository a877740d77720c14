"""The FSM's RocksDB state applies exactly as the in-memory model does, and a reopened store
(a restart) continues with the same state and session table."""
from __future__ import annotations

import random

import pytest

import rocksdict

from raftkv.actors import db_state, fsm, kv_apply
from raftkv.actors.db_state import DbState
from raftkv.actors.fsm import KVState
from raftkv.records import Compare, Member, Txn, TxnOp
from raftkv.storage.format import pack
from raftkv.storage.kv_db import K_APPLIED, K_FORMAT, KV_FORMAT_VERSION, kv_options, read_format
from raftkv.storage.kv_record import KeyRecord
from raftkv.storage.kv_record import encode_record as encode_record_of
from raftkv.storage.kv_store import KvStore, _client_prefix, _seq_bytes
from raftkv.wire.messages import Command, EntryKind, encode_record


def _commands(rng: random.Random, n: int) -> list:
    out = []
    seqs = {f"c{i}": 0 for i in range(4)}
    for _ in range(n):
        cid = rng.choice(list(seqs))
        if rng.random() < 0.2 and seqs[cid] > 0:
            seq = rng.randint(max(1, seqs[cid] - 3), seqs[cid])  # a retry: deduplicated
        else:
            seqs[cid] += 1
            seq = seqs[cid]
        key = f"k{rng.randint(0, 30)}"
        op = rng.choice(["put", "put", "delete", "cas", "txn"])
        if op == "txn":  # a results of its own shape in the session table (issue 14)
            other = f"k{rng.randint(0, 30)}"
            t = Txn([Compare("value", "=", key, rng.choice([b"v1", b"v2"]))],
                    [TxnOp("put", other, b"t"), TxnOp("get", key)], [TxnOp("get", other), TxnOp("delete", key)])
            c = Command("txn", "", client_id=cid, seq=seq, txn=t)
        elif op == "cas":
            c = Command("cas", key, b"new", client_id=cid, seq=seq, expected=rng.choice([b"v1", b"new"]))
        else:
            c = Command(op, key, b"v%d" % rng.randint(0, 2) if op == "put" else None, client_id=cid, seq=seq)
        out.append(encode_record(c))
    return out


@pytest.mark.parametrize("block", [1, 5, 1024])
def test_same_results_and_state_as_the_model_across_a_reopen(tmp_path, monkeypatch, block):
    monkeypatch.setattr(fsm, "SESSION_WINDOW", 4)  # exercise eviction
    monkeypatch.setattr(db_state, "RESULT_BLOCK", block)
    monkeypatch.setattr(fsm, "SWEEP_EVERY", 16)
    monkeypatch.setattr(fsm, "SESSION_TTL", 40)  # and expiry
    rng = random.Random(7)
    cmds = _commands(rng, 600)
    model = KVState()
    store = KvStore(str(tmp_path / "kv"))
    db = DbState(store)
    members = [Member("n1", "127.0.0.1:1", "127.0.0.1:2", "", True)]
    index = 0
    for start in range(0, len(cmds), 37):  # batches of entries, with a reopen in the middle
        for payload in cmds[start:start + 37]:
            index += 1
            assert db.apply(index, EntryKind.COMMAND, payload) == model.apply(index, EntryKind.COMMAND, payload)
        db.end_batch(3, members if start == 0 else None)
        if start == 37 * 8:
            store.close()
            store = KvStore(str(tmp_path / "kv"))
            db = DbState(store)
            assert (db.applied, db.term, db.members) == (index, 3, members)
    assert store.scan("", 0) == sorted(model.data.items())
    assert db.read("list", "k1", 3).items == model.read("list", "k1", 3).items
    assert db.read("get", "k5") == model.read("get", "k5")
    store.close()


def test_same_results_as_the_model_with_a_restart_after_every_batch(tmp_path, monkeypatch):
    # After a restart each client's results are read when it is next seen (DbState._results_of):
    # restarting between every two batches must still give the model's results (duplicates
    # answered with the stored result, evicted seqs refused, expiry) and the model's state.
    monkeypatch.setattr(fsm, "SESSION_WINDOW", 4)
    monkeypatch.setattr(fsm, "SWEEP_EVERY", 16)
    monkeypatch.setattr(fsm, "SESSION_TTL", 40)
    monkeypatch.setattr(db_state, "RESULT_BLOCK", 3)  # results below the window stay in the DB for a while
    cmds = _commands(random.Random(11), 500)
    model = KVState()
    store = KvStore(str(tmp_path / "kv"))
    db = DbState(store)
    index = 0
    for start in range(0, len(cmds), 7):
        for payload in cmds[start:start + 7]:
            index += 1
            assert db.apply(index, EntryKind.COMMAND, payload) == model.apply(index, EntryKind.COMMAND, payload)
        db.end_batch(2, None)
        store.close()
        store = KvStore(str(tmp_path / "kv"))
        db = DbState(store)
        assert set(db.sessions) == set(model.sessions)
        assert list(db.expired.items()) == list(model.expired.items())
    assert store.scan("", 0) == sorted(model.data.items())
    store.close()


def test_seqs_applied_out_of_order_keep_the_window_a_restarted_node_reads_back(tmp_path, monkeypatch):
    # A client's requests may be applied out of seq order (several in flight, retries): the window
    # is then the highest SESSION_WINDOW seqs saved, in a node that never stopped as in one that
    # reopens its store after every batch, and both answer every request alike.
    monkeypatch.setattr(fsm, "SESSION_WINDOW", 4)
    rng = random.Random(5)
    live = DbState(KvStore(str(tmp_path / "live")))
    path = str(tmp_path / "restarted")
    store = KvStore(path)
    restarted = DbState(store)
    saved: set = set()
    index = 0
    top = 0
    for _batch in range(60):
        for _ in range(rng.randint(1, 5)):
            top += 1
            seq = max(1, top - rng.choice([0, 0, 1, 2, 3, 5, 8]))  # mostly in order, some late, some repeated
            index += 1
            payload = encode_record(Command("put", f"k{seq % 7}", b"v%d" % seq, client_id="c", seq=seq))
            got = live.apply(index, EntryKind.COMMAND, payload)
            assert restarted.apply(index, EntryKind.COMMAND, payload) == got
            if got[0] == "ok" and got[2] == index:  # applied now, not a stored answer or a refusal
                saved.add(seq)
        live.end_batch(1, None)
        restarted.end_batch(1, None)
        assert sorted(live.sessions["c"].results) == sorted(saved)[-4:]
        store.close()
        store = KvStore(path)
        restarted = DbState(store)
    # A late seq below the only one held, right after a restart, then enough to evict: the lowest
    # (3) goes, and a retry of 5 gets its stored answer, not a second application.
    answers = []
    for batch in ([5], [3, 6, 7, 8, 5], [5]):
        for seq in batch:
            index += 1
            payload = encode_record(Command("put", "d", b"d%d" % seq, client_id="d", seq=seq))
            got = live.apply(index, EntryKind.COMMAND, payload)
            assert restarted.apply(index, EntryKind.COMMAND, payload) == got
            answers.append(got[2])
        live.end_batch(1, None)
        restarted.end_batch(1, None)
        assert list(restarted.sessions["d"].results) == list(live.sessions["d"].results)
        store.close()
        store = KvStore(path)
        restarted = DbState(store)
    assert answers[-1] == answers[-2] == answers[0]  # seq 5's first revision
    assert sorted(live.sessions["d"].results) == [5, 6, 7, 8]
    assert live.store.scan("", 0) == store.scan("", 0)
    live.store.close()
    store.close()


def test_a_restart_reads_the_results_of_a_client_only_when_it_comes_back(tmp_path, monkeypatch):
    monkeypatch.setattr(fsm, "SESSION_WINDOW", 4)
    store = KvStore(str(tmp_path / "kv"))
    db = DbState(store)
    index = 0
    for seq in range(1, 11):  # two clients, ten writes each: six of each client's results evicted
        for cid in ("gone", "back"):
            index += 1
            db.apply(index, EntryKind.COMMAND, encode_record(Command("put", f"{cid}{seq}", b"v", client_id=cid, seq=seq)))
    db.end_batch(1, None)
    before = db.sessions["back"].results[10]
    store.close()

    store = KvStore(str(tmp_path / "kv"))
    reads = []
    real = store.client_results
    monkeypatch.setattr(store, "client_results", lambda cid: reads.append(cid) or real(cid))
    db = DbState(store)
    assert set(db.sessions) == {"gone", "back"} and reads == []  # the start-up reads no results
    retry = encode_record(Command("put", "back10", b"v", client_id="back", seq=10))
    assert db.apply(index + 1, EntryKind.COMMAND, retry) == before  # the stored result, not applied again
    assert reads == ["back"]
    evicted = encode_record(Command("put", "back3", b"x", client_id="back", seq=3))
    assert db.apply(index + 2, EntryKind.COMMAND, evicted) == kv_apply.EXPIRED  # left the window
    fresh = encode_record(Command("put", "back11", b"w", client_id="back", seq=11))
    assert db.apply(index + 3, EntryKind.COMMAND, fresh)[0] == "ok"
    db.end_batch(1, None)
    assert reads == ["back"]  # read once
    assert store.get("back3") == b"v" and store.get("back11") == b"w"
    assert list(db.sessions["back"].results) == [8, 9, 10, 11]
    db = DbState(store)
    for cid in ("back", "gone"):  # read back: each client's highest four
        db._results_of(cid, db.sessions[cid])
    assert list(db.sessions["back"].results) == [8, 9, 10, 11] and list(db.sessions["gone"].results) == [7, 8, 9, 10]
    store.close()


def test_evicted_results_leave_a_range_deletion_per_block_not_a_deletion_per_write(tmp_path, monkeypatch):
    # A restart reads a returning client's stored results: with a deletion per write it stepped
    # over every write of that client since the last compaction into the bottom level.
    monkeypatch.setattr(fsm, "SESSION_WINDOW", 16)
    monkeypatch.setattr(db_state, "RESULT_BLOCK", 64)
    store = KvStore(str(tmp_path / "kv"), statistics=True)
    db = DbState(store)
    for seq in range(1, 3001):
        db.apply(seq, EntryKind.COMMAND, encode_record(Command("put", "k", b"v", client_id="c", seq=seq)))
        if seq % 50 == 0:
            db.end_batch(1, None)
    db.end_batch(1, None)
    stored = store.client_results("c")
    # the window (2985..3000) and the rows of its block below it (2944..2984) only
    assert list(stored) == list(range(2944, 3001))
    skipped = store.ticker("rocksdb.number.iter.skip")
    assert skipped < 100, skipped  # a point deletion per write: ~3000
    db = DbState(store)  # a restart: the window read back is the one kept in memory
    retry = encode_record(Command("put", "k", b"v", client_id="c", seq=2985))
    assert db.apply(3001, EntryKind.COMMAND, retry) == ("ok", None, 2985, None)
    late = encode_record(Command("put", "k", b"v", client_id="c", seq=2984))
    assert db.apply(3002, EntryKind.COMMAND, late) == kv_apply.EXPIRED
    assert list(db.sessions["c"].results) == list(range(2985, 3001))
    store.close()


def test_a_format_2_store_opens_with_its_session_table_and_is_marked_format_3(tmp_path, monkeypatch):
    monkeypatch.setattr(fsm, "SESSION_WINDOW", 4)
    path = str(tmp_path / "kv")
    raw = rocksdict.Rdict(path, kv_options())  # what the previous release wrote: exact windows
    raw[K_FORMAT] = pack(2)
    raw[K_APPLIED] = pack(40)
    prefix = _client_prefix("c1")
    for seq in range(7, 11):
        raw[prefix + _seq_bytes(seq)] = b"\x93\xa2ok\xc0" + pack(seq + 20)  # ["ok", None, rev]
    raw[b"tc1"] = pack(30)
    raw[b"xold"] = pack(12)
    raw[b"vk"] = encode_record_of(KeyRecord(b"val", 3, 3, 1))  # storage/kv_record.py
    raw.close()
    store = KvStore(path)
    try:
        assert read_format(store._db) == KV_FORMAT_VERSION == 3
        assert store.applied_index() == 40 and store.get("k") == b"val"
        db = DbState(store)
        assert set(db.sessions) == {"c1"} and list(db.expired.items()) == [("old", 12)]
        dup = encode_record(Command("put", "k", b"again", client_id="c1", seq=9))
        assert db.apply(41, EntryKind.COMMAND, dup) == ("ok", None, 29, None)  # not applied again
        assert db.apply(42, EntryKind.COMMAND, encode_record(Command("put", "k", b"x", client_id="c1", seq=6))) \
            == kv_apply.EXPIRED
        assert db.apply(43, EntryKind.COMMAND, encode_record(Command("put", "k", b"new", client_id="c1", seq=11))) \
            == ("ok", None, 43, None)
        db.end_batch(2, None)
        assert store.get("k") == b"new"
        assert list(store.client_results("c1")) == [7, 8, 9, 10, 11]  # 7 left the window: its block stays
    finally:
        store.close()
    store = KvStore(path)
    try:
        assert list(DbState(store).sessions) == ["c1"] and read_format(store._db) == 3
    finally:
        store.close()


@pytest.mark.parametrize("batch", [1, 9, 60])
def test_records_and_watch_events_are_the_models_when_a_batch_writes_a_key_several_times(tmp_path, batch):
    # A batch writes each user key once, with its last record (KvBatch.pending), and the plain put
    # reads the old record from the batch before the recent records and the DB: every key's
    # revisions and every event must still be the model's, whether the key was put, deleted or
    # put again earlier in the same batch or in an earlier one.
    cmds = _commands(random.Random(23), 700)
    model = KVState()
    store = KvStore(str(tmp_path / "kv"))
    db = DbState(store)
    index = 0
    for start in range(0, len(cmds), batch):
        for payload in cmds[start:start + batch]:
            index += 1
            assert db.apply(index, EntryKind.COMMAND, payload) == model.apply(index, EntryKind.COMMAND, payload)
        db.end_batch(1, None)
        assert db.take_events() == model.take_events()
    for i in range(31):
        assert store.get_record(f"k{i}") == model.record(f"k{i}")
    store.close()
