"""A checkpoint of the live key-value DB built in Python, without holding the GIL or the applier.

rocksdict's ``Checkpoint.create_checkpoint`` holds the GIL for the whole call: besides the hard
links it copies and fsyncs MANIFEST, CURRENT and the WAL and fsyncs the directory (4-5 fsyncs,
1 ms on a quiet disk, 13-31 ms on this shared one), and every thread of the node (the Raft log's
writer, the peers' and clients' I/O) stops meanwhile; and it must run on the thread that applies
batches (to be at an applied index), so the node's writes wait for its flush too (kvbench
snapshot, 1M keys: write p99 8.8 ms without a snapshot, ~99 ms during one).

Here the applying thread only switches the memtable (``flush(wait=False)``: RocksDB starts a new
memtable and WAL file at once and flushes the old one in its background): from then on, the
batches up to the applied index are exactly the SST files plus the WAL files older than the new
one. Those WAL files are closed (RocksDB never writes to a WAL file again once it switched away
from it: WAL recycling, ``recycle_log_file_num``, is off in :func:`~.kv_db.kv_options`), so
another thread (the snapshotter's) assembles the checkpoint at once, without waiting for the
flush (0.46 s of a 0.48 s snapshot at 10M keys when it waited), with system calls that release
the GIL:

- hard links to the live SST files (:meth:`rocksdict.Rdict.live_files`),
- hard links to the WAL files older than the new one: opening the checkpoint replays them, as it
  does after a crash (RocksDB's own checkpoints carry the live WAL the same way when they do not
  flush). A WAL file whose memtable was already flushed is skipped on open (the MANIFEST records
  which WAL files it still needs),
- a copy of the MANIFEST up to its current size and a CURRENT naming it (both fsynced), and the
  caller's info file.

It is consistent only if nothing changed the DB's files meanwhile, so that state (CURRENT, the
MANIFEST's size, the live SST files, the WAL files) is read before and after the copy: if
anything differs the copy is thrown away and taken again. The live files and the MANIFEST's size
cannot be read at one instant from Python (RocksDB writes a flush's or compaction's MANIFEST
record before ``live_files`` lists its output), so the SST files linked are those the MANIFEST
copy itself names (:mod:`.rocks_manifest`) as well as the listed ones. The switched memtable's
flush finishing meanwhile is such a change (its MANIFEST record; then RocksDB deletes the WAL
file, which a link may also find gone), and so is a compaction finishing (its MANIFEST record is
written before it deletes its inputs); a running flush or compaction is not waited for: until it finishes, its
outputs are not live and the WAL files and inputs it replaces are. A later memtable switch (the
memtable filled up, or a backup flushed it) means the state at the index asked for may no longer
exist on disk alone: :class:`~.kv_checkpoint.CheckpointError`, and the caller takes a snapshot
later.

Durability: the batches are written unsynced, so the linked WAL files are fsynced here (the same
inodes as the live DB's: this makes the live DB durable up to the index too, so the Raft log may
be compacted up to it once the checkpoint is finished), and the live DB's directory (their
names). The SST files and the MANIFEST records were synced by RocksDB when written; the copied
MANIFEST, CURRENT, the info file and the checkpoint's directory are fsynced here, all these
fsyncs at once (:func:`_run_all`), and the caller renames it into place
(:func:`~.kv_checkpoint.finish_checkpoint`).
"""
from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import threading
from typing import Callable, NamedTuple, Optional

import rocksdict

from .crc_warmer import WalSums, sum_file
from .kv_checkpoint import CheckpointError
from .kv_db import kv_options, open_db
from .kv_install import fsync_dir
from .log_store import StorageError
from .rocks_manifest import ManifestError, TableFiles, table_file_name

log = logging.getLogger("storage.kv")
_WAL = re.compile(r"^(\d+)\.log$")
MAX_COPIES = 5  # copies thrown away because the files changed meanwhile, before giving up


def _wal_files(db_dir: str) -> list[tuple[int, str]]:
    """(number, name) of the WAL files in ``db_dir``, oldest first."""
    return sorted((int(m.group(1)), m.group(0)) for m in map(_WAL.match, os.listdir(db_dir)) if m is not None)


def newest_wal(db_dir: str) -> int:
    """The number of the newest WAL file in ``db_dir`` (the active memtable's), 0 if none."""
    return max((n for n, _ in _wal_files(db_dir)), default=0)


class _FileState(NamedTuple):
    manifest: str
    manifest_size: int
    live: tuple  # the live SST files
    wals: tuple  # the WAL files older than the active one
    wal: int  # the active WAL file's number


def _file_state(db: "rocksdict.Rdict", db_dir: str, wal: int) -> _FileState:
    with open(os.path.join(db_dir, "CURRENT"), "rb") as f:
        manifest = f.read().decode().strip()
    if not manifest.startswith("MANIFEST-") or "/" in manifest:
        raise CheckpointError(f"unexpected CURRENT in {db_dir}: {manifest!r}")
    size = os.stat(os.path.join(db_dir, manifest)).st_size
    live = tuple(sorted(str(f["name"]).lstrip("/") for f in db.live_files()))
    found = _wal_files(db_dir)
    wals = tuple(name for n, name in found if n < wal)
    return _FileState(manifest, size, live, wals, max((n for n, _ in found), default=0))


def _copy_prefix(src: str, dest: str, size: int) -> None:
    """Copy the first ``size`` bytes of ``src`` to ``dest``, unsynced (:func:`_run_all` syncs it later)."""
    with open(src, "rb") as fin, open(dest, "wb") as fout:
        left = size
        while left > 0:
            block = fin.read(min(left, 1 << 20))
            if not block:
                raise CheckpointError(f"{src} is shorter than {size} bytes")
            fout.write(block)
            left -= len(block)


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_once(db_dir: str, dest: str, st: _FileState, extra: dict, tables: TableFiles) -> Optional[bool]:
    """Link and copy the files of ``st`` into ``dest`` (emptied first), and write ``extra`` (name
    -> bytes) there, all unsynced. False if an SST or WAL file was deleted meanwhile (a flush or
    compaction finished: take the copy again); None if the MANIFEST copy could not be read, so
    only the listed SST files were linked and the checkpoint must be opened to be trusted."""
    if os.path.exists(dest):
        shutil.rmtree(dest)
    os.makedirs(dest)
    manifest = os.path.join(dest, st.manifest)
    _copy_prefix(os.path.join(db_dir, st.manifest), manifest, st.manifest_size)
    # The copy may name an SST file that live_files did not list yet (rocks_manifest's docstring:
    # a flush's or compaction's record is written before its version is installed); it is on
    # disk already (RocksDB syncs an SST file before recording it), so it is linked too.
    named: Optional[set] = None
    try:
        named = {table_file_name(n) for n in tables.read(manifest)}
    except ManifestError as e:  # a RocksDB newer than this reader (rocksdict is not pinned)
        _warn_unread(db_dir, e)
    for name in sorted((named or set()).union(st.live)) + list(st.wals):
        try:
            os.link(os.path.join(db_dir, name), os.path.join(dest, name))
        except FileNotFoundError:
            return False
    _write(os.path.join(dest, "CURRENT"), (st.manifest + "\n").encode())
    for name, data in extra.items():
        _write(os.path.join(dest, name), data)
    return None if named is None else True


_warned: list = []


def _warn_unread(db_dir: str, e: ManifestError) -> None:
    if not _warned:  # once per process: every snapshot would say it again
        _warned.append(True)
        log.warning("cannot read the MANIFEST of %s (%s): each snapshot's checkpoint is opened to be "
                    "checked instead, which is slower; is rocksdict newer than this build knows?", db_dir, e)


def _check_opens(db_dir: str, dest: str) -> None:
    """Open the built checkpoint ``dest`` read-only (replaying its WAL files): the check when its
    MANIFEST could not be read."""
    try:
        open_db(dest, kv_options(cache_mb=8), read_only=True).close()
    except StorageError as e:
        raise CheckpointError(f"checkpoint of {db_dir} does not open: {e}") from None


def _sum_files(paths: list, out: dict, sums: Optional[WalSums] = None) -> None:
    """file_key -> CRC-32 of each of ``paths`` into ``out``, read on from the running sums of
    ``sums`` where they know the file. A file that changed while read is left out, and the
    manifest reads it again."""
    for path in paths:
        summed = sum_file(path, os.stat(path).st_size, prefix=sums.prefix if sums is not None else None)
        if summed is not None:
            out[summed[0]] = summed[1]


def _run_all(jobs: list) -> None:
    """Run each of ``jobs`` (no-argument callables: fsyncs, a CRC pass) on a thread of its own,
    the first on this one, and wait for all; re-raise the first error.

    Why together: the checkpoint needs 4-6 fsyncs (the WAL files, the MANIFEST copy, CURRENT,
    the info file, two directories). One after the other, each waits for its own journal commit
    (0.2-5 ms apiece on a quiet disk, 13-31 ms on this shared one under load); started together,
    their data is queued to the disk at once and fsyncs waiting together can share one ext4
    journal commit, so the time comes near the slowest one's (the WAL files': their data, ~1.4 ms
    per MB here). All of them still finish before the checkpoint is renamed into place and
    announced (docs/performance.md, round 10's snapshot section)."""
    errors: list = []

    def run(job: Callable[[], None]) -> None:
        try:
            job()
        except BaseException as e:  # re-raised below, on the caller's thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=(job,), name="kv-ckpt-sync") for job in jobs[1:]]
    for t in threads:
        t.start()
    try:
        if jobs:
            run(jobs[0])
    finally:
        for t in threads:
            t.join()
    if errors:
        raise errors[0]


def link_checkpoint(db: "rocksdict.Rdict", db_dir: str, dest: str, wal: int,
                    crcs: Optional[dict] = None, extra: Optional[dict] = None,
                    tables: Optional[TableFiles] = None, wal_sums: Optional[WalSums] = None) -> None:
    """Build in ``dest`` a checkpoint of the DB ``db`` (directory ``db_dir``) holding exactly the
    memtables older than WAL file number ``wal`` (:func:`newest_wal` read right after the
    applying thread switched the memtable): the live SST files and the older WAL files, durably
    (module docstring). Waits for no flush or compaction. Raises CheckpointError if that state
    is gone (a newer memtable was switched) or the files kept changing. With ``crcs``, the WAL
    files' CRC-32s go there (:func:`~.kv_checkpoint.file_key` -> CRC-32), summed on another
    thread while they are fsynced (both wait for the disk, not the GIL): the manifest then need
    not read up to a memtable's worth of WAL again. ``extra`` (name -> bytes) are files written
    into ``dest`` as well (the caller's info file). ``tables``: the DB's reader of its MANIFEST
    (:class:`~.rocks_manifest.TableFiles`), which reads on from the last checkpoint's copy.
    ``wal_sums``: the running CRC-32s of the DB's WAL files (:class:`~.crc_warmer.WalSums`). On
    return every file of ``dest`` and ``dest`` itself are synced (all fsyncs at once:
    :func:`_run_all`)."""
    copies = 0
    extra = extra or {}
    tables = tables or TableFiles()
    try:
        while True:
            try:
                before = _file_state(db, db_dir, wal)
                if before.wal != wal:
                    raise CheckpointError(f"the memtable of {db_dir} was switched again (WAL {before.wal}, "
                                          f"expected {wal}): the state asked for is gone")
                linked = _copy_once(db_dir, dest, before, extra, tables)
                if linked is not False and _file_state(db, db_dir, wal) == before:
                    break
            except FileNotFoundError:
                pass  # CURRENT named a MANIFEST that a new one replaced meanwhile (it rolls over at 1 MB)
            copies += 1
            if copies >= MAX_COPIES:
                raise CheckpointError(f"the files of {db_dir} kept changing during {copies} checkpoint copies")
        wals = [os.path.join(dest, name) for name in before.wals]
        # The linked WAL files are the live DB's inodes: their fsync makes the live DB durable up to
        # the index too. The SST files were synced by RocksDB when written; the rest was written here.
        jobs: list = [functools.partial(_fsync_file, p) for p in wals]
        jobs += [functools.partial(_fsync_file, os.path.join(dest, name))
                 for name in (before.manifest, "CURRENT", *extra)]
        jobs.append(functools.partial(fsync_dir, dest))
        if wals:
            jobs.append(functools.partial(fsync_dir, db_dir))  # the live DB's names of those WAL files
            if crcs is not None:
                jobs.append(functools.partial(_sum_files, wals, crcs, wal_sums))
        _run_all(jobs)
        if linked is None:
            _check_opens(db_dir, dest)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
