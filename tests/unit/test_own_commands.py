"""The leader applies the Commands it proposed itself only where that equals decoding the entry
(actors/own_commands.py): what it admits round-trips through the real codec, field for field
with the same types, and an entry that is not the very payload the leader encoded is decoded."""
from __future__ import annotations

import random

from raftkv.actors import fsm
from raftkv.actors.fsm import KVState
from raftkv.actors.messages import Apply
from raftkv.actors.own_commands import own_command, round_trips
from raftkv.records import INDEX_LIMIT, MAX_ID_BYTES, MAX_KEY_BYTES, Op, Txn, TxnOp
from raftkv.wire.messages import Command, Entry, EntryKind, decode_record, encode_record

FIELDS = ("op", "key", "value", "expected", "expect_absent", "client_id", "seq", "lease", "txn")


def _exact_round_trip(cmd: Command) -> bool:
    try:
        back = decode_record(encode_record(cmd), Command)
    except Exception:
        return False
    return back == cmd and all(type(getattr(back, f)) is type(getattr(cmd, f)) for f in FIELDS) and \
        fsm.committed_command(1, EntryKind.COMMAND, encode_record(cmd)) == cmd


def test_every_admitted_command_decodes_back_to_itself_with_the_same_types():
    rng = random.Random(15)
    ops = ["put", "delete", "cas", "txn", "lease_grant", Op.PUT, "PUT", "x" * 70]
    keys = ["k", "", "é" * 20_000, "€" * (MAX_KEY_BYTES // 3), "€" * (MAX_KEY_BYTES // 3 + 1), "a" * MAX_KEY_BYTES,
            "a" * (MAX_KEY_BYTES + 1), b"k"]
    values = [None, b"", b"v" * 100, bytearray(b"v"), memoryview(b"v"), "v"]
    cids = ["", "http-1", "ü" * (MAX_ID_BYTES // 2), "ü" * (MAX_ID_BYTES // 2 + 1), None]
    ints = [0, 1, INDEX_LIMIT - 1, INDEX_LIMIT, -1, True, 2.0]
    txns = [None, Txn([], [TxnOp("put", "k", b"v")], [])]
    seen_admitted = 0
    choices = (ops, keys, values, [None, b"e", bytearray(b"e")], [False, True, 0], cids, ints, ints, txns)
    for _ in range(10_000):
        cmd = Command(*(rng.choice(c) for c in choices))
        if round_trips(cmd):
            seen_admitted += 1
            assert _exact_round_trip(cmd), cmd
    assert seen_admitted > 20  # the ordinary shapes are admitted, so the shortcut is used


def test_the_leaders_usual_writes_are_admitted():
    for c in (Command("put", "k0001", b"v" * 100, None, False, "http-abc", 7),
              Command("delete", "k", None, None, False, "http-abc", 8),
              Command("cas", "k", b"new", b"old", False, "c", 9, lease=5),
              Command("cas", "k", b"new", None, True, "", 0)):
        assert round_trips(c) and _exact_round_trip(c)
    assert not round_trips(Command(Op.PUT, "k", b"v"))  # an enum member decodes as a plain str
    assert not round_trips(Command("put", "k", bytearray(b"v")))  # a bytearray decodes as bytes


def _applied(entries: list, waiters: dict) -> tuple:
    replies: list = []
    actor = fsm.Fsm(replies.extend, lambda v: None, lambda m: None, snapshot_threshold=1_000)
    actor.on_receive(Apply(entries, waiters))
    return actor.state, [(route, rep.status, rep.revision) for route, rep in replies]


def test_the_fsm_applies_the_leaders_command_only_for_the_payload_it_encoded():
    mine = Command("put", "k", b"leader's", None, False, "c", 1)
    payload = encode_record(mine)
    # The entry at index 1 holds exactly the leader's payload: the same result as decoding it.
    st, replies = _applied([(1, Entry(1, EntryKind.COMMAND, payload))], {1: (1, "r", mine, payload)})
    ref = KVState()
    ref.apply(1, EntryKind.COMMAND, payload)
    assert st.data == ref.data == {"k": b"leader's"} and replies == [("r", "ok", 1)]
    # The entry was replaced (another leader's log): equal-looking or not, other bytes are decoded.
    # A stale object that disagrees with the bytes shows which one was applied.
    other = encode_record(Command("put", "k", b"new leader's", None, False, "c", 1))
    st, replies = _applied([(1, Entry(2, EntryKind.COMMAND, other))], {1: (1, "r", mine, payload)})
    assert st.data == {"k": b"new leader's"} and replies == [("r", "timeout", 0)]
    copy = bytes(bytearray(payload))
    assert copy == payload and copy is not payload
    assert own_command((1, "r", mine, payload), copy) is None
    assert own_command((1, "r"), payload) is None and own_command(None, payload) is None
