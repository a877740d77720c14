"""The FSM's RocksDB state applies exactly as the in-memory model does, and a reopened store
(a restart) continues with the same state and session table."""
from __future__ import annotations

import random

from raftkv.actors import fsm, kv_apply
from raftkv.actors.db_state import DbState
from raftkv.actors.fsm import KVState
from raftkv.records import Compare, Member, Txn, TxnOp
from raftkv.storage.kv_store import KvStore
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


def test_same_results_and_state_as_the_model_across_a_reopen(tmp_path, monkeypatch):
    monkeypatch.setattr(fsm, "SESSION_WINDOW", 4)  # exercise eviction
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
    assert list(store.client_results("back")) == [8, 9, 10, 11]
    assert list(store.client_results("gone")) == [7, 8, 9, 10]
    store.close()
