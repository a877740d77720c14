"""Migrating a data directory of the previous format (the FSM as a dict, snapshots as files
``snapshots/snap-*.snap`` holding its serialised state) to the key-value store, on first start.

The newest valid old snapshot is loaded into the (empty) KvStore, its applied index written
last (so that a crash midway leaves the store at index 0 and the migration runs again), then a
checkpoint is taken (which makes the store durable at that index and becomes the snapshot to
stream) and the old snapshot files are deleted. The log is then replayed as usual.
"""
from __future__ import annotations

import glob
import logging
import os
import time
from typing import Optional

from raftkv.storage.checkpoint_store import CheckpointStore
from raftkv.storage.format import encode_members, pack
from raftkv.storage.kv_store import ExpireSession, KvStore, Put, SaveResult, TouchSession
from raftkv.storage.snapshot_store import SnapshotMeta, SnapshotStore

from .db_state import META_MEMBERS, META_TERM
from .fsm import KVState

log = logging.getLogger("actors.node")

_BATCH = 10_000


def legacy_snapshots_present(snap_dir: str) -> bool:
    """Whether ``snap_dir`` holds snapshot files of the previous format."""
    return bool(glob.glob(os.path.join(snap_dir, "snap-*.snap")))


def load_legacy_snapshot(snap_dir: str, keep: int) -> Optional[tuple[SnapshotMeta, KVState]]:
    """The newest valid old snapshot and its state (None if every one is corrupt)."""
    newest = SnapshotStore(snap_dir, keep=max(keep, 1)).newest_valid()
    if newest is None:
        return None
    meta, body = newest
    return meta, KVState.restore(body)


def migrate_legacy(node_id: str, legacy: tuple[SnapshotMeta, KVState], kv: KvStore, snapshots: CheckpointStore) -> None:
    """Load an old snapshot's state into the empty ``kv``, checkpoint it, delete the old files."""
    meta, st = legacy
    t0 = time.monotonic()
    ops: list = []
    for key, value in st.data.items():
        rec = st.record(key)
        assert rec is not None
        ops.append(Put(key, value, rec.create_revision, rec.mod_revision, rec.version))
        if len(ops) >= _BATCH:
            kv.apply_batch(ops, 0)  # index 0 until the last batch: a crash midway migrates again
            ops = []
    for cid, sess in st.sessions.items():
        for seq, res in sorted(sess.results.items()):
            ops.append(SaveResult(cid, seq, *res))
        ops.append(TouchSession(cid, sess.last_index))
    for cid, at in st.expired.items():
        ops.append(ExpireSession(cid, at))
    kv.apply_batch(ops, meta.last_index, {META_TERM: pack(meta.last_term),
                                          META_MEMBERS: encode_members(list(meta.members))})
    info = kv.checkpoint(snapshots.path_for(meta.last_index))
    snapshots.describe(info, meta.last_term, list(meta.members))
    for path in glob.glob(os.path.join(snapshots.directory, "snap-*.snap")):
        os.unlink(path)
    log.warning("%s: migrated a data directory of the previous format: snapshot at index %d (%d keys) loaded "
                "into the key-value store in %.2fs; old snapshot files removed", node_id, meta.last_index,
                len(st.data), time.monotonic() - t0)
