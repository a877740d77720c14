"""A checkpoint of the live key-value DB built in Python, without holding the GIL or the applier.

rocksdict's ``Checkpoint.create_checkpoint`` holds the GIL for the whole call: besides the hard
links it copies and fsyncs MANIFEST, CURRENT and the WAL and fsyncs the directory (4-5 fsyncs,
1 ms on a quiet disk, 13-31 ms on this shared one), and every thread of the node (the Raft log's
writer, the peers' and clients' I/O) stops meanwhile; and it must run on the thread that applies
batches (to be at an applied index), so the node's writes wait for its flush too (kvbench
snapshot, 1M keys: write p99 8.8 ms without a snapshot, ~99 ms during one).

Here the applying thread only switches the memtable (``flush(wait=False)``: RocksDB starts a new
memtable and WAL file at once and flushes the old one in its background): from then on, the
batches up to the applied index are exactly the memtables older than the new WAL file's. Another
thread (the snapshotter's) waits until they are on disk and then assembles the checkpoint with
system calls that release the GIL:

- hard links to the live SST files (:meth:`rocksdict.Rdict.live_files`),
- a copy of the MANIFEST up to its current size and a CURRENT naming it (both fsynced),
- no WAL: everything the checkpoint holds is in its SST files.

It is consistent only if nothing changed the DB's files meanwhile, so it is taken once the
switched memtable is flushed and while no newer memtable was switched, and that state (CURRENT,
the MANIFEST's size, the live files, the newest WAL) is read before and after the copy: if
anything differs the copy is thrown away and taken again. A compaction that runs meanwhile is
not waited for: until it finishes its inputs are live files and its outputs are not, and when it
finishes its MANIFEST record (written before it deletes its inputs) changes the MANIFEST's size,
which the check catches (so does a link that finds an input already gone). Waiting for it instead
made a snapshot whose own flush started an L0 compaction wait that whole compaction: seconds at
10M keys (kvbench snapshot: 9.9 s). A later memtable switch (the memtable filled up, or a backup
flushed it) means the state at the index asked for no longer exists on disk alone:
:class:`~.kv_checkpoint.CheckpointError`, and the caller takes a snapshot later.

Durability: the SST files and the MANIFEST records were synced by RocksDB when written (the flush
of the switched memtable included); the copied MANIFEST and CURRENT are fsynced here, and the
caller fsyncs the directory and renames it into place (:func:`~.kv_checkpoint.finish_checkpoint`).
"""
from __future__ import annotations

import os
import re
import shutil
import time
from typing import NamedTuple

import rocksdict

from .kv_checkpoint import CheckpointError

_WAL = re.compile(r"^(\d+)\.log$")
_POLL_S = 0.002
MAX_COPIES = 5  # copies thrown away because the files changed meanwhile, before giving up
WAIT_S = 120.0  # for the switched memtable's flush (slow under a disk stall)


def newest_wal(db_dir: str) -> int:
    """The number of the newest WAL file in ``db_dir`` (the active memtable's), 0 if none."""
    best = 0
    for name in os.listdir(db_dir):
        m = _WAL.match(name)
        if m is not None:
            best = max(best, int(m.group(1)))
    return best


class _FileState(NamedTuple):
    manifest: str
    manifest_size: int
    live: tuple
    wal: int


def _flushing(db: "rocksdict.Rdict") -> bool:
    """A flush is running or a switched memtable is waiting for its flush (a compaction may run:
    the before/after check of :func:`link_checkpoint` catches one that finishes)."""
    prop = db.property_int_value
    return bool(prop("rocksdb.num-immutable-mem-table") or prop("rocksdb.num-running-flushes"))


def _file_state(db: "rocksdict.Rdict", db_dir: str) -> _FileState:
    with open(os.path.join(db_dir, "CURRENT"), "rb") as f:
        manifest = f.read().decode().strip()
    if not manifest.startswith("MANIFEST-") or "/" in manifest:
        raise CheckpointError(f"unexpected CURRENT in {db_dir}: {manifest!r}")
    size = os.stat(os.path.join(db_dir, manifest)).st_size
    live = tuple(sorted(str(f["name"]).lstrip("/") for f in db.live_files()))
    return _FileState(manifest, size, live, newest_wal(db_dir))


def _copy_prefix(src: str, dest: str, size: int) -> None:
    with open(src, "rb") as fin, open(dest, "wb") as fout:
        left = size
        while left > 0:
            block = fin.read(min(left, 1 << 20))
            if not block:
                raise CheckpointError(f"{src} is shorter than {size} bytes")
            fout.write(block)
            left -= len(block)
        fout.flush()
        os.fsync(fout.fileno())


def _write_synced(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _copy_once(db_dir: str, dest: str, st: _FileState) -> bool:
    """Link and copy the files of ``st`` into ``dest`` (emptied first); False if an SST file
    was deleted meanwhile (a compaction finished: take the copy again)."""
    if os.path.exists(dest):
        shutil.rmtree(dest)
    os.makedirs(dest)
    for name in st.live:
        try:
            os.link(os.path.join(db_dir, name), os.path.join(dest, name))
        except FileNotFoundError:
            return False
    _copy_prefix(os.path.join(db_dir, st.manifest), os.path.join(dest, st.manifest), st.manifest_size)
    _write_synced(os.path.join(dest, "CURRENT"), (st.manifest + "\n").encode())
    return True


def link_checkpoint(db: "rocksdict.Rdict", db_dir: str, dest: str, wal: int,
                    wait_s: float = WAIT_S) -> None:
    """Build in ``dest`` a checkpoint of the DB ``db`` (directory ``db_dir``) holding exactly the
    memtables older than WAL file number ``wal`` (:func:`newest_wal` read right after the
    applying thread switched the memtable). Waits for their flush, not for a running compaction.
    Raises CheckpointError if that state is gone (a newer memtable was flushed) or the flush did
    not end in ``wait_s``."""
    deadline = time.monotonic() + wait_s
    copies = 0
    try:
        while True:
            if _flushing(db):
                if time.monotonic() > deadline:
                    raise CheckpointError(f"the memtable of {db_dir} was not flushed in {wait_s:.0f} s")
                time.sleep(_POLL_S)
                continue
            before = _file_state(db, db_dir)
            if before.wal != wal:
                raise CheckpointError(f"the memtable of {db_dir} was switched again (WAL {before.wal}, "
                                      f"expected {wal}): the state asked for is gone")
            linked = _copy_once(db_dir, dest, before)
            if linked and not _flushing(db) and _file_state(db, db_dir) == before:
                return
            copies += 1
            if copies >= MAX_COPIES:
                raise CheckpointError(f"the files of {db_dir} kept changing during {copies} checkpoint copies")
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise

