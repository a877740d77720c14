"""Checkpoints of the key-value DB: taking them, keeping the newest N, and streaming their files.

A checkpoint is a directory ``ckpt-<applied index, 20 digits>`` holding a RocksDB checkpoint
(hard links to the live DB's immutable SST files, plus copies of its small MANIFEST, OPTIONS,
CURRENT and WAL files) and the file ``RAFTKV-CHECKPOINT`` (msgpack ``{"applied_index": N,
"format": 1}``), so that listing checkpoints needs no DB open. It is built under
``<name>.partial`` and renamed into place (parent fsynced): a crash leaves no half checkpoint
under a real name, and :func:`list_checkpoints` deletes ``.partial`` leftovers.

Streaming (InstallSnapshot): the sender builds a :class:`CheckpointManifest` (each file's name,
size and CRC-32, read once), sends it, then :func:`iter_chunks` from any (file, offset) resume
point; the receiver (:class:`CheckpointReceiver`) writes the chunks into a staging directory
with size caps, checks sizes and checksums and that the DB opens at the manifest's index, and
hands the directory to :func:`raftkv.storage.kv_install.install`.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import zlib
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import msgpack
import rocksdict

from .kv_db import KV_FORMAT_VERSION
from .kv_install import fsync_dir, verify_db
from .log_store import StorageError

log = logging.getLogger("storage.kv")

INFO_FILE = "RAFTKV-CHECKPOINT"
CHUNK_SIZE = 1 << 20
MAX_FILES = 100_000  # a sanity bound on a received manifest
_NAME = re.compile(r"^ckpt-(\d{20})$")
_PARTIAL = ".partial"
_SAFE_FILE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")  # no path separators, no "..", no dotfiles


class CheckpointError(StorageError):
    """A received checkpoint that cannot be used: a file not in its manifest, a chunk beyond a
    file's size or out of order, a size cap exceeded, a checksum mismatch, or a DB that does not
    open at the manifest's applied index."""


@dataclass
class CheckpointInfo:
    """A checkpoint directory and the applied index its state is at."""

    path: str
    applied_index: int


@dataclass
class PendingCheckpoint(CheckpointInfo):
    """A checkpoint whose state is fixed (the applying thread switched the memtable at
    ``applied_index``) but whose files are still to be assembled by ``build(partial_dir,
    extra)`` (``extra``: name -> bytes of more files to write there; all synced, and the
    directory, when it returns), off the applying thread (storage/kv_live_checkpoint.py);
    :func:`finish_checkpoint` does it."""

    build: Optional[Callable[[str, dict], None]] = None
    # file_key -> CRC-32 of files ``build`` summed (the WAL files it links: summed while they are
    # fsynced, instead of after), for :func:`build_manifest`'s ``summed``
    crcs: dict = field(default_factory=dict)


@dataclass
class FileInfo:
    """One file of a checkpoint: name (no directory part), size in bytes, CRC-32."""

    name: str
    size: int
    crc32: int


@dataclass
class CheckpointManifest:
    """What a sender announces before streaming a checkpoint: its applied index and files."""

    applied_index: int
    files: list[FileInfo] = field(default_factory=list)

    def total_bytes(self) -> int:
        """The sum of the files' sizes."""
        return sum(f.size for f in self.files)

    def to_bytes(self) -> bytes:
        """Encode for the wire: msgpack ``[applied_index, [[name, size, crc32], ...]]``."""
        return msgpack.packb([self.applied_index, [[f.name, f.size, f.crc32] for f in self.files]],
                             use_bin_type=True)

    @classmethod
    def from_bytes(cls, data: bytes) -> "CheckpointManifest":
        """Decode and check what :meth:`to_bytes` wrote. Raises CheckpointError."""
        try:
            index, files = msgpack.unpackb(data, raw=False)
            out = cls(int(index), [FileInfo(str(n), int(s), int(c)) for n, s, c in files])
        except Exception as e:  # msgpack and unpacking raise several unrelated types
            raise CheckpointError(f"bad checkpoint manifest: {e.__class__.__name__}: {e}") from None
        return out


@dataclass
class FileChunk:
    """``data`` is the bytes of file ``name`` from ``offset`` on."""

    name: str
    offset: int
    data: bytes


# ---------------------------------------------------------------- taking and keeping


def checkpoint_name(applied_index: int) -> str:
    """The directory name of a checkpoint at ``applied_index`` (names sort by index)."""
    return f"ckpt-{applied_index:020d}"


def take_checkpoint(db: "rocksdict.Rdict", applied_index: int, directory: str, finish: bool = True) -> CheckpointInfo:
    """Checkpoint the open DB ``db``, whose applied index is ``applied_index``, into
    ``directory`` (must not exist). Call it from the thread that applies batches, so that no
    batch lands between reading the index and taking the checkpoint.

    When this returns, the checkpoint is durable, and so is the live DB up to
    ``applied_index``: the flush wrote and synced its SST files and MANIFEST. So even though
    batches are never synced, a power cut can no longer take the live DB below this index, and
    the Raft log may drop its prefix up to it.

    With ``finish=False`` the checkpoint is left under ``<directory>.partial``: the caller has
    another thread call :func:`finish_checkpoint` (a few fsyncs the applying thread need not
    wait for)."""
    directory = os.path.abspath(directory)
    if os.path.exists(directory):
        raise FileExistsError(directory)
    os.makedirs(os.path.dirname(directory), exist_ok=True)
    partial = directory + _PARTIAL
    if os.path.exists(partial):
        shutil.rmtree(partial)
    # Flush the memtable first: rocksdict's flush releases the GIL, its create_checkpoint (which
    # flushes too) does not; measured with 400k keys in the memtable: 375 ms with every other
    # thread of the node frozen, against a 3 ms checkpoint after a GIL-free flush. Only the
    # calling thread writes, so nothing reaches the memtable in between.
    db.flush(True)
    rocksdict.Checkpoint(db).create_checkpoint(partial)
    info = CheckpointInfo(directory, applied_index)
    if finish:
        finish_checkpoint(info)
    return info


def finish_checkpoint(info: CheckpointInfo, sync_parent: bool = True) -> None:
    """Assemble a :class:`PendingCheckpoint`'s files, write the info file of a checkpoint taken
    with ``finish=False`` and move it from ``.partial`` to its name, durably (a crash before
    leaves a ``.partial``, deleted at start-up). Does nothing if it is in place already.

    ``sync_parent=False`` leaves the rename to be made durable by the caller's next fsync of
    the parent directory (the snapshot store's :meth:`describe` fsyncs it for the sidecar
    anyway): until then a crash may lose the name, which leaves a checkpoint never described,
    deleted at start-up, as a crash before the rename does."""
    directory = os.path.abspath(info.path)
    partial = directory + _PARTIAL
    info_file = {INFO_FILE: msgpack.packb({"applied_index": info.applied_index, "format": KV_FORMAT_VERSION})}
    synced = False
    if isinstance(info, PendingCheckpoint) and info.build is not None and not os.path.isdir(directory):
        build, info.build = info.build, None
        build(partial, info_file)  # raises CheckpointError if the state at the index is gone
        synced = True  # the build wrote the info file and synced the files and the directory
    if os.path.isdir(directory) or not os.path.isdir(partial):
        return
    if not synced:
        with open(os.path.join(partial, INFO_FILE), "wb") as f:
            f.write(info_file[INFO_FILE])
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(partial)
    os.rename(partial, directory)
    if sync_parent:
        fsync_dir(os.path.dirname(directory))


def read_info(directory: str) -> CheckpointInfo:
    """The applied index recorded beside a checkpoint (no DB open). Raises CheckpointError."""
    try:
        with open(os.path.join(directory, INFO_FILE), "rb") as f:
            info = msgpack.unpackb(f.read(), raw=False)
        return CheckpointInfo(directory, int(info["applied_index"]))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"checkpoint {directory}: unreadable {INFO_FILE}: {e}") from None


def list_checkpoints(parent: str, clean: bool = True) -> list[CheckpointInfo]:
    """The checkpoints in ``parent``, newest (highest index) first; deletes leftovers of a
    checkpoint a crash interrupted unless ``clean`` is False (a running node lists with False:
    a ``.partial`` there may be the checkpoint its FSM is taking right now)."""
    found: list = []
    if not os.path.isdir(parent):
        return found
    for name in os.listdir(parent):
        path = os.path.join(parent, name)
        if name.endswith(_PARTIAL):
            if not clean:
                continue
            log.info("removing leftover partial checkpoint %s", name)
            shutil.rmtree(path, ignore_errors=True)
        elif _NAME.match(name):
            found.append(read_info(path))
    found.sort(key=lambda c: c.applied_index, reverse=True)
    return found


# ---------------------------------------------------------------- sending


FileKey = tuple  # (st_dev, st_ino, st_size, st_mtime_ns) of a file: see build_manifest's ``known``


def file_key(st: os.stat_result) -> FileKey:
    """What identifies one immutable file on this machine: its inode (hard links share it) with
    its size and modification time. The time matters for a key taken earlier (the background
    summing, storage/crc_warmer.py): once that file is deleted its inode may be reused, but not
    with the same modification time to the nanosecond."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def reusable(name: str) -> bool:
    """Whether a checkpoint file's CRC-32 may be carried over from another checkpoint that
    hard-links the same inode: RocksDB's SST files are written once and never changed in place
    (the small MANIFEST, CURRENT, OPTIONS and WAL files are copied per checkpoint, and summed)."""
    return name.endswith(".sst")


def build_manifest(directory: str, known: Optional[dict] = None, summed: Optional[dict] = None) -> CheckpointManifest:
    """Name, size and CRC-32 of every file of a checkpoint, sorted by name so that sender and
    receiver agree on the order.

    Each file is read once to sum it, except an SST file found in ``known``
    (:func:`file_key` -> CRC-32, from the manifests of checkpoints that link the same inode):
    checkpoints share most of their SST files, so a new one reads only the files written since
    the last (constant time instead of a pass over the whole state). A carried-over CRC-32 is
    the one computed when the file was first summed, so a file damaged on disk since then is
    still caught where every CRC-32 is checked (before a file is streamed: StreamCheck; before a
    local checkpoint is restored: CheckpointStore.open_verified). ``summed`` (:func:`file_key`
    -> CRC-32) holds files of this checkpoint summed while it was built, of any kind: a file whose
    key no longer matches (changed since) is read again."""
    info = read_info(directory)
    files = []
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            continue
        crc = summed.get(file_key(st)) if summed else None
        if crc is None and known is not None and reusable(name):
            crc = known.get(file_key(st))
        if crc is not None:
            files.append(FileInfo(name, st.st_size, crc))
            continue
        crc = 0
        size = 0
        with open(path, "rb") as f:
            while True:
                block = f.read(CHUNK_SIZE)
                if not block:
                    break
                crc = zlib.crc32(block, crc)
                size += len(block)
        files.append(FileInfo(name, size, crc))
    return CheckpointManifest(info.applied_index, files)


def iter_chunks(directory: str, manifest: CheckpointManifest, start: Optional[tuple[str, int]] = None,
                chunk_size: int = CHUNK_SIZE) -> Iterator[FileChunk]:
    """The checkpoint's files as chunks of at most ``chunk_size`` bytes, in manifest order,
    from ``start`` = (file name, offset) (a receiver's :meth:`CheckpointReceiver.resume_point`)
    or from the beginning. An empty file is sent as one empty chunk."""
    names = [f.name for f in manifest.files]
    first, offset = (0, 0) if start is None else (names.index(start[0]), start[1])
    for fi in manifest.files[first:]:
        with open(os.path.join(directory, fi.name), "rb") as f:
            f.seek(offset)
            pos = offset
            if fi.size == 0:
                yield FileChunk(fi.name, 0, b"")
            while pos < fi.size:
                data = f.read(min(chunk_size, fi.size - pos))
                if not data:
                    raise CheckpointError(f"checkpoint file {fi.name} is shorter than its manifest says")
                yield FileChunk(fi.name, pos, data)
                pos += len(data)
        offset = 0


# ---------------------------------------------------------------- receiving


class CheckpointReceiver:
    """Writes a streamed checkpoint into ``staging`` (emptied first), checking every chunk
    against the manifest: known file name, in order (a repeated chunk is ignored, a gap is an
    error), within the file's size; the manifest's total must be within ``max_bytes``."""

    def __init__(self, staging: str, manifest: CheckpointManifest, max_bytes: int) -> None:
        if len(manifest.files) > MAX_FILES:
            raise CheckpointError(f"checkpoint manifest lists {len(manifest.files)} files (max {MAX_FILES})")
        total = manifest.total_bytes()
        if total > max_bytes:
            raise CheckpointError(f"checkpoint of {total} bytes exceeds the cap of {max_bytes} bytes")
        seen = set()
        for fi in manifest.files:
            if not _SAFE_FILE.match(fi.name) or fi.name in seen or fi.size < 0:
                raise CheckpointError(f"checkpoint manifest: bad file entry {fi.name!r}")
            seen.add(fi.name)
        if INFO_FILE not in seen:
            raise CheckpointError(f"checkpoint manifest has no {INFO_FILE}")
        self.staging = os.path.abspath(staging)
        self.manifest = manifest
        self._files = {fi.name: fi for fi in manifest.files}
        self._have = {fi.name: 0 for fi in manifest.files}
        self._crc = {fi.name: 0 for fi in manifest.files}
        if os.path.exists(self.staging):
            shutil.rmtree(self.staging)
        os.makedirs(self.staging)

    def write(self, chunk: FileChunk) -> None:
        """Store one chunk. Raises CheckpointError for a chunk the manifest does not allow."""
        fi = self._files.get(chunk.name)
        if fi is None:
            raise CheckpointError(f"chunk of {chunk.name!r}, which is not in the manifest")
        have = self._have[chunk.name]
        end = chunk.offset + len(chunk.data)
        if end > fi.size:
            raise CheckpointError(f"chunk of {chunk.name} ends at {end}, beyond its size {fi.size}")
        path = os.path.join(self.staging, chunk.name)
        if chunk.offset > have:
            raise CheckpointError(f"chunk of {chunk.name} at {chunk.offset}: bytes from {have} are missing")
        if end <= have and not (fi.size == 0 and not os.path.exists(path)):
            return  # a resent chunk
        data = chunk.data[have - chunk.offset:]
        with open(path, "r+b" if os.path.exists(path) else "wb") as f:
            f.seek(have)
            f.write(data)
            if have + len(data) == fi.size:
                f.flush()
                os.fsync(f.fileno())
        self._have[chunk.name] = have + len(data)
        self._crc[chunk.name] = zlib.crc32(data, self._crc[chunk.name])

    def resume_point(self) -> Optional[tuple[str, int]]:
        """(file name, offset) the sender should continue from; None once every file is whole."""
        for fi in self.manifest.files:
            have = self._have[fi.name]
            if have < fi.size or (fi.size == 0 and not os.path.exists(os.path.join(self.staging, fi.name))):
                return fi.name, have
        return None

    def finish(self) -> CheckpointInfo:
        """Check that every file is whole with the right CRC-32 and that the DB opens at the
        manifest's applied index; fsync the directory; return the staged checkpoint (ready for
        :func:`raftkv.storage.kv_install.install`). Raises CheckpointError otherwise."""
        missing = self.resume_point()
        if missing is not None:
            raise CheckpointError(f"checkpoint incomplete: {missing[0]} has only {missing[1]} bytes")
        for fi in self.manifest.files:
            if self._crc[fi.name] != fi.crc32:
                raise CheckpointError(f"checkpoint file {fi.name}: checksum mismatch")
        fsync_dir(self.staging)
        recorded = read_info(self.staging).applied_index
        try:
            applied = verify_db(self.staging)
        except StorageError as e:
            raise CheckpointError(f"received checkpoint does not open: {e}") from None
        if not applied == recorded == self.manifest.applied_index:
            raise CheckpointError(f"received checkpoint is at index {applied}, its info file says {recorded}, "
                                  f"the manifest {self.manifest.applied_index}")
        return CheckpointInfo(self.staging, applied)
