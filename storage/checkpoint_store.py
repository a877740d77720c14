"""Snapshots as key-value checkpoints: the newest N kept, each readable as one byte stream.

A snapshot is a checkpoint directory ``ckpt-<index, 20 digits>`` (:mod:`.kv_checkpoint`) plus a
sidecar file ``ckpt-<index>.meta`` (msgpack ``{"term", "members", "manifest"}``) written once the
checkpoint's manifest (file names, sizes, CRC-32s) is computed. A checkpoint without its sidecar
was never announced to the Raft layer (no log was compacted on its behalf) and is deleted at
start-up.

The stream (what InstallSnapshot carries, addressed by the core's byte offsets)::

    magic "RKVCKPT1" | manifest_len u32 | manifest (CheckpointManifest.to_bytes()) | files...

with the checkpoint's files concatenated in manifest order. Its length is known from the
sidecar alone, so the core's (offset, done) protocol needs nothing else.
"""
from __future__ import annotations

import logging
import os
import shutil
import struct
import tempfile
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import msgpack

from raftkv.records import Member

from .format import FormatError, decode_members, encode_members
from .kv_checkpoint import (CheckpointError, CheckpointInfo, CheckpointManifest, CheckpointReceiver, FileChunk,
                            build_manifest, checkpoint_name, file_key, list_checkpoints, reusable)
from .crc_warmer import CrcWarmer
from .kv_install import fsync_dir, verify_db
from .log_store import StorageError

log = logging.getLogger("storage.snapshot")

MAGIC = b"RKVCKPT1"
_HEAD = struct.Struct(">8sI")
_SIDECAR = ".meta"
MAX_MANIFEST_BYTES = 64 << 20
# Received snapshots larger than this are refused (and anything larger than the free disk space).
MAX_RECEIVED_BYTES = 256 << 30


@dataclass
class CheckpointMeta:
    """One snapshot: its checkpoint directory, (index, term), members at that index, and the
    stream it is sent as (``size`` bytes: header + manifest + files)."""

    path: str
    last_index: int
    last_term: int
    members: list[Member]
    manifest: bytes
    size: int = 0
    _layout: list = field(default_factory=list, repr=False)  # (start, end, file name) of each file

    def __post_init__(self) -> None:
        m = CheckpointManifest.from_bytes(self.manifest)
        pos = _HEAD.size + len(self.manifest)
        for fi in m.files:
            self._layout.append((pos, pos + fi.size, fi.name))
            pos += fi.size
        self.size = pos

    def header(self) -> bytes:
        """The stream's first bytes: magic, manifest length, manifest."""
        return _HEAD.pack(MAGIC, len(self.manifest)) + self.manifest


class CheckpointStore:
    """The checkpoints of one node in ``directory``, keeping the newest ``keep``. Checkpoints are
    taken by the FSM's thread (:meth:`path_for` + ``KvStore.checkpoint``); everything else is
    the snapshotter's (described, listed, read, received)."""

    def __init__(self, directory: str, keep: int = 3) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.directory = os.path.abspath(directory)
        self.keep = keep
        self.warmer: Optional[CrcWarmer] = None  # see warm_from
        os.makedirs(self.directory, exist_ok=True)
        for info in list_checkpoints(self.directory):  # also removes .partial leftovers
            if not os.path.exists(info.path + _SIDECAR):
                log.info("removing checkpoint %s, never described", os.path.basename(info.path))
                shutil.rmtree(info.path)
        for name in os.listdir(self.directory):
            path = os.path.join(self.directory, name)
            if name.endswith(_SIDECAR) and not os.path.isdir(path[:-len(_SIDECAR)]):
                os.unlink(path)
            elif name.startswith("recv-") or name.endswith(".tmp"):
                shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)

    def path_for(self, index: int) -> str:
        """Where the checkpoint at ``index`` goes (it may already be there: see :meth:`has`)."""
        return os.path.join(self.directory, checkpoint_name(index))

    @staticmethod
    def has(path: str) -> bool:
        """Whether the checkpoint at ``path`` exists and is described (then it is reused: the
        state at one applied index is the same whoever took it)."""
        return os.path.isdir(path) and os.path.exists(path + _SIDECAR)

    def describe(self, info: CheckpointInfo, term: int, members: list, manifest: Optional[CheckpointManifest] = None,
                 prune: bool = True) -> CheckpointMeta:
        """Compute the manifest of a taken checkpoint unless given (reads only the files that no
        described checkpoint shares with it: see :meth:`known_crcs`), write the sidecar durably,
        prune the oldest (unless ``prune`` is False: the caller calls :meth:`prune` later), and
        return its meta."""
        manifest = manifest or build_manifest(info.path, self.known_crcs(exclude=info.path),
                                              summed=getattr(info, "crcs", None))
        blob = manifest.to_bytes()
        side = msgpack.packb({"term": term, "members": encode_members(list(members)), "manifest": blob},
                             use_bin_type=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(side)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, info.path + _SIDECAR)
        fsync_dir(self.directory)
        meta = CheckpointMeta(info.path, info.applied_index, term, list(members), blob)
        log.info("saved snapshot %s (%d bytes, %d members)", os.path.basename(info.path), meta.size, len(members))
        if prune:
            self.prune(keep_path=info.path)
        return meta

    def known_crcs(self, exclude: str = "") -> dict:
        """:func:`~.kv_checkpoint.file_key` -> CRC-32 of the SST files of every described
        checkpoint (but ``exclude``), from their manifests: a new checkpoint hard-links most of
        them, and need not read them again. Only files still there with their manifest's size
        count (a stat each; the sidecars are a few kB)."""
        known: dict = dict(self.warmer.known()) if self.warmer is not None else {}
        known.update(self._manifest_crcs(exclude))
        return known

    def _manifest_crcs(self, exclude: str = "") -> dict:
        # Reads the sidecars directly, not through list(): listing checkpoints deletes
        # ``.partial`` leftovers, and this runs while the FSM may be taking the next checkpoint
        # (a ``.partial`` until the snapshotter finishes it) and on the background thread.
        known: dict = {}
        try:
            names = os.listdir(self.directory)
        except OSError:
            return known
        for name in names:
            path = os.path.join(self.directory, name)
            if not name.endswith(_SIDECAR) or path[:-len(_SIDECAR)] == exclude:
                continue
            ckpt = path[:-len(_SIDECAR)]
            try:
                with open(path, "rb") as f:
                    files = CheckpointManifest.from_bytes(msgpack.unpackb(f.read(), raw=False)["manifest"]).files
            except (OSError, ValueError, KeyError, TypeError, CheckpointError):
                continue  # being written or deleted: its files are summed again if needed
            for fi in files:
                if not reusable(fi.name):
                    continue
                try:
                    st = os.stat(os.path.join(ckpt, fi.name))
                except OSError:
                    continue
                if st.st_size == fi.size:
                    known[file_key(st)] = fi.crc32
        return known

    def warm_from(self, live_dir: str, list_files: Callable[[], list]) -> None:
        """Sum the SST files of the live DB in ``live_dir`` in the background as they appear
        (``list_files``: RocksDB's live files as (name, size), ``KvStore.sst_files``), so that
        :meth:`describe` finds them known (storage/crc_warmer.py). :meth:`close` stops it."""
        if self.warmer is None:
            self.warmer = CrcWarmer(live_dir, list_files, self._manifest_crcs)
            self.warmer.start()

    def close(self) -> None:
        """Stop the background summing, if :meth:`warm_from` started it."""
        if self.warmer is not None:
            self.warmer.stop()
            self.warmer = None

    def prune(self, keep_path: str) -> None:
        """Delete the described checkpoints beyond the newest ``keep`` (never ``keep_path``).
        Deleting one is thousands of unlinks at 10M keys (60-70 ms), so the snapshotter calls
        this after it announced the new snapshot, not before."""
        for info in list_checkpoints(self.directory, clean=False)[self.keep:]:
            if info.path != keep_path:
                log.info("deleting old snapshot %s", os.path.basename(info.path))
                try:
                    os.unlink(info.path + _SIDECAR)
                except FileNotFoundError:
                    pass
                shutil.rmtree(info.path, ignore_errors=True)

    def list(self) -> list[CheckpointMeta]:
        """Every described checkpoint, newest first (an unreadable sidecar is logged, left out)."""
        out = []
        for info in list_checkpoints(self.directory, clean=False):
            try:
                with open(info.path + _SIDECAR, "rb") as f:
                    side = msgpack.unpackb(f.read(), raw=False)
                out.append(CheckpointMeta(info.path, info.applied_index, int(side["term"]),
                                          decode_members(side["members"]), side["manifest"]))
            except FileNotFoundError:
                continue
            except (OSError, ValueError, KeyError, TypeError, FormatError, CheckpointError) as e:
                log.warning("ignoring snapshot %s: %s", os.path.basename(info.path), e)
        return out

    def newest(self) -> Optional[CheckpointMeta]:
        """The newest described checkpoint, or None."""
        metas = self.list()
        return metas[0] if metas else None

    def open_verified(self, meta: CheckpointMeta) -> str:
        """Check every file against the manifest's sizes and CRC-32s; return the checkpoint's
        directory. Raises CheckpointError (a damaged checkpoint is never streamed)."""
        manifest = CheckpointManifest.from_bytes(meta.manifest)
        for fi in manifest.files:
            crc, size = 0, 0
            try:
                with open(os.path.join(meta.path, fi.name), "rb") as f:
                    while True:
                        block = f.read(1 << 20)
                        if not block:
                            break
                        crc = zlib.crc32(block, crc)
                        size += len(block)
            except OSError as e:
                raise CheckpointError(f"snapshot {os.path.basename(meta.path)}: {e}") from None
            if (size, crc) != (fi.size, fi.crc32):
                raise CheckpointError(f"snapshot {os.path.basename(meta.path)} is corrupt: {fi.name} does not "
                                      "match its checksum")
        return meta.path

    def check_sizes(self, meta: CheckpointMeta) -> str:
        """Check that every file of ``meta`` is there with its manifest's size (no read; the
        CRC-32s are checked as the stream is read: :class:`StreamCheck`); return its
        directory. Raises CheckpointError."""
        manifest = CheckpointManifest.from_bytes(meta.manifest)
        for fi in manifest.files:
            try:
                size = os.stat(os.path.join(meta.path, fi.name)).st_size
            except OSError as e:
                raise CheckpointError(f"snapshot {os.path.basename(meta.path)}: {e}") from None
            if size != fi.size:
                raise CheckpointError(f"snapshot {os.path.basename(meta.path)} is corrupt: {fi.name} has "
                                      f"{size} bytes, its manifest says {fi.size}")
        return meta.path

    def remove(self, meta: CheckpointMeta) -> None:
        """Delete a damaged checkpoint (sidecar first: a half-deleted one is never listed)."""
        log.warning("deleting damaged snapshot %s", os.path.basename(meta.path))
        try:
            os.unlink(meta.path + _SIDECAR)
        except FileNotFoundError:
            pass
        fsync_dir(self.directory)
        shutil.rmtree(meta.path, ignore_errors=True)

    def newest_verified(self, min_index: int = 0) -> Optional[CheckpointMeta]:
        """The newest checkpoint at ``min_index`` or later whose files all match its manifest and
        that opens at its index; damaged ones met on the way are deleted (an older good one, or
        the leader's, replaces them). None if there is none."""
        for meta in self.list():
            if meta.last_index < min_index:
                break
            try:
                self.open_verified(meta)
                self.check_opens(meta)
                return meta
            except CheckpointError as e:
                log.warning("%s", e)
                self.remove(meta)
        return None

    @staticmethod
    def check_opens(meta: CheckpointMeta) -> None:
        """Open the checkpoint's DB read-only (replaying its WAL files) and check that it is at
        its index. Raises CheckpointError. Whole files with the right CRC-32s can still make a
        DB that does not open: a MANIFEST naming a file the checkpoint lacks, which builds before
        storage/rocks_manifest.py could write."""
        name = os.path.basename(meta.path)
        try:
            applied = verify_db(meta.path)
        except StorageError as e:
            raise CheckpointError(f"snapshot {name} does not open: {e}") from None
        if applied != meta.last_index:
            raise CheckpointError(f"snapshot {name} opens at index {applied}")

    @staticmethod
    def read(meta: CheckpointMeta, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes of ``meta``'s stream from ``offset``. Raises OSError if a file
        went away (pruned under a transfer)."""
        parts: list = []  # joined once at the end (a chunk inside one file is that file's read, not copied)
        got = 0
        head = meta.header()
        if offset < len(head):
            parts.append(head[offset:offset + length])
            got = len(parts[0])
        for start, end, name in meta._layout:
            if got >= length:
                break
            pos = offset + got
            if pos >= end or pos < start:
                continue
            want = min(length - got, end - pos)
            with open(os.path.join(meta.path, name), "rb") as f:
                f.seek(pos - start)
                data = f.read(want)
            if len(data) < want:
                raise OSError(f"{name} in {meta.path} is shorter than its manifest says")
            parts.append(data)
            got += want
        return parts[0] if len(parts) == 1 else b"".join(parts)  # b"" past the end


class StreamCheck:
    """The sender's check of a checkpoint as its stream is read: each file's CRC-32 is summed
    from the bytes read for sending, and compared with the manifest's before the chunk that
    holds the file's last byte goes out; so a damaged checkpoint is never streamed whole,
    without a full pass over it before the first chunk. Reads behind what was checked (a
    resend) are not summed again; a read beyond it (a stream resumed mid-way) has the gap read
    from the files first."""

    def __init__(self, meta: CheckpointMeta) -> None:
        self.meta = meta
        self.upto = _HEAD.size + len(meta.manifest)  # stream offset checked so far
        self._crc = 0  # of the current file's bytes before ``upto``
        self._crcs = {fi.name: fi.crc32 for fi in CheckpointManifest.from_bytes(meta.manifest).files}

    def check(self, offset: int, data: bytes) -> None:
        """Check the stream's bytes ``data`` at ``offset`` (just read, about to be sent).
        Raises CheckpointError for a file that does not match its manifest, OSError if one
        went away."""
        while self.upto < offset:  # a gap: read it (bounded pieces)
            gap = CheckpointStore.read(self.meta, self.upto, min(offset - self.upto, 4 << 20))
            if not gap:
                raise OSError(f"nothing to read at offset {self.upto}")
            self._feed(memoryview(gap))
        end = offset + len(data)
        if end > self.upto:
            self._feed(memoryview(data)[self.upto - offset:])

    def _feed(self, data: memoryview) -> None:
        pos, i = self.upto, 0
        for start, end, name in self.meta._layout:
            if end < pos or (end == pos and start < pos):
                continue  # a file checked already
            take = min(end - pos, len(data) - i)
            if take > 0:
                self._crc = zlib.crc32(data[i:i + take], self._crc)
                i += take
                pos += take
            if pos == end:  # the file is whole: compare
                if self._crc != self._crcs[name]:
                    raise CheckpointError(f"snapshot {os.path.basename(self.meta.path)} is corrupt: {name} does "
                                          "not match its checksum")
                self._crc = 0
            if i >= len(data):
                break
        self.upto = pos


class StreamReceiver:
    """Rebuilds a checkpoint from its stream (bytes arrive in order, from offset 0) in
    ``staging``, with :class:`CheckpointReceiver`'s checks and a size cap."""

    def __init__(self, staging: str, max_bytes: int = MAX_RECEIVED_BYTES) -> None:
        self.staging = staging
        self.max_bytes = max_bytes
        self._head = bytearray()
        self._manifest: Optional[CheckpointManifest] = None
        self._rx: Optional[CheckpointReceiver] = None
        self._layout: list = []
        self.received = 0

    def feed(self, data: bytes) -> None:
        """The next bytes of the stream. Raises CheckpointError on a bad stream."""
        self.received += len(data)
        if self._rx is None:
            self._head += data
            if len(self._head) < _HEAD.size:
                return
            magic, mlen = _HEAD.unpack_from(self._head)
            if magic != MAGIC or mlen > MAX_MANIFEST_BYTES:
                raise CheckpointError("not a checkpoint stream (bad magic or manifest length)")
            if len(self._head) < _HEAD.size + mlen:
                return
            blob = bytes(self._head[_HEAD.size:_HEAD.size + mlen])
            self._manifest = CheckpointManifest.from_bytes(blob)
            free = shutil.disk_usage(os.path.dirname(os.path.abspath(self.staging))).free
            cap = min(self.max_bytes, free)
            self._rx = CheckpointReceiver(self.staging, self._manifest, cap)
            pos = _HEAD.size + mlen
            for fi in self._manifest.files:
                self._layout.append((pos, pos + fi.size, fi.name))
                pos += fi.size
            rest = bytes(self._head[_HEAD.size + mlen:])
            self._head = bytearray()
            self._write(_HEAD.size + mlen, rest)
            return
        self._write(self.received - len(data), data)

    def _write(self, offset: int, chunk: bytes) -> None:
        data: Any = memoryview(chunk)  # slices of a chunk are views, not copies
        for start, end, name in self._layout:
            if end == start and start <= offset + len(data) and start >= offset:
                self._rx.write(FileChunk(name, 0, b""))
                continue
            lo, hi = max(start, offset), min(end, offset + len(data))
            if lo < hi:
                self._rx.write(FileChunk(name, lo - start, data[lo - offset:hi - offset]))

    def finish(self) -> tuple[CheckpointInfo, CheckpointManifest]:
        """Check the whole checkpoint (sizes, CRCs, the DB opens at the manifest's index)."""
        if self._rx is None:
            raise CheckpointError("checkpoint stream ended before its manifest")
        return self._rx.finish(), self._manifest

    def adopt(self, store: CheckpointStore, term: int, members: list) -> CheckpointMeta:
        """Move the finished checkpoint into ``store`` as its snapshot at the manifest's index."""
        info, manifest = self.finish()
        dest = store.path_for(info.applied_index)
        if store.has(dest):  # we already hold this snapshot (taken here, or received before)
            held = next((m for m in store.list() if m.path == dest), None)
            try:  # what we return is used as checked (the role actor does not read it again)
                if held is not None:
                    store.open_verified(held)
                    self.discard()
                    return held
            except CheckpointError as e:
                log.warning("%s; keeping the one just received instead", e)
                store.remove(held)
        if os.path.isdir(dest):
            shutil.rmtree(dest)
        os.rename(info.path, dest)
        fsync_dir(store.directory)
        return store.describe(CheckpointInfo(dest, info.applied_index), term, members, manifest)

    def discard(self) -> None:
        """Delete what was received."""
        shutil.rmtree(self.staging, ignore_errors=True)


def stage_copy(src: str, dest: str) -> None:
    """Make ``dest`` a copy of checkpoint ``src`` to install as a live DB: SST files (immutable)
    hard-linked, the others (MANIFEST, CURRENT, OPTIONS, WAL, which RocksDB may rewrite) copied;
    fsynced."""
    if os.path.exists(dest):
        shutil.rmtree(dest)
    os.makedirs(dest)
    for name in os.listdir(src):
        s, d = os.path.join(src, name), os.path.join(dest, name)
        if name.endswith(".sst"):
            os.link(s, d)
        else:
            shutil.copyfile(s, d)
            with open(d, "rb") as f:
                os.fsync(f.fileno())
    fsync_dir(dest)
    fsync_dir(os.path.dirname(os.path.abspath(dest)))
