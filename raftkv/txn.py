"""Revisions and transactions in the client library (issue 14): the builder and result types.

A transaction is a list of compares and two lists of operations; the node applies it as one
log entry, atomically: if every compare holds the ``success`` ops run, else the ``failure``
ops, in order. Build the pieces with the helpers here::

    from raftkv import txn as t
    res = kv.txn(compare=[t.value("k") == b"v", t.mod("k") < 100],
                 success=[t.put("k", b"new"), t.get("other")],
                 failure=[t.get("k")])
    if res.succeeded: ...
    res.responses   # one TxnOpResult per op of the branch that ran
    res.revision    # the log index of the transaction's entry

An absent key has version, create revision and mod revision 0 (so ``t.version(k) == 0`` says
"absent", ``t.create(k) > 0`` "present") and no value: a value compare on it is false.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Union

from raftkv.records import (Compare, CompareResult, CompareTarget, Txn, TxnOp, TxnOpResult,
                            TxnOpType)

__all__ = ["Compare", "CompareResult", "CompareTarget", "KeyMeta", "Txn", "TxnOp", "TxnOpResult", "TxnOpType",
           "TxnResult", "build", "create", "delete", "get", "mod", "put", "value", "version"]

Value = Union[bytes, bytearray, memoryview, str]


def _b(v: Value, what: str) -> bytes:
    if isinstance(v, str):
        return v.encode()
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v)
    raise TypeError(f"{what} must be bytes or str, not {type(v).__name__}")


def _key(key: Any) -> str:
    if not isinstance(key, str) or not key:
        raise TypeError("a key must be a non-empty string")
    return key


class _Target:
    """``target(key)``, waiting for a comparison operator to become a :class:`Compare`."""

    __slots__ = ("target", "key")

    def __init__(self, target: CompareTarget, key: str) -> None:
        self.target = target
        self.key = _key(key)

    def _cmp(self, result: CompareResult, other: Any) -> Compare:
        if self.target == CompareTarget.VALUE:
            return Compare(self.target.value, result.value, self.key, _b(other, "a compared value"))
        if type(other) is not int or other < 0:
            raise TypeError(f"{self.target.value}({self.key!r}) compares with a non-negative int")
        return Compare(self.target.value, result.value, self.key, None, other)

    def __eq__(self, other: Any) -> Compare:  # type: ignore[override]
        return self._cmp(CompareResult.EQUAL, other)

    def __ne__(self, other: Any) -> Compare:  # type: ignore[override]
        return self._cmp(CompareResult.NOT_EQUAL, other)

    def __lt__(self, other: Any) -> Compare:
        return self._cmp(CompareResult.LESS, other)

    def __gt__(self, other: Any) -> Compare:
        return self._cmp(CompareResult.GREATER, other)

    __hash__ = None


def value(key: str) -> _Target:
    """The key's value (compared bytewise): ``value("k") == b"v"``."""
    return _Target(CompareTarget.VALUE, key)


def version(key: str) -> _Target:
    """The key's version (writes since creation; 0 = absent): ``version("k") == 0``."""
    return _Target(CompareTarget.VERSION, key)


def create(key: str) -> _Target:
    """The key's create revision (0 = absent)."""
    return _Target(CompareTarget.CREATE, key)


def mod(key: str) -> _Target:
    """The key's mod revision (the log index of its last write; 0 = absent)."""
    return _Target(CompareTarget.MOD, key)


def put(key: str, val: Value, *, lease: int = 0) -> TxnOp:
    """Set ``key`` to ``val`` (bytes, or str encoded as UTF-8); ``lease`` (a lease id, 0: none)
    attaches the key to that lease, as ``Client.put(lease=)`` does (the txn is refused, nothing
    changed, if the lease is gone)."""
    if type(lease) is not int or not 0 <= lease < 2 ** 63:
        raise TypeError("a put's lease is a lease id (a non-negative int; 0: none)")
    return TxnOp(TxnOpType.PUT.value, _key(key), _b(val, "a value"), lease)


def get(key: str) -> TxnOp:
    """Read ``key`` (its result says whether it was found, its value and revisions)."""
    return TxnOp(TxnOpType.GET.value, _key(key))


def delete(key: str) -> TxnOp:
    """Delete ``key`` (its result says whether it existed)."""
    return TxnOp(TxnOpType.DELETE.value, _key(key))


def build(compare: Any = (), success: Any = (), failure: Any = ()) -> Txn:
    """A :class:`Txn` from the three lists, checking that each item is of the right kind."""
    cs, ss, fs = list(compare), list(success), list(failure)
    for c in cs:
        if not isinstance(c, Compare):
            raise TypeError(f"compare: expected a Compare (e.g. txn.value('k') == b'v'), got {type(c).__name__}")
    for o in ss + fs:
        if not isinstance(o, TxnOp):
            raise TypeError(f"expected a TxnOp (txn.put/get/delete), got {type(o).__name__}")
    return Txn(cs, ss, fs)


@dataclass(frozen=True)
class KeyMeta:
    """A key's value with its revisions, and the revision (applied index) the read reflects."""

    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    revision: int

    def as_json(self) -> dict:
        """A JSON-ready dict: json_item's key and value (base64 with ``value_b64`` if not UTF-8) and the revisions."""
        from raftkv.wire.client import json_item  # one rule for bytes in JSON

        d = json_item(self.key, self.value)
        d.update(create_revision=self.create_revision, mod_revision=self.mod_revision, version=self.version,
                 revision=self.revision)
        return d


@dataclass(frozen=True)
class TxnResult:
    """Which branch ran, what each of its ops did (one :class:`TxnOpResult` each, in order:
    a get's ``found``/``value``/revisions, a put's new revisions, a delete's ``found``), and
    the revision of the transaction's entry."""

    succeeded: bool
    responses: list = field(default_factory=list)
    revision: int = 0

    def value_of(self, key: str) -> Optional[bytes]:
        """The value the branch's first get of ``key`` found (None: absent or not read)."""
        for r in self.responses:
            if r.type == TxnOpType.GET.value and r.key == key:
                return r.value if r.found else None
        return None
