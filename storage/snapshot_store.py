"""Snapshot files: checksummed, written under a temporary name, renamed, newest N kept.

One file per snapshot, named ``snap-<last index, 20 digits>-<last term>.snap`` so that names
sort by index. A file is a header followed by the body (the FSM's serialised state, opaque
here)::

    magic "RKVSNAP\\0" | version u32 | last_index u64 | last_term u64 | body_len u64 |
    body_crc32 u32 | members_len u32 | members (msgpack Configuration record) | header_crc32 u32
    body...

All integers are big-endian; the members' encoding is :mod:`raftkv.storage.format`'s.
``header_crc32`` covers every header byte before it, so a
damaged header is told apart from a damaged body. The body is streamed: the header is
written with a zero length and checksum first and rewritten once the body is complete.

Durability order (docs/architecture.md section 7): write the temp file, fsync it, rename it, fsync the
directory. Only then is the snapshot durable, and only then may the log prefix it covers
be dropped.
"""
from __future__ import annotations

import logging
import os
import re
import struct
import tempfile
import zlib
from dataclasses import dataclass
from typing import IO, Iterable, Iterator, Optional

from raftkv.records import Member

from .format import (READABLE_SNAPSHOT_FORMATS, SNAPSHOT_FORMAT_VERSION, FormatError, check_version, decode_members,
                     encode_members)
from .kv_install import fsync_dir

FORMAT_VERSION = SNAPSHOT_FORMAT_VERSION  # the old name
MAGIC = b"RKVSNAP\0"
CHUNK_SIZE = 1 << 20  # reads are chunked so that a large snapshot never sits whole in memory

log = logging.getLogger("storage.snapshot")

# magic, version, last_index, last_term, body_len, body_crc32, members_len
_FIXED = struct.Struct(">8sIQQQII")
_CRC = struct.Struct(">I")
_NAME = re.compile(r"^snap-(\d{20})-(\d+)\.snap$")
_TMP_PREFIX = "snap-"
_TMP_SUFFIX = ".tmp"
_MAX_MEMBERS_LEN = 16 << 20  # a sanity bound: a garbage length must not make us allocate GBs


class CorruptSnapshot(Exception):
    """A snapshot file that cannot be trusted: bad magic, unknown version, truncated, or a
    checksum mismatch. The message names the file and the cause."""


@dataclass
class SnapshotMeta:
    """What a snapshot file's header says. ``size`` is the body's length in bytes."""

    path: str
    last_index: int
    last_term: int
    members: list[Member]
    size: int
    body_offset: int = 0  # where the body starts in the file (the header's length)
    body_crc32: int = 0




def _header(last_index: int, last_term: int, body_len: int, body_crc: int, members: bytes) -> bytes:
    fixed = _FIXED.pack(
        MAGIC, FORMAT_VERSION, last_index, last_term, body_len, body_crc, len(members)
    )
    head = fixed + members
    return head + _CRC.pack(zlib.crc32(head))


class SnapshotStore:
    """The snapshot files of one node, in one directory, keeping the newest ``keep``.

    Owned by one thread at a time (the snapshotter actor); readers returned by
    :meth:`open_verified` keep their file open, so pruning does not break a transfer in flight.
    """

    def __init__(self, directory: str, keep: int = 3) -> None:
        """Create ``directory`` if needed and remove temp files left by an interrupted save."""
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.directory = directory
        self.keep = keep
        os.makedirs(directory, exist_ok=True)
        for name in os.listdir(directory):
            if name.startswith(_TMP_PREFIX) and name.endswith(_TMP_SUFFIX):
                # a save that crashed before its rename: never a valid snapshot, only garbage
                log.info("removing leftover temporary snapshot file %s", name)
                os.unlink(os.path.join(directory, name))

    # ------------------------------------------------------------------ writing

    def save(
        self, last_index: int, last_term: int, members: list[Member], chunks: Iterable[bytes]
    ) -> str:
        """Write a snapshot covering the log up to (last_index, last_term) and return its path.

        ``chunks`` is consumed as it comes, so the body never needs to fit in memory. When this
        returns, the file and its directory entry are fsynced: the log prefix may be dropped.
        Then all but the newest ``keep`` snapshots are deleted (never the one just written).
        """
        members_blob = encode_members(list(members))
        final = os.path.join(self.directory, f"snap-{last_index:020d}-{last_term}.snap")
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=_TMP_PREFIX, suffix=_TMP_SUFFIX)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(_header(last_index, last_term, 0, 0, members_blob))
                crc = 0
                length = 0
                for chunk in chunks:
                    crc = zlib.crc32(chunk, crc)
                    length += len(chunk)
                    f.write(chunk)
                f.seek(0)
                f.write(_header(last_index, last_term, length, crc, members_blob))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        fsync_dir(self.directory)
        log.info("saved snapshot %s (%d bytes, %d members)", os.path.basename(final), length,
                 len(members))
        self._prune(keep_path=final)
        return final

    def _prune(self, keep_path: str) -> None:
        # No directory fsync afterwards: a deletion undone by a crash only leaves an extra,
        # still valid, snapshot behind.
        for path in self._paths()[self.keep:]:
            if path != keep_path:
                log.info("deleting old snapshot %s", os.path.basename(path))
                os.unlink(path)

    # ------------------------------------------------------------------ reading

    def _paths(self) -> list[str]:
        """Snapshot file paths, newest (highest index, then term) first, from names alone."""
        found = []
        for name in os.listdir(self.directory):
            m = _NAME.match(name)
            if m:
                key = (int(m.group(1)), int(m.group(2)))
                found.append((key, os.path.join(self.directory, name)))
        found.sort(reverse=True)
        return [path for _, path in found]

    def list(self) -> list[SnapshotMeta]:
        """Metadata of every snapshot file, newest first. Checks headers, not bodies; a file
        whose header is damaged is logged (warning) and left out."""
        metas = []
        for path in self._paths():
            try:
                metas.append(self.read_meta(path))
            except CorruptSnapshot as e:
                log.warning("ignoring snapshot: %s", e)
        return metas

    def read_meta(self, path: str) -> SnapshotMeta:
        """Parse and check one file's header (and that the file holds the whole body)."""
        with open(path, "rb") as f:
            return self._read_header(f, path)

    @staticmethod
    def _read_header(f: IO[bytes], path: str) -> SnapshotMeta:
        name = os.path.basename(path)
        fixed = f.read(_FIXED.size)
        if len(fixed) < _FIXED.size:
            raise CorruptSnapshot(f"{name}: truncated header")
        (magic, version, last_index, last_term, body_len, body_crc,
         members_len) = _FIXED.unpack(fixed)
        if magic != MAGIC:
            raise CorruptSnapshot(f"{name}: not a snapshot file (bad magic)")
        try:
            check_version(version, READABLE_SNAPSHOT_FORMATS)
        except FormatError as e:
            raise CorruptSnapshot(f"{name}: {e}") from None
        if members_len > _MAX_MEMBERS_LEN:
            raise CorruptSnapshot(f"{name}: damaged header (members length {members_len})")
        members_blob = f.read(members_len)
        stored_crc = f.read(_CRC.size)
        if len(members_blob) < members_len or len(stored_crc) < _CRC.size:
            raise CorruptSnapshot(f"{name}: truncated header")
        if zlib.crc32(fixed + members_blob) != _CRC.unpack(stored_crc)[0]:
            raise CorruptSnapshot(f"{name}: header checksum mismatch")
        try:
            members = decode_members(members_blob)
        except FormatError as e:
            raise CorruptSnapshot(f"{name}: bad members record: {e}") from None
        body_offset = f.tell()
        actual = os.fstat(f.fileno()).st_size - body_offset
        if actual != body_len:
            raise CorruptSnapshot(f"{name}: body is {actual} bytes, header says {body_len}")
        return SnapshotMeta(
            path, last_index, last_term, members, body_len, body_offset, body_crc
        )

    def open_verified(self, meta: SnapshotMeta) -> Iterator[bytes]:
        """Check the whole body against its checksum, then return an iterator over the body in
        chunks. Raises CorruptSnapshot (or OSError if the file vanished) before any data is
        returned. The file stays open until the iterator is exhausted or closed."""
        f = open(meta.path, "rb")
        try:
            checked = self._read_header(f, meta.path)
            crc = 0
            for chunk in _chunks(f, checked.size):
                crc = zlib.crc32(chunk, crc)
            if crc != checked.body_crc32:
                raise CorruptSnapshot(f"{os.path.basename(meta.path)}: body checksum mismatch")
            f.seek(checked.body_offset)
        except BaseException:
            f.close()
            raise
        return _reader(f, checked.size)

    def newest_valid(self) -> Optional[tuple[SnapshotMeta, Iterator[bytes]]]:
        """The newest snapshot whose checksums hold, with a reader of its body; None if there is
        none. Each corrupt newer file is logged as a warning (and left in place: a fresh
        snapshot with the same index and term replaces it)."""
        for meta in self.list():
            try:
                return meta, self.open_verified(meta)
            except CorruptSnapshot as e:
                log.warning("snapshot %s is corrupt, falling back to an older one: %s",
                            os.path.basename(meta.path), e)
        return None


def _chunks(f: IO[bytes], size: int) -> Iterator[bytes]:
    """Exactly ``size`` bytes from ``f``'s position, in chunks of at most CHUNK_SIZE."""
    left = size
    while left > 0:
        chunk = f.read(min(CHUNK_SIZE, left))
        if not chunk:
            raise CorruptSnapshot(f"{f.name}: body ends early")
        left -= len(chunk)
        yield chunk


def _reader(f: IO[bytes], size: int) -> Iterator[bytes]:
    with f:
        yield from _chunks(f, size)
