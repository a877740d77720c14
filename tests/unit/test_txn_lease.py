"""A transaction's puts attach their keys to a lease (TxnOp.lease), in both states alike."""
from __future__ import annotations

import msgpack
import pytest

from raftkv import txn as t
from raftkv.actors.db_state import DbState
from raftkv.actors.fsm import KVState
from raftkv.records import Compare, DecodeError, Txn, TxnOp, _txn_op
from raftkv.storage.kv_store import KvStore
from raftkv.wire.messages import Command, EntryKind, encode_record


@pytest.fixture(params=["memory", "rocksdb"])
def state(request, tmp_path):
    if request.param == "memory":
        yield KVState()
    else:
        store = KvStore(str(tmp_path / "kv"))
        yield DbState(store)
        store.close()


def apply(st, index, cmd):
    res = st.apply(index, EntryKind.COMMAND, encode_record(cmd))
    st.end_batch(1, None)
    return res


def get(st, key):
    rep = st.read("get", key)
    return rep.value if rep.status == "ok" else None


def txn(success, failure=(), compare=()):
    return Command("txn", "", txn=Txn(list(compare), list(success), list(failure)))


def test_a_txn_put_with_a_lease_attaches_its_key_and_the_revoke_deletes_it(state):
    apply(state, 1, Command("lease_grant", "", lease=10))
    create_if_absent = [Compare("create", "=", "lock/1", None, 0)]
    res = apply(state, 2, txn([t.put("lock/1", b"", lease=1)], [t.get("lock/1")], create_if_absent))
    assert res[0] == "ok" and res[3][0] is True
    assert state.leases.keys_of(1) == ["lock/1"]
    # the same txn again takes the failure branch: nothing attached twice, nothing detached
    res = apply(state, 3, txn([t.put("lock/1", b"", lease=1)], [t.get("lock/1")], create_if_absent))
    assert res[0] == "ok" and res[3][0] is False and state.leases.keys_of(1) == ["lock/1"]
    apply(state, 4, Command("lease_revoke", "", lease=1))
    assert get(state, "lock/1") is None


def test_only_the_branch_that_ran_attaches_and_in_its_order(state):
    apply(state, 1, Command("lease_grant", "", lease=10))
    apply(state, 2, Command("lease_grant", "", lease=10))
    res = apply(state, 3, txn([t.put("a", b"1", lease=1)], [t.put("b", b"1", lease=2), t.put("b", b"2", lease=1),
                                                              t.put("c", b"1", lease=2), t.delete("c")],
                              [Compare("version", "=", "zzz", None, 5)]))
    assert res[0] == "ok" and res[3][0] is False
    assert state.leases.keys_of(1) == ["b"] and state.leases.keys_of(2) == []
    apply(state, 4, txn([t.put("b", b"3")]))  # a put without a lease detaches (etcd's rule)
    assert state.leases.keys_of(1) == []


def test_a_txn_naming_a_dead_lease_in_either_branch_is_refused_and_changes_nothing(state):
    apply(state, 1, Command("lease_grant", "", lease=10))
    apply(state, 2, Command("put", "k", b"old"))
    status, why, *_ = apply(state, 3, txn([t.put("k", b"new")], [t.put("x", b"1", lease=99)]))
    assert status == "invalid" and b"lease 99 not found" in why
    assert get(state, "k") == b"old" and get(state, "x") is None


def test_the_lease_field_is_bounded_and_only_for_puts():
    assert _txn_op(["put", "k", b"v", 7]) == TxnOp("put", "k", b"v", 7)
    assert _txn_op(["put", "k", b"v"]).lease == 0  # an older writer's op
    for bad in (["put", "k", b"v", -1], ["put", "k", b"v", 2 ** 63], ["put", "k", b"v", "1"],
                ["delete", "k", None, 3]):
        with pytest.raises(DecodeError):
            _txn_op(msgpack.unpackb(msgpack.packb(bad), raw=False))
    with pytest.raises(TypeError):
        t.put("k", b"v", lease=-1)
