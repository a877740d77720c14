"""The pure parts of wire/recipes.py: argument checks and the reading of a lock's queue."""
from __future__ import annotations

import pytest

from raftkv.records import Compare, TxnOpResult
from raftkv.txn import TxnResult
from raftkv.wire.errors import InvalidRequest
from raftkv.wire.recipes import Election, Lock, _Contender, queue


class FakeKV:
    """list + txn over a dict key -> (create_revision, value); counts the txns."""

    def __init__(self, keys: dict) -> None:
        self.keys = keys
        self.txns: list = []

    def list(self, prefix):
        return sorted((k, v) for k, (_, v) in self.keys.items() if k.startswith(prefix))

    def txn(self, compare=(), success=(), failure=()):
        self.txns.append(list(success))
        out = [TxnOpResult("get", o.key, True, self.keys[o.key][1], self.keys[o.key][0], self.keys[o.key][0], 1)
               if o.key in self.keys else TxnOpResult("get", o.key) for o in success]
        return TxnResult(True, out, 1000 - len(self.txns))


def test_the_queue_is_in_create_revision_order_not_key_order_and_read_in_bounded_txns():
    keys = {f"l/{i}": (500 - i, b"v%d" % i) for i in range(250)}
    keys["other/1"] = (1, b"")
    keys["l/x/1"] = keys["l/notes"] = (2, b"")  # a nested lock's key, a stray key: not contenders
    kv = FakeKV(keys)
    contenders, rev = queue(kv, "l/")
    assert [c[1] for c in contenders[:3]] == ["l/249", "l/248", "l/247"]
    assert len(contenders) == 250 and [c[0] for c in contenders] == sorted(c[0] for c in contenders)
    assert [len(s) for s in kv.txns] == [100, 100, 50]
    assert rev == 997  # the oldest read: a watch from rev + 1 misses no delete


def test_a_key_gone_between_the_list_and_the_read_is_not_a_contender():
    kv = FakeKV({"l/1": (5, b"")})
    kv.list = lambda prefix: [("l/1", b""), ("l/2", b"")]  # type: ignore[method-assign]
    assert [c[1] for c in queue(kv, "l/")[0]] == ["l/1"]


@pytest.mark.parametrize("name", ["", "jobs/", 3, None])
def test_a_bad_name_is_refused_before_anything_is_sent(name):
    kv = FakeKV({})
    with pytest.raises(InvalidRequest):
        Lock(kv, name)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest):
        Election(kv, name)  # type: ignore[arg-type]
    assert kv.txns == []


@pytest.mark.parametrize("ttl", [0, -1, 1.5, "10"])
def test_a_bad_ttl_is_refused(ttl):
    with pytest.raises(InvalidRequest):
        Lock(FakeKV({}), "jobs", ttl=ttl)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest):
        Election(FakeKV({}), "jobs", ttl=ttl)  # type: ignore[arg-type]


def test_is_owner_compares_the_keys_create_revision_with_the_token():
    c = _Contender(FakeKV({}), "jobs", 10)
    with pytest.raises(InvalidRequest):
        c.is_owner()  # not in the queue: no token to compare
    c.key, c.fencing_token = "jobs/7", 42
    assert c.is_owner() == Compare("create", "=", "jobs/7", None, 42)
    with pytest.raises(InvalidRequest):
        Election(FakeKV({}), "jobs").proclaim(b"x")  # not leading
