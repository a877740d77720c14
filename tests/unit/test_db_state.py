"""The FSM's RocksDB state applies exactly as the in-memory model does, and a reopened store
(a restart) continues with the same state and session table."""
from __future__ import annotations

import random

from raftkv.actors import fsm
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
