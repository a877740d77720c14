"""Which SST files a RocksDB MANIFEST (or a prefix of one) names as live.

Why a checkpoint needs this: RocksDB appends a flush's or a compaction's record to the MANIFEST
(and syncs it) with its DB mutex released, and only afterwards installs the new version that
``live_files`` reports. A checkpoint whose MANIFEST copy was taken inside that gap names an SST
file that ``live_files`` did not list yet, and the checkpoint does not open ("No such file ...
MANIFEST may be corrupted"). RocksDB's own Checkpoint avoids the gap by reading the live files and
the MANIFEST size together under its mutex (``GetLiveFiles``), which rocksdict does not expose;
reading the copied prefix itself gives the exact set instead (:mod:`.kv_live_checkpoint`).

The formats (RocksDB ``db/log_format.h``, ``db/version_edit.{h,cc}``): the file is a sequence of
32 KiB blocks of records, each with a 7-byte header (CRC-32C, 2-byte little-endian length, type)
and a payload; a logical record is one FULL fragment or FIRST, MIDDLE..., LAST. Each logical
record is a VersionEdit: tag (varint32) and fields. Only the tags that name files matter here;
every other tag is skipped by its known shape, and tags from the future that RocksDB marks safe
to ignore (bit 13) are length-prefixed. The CRCs are not checked: the bytes are a prefix of the
live DB's own MANIFEST, copied a moment ago; a record cut off at the end of the prefix (being
appended while it was copied) is left out, as RocksDB's recovery leaves it out.
"""
from __future__ import annotations

import os
import zlib
from typing import Iterator

BLOCK = 32768
HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4
_SAFE_IGNORE = 1 << 13
_CUSTOM_TERMINATE = 1

# VersionEdit tags (db/version_edit.h).
_COMPARATOR, _LOG_NUMBER, _NEXT_FILE, _LAST_SEQUENCE, _COMPACT_CURSOR = 1, 2, 3, 4, 5
_DELETED_FILE, _NEW_FILE, _PREV_LOG, _MIN_LOG_TO_KEEP = 6, 7, 9, 10
_NEW_FILE2, _NEW_FILE3, _NEW_FILE4 = 100, 102, 103
_CF, _CF_ADD, _CF_DROP, _MAX_CF, _ATOMIC_GROUP = 200, 201, 202, 203, 300
_FILE_NUMBER_MASK = 0x3FFFFFFFFFFFFFFF  # kNewFile3 packs the path id above the number


class ManifestError(ValueError):
    """The MANIFEST holds something this reader does not know how to skip."""


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def more(self) -> bool:
        return self.pos < len(self.data)

    def varint(self) -> int:
        result = shift = 0
        while True:
            if self.pos >= len(self.data) or shift > 63:
                raise ManifestError("truncated or overlong varint in a version edit")
            byte = self.data[self.pos]
            self.pos += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return result
            shift += 7

    def skip(self, n: int) -> None:
        if self.pos + n > len(self.data):
            raise ManifestError("a field runs past the end of its version edit")
        self.pos += n

    def slice(self) -> None:
        self.skip(self.varint())


def records(data: bytes, pos: int = 0) -> Iterator[tuple]:
    """(payload, end) of each complete logical record of a RocksDB log file's bytes ``data`` (a
    prefix is fine) from offset ``pos`` (0, or the end of an earlier record), ``end`` being the
    offset just past it."""
    pending: list = []
    while pos + HEADER <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < HEADER:  # a block's tail too short for a header is zero padding
            pos += left_in_block
            continue
        length = int.from_bytes(data[pos + 4:pos + 6], "little")
        kind = data[pos + 6]
        start = pos + HEADER
        if kind == 0 and length == 0:  # preallocated or padded space: the rest of the block
            pos += left_in_block
            continue
        if start + length > len(data):
            return  # cut off by the end of the prefix
        if length > left_in_block - HEADER:
            raise ManifestError(f"a record of {length} bytes crosses a block boundary at {pos}")
        payload = data[start:start + length]
        pos = start + length
        if kind == _FULL:
            pending = []
            yield payload, pos
        elif kind == _FIRST:
            pending = [payload]
        elif kind == _MIDDLE and pending:
            pending.append(payload)
        elif kind == _LAST and pending:
            pending.append(payload)
            yield b"".join(pending), pos
            pending = []
        elif kind in (_MIDDLE, _LAST):
            raise ManifestError(f"a record fragment without its first part at {pos}")
        else:
            raise ManifestError(f"unknown log record type {kind} at {pos}")


def _edit_files(edit: bytes) -> tuple:
    """(file numbers added, file numbers deleted) by one VersionEdit."""
    r = _Reader(edit)
    added: set = set()
    deleted: set = set()
    while r.more():
        tag = r.varint()
        if tag in (_LOG_NUMBER, _NEXT_FILE, _LAST_SEQUENCE, _PREV_LOG, _MIN_LOG_TO_KEEP,
                   _CF, _MAX_CF, _ATOMIC_GROUP):
            r.varint()
        elif tag in (_COMPARATOR, _CF_ADD):
            r.slice()
        elif tag == _CF_DROP:
            pass
        elif tag == _COMPACT_CURSOR:
            r.varint()
            r.slice()
        elif tag == _DELETED_FILE:
            r.varint()
            deleted.add(r.varint())
        elif tag in (_NEW_FILE, _NEW_FILE2, _NEW_FILE3, _NEW_FILE4):
            r.varint()  # level
            added.add(r.varint() & _FILE_NUMBER_MASK)
            r.varint()  # size
            r.slice()  # smallest key
            r.slice()  # largest key
            if tag != _NEW_FILE:
                r.varint()  # smallest seqno
                r.varint()  # largest seqno
            if tag == _NEW_FILE4:
                while r.varint() != _CUSTOM_TERMINATE:
                    r.slice()
        elif tag & _SAFE_IGNORE:
            r.slice()
        else:
            raise ManifestError(f"unknown version edit tag {tag}")
    return added, deleted


def _apply(live: set, data: bytes, start: int) -> int:
    """Apply to ``live`` the version edits of ``data`` from offset ``start``; return the offset
    just past the last complete one (``start`` if none)."""
    end = start
    for edit, stop in records(data, start):
        added, deleted = _edit_files(edit)
        live -= deleted  # before the additions: a trivial move deletes and adds the same number
        live |= added
        end = stop
    return end


def live_table_files(data: bytes) -> set:
    """The numbers of the SST files live after every complete version edit in ``data`` (the
    bytes of a MANIFEST, or of a prefix of one), over all column families."""
    live: set = set()
    _apply(live, data, 0)
    return live


def table_file_name(number: int) -> str:
    """The name RocksDB gives SST file ``number`` (``MakeTableFileName``)."""
    return f"{number:06d}.sst"


class TableFiles:
    """:func:`live_table_files` of successive copies of one growing MANIFEST, each read from
    where the last one ended.

    A snapshot reads the MANIFEST copied into its checkpoint, and a MANIFEST grows by a record per
    flush and compaction up to 1 MB (``kv_db.MAX_MANIFEST_MB``): read whole each time, in Python,
    that cost up to ~80 ms of a snapshot (and as much GIL held from the writes); read on from the
    last snapshot's end it costs the records written since. A copy is read on only if it has the
    same name and the same bytes (CRC-32) up to where the last read ended; anything else (a new
    MANIFEST, a DB replaced by a snapshot install) is read from the start. Not thread-safe: one
    per DB, used by the one thread building its checkpoints at a time."""

    def __init__(self) -> None:
        self._name = ""
        self._end = 0  # the offset just past the last complete record read
        self._crc = 0  # CRC-32 of the bytes before _end
        self._live: frozenset = frozenset()

    def read(self, path: str) -> set:
        """The numbers of the SST files the MANIFEST (copy) at ``path`` names as live."""
        with open(path, "rb") as f:
            data = f.read()
        name = os.path.basename(path)
        view = memoryview(data)
        if name == self._name and len(data) >= self._end and zlib.crc32(view[:self._end]) == self._crc:
            live, start, crc = set(self._live), self._end, self._crc
        else:
            live, start, crc = set(), 0, 0
        end = _apply(live, data, start)
        self._name, self._end, self._crc = name, end, zlib.crc32(view[start:end], crc)
        self._live = frozenset(live)
        return live


__all__ = ["ManifestError", "TableFiles", "live_table_files", "records", "table_file_name"]
