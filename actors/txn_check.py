"""The node's own bounds on a transaction, checked by the leader before it proposes one (the
record schema's caps in raftkv/records.py are far looser: they only bound what a frame holds).

A transaction is one log entry applied by every replica in one go, so it is bounded like one
write: at most :data:`MAX_COMPARES` compares and :data:`MAX_OPS` ops per branch, every key a
valid key, and the bytes of all its keys and values together at most ``max_value_bytes``.
"""
from __future__ import annotations

from typing import Callable, Optional

from raftkv.records import CompareTarget, Txn, TxnOpType

MAX_COMPARES = 128
MAX_OPS = 128


def validate_txn(txn: Optional[Txn], validate_key: Callable[[str], Optional[str]],
                 max_value_bytes: int) -> Optional[str]:
    """The problem with ``txn`` (a clear sentence), or None if the node may propose it."""
    if txn is None:
        return "txn needs a transaction (compares, success and failure ops)"
    if len(txn.compare) > MAX_COMPARES:
        return f"too many compares: {len(txn.compare)} (at most {MAX_COMPARES})"
    for name, ops in (("success", txn.success), ("failure", txn.failure)):
        if len(ops) > MAX_OPS:
            return f"too many {name} ops: {len(ops)} (at most {MAX_OPS})"
    size = 0
    for c in txn.compare:
        err = validate_key(c.key)
        if err:
            return f"compare: {err}"
        if c.target == CompareTarget.VALUE.value:
            if c.value is None:
                return f"compare value({c.key!r}) needs a value"
            size += len(c.value)
        elif c.value is not None:
            return f"compare {c.target}({c.key!r}) takes a number, not a value"
        size += len(c.key)
    for op in txn.success + txn.failure:
        err = validate_key(op.key)
        if err:
            return f"{op.type}: {err}"
        if op.type == TxnOpType.PUT.value:
            if op.value is None:
                return f"put {op.key!r} needs a value"
            size += len(op.value)
        elif op.value is not None:
            return f"{op.type} {op.key!r} takes no value"
        size += len(op.key)
    if size > max_value_bytes:
        return f"transaction too large: {size} bytes of keys and values (max_value_bytes is {max_value_bytes})"
    return None
