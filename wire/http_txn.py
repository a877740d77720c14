"""The gateway's transaction route, ``POST /txn`` (issue 14), and revision headers.

Request body (JSON; every list optional, at most the node's limits)::

    {"compare": [{"target": "value", "key": "k", "result": "=", "value": "v"},
                 {"target": "mod", "key": "k", "result": "<", "number": 42}],
     "success": [{"op": "put", "key": "k", "value": "new"}, {"op": "get", "key": "k"}],
     "failure": [{"op": "delete", "key": "k"}]}

``target`` is value, version, create or mod; ``result`` is =, !=, < or >; a value compare takes
``value`` (a string, UTF-8) or ``value_b64`` (base64 bytes); the others take ``number`` (an
integer >= 0). ``op`` is get, put (with ``value`` or ``value_b64``) or delete. Unknown fields
are a 400 naming them. Answer (200)::

    {"succeeded": true, "revision": 17,
     "responses": [{"op": "put", "key": "k", "found": true, "create_revision": 3, "mod_revision": 17,
                    "version": 4},
                   {"op": "get", "key": "k", "found": true, "value": "new", "create_revision": 3, ...}]}

A get's value is base64 with ``"value_b64": true`` when it is not UTF-8 (as GET /kv/?prefix).
"""
from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from raftkv.records import Compare, Txn, TxnOp
from raftkv.txn import KeyMeta, TxnResult

from .client import json_item
from .http_server import JSON, OCTETS, Answer, HttpError, json_body

__all__ = ["parse_txn_body", "txn_answer", "meta_headers", "meta_answer"]

_TARGETS = frozenset({"value", "version", "create", "mod"})
_RESULTS = frozenset({"=", "!=", "<", ">"})
_OPS = frozenset({"get", "put", "delete"})
_COMPARE_FIELDS = frozenset({"target", "key", "result", "value", "value_b64", "number"})
_OP_FIELDS = frozenset({"op", "key", "value", "value_b64"})
_MAX_ITEMS = 1024  # the node refuses more than its own limit (actors/txn_check.py) anyway


def _fields(obj: Any, allowed: frozenset, where: str) -> dict:
    if not isinstance(obj, dict):
        raise HttpError(400, f"{where}: expected a JSON object")
    for name in obj:
        if name not in allowed:
            raise HttpError(400, f"{where}: unknown field {str(name)[:64]!r} (it takes {', '.join(sorted(allowed))})")
    return obj


def _key(obj: dict, where: str) -> str:
    key = obj.get("key")
    if not isinstance(key, str) or not key:
        raise HttpError(400, f"{where}: key must be a non-empty string")
    return key


def _value(obj: dict, where: str, required: bool) -> Any:
    v, b64 = obj.get("value"), obj.get("value_b64")
    if v is not None and b64 is not None:
        raise HttpError(400, f"{where}: give value or value_b64, not both")
    if b64 is not None:
        if not isinstance(b64, str):
            raise HttpError(400, f"{where}: value_b64 must be a base64 string")
        try:
            return base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise HttpError(400, f"{where}: value_b64 is not valid base64") from None
    if v is not None:
        if not isinstance(v, str):
            raise HttpError(400, f"{where}: value must be a string (or use value_b64)")
        return v.encode("utf-8", "surrogatepass")
    if required:
        raise HttpError(400, f"{where}: needs value (or value_b64)")
    return None


def _list(body: dict, name: str) -> list:
    v = body.get(name, [])
    if not isinstance(v, list):
        raise HttpError(400, f"{name}: expected a JSON array")
    if len(v) > _MAX_ITEMS:
        raise HttpError(400, f"{name}: more than {_MAX_ITEMS} items")
    return v


def parse_txn_body(body: bytes) -> Txn:
    """The transaction of a ``POST /txn`` body; HttpError 400 naming what is wrong."""
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise HttpError(400, "body is not JSON (see README: POST /txn)") from None
    obj = _fields(obj, frozenset({"compare", "success", "failure"}), "body")
    compares = []
    for i, c in enumerate(_list(obj, "compare")):
        where = f"compare[{i}]"
        c = _fields(c, _COMPARE_FIELDS, where)
        target, result = c.get("target"), c.get("result")
        if target not in _TARGETS:
            raise HttpError(400, f"{where}: target must be one of value, version, create, mod")
        if result not in _RESULTS:
            raise HttpError(400, f"{where}: result must be one of =, !=, <, >")
        key = _key(c, where)
        if target == "value":
            if "number" in c:
                raise HttpError(400, f"{where}: a value compare takes value, not number")
            compares.append(Compare(target, result, key, _value(c, where, True)))
        else:
            n = c.get("number")
            if type(n) is not int or not 0 <= n < 2 ** 63:
                raise HttpError(400, f"{where}: a {target} compare needs number, an integer >= 0")
            if "value" in c or "value_b64" in c:
                raise HttpError(400, f"{where}: a {target} compare takes number, not value")
            compares.append(Compare(target, result, key, None, n))
    branches = []
    for name in ("success", "failure"):
        ops = []
        for i, o in enumerate(_list(obj, name)):
            where = f"{name}[{i}]"
            o = _fields(o, _OP_FIELDS, where)
            op = o.get("op")
            if op not in _OPS:
                raise HttpError(400, f"{where}: op must be one of get, put, delete")
            val = _value(o, where, op == "put")
            if op != "put" and val is not None:
                raise HttpError(400, f"{where}: {op} takes no value")
            ops.append(TxnOp(op, _key(o, where), val))
        branches.append(ops)
    return Txn(compares, branches[0], branches[1])


def txn_answer(res: TxnResult) -> Answer:
    """The 200 answer to a transaction that ran (either branch)."""
    out = []
    for r in res.responses:
        d: dict = {"op": r.type, "key": r.key, "found": r.found}
        if r.type == "get" and r.found:
            d.update(json_item(r.key, r.value or b""))
        if r.found and r.type != "delete":
            d.update(create_revision=r.create_revision, mod_revision=r.mod_revision, version=r.version)
        out.append(d)
    body = {"succeeded": res.succeeded, "revision": res.revision, "responses": out}
    return 200, json_body(body), JSON, [("X-Raft-Revision", str(res.revision))], False


def meta_headers(revision: int, create_revision: int, mod_revision: int, version: int) -> list:
    """The revision headers of a GET answer."""
    return [("X-Raft-Revision", str(revision)), ("X-Create-Revision", str(create_revision)),
            ("X-Mod-Revision", str(mod_revision)), ("X-Version", str(version))]


def meta_answer(m: KeyMeta, as_json: bool) -> Answer:
    """A GET's answer from a KeyMeta: the value (or, ``?meta=1``, a JSON body) with the headers."""
    headers = meta_headers(m.revision, m.create_revision, m.mod_revision, m.version)
    if as_json:
        return 200, json_body(m.as_json()), JSON, headers, False
    return 200, m.value, OCTETS, headers, False
