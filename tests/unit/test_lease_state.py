"""The replicated lease table (actors/lease_state.py) in both states, and its snapshots."""
from __future__ import annotations

import pytest

from raftkv.actors.db_state import DbState
from raftkv.actors.fsm import KVState
from raftkv.actors import lease_state
from raftkv.storage.kv_store import KvStore
from raftkv.wire.messages import Command, EntryKind, encode_record


def c(op, key="", value=None, cid="", seq=0, lease=0):
    return encode_record(Command(op, key, value, client_id=cid, seq=seq, lease=lease))


@pytest.fixture(params=["memory", "rocksdb"])
def state(request, tmp_path):
    if request.param == "memory":
        yield KVState()
    else:
        store = KvStore(str(tmp_path / "kv"))
        yield DbState(store)
        store.close()


def apply(st, index, payload):
    """(status, value) of the entry's result (its revision and txn parts are actors/kv_apply.py's)."""
    res = st.apply(index, EntryKind.COMMAND, payload)
    st.end_batch(1, None)
    return res[:2]


def get(st, key):
    rep = st.read("get", key)
    return rep.value if rep.status == "ok" else None


def test_grant_attach_revoke_deletes_exactly_the_attached_keys(state):
    assert apply(state, 1, c("lease_grant", lease=10)) == ("ok", b"1")  # the id is the entry's index
    assert apply(state, 2, c("put", "a", b"1", lease=1)) == ("ok", None)
    assert apply(state, 3, c("put", "b", b"2", lease=1)) == ("ok", None)
    assert apply(state, 4, c("put", "c", b"3")) == ("ok", None)
    assert apply(state, 5, c("put", "b", b"4")) == ("ok", None)  # a put without a lease detaches
    assert state.leases.keys_of(1) == ["a"] and dict(state.leases.view) == {1: 10}
    assert apply(state, 6, c("lease_revoke", lease=1)) == ("ok", None)
    assert get(state, "a") is None and get(state, "b") == b"4" and get(state, "c") == b"3"
    assert dict(state.leases.view) == {}
    assert apply(state, 7, c("lease_revoke", lease=1)) == ("not_found", None)


def test_a_write_to_an_unknown_lease_is_refused_and_changes_nothing(state):
    status, why = apply(state, 1, c("put", "a", b"1", lease=42))
    assert status == "invalid" and b"lease 42 not found" in why
    assert get(state, "a") is None
    apply(state, 2, c("lease_grant", lease=5))
    apply(state, 3, c("lease_revoke", lease=2))
    status, _ = apply(state, 4, c("cas", "a", b"1", lease=2))
    assert status == "invalid" and get(state, "a") is None


def test_bounds_on_ttl_leases_and_keys_per_lease(state, monkeypatch):
    monkeypatch.setattr(lease_state, "MAX_LEASES", 2)
    monkeypatch.setattr(lease_state, "MAX_KEYS_PER_LEASE", 2)
    assert apply(state, 1, c("lease_grant", lease=0))[0] == "invalid"
    assert apply(state, 2, c("lease_grant", lease=5))[0] == "ok"
    assert apply(state, 3, c("lease_grant", lease=5))[0] == "ok"
    status, why = apply(state, 4, c("lease_grant", lease=5))
    assert status == "invalid" and b"too many leases" in why
    apply(state, 5, c("put", "a", b"1", lease=2))
    apply(state, 6, c("put", "b", b"1", lease=2))
    assert apply(state, 7, c("put", "a", b"2", lease=2)) == ("ok", None)  # rewriting an attached key is fine
    status, why = apply(state, 8, c("put", "c", b"1", lease=2))
    assert status == "invalid" and b"has 2 keys" in why and get(state, "c") is None


def test_a_retried_grant_returns_the_same_id(state):
    assert apply(state, 1, c("lease_grant", cid="x", seq=1, lease=5)) == ("ok", b"1")
    assert apply(state, 2, c("lease_grant", cid="x", seq=1, lease=5)) == ("ok", b"1")
    assert dict(state.leases.view) == {1: 5}


def test_the_memory_state_snapshot_carries_the_table():
    st = KVState()
    apply(st, 1, c("lease_grant", lease=7))
    apply(st, 2, c("put", "k", b"v", lease=1))
    back = KVState.restore(list(st.frozen().chunks()))
    assert dict(back.leases.view) == {1: 7} and back.leases.keys_of(1) == ["k"]
    apply(back, 3, c("lease_revoke", lease=1))
    assert back.data == {}


def test_the_rocksdb_table_survives_a_reopen_and_is_invisible_to_list(tmp_path):
    store = KvStore(str(tmp_path / "kv"))
    st = DbState(store)
    apply(st, 1, c("lease_grant", lease=7))
    apply(st, 2, c("put", "k1", b"v", lease=1))
    apply(st, 3, c("put", "k2", b"v", lease=1))
    apply(st, 4, c("lease_grant", lease=9))
    apply(st, 5, c("put", "k2", b"w", lease=4))  # moves k2 to lease 4
    store.close()
    store = KvStore(str(tmp_path / "kv"))
    st = DbState(store)
    assert dict(st.leases.view) == {1: 7, 4: 9}
    assert st.leases.keys_of(1) == ["k1"] and st.leases.keys_of(4) == ["k2"]
    assert [k for k, _ in st.read("list", "").items] == ["k1", "k2"]
    apply(st, 6, c("lease_revoke", lease=4))
    store.close()
    store = KvStore(str(tmp_path / "kv"))
    st = DbState(store)
    assert dict(st.leases.view) == {1: 7} and get(st, "k2") is None and get(st, "k1") == b"v"
    store.close()


def test_an_ended_lease_deletes_its_keys_in_one_revision_that_watchers_see(state):
    apply(state, 1, c("lease_grant", lease=10))
    apply(state, 2, c("put", "b", b"2", lease=1))
    apply(state, 3, c("put", "a", b"1", lease=1))
    state.take_events()
    apply(state, 9, c("lease_revoke", lease=1))  # the leader's expiry: one entry
    ev = state.take_events()
    assert [(e.revision, e.type.value, e.key, e.prev_value) for e in ev] == [
        (9, "delete", "a", b"1"), (9, "delete", "b", b"2")]


def test_a_transaction_that_puts_or_deletes_a_leased_key_detaches_it(state):
    from raftkv.records import Txn, TxnOp

    apply(state, 1, c("lease_grant", lease=10))
    apply(state, 2, c("put", "a", b"1", lease=1))
    apply(state, 3, c("put", "b", b"1", lease=1))
    txn = Txn([], [TxnOp("put", "a", b"2"), TxnOp("delete", "b")], [])
    assert state.apply(4, EntryKind.COMMAND, encode_record(Command("txn", "", txn=txn)))[0] == "ok"
    state.end_batch(1, None)
    assert state.leases.keys_of(1) == []
    apply(state, 5, c("lease_revoke", lease=1))
    assert get(state, "a") == b"2"  # no longer the lease's: it stays


def test_a_session_put_without_a_lease_detaches_and_is_remembered(state):
    # A client's plain put (the FSM's most common entry, which DbState applies by a shorter
    # path): it still detaches a leased key, records its watch event and revision, and a retry
    # of the same (client, seq) gets the first result without applying again.
    assert apply(state, 1, c("lease_grant", lease=10)) == ("ok", b"1")
    assert apply(state, 2, c("put", "a", b"1", cid="w", seq=1, lease=1)) == ("ok", None)
    state.take_events()
    full = state.apply(3, EntryKind.COMMAND, c("put", "a", b"2", cid="w", seq=2))
    state.end_batch(1, None)
    assert full[:3] == ("ok", None, 3) and state.leases.keys_of(1) == []
    ev = state.take_events()
    assert [(e.revision, e.key, e.value, e.prev_value, e.create_revision, e.version) for e in ev] == [
        (3, "a", b"2", b"1", 2, 2)]
    assert apply(state, 4, c("put", "b", b"3", cid="w", seq=3)) == ("ok", None)
    assert state.apply(5, EntryKind.COMMAND, c("put", "b", b"9", cid="w", seq=3))[:3] == ("ok", None, 4)
    state.end_batch(1, None)
    assert get(state, "b") == b"3" and get(state, "a") == b"2" and state.take_events()[-1].revision == 4
    assert apply(state, 6, c("lease_revoke", lease=1)) == ("ok", None)
    assert get(state, "a") == b"2"  # detached at 3: the revoke leaves it
