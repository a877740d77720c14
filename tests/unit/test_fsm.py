"""The key-value state machine: commands, exactly-once sessions and their expiry by log position."""
from __future__ import annotations

from dataclasses import FrozenInstanceError

import pytest

from raftkv.actors import fsm
from raftkv.actors.fsm import KVState
from raftkv.actors.messages import Apply, Restore
from raftkv.wire.messages import Command, Entry, EntryKind, encode_record


def cmd(op, key, value=None, cid="c", seq=1, **kw):
    return encode_record(Command(op, key, value, client_id=cid, seq=seq, **kw))


def test_put_delete_cas():
    s = KVState()
    assert s.apply(1, EntryKind.COMMAND, cmd("put", "a", b"1", seq=1))[:2] == ("ok", None)
    assert s.apply(2, EntryKind.COMMAND, cmd("cas", "a", b"2", seq=2, expected=b"9"))[:2] == ("cas_failed", b"1")
    assert s.apply(3, EntryKind.COMMAND, cmd("cas", "a", b"2", seq=3, expected=b"1"))[:2] == ("ok", None)
    assert s.apply(4, EntryKind.COMMAND, cmd("cas", "b", b"x", seq=4, expect_absent=True))[:2] == ("ok", None)
    assert s.apply(5, EntryKind.COMMAND, cmd("delete", "a", seq=5))[:2] == ("ok", None)
    assert s.data == {"b": b"x"}
    assert s.apply(6, EntryKind.NOOP, b"") is None and s.applied == 6


def test_a_duplicate_returns_the_stored_result_and_applies_nothing():
    s = KVState()
    s.apply(1, EntryKind.COMMAND, cmd("put", "n", b"0", seq=1))
    assert s.apply(2, EntryKind.COMMAND, cmd("cas", "n", b"1", seq=2, expected=b"0"))[:2] == ("ok", None)
    s.apply(3, EntryKind.COMMAND, cmd("put", "n", b"5", cid="other", seq=1))
    # the retry of seq 2 arrives after someone else changed n: still "ok", and n stays 5
    assert s.apply(4, EntryKind.COMMAND, cmd("cas", "n", b"1", seq=2, expected=b"0"))[:2] == ("ok", None)
    assert s.data["n"] == b"5"


def test_several_requests_in_flight_are_each_deduplicated():
    s = KVState()
    for seq in (1, 2, 3):
        s.apply(seq, EntryKind.COMMAND, cmd("put", f"k{seq}", b"v", seq=seq))
    s.data.clear()
    for i, seq in enumerate((3, 1, 2), start=4):  # retries of all three, in another order
        assert s.apply(i, EntryKind.COMMAND, cmd("put", f"k{seq}", b"v", seq=seq))[:2] == ("ok", None)
    assert s.data == {}


def test_sessions_expire_by_log_position_and_their_requests_are_rejected(monkeypatch):
    monkeypatch.setattr(fsm, "SESSION_TTL", 100)
    monkeypatch.setattr(fsm, "SWEEP_EVERY", 10)
    s = KVState()
    s.apply(1, EntryKind.COMMAND, cmd("put", "a", b"1", cid="idle", seq=1))
    for i in range(2, 300):
        s.apply(i, EntryKind.COMMAND, cmd("put", "busy", b"x", cid="busy", seq=i))
    assert "idle" not in s.sessions and "busy" in s.sessions
    assert s.apply(300, EntryKind.COMMAND, cmd("put", "a", b"2", cid="idle", seq=2))[:2] == ("expired", None)
    assert s.data["a"] == b"1"  # not applied
    # a new session of a new client is fine
    assert s.apply(301, EntryKind.COMMAND, cmd("put", "a", b"3", cid="fresh", seq=1))[:2] == ("ok", None)


def test_a_request_older_than_its_window_is_rejected(monkeypatch):
    monkeypatch.setattr(fsm, "SESSION_WINDOW", 4)
    s = KVState()
    for seq in range(1, 10):
        s.apply(seq, EntryKind.COMMAND, cmd("put", "k", str(seq).encode(), seq=seq))
    assert s.apply(10, EntryKind.COMMAND, cmd("put", "k", b"old", seq=2))[:2] == ("expired", None)
    assert s.data["k"] == b"9"


def test_snapshot_round_trip_keeps_data_sessions_and_expiry():
    s = KVState()
    for i in range(1, 10_001):
        s.apply(i, EntryKind.COMMAND, cmd("put", f"k{i}", bytes([i % 256]) * 10, cid=f"c{i % 7}", seq=i))
    s.expired["gone"] = 5
    copy = s.frozen()
    s.apply(10_001, EntryKind.COMMAND, cmd("put", "late", b"x", seq=10_001))  # after the copy: not in it
    r = KVState.restore(list(copy.chunks(per_chunk=1000)))
    assert r.applied == 10_000 and r.data == copy.data and "late" not in r.data
    assert set(r.sessions) == set(copy.sessions) and r.expired == {"gone": 5}
    # a duplicate of a request applied before the snapshot is still recognised after restore
    assert r.apply(10_001, EntryKind.COMMAND, cmd("put", "k9996", b"changed", cid="c0", seq=9996))[:2] == ("ok", None)
    assert r.data["k9996"] == bytes([9996 % 256]) * 10


def test_the_fsm_publishes_each_applied_index_with_the_state_that_holds_it():
    # Readers in other threads use only what the FSM publishes: one immutable record pairing the
    # applied index with a state holding it, also across a restore that replaces the state.
    views: list = []
    replies: list = []
    actor = fsm.Fsm(replies.extend, views.append, lambda m: None, snapshot_threshold=1_000)
    entries = [(i, Entry(1, EntryKind.COMMAND, cmd("put", f"k{i}", b"v", seq=i))) for i in (1, 2, 3)]
    actor.on_receive(Apply(entries, {3: (1, "route3")}))
    assert [(v.index, type(v)) for v in views] == [(3, fsm.AppliedView)]
    assert views[-1].state.read("get", "k3").value == b"v"
    assert [(route, rep.status) for route, rep in replies] == [("route3", "ok")]
    with pytest.raises(FrozenInstanceError):
        views[-1].index = 4  # nobody but the FSM says what is applied
    snap = KVState()
    for i in range(1, 11):
        snap.apply(i, EntryKind.COMMAND, cmd("put", "other", str(i).encode(), seq=i))
    actor.on_receive(Restore(list(snap.chunks()), 10, 2, []))
    assert views[-1].index == 10 and views[-1].state is actor.state and views[-1].state.read("get", "other").value == b"10"


def test_the_view_is_published_before_the_writers_are_answered():
    # The door swaps its token table when the view is published (actors/node.py _on_applied): a
    # client answered "revoked" before that could still pass the door with the revoked token.
    order: list = []
    actor = fsm.Fsm(lambda rs: order.append(("reply", [r for _, r in rs])),
                    lambda v: order.append(("view", v.index)), lambda m: None, snapshot_threshold=1_000)
    actor.on_receive(Apply([(1, Entry(1, EntryKind.COMMAND, cmd("put", "k", b"v")))], {1: (1, "route1")}))
    assert [what for what, _ in order] == ["view", "reply"] and order[0][1] == 1
