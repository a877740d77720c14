"""One user key's stored record: its value and revisions (key-value format version 2).

A record is the value with three counters (issue 14, docs/architecture.md "Revisions"):
``create_revision`` (the log index of the write that created the key), ``mod_revision`` (the
log index of its last write) and ``version`` (writes since creation; a delete resets it, the
next put starts again at 1). Keys stored before revisions existed (format version 1) carry 0
for both revisions and version 1: their history is unknown, and 0 says so.

On disk a record is a fixed 24-byte header (the three counters, big-endian unsigned 64-bit)
followed by the value's bytes: decoding is one ``struct`` call and one slice, and a read that
wants only the value slices the header off.
"""
from __future__ import annotations

import struct
from typing import NamedTuple

HEADER = struct.Struct(">QQQ")
HEADER_BYTES = HEADER.size


class KeyRecord(NamedTuple):
    """A key's value and revisions, as the state machine holds them."""

    value: bytes
    create_revision: int
    mod_revision: int
    version: int


def encode_record(rec: KeyRecord) -> bytes:
    """The stored bytes of ``rec``."""
    return HEADER.pack(rec.create_revision, rec.mod_revision, rec.version) + rec.value


def decode_record(raw: bytes) -> KeyRecord:
    """The record stored as ``raw`` (written by :func:`encode_record`)."""
    c, m, v = HEADER.unpack_from(raw)
    return KeyRecord(raw[HEADER_BYTES:], c, m, v)


def value_of(raw: bytes) -> bytes:
    """Only the value of a stored record."""
    return raw[HEADER_BYTES:]
