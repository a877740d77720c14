"""The on-disk encoding of everything storage persists, with its own format version.

The disk format is defined here, not by the wire codec: a change of the wire protocol does not
change what is on disk, and the reverse. Both share the record schema (:mod:`raftkv.records`),
so a persisted record follows the schema's growth rules: extra trailing values written by a
newer build are ignored, missing trailing optional ones take their defaults, and every value
is type-checked.

What is persisted, all msgpack:

- a log entry: ``[term, kind, data]`` (``data`` is the entry's payload, opaque here: a
  Command or Configuration record encoded by the log's writer, see ``raftkv.wire.codec``);
- stable state: the term and the commit index (ints), the vote (a str), the snapshot base
  ``[index, term]``, and the store's format version (an int);
- in a snapshot file's header: the members, as the record ``[31, [[member fields]...]]``
  (type code and fields of :class:`~raftkv.records.Configuration`).

``LOG_FORMAT_VERSION`` and ``SNAPSHOT_FORMAT_VERSION`` are what this build writes;
``READABLE_*`` what it opens. Bump a version only for a change an older build would misread
(it then refuses the data with a clear error instead); appending an optional field is not one.
Version 1 is the layout of the first release, which this build still writes unchanged (so a
downgrade keeps working too).
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import msgpack

from raftkv.records import (INDEX_LIMIT, MAX_ENTRY_BYTES, Configuration, DecodeError, Entry, Member, entry_from_fields,
                            from_fields, spec_of)

LOG_FORMAT_VERSION = 1
READABLE_LOG_FORMATS = frozenset({1})
SNAPSHOT_FORMAT_VERSION = 1
READABLE_SNAPSHOT_FORMATS = frozenset({1})


class FormatError(DecodeError):
    """Persisted bytes that are not a well-formed value of a format this build reads."""


def pack(value: Any) -> bytes:
    """Encode a plain value (an int, a str, a list of them)."""
    return msgpack.packb(value, use_bin_type=True)


def _unpack(data: bytes) -> Any:
    try:
        return msgpack.unpackb(data, raw=False)
    except Exception as e:  # msgpack raises several unrelated types for garbage
        raise FormatError(f"not msgpack: {e.__class__.__name__}") from None


def entry_packer() -> Callable[[Entry], bytes]:
    """A fast encoder of log entries for one thread (it reuses one msgpack Packer). An Entry is a
    NamedTuple, so it packs as the array ``[term, kind, data]``."""
    return msgpack.Packer(use_bin_type=True).pack


def encode_entry(entry: Entry) -> bytes:
    """Encode one log entry (as :func:`entry_packer` does)."""
    return msgpack.packb(entry, use_bin_type=True)


def decode_entry(data: bytes) -> Entry:
    """Decode a stored log entry; trailing values a newer build appended are ignored."""
    try:
        return entry_from_fields(_unpack(data))
    except FormatError:
        raise
    except DecodeError as e:
        raise FormatError(str(e)) from None


def decode_entries(raws: list) -> list[Entry]:
    """Decode many stored log entries (a start-up reads the whole log): what :func:`decode_entry`
    checks, inline for the usual ``[term, kind, data]``, without its three Python calls per entry
    (half of decoding 50k entries). Anything else goes through :func:`decode_entry`, which
    accepts trailing values and raises FormatError for a bad entry."""
    unpack, new, entry = msgpack.unpackb, tuple.__new__, Entry
    limit, cap = INDEX_LIMIT, MAX_ENTRY_BYTES
    out: list[Entry] = []
    append = out.append
    for raw in raws:
        try:
            e = unpack(raw, raw=False)
        except Exception:
            e = None  # garbage: decode_entry says why
        if type(e) is list and len(e) == 3:
            t, k, d = e
            if (type(t) is int and type(k) is int and type(d) is bytes and 0 <= t < limit and 0 <= k < limit
                    and len(d) <= cap):
                append(new(entry, e))  # Entry(t, k, d) without the Python frame of its __new__
                continue
        append(decode_entry(raw))
    return out


def decode_int(data: bytes, what: str) -> int:
    """A stored non-negative integer (term, commit index, format version)."""
    v = _unpack(data)
    if type(v) is not int or v < 0:
        raise FormatError(f"{what}: expected a non-negative int, got {v!r}")
    return v


def decode_vote(data: bytes) -> str:
    """The stored vote: the id of the node voted for."""
    v = _unpack(data)
    if type(v) is not str:
        raise FormatError(f"vote: expected a str, got {type(v).__name__}")
    return v


def encode_base(index: int, term: int) -> bytes:
    """Encode the snapshot base: (index, term) of the last entry a snapshot covers."""
    return pack([index, term])


def decode_base(data: bytes) -> tuple[int, int]:
    """Decode the snapshot base; trailing values a newer build appended are ignored."""
    v = _unpack(data)
    if type(v) is not list or len(v) < 2 or type(v[0]) is not int or type(v[1]) is not int:
        raise FormatError(f"snapshot base: expected [index, term], got {v!r}")
    return v[0], v[1]


_CONFIGURATION_CODE = spec_of(Configuration).code


def encode_members(members: list[Member]) -> bytes:
    """Encode a snapshot's members (byte for byte what format version 1 wrote)."""
    return pack([_CONFIGURATION_CODE, [[list(m) for m in members]]])  # fields: [members]


def decode_members(data: bytes) -> list[Member]:
    """Decode a snapshot's members, checking every field of every member."""
    v = _unpack(data)
    if type(v) is not list or len(v) < 2 or v[0] != _CONFIGURATION_CODE:
        raise FormatError("members: expected a Configuration record")
    try:
        return list(from_fields(_CONFIGURATION_CODE, v[1]).members)
    except DecodeError as e:
        raise FormatError(str(e)) from None


def check_version(found: Optional[int], readable: frozenset) -> None:
    """Raise FormatError unless ``found`` is a format version this build reads."""
    if found not in readable:
        have = "no format version" if found is None else f"format version {found!r}"
        can = ", ".join(str(v) for v in sorted(readable))
        raise FormatError(f"{have}, this build reads {can}")
