"""The backup file: one consistent copy of a cluster's state, as ``kvclient backup`` writes it.

Layout (all integers big-endian)::

    magic "RAFTKVBK" | format version u16 | header_len u32 | header (msgpack map)
    | stream (header["stream_bytes"] bytes) | trailer magic "RKVBKEND" | SHA-256 (32 bytes)

- the header says what the copy is: the cluster id, the applied index and term it was taken
  at, the members at that index (a Configuration record, :mod:`.format`), the stream's length,
  when and on which node it was taken;
- the stream is the snapshot stream of a RocksDB checkpoint exactly as InstallSnapshot carries
  it (:mod:`.checkpoint_store`: magic, manifest with each file's size and CRC-32, the files),
  so restoring it reuses the receiver that installs snapshots, with its checks;
- the SHA-256 covers every byte before the trailer, so a truncated, extended or damaged file
  is refused before anything is written.

Every field read back is bounded and type-checked (a backup file is input like any other);
the header is small, and nothing here holds the stream in memory. This module needs only
msgpack and the record schema: the client library imports it to write a backup.
"""
from __future__ import annotations

import hashlib
import io
import os
import struct
import time
from dataclasses import dataclass
from typing import IO, Any, BinaryIO, Iterator, Optional, Union

import msgpack

from raftkv.fsync import fsync_dir
from raftkv.records import MAX_CLUSTER_ID_BYTES, MAX_ID_BYTES, INDEX_LIMIT, Member

from .format import FormatError, decode_members, encode_members

MAGIC = b"RAFTKVBK"
TRAILER_MAGIC = b"RKVBKEND"
FORMAT_VERSION = 1
READABLE_VERSIONS = frozenset({1})
_PREFIX = struct.Struct(">8sHI")
_DIGEST_BYTES = 32
TRAILER_BYTES = len(TRAILER_MAGIC) + _DIGEST_BYTES
MAX_HEADER_BYTES = 1 << 20  # members (at most 1024) and a few scalars: far below this
MAX_STREAM_BYTES = 256 << 30  # the cap on a received snapshot (storage/checkpoint_store.py)
BLOCK = 1 << 20  # read and hash this much at a time: memory stays bounded whatever the size


class BackupError(Exception):
    """A backup file that cannot be used (not a backup, unknown version, truncated, damaged),
    or a write that does not add up; the message says which, for the operator."""


@dataclass(frozen=True)
class BackupHeader:
    """What a backup holds: the state of cluster ``cluster_id`` at applied ``index`` (of
    ``term``) with ``members`` as its configuration; ``stream_bytes`` of snapshot stream;
    taken at ``created`` (Unix seconds) on node ``source``."""

    cluster_id: str
    index: int
    term: int
    members: tuple[Member, ...]
    stream_bytes: int
    created: float = 0.0
    source: str = ""

    def to_bytes(self) -> bytes:
        """The header as written in the file (a msgpack map: readers ignore keys they do not know)."""
        return msgpack.packb({"cluster_id": self.cluster_id, "index": self.index, "term": self.term,
                              "members": encode_members(list(self.members)), "stream_bytes": self.stream_bytes,
                              "created": float(self.created), "source": self.source}, use_bin_type=True)

    @classmethod
    def from_bytes(cls, data: bytes) -> "BackupHeader":
        """Decode and check a header. Raises BackupError naming the bad field."""
        try:
            h = msgpack.unpackb(data, raw=False, strict_map_key=True, max_bin_len=MAX_HEADER_BYTES,
                                max_str_len=MAX_HEADER_BYTES, max_array_len=1024, max_map_len=1024)
        except Exception as e:  # msgpack raises several unrelated types for bad bytes
            raise BackupError(f"backup header is not readable ({e.__class__.__name__})") from None
        if not isinstance(h, dict):
            raise BackupError("backup header is not a map")

        def field(name: str, kind: type, cap: int) -> Any:
            got = h.get(name)
            if type(got) is not kind:
                raise BackupError(f"backup header: {name!r} missing or not {kind.__name__}")
            v: Any = got
            if kind is int and not 0 <= v < cap:
                raise BackupError(f"backup header: {name!r} = {v} is out of range")
            if kind in (str, bytes) and len(v) > cap:
                raise BackupError(f"backup header: {name!r} is longer than {cap}")
            return v

        cluster_id = field("cluster_id", str, MAX_CLUSTER_ID_BYTES)
        index = field("index", int, INDEX_LIMIT)
        term = field("term", int, INDEX_LIMIT)
        stream_bytes = field("stream_bytes", int, MAX_STREAM_BYTES + 1)
        source = field("source", str, MAX_ID_BYTES) if "source" in h else ""
        created = h.get("created", 0.0)
        if type(created) not in (int, float):
            raise BackupError("backup header: 'created' is not a number")
        try:
            members = tuple(decode_members(field("members", bytes, MAX_HEADER_BYTES)))
        except FormatError as e:
            raise BackupError(f"backup header: bad members: {e}") from None
        if index == 0:
            raise BackupError("backup header: index 0 (an empty state) is not a backup")
        return cls(cluster_id, index, term, members, stream_bytes, float(created), source)


def file_size(header: BackupHeader) -> int:
    """The exact length of a complete backup file with ``header``."""
    return _PREFIX.size + len(header.to_bytes()) + header.stream_bytes + TRAILER_BYTES


class BackupWriter:
    """Writes one backup file: the header at once, the stream with :meth:`write`, the trailer
    with :meth:`finish`. Given a path, it writes ``PATH.tmp``, fsyncs it and renames it into
    place only once complete (a failed backup never leaves a file that looks whole); given a
    binary file object, it writes there. :meth:`abort` removes what was written."""

    def __init__(self, target: Union[str, "os.PathLike[str]", BinaryIO], header: BackupHeader) -> None:
        if not 0 <= header.stream_bytes <= MAX_STREAM_BYTES:
            raise BackupError(f"a stream of {header.stream_bytes} bytes is more than a backup holds")
        self.header = header
        self._hash = hashlib.sha256()
        self._written = 0
        self._own: Optional[IO[bytes]] = None
        if isinstance(target, (str, os.PathLike)):
            self.path: Optional[str] = os.fspath(target)
            self.tmp: Optional[str] = self.path + ".tmp"
            self._own = open(self.tmp, "wb")
            self._f: IO[bytes] = self._own
        else:
            self.path = self.tmp = None
            self._f = target
        blob = header.to_bytes()
        self._put(_PREFIX.pack(MAGIC, FORMAT_VERSION, len(blob)) + blob)
        self.bytes = _PREFIX.size + len(blob)  # file bytes written so far

    def _put(self, data: bytes) -> None:
        self._f.write(data)
        self._hash.update(data)

    def write(self, data: bytes) -> None:
        """The next bytes of the snapshot stream. Raises BackupError past its announced length."""
        if self._written + len(data) > self.header.stream_bytes:
            raise BackupError(f"more stream bytes than the {self.header.stream_bytes} announced")
        self._put(data)
        self._written += len(data)
        self.bytes += len(data)

    def finish(self) -> int:
        """Write the trailer, make the file durable and (for a path) rename it into place;
        returns the file's size. Raises BackupError if the stream is short."""
        if self._written != self.header.stream_bytes:
            raise BackupError(f"stream ended after {self._written} of {self.header.stream_bytes} bytes")
        self._f.write(TRAILER_MAGIC + self._hash.digest())
        self.bytes += TRAILER_BYTES
        self._f.flush()
        if self._own is not None:
            os.fsync(self._own.fileno())
            self._own.close()
            self._own = None
            assert self.tmp is not None and self.path is not None
            os.replace(self.tmp, self.path)
            fsync_dir(os.path.dirname(os.path.abspath(self.path)))
        return self.bytes

    def abort(self) -> None:
        """Discard an unfinished backup (the ``.tmp`` file of a path; nothing for a file object)."""
        if self._own is not None:
            self._own.close()
            self._own = None
            if self.tmp is not None:
                try:
                    os.unlink(self.tmp)
                except FileNotFoundError:
                    pass


def read_header(f: BinaryIO) -> tuple[BackupHeader, int]:
    """The header of the backup open in ``f`` (read from its start) and the stream's offset in
    the file. Raises BackupError for a file that is not a backup of a version this build reads."""
    f.seek(0)
    prefix = f.read(_PREFIX.size)
    if len(prefix) < _PREFIX.size:
        raise BackupError(f"not a raftkv backup: only {len(prefix)} bytes")
    magic, version, hlen = _PREFIX.unpack(prefix)
    if magic != MAGIC:
        raise BackupError("not a raftkv backup (bad magic)")
    if version not in READABLE_VERSIONS:
        raise BackupError(f"backup format version {version}; this build reads "
                          f"{', '.join(str(v) for v in sorted(READABLE_VERSIONS))}")
    if hlen > MAX_HEADER_BYTES:
        raise BackupError(f"backup header of {hlen} bytes is more than the limit of {MAX_HEADER_BYTES}")
    blob = f.read(hlen)
    if len(blob) < hlen:
        raise BackupError("backup is truncated (inside its header)")
    return BackupHeader.from_bytes(blob), _PREFIX.size + hlen


def header_of_start(data: Union[bytes, bytearray]) -> Optional[tuple[BackupHeader, int]]:
    """The header and the whole file's size of a backup file whose first bytes are ``data``
    (what a stream of it has sent so far), or None while ``data`` does not hold the whole header
    yet. Raises BackupError for bytes that do not start a backup this build reads."""
    if len(data) < _PREFIX.size:
        return None
    _, _, hlen = _PREFIX.unpack_from(data)
    if hlen <= MAX_HEADER_BYTES and len(data) < _PREFIX.size + hlen:
        return None
    header, start = read_header(io.BytesIO(bytes(data[:_PREFIX.size + min(hlen, MAX_HEADER_BYTES)])))
    return header, start + header.stream_bytes + TRAILER_BYTES


def verify(path: str) -> BackupHeader:
    """Check a whole backup file: magic, version, header, exact length, SHA-256 over everything.
    Returns its header; raises BackupError (the file is unusable) or OSError (unreadable)."""
    with open(path, "rb") as f:
        header, start = read_header(f)
        want = start + header.stream_bytes + TRAILER_BYTES
        have = os.fstat(f.fileno()).st_size
        if have < want:
            raise BackupError(f"backup is truncated: {have} bytes, a complete one of index {header.index} "
                              f"has {want}")
        if have > want:
            raise BackupError(f"backup has {have - want} bytes more than its header accounts for")
        f.seek(0)
        h = hashlib.sha256()
        left = want - TRAILER_BYTES
        while left:
            block = f.read(min(BLOCK, left))
            if not block:
                raise BackupError("backup is truncated (it shrank while being read)")
            h.update(block)
            left -= len(block)
        trailer = f.read(TRAILER_BYTES)
        if trailer[:len(TRAILER_MAGIC)] != TRAILER_MAGIC:
            raise BackupError("backup is damaged: no trailer where its header says the data ends")
        if trailer[len(TRAILER_MAGIC):] != h.digest():
            raise BackupError("backup is damaged: its SHA-256 checksum does not match its contents")
    return header


def iter_stream(path: str) -> Iterator[bytes]:
    """The snapshot stream of a backup file (call :func:`verify` first), ``BLOCK`` bytes at a time."""
    with open(path, "rb") as f:
        header, start = read_header(f)
        f.seek(start)
        left = header.stream_bytes
        while left:
            block = f.read(min(BLOCK, left))
            if not block:
                raise BackupError("backup is truncated (it shrank while being read)")
            left -= len(block)
            yield block


def new_header(cluster_id: str, index: int, term: int, members: list, stream_bytes: int, source: str) -> BackupHeader:
    """A header for a backup taken now (checked as a reader would check it)."""
    header = BackupHeader(cluster_id, index, term, tuple(members), stream_bytes, time.time(), source)
    return BackupHeader.from_bytes(header.to_bytes())
