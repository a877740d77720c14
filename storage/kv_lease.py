"""The lease table's rows in the key-value DB (storage/kv_store.py), under a reserved prefix.

Layout, beside kv_store's (``b"l"`` is used by nothing else, and user keys all live under
``b"d"``, so get and list never see these rows):

- ``b"l" + id`` (8 bytes, big-endian): msgpack int, the lease's TTL in seconds.
- ``b"l" + id + key`` (UTF-8): empty, one row per key attached to the lease.

A lease and its attachments are contiguous, so dropping a lease is one range delete, and the
whole table loads with one scan (it is bounded: actors/lease_state.py MAX_LEASES and
MAX_KEYS_PER_LEASE). The rows are written in the same WriteBatch as the entries that changed
them, so a checkpoint (a snapshot) and a crash always see the table of the applied index.
"""
from __future__ import annotations

import struct
from typing import Any, NamedTuple

import msgpack

LEASE_PREFIX = b"l"
LEASE_END = b"m"
_ID = struct.Struct(">Q")


class LeaseRow(NamedTuple):
    """Write the lease ``lease`` with ``ttl`` (a grant)."""

    lease: int
    ttl: int


class LeaseKeyRow(NamedTuple):
    """Attach (``attached``) or detach ``key`` from ``lease``."""

    lease: int
    key: str
    attached: bool


class LeaseDropRow(NamedTuple):
    """Remove the lease and every attachment row of it."""

    lease: int


LEASE_ROWS = (LeaseRow, LeaseKeyRow, LeaseDropRow)


def lease_row_key(lease: int) -> bytes:
    """The DB key of a lease's row (also the prefix of its attachment rows)."""
    return LEASE_PREFIX + _ID.pack(lease)


def write_lease_row(wb: Any, op: Any) -> None:
    """Add one lease row operation to a rocksdict WriteBatch."""
    t = type(op)
    if t is LeaseRow:
        wb.put(lease_row_key(op.lease), msgpack.packb(op.ttl))
    elif t is LeaseKeyRow:
        k = lease_row_key(op.lease) + op.key.encode()
        if op.attached:
            wb.put(k, b"")
        else:
            wb.delete(k)
    elif t is LeaseDropRow:
        start = lease_row_key(op.lease)
        wb.delete_range(start, lease_row_key(op.lease + 1))
    else:
        raise ValueError(f"not a lease row operation: {op!r}")


def read_lease_rows(rows: list[tuple[bytes, bytes]]) -> list[tuple[int, int, list[str]]]:
    """``(id, ttl, keys)`` per lease from the rows of the lease range, in id order."""
    out: list[tuple[int, int, list[str]]] = []
    n = len(LEASE_PREFIX) + _ID.size
    for k, v in rows:
        lid = _ID.unpack_from(k, len(LEASE_PREFIX))[0]
        if len(k) == n:
            out.append((lid, msgpack.unpackb(v), []))
        elif out and out[-1][0] == lid:
            out[-1][2].append(k[n:].decode())
    return out
