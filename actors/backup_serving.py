"""Serving ``kvclient backup`` from the leader: a checkpoint at one applied index, read in chunks.

The protocol rides on the client door's ordinary request (Op.BACKUP), stop-and-wait, so that
neither side ever holds more than one chunk:

1. ``backup`` with an empty key starts one. The leader registers it as a linearizable read
   (ReadIndex): once the FSM has applied the confirmed index, it takes a RocksDB checkpoint of
   its state right there, between two batches (:func:`take_backup`: hard links after a
   memtable flush), into ``<snapshots>/backup-<id>.tmp`` beside the node's snapshots. Every
   write acknowledged before the request arrived is in it, and writes go on meanwhile. The
   snapshotter (:class:`BackupServer`) sums its files up (the snapshot manifest) and answers
   ``{"backup": id, "index", "term", "size", "members", "node"}``.
2. ``backup`` with ``key`` = the id and ``seq`` = an offset reads up to ``limit`` (at most
   :data:`CHUNK_BYTES`) bytes of the checkpoint's snapshot stream (the InstallSnapshot stream:
   storage/checkpoint_store.py) from that node, whatever its role by then.
3. ``seq`` = the stream's size ends it: the checkpoint is deleted.

A backup nobody reads for :data:`IDLE_S` is deleted, at most :data:`MAX_BACKUPS` are kept at a
time (each pins SST files on disk), and the ``.tmp`` name makes a restarted node's snapshot store
delete leftovers. Backups need the RocksDB state (DbState); the in-memory model refuses them.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from raftkv.storage.checkpoint_store import CheckpointMeta, CheckpointStore
from raftkv.storage.kv_checkpoint import CheckpointError, build_manifest
from raftkv.wire.messages import ClientReply, Status

log = logging.getLogger("actors.backup")

CHUNK_BYTES = 1024 * 1024  # one reply: above the door's LARGE_REPLY, far below its budgets
IDLE_S = 300.0
MAX_BACKUPS = 4


@dataclass(slots=True)
class BackupTaken:
    """From the FSM to the snapshotter: the checkpoint of a backup is at ``path`` (state at
    ``index``, of ``term``, configuration ``members``), or ``error`` says why there is none."""

    route: Any
    path: Optional[str]
    index: int = 0
    term: int = 0
    members: list = field(default_factory=list)
    error: str = ""
    retry: bool = True  # whether asking again later may work (False: this node never can)


@dataclass(slots=True)
class BackupRead:
    """From the role actor to the snapshotter: ``length`` bytes at ``offset`` of backup ``backup_id``."""

    route: Any
    backup_id: str
    offset: int
    length: int


def take_backup(state: Any, checkpoint_path: Optional[Callable[[int], str]], term: int, members: list,
                route: Any) -> BackupTaken:
    """Checkpoint ``state`` (the FSM's, on the FSM's thread: no batch lands meanwhile) for a backup."""
    store = getattr(state, "store", None)
    if store is None or checkpoint_path is None:
        return BackupTaken(route, None, error="this node keeps its state in memory: backups need the RocksDB state",
                           retry=False)
    path = os.path.join(os.path.dirname(checkpoint_path(0)), f"backup-{uuid.uuid4().hex[:16]}.tmp")
    try:
        info = store.checkpoint(path)
    except Exception as e:  # a full disk, mostly: the client retries later
        shutil.rmtree(path, ignore_errors=True)
        return BackupTaken(route, None, error=f"cannot checkpoint the state for a backup: {e}")
    return BackupTaken(route, info.path, info.applied_index, term, list(members))


@dataclass
class _Backup:
    meta: CheckpointMeta
    used: float


class BackupServer:
    """The backups being read from this node; owned by the snapshotter's thread."""

    def __init__(self, node_id: str, reply_many: Callable[[list], None]) -> None:
        self.node_id = node_id
        self.reply_many = reply_many
        self.active: dict[str, _Backup] = {}

    def _reply(self, route: Any, rep: ClientReply) -> None:
        self.reply_many([(route, rep)])

    def _drop(self, bid: str) -> None:
        b = self.active.pop(bid, None)
        if b is not None:
            shutil.rmtree(b.meta.path, ignore_errors=True)

    def sweep(self) -> None:
        """Delete the backups nobody read for IDLE_S (each pins SST files on disk)."""
        now = time.monotonic()
        for bid, b in list(self.active.items()):
            if now - b.used > IDLE_S:
                log.warning("%s: backup %s (index %d) unread for %.0fs: deleting it", self.node_id, bid,
                            b.meta.last_index, now - b.used)
                self._drop(bid)

    def taken(self, m: BackupTaken) -> None:
        """Describe a taken checkpoint and answer the client that started the backup."""
        self.sweep()
        if m.path is None:
            status = Status.UNAVAILABLE if m.retry else Status.INVALID
            self._reply(m.route, ClientReply(status.value, error=f"{self.node_id}: {m.error}"))
            return
        if len(self.active) >= MAX_BACKUPS:
            shutil.rmtree(m.path, ignore_errors=True)
            self._reply(m.route, ClientReply(Status.UNAVAILABLE.value, error=(
                f"{self.node_id}: {MAX_BACKUPS} backups are being read already; retry when one is done")))
            return
        t0 = time.monotonic()
        try:
            manifest = build_manifest(m.path)
            meta = CheckpointMeta(m.path, m.index, m.term, list(m.members), manifest.to_bytes())
        except (OSError, CheckpointError) as e:
            shutil.rmtree(m.path, ignore_errors=True)
            self._reply(m.route, ClientReply(Status.UNAVAILABLE.value, error=f"{self.node_id}: backup failed: {e}"))
            return
        bid = os.path.basename(m.path)[len("backup-"):-len(".tmp")]
        self.active[bid] = _Backup(meta, time.monotonic())
        log.info("%s: backup %s at index %d (term %d): %d bytes, %d files, described in %.2fs", self.node_id, bid,
                 m.index, m.term, meta.size, len(manifest.files), time.monotonic() - t0)
        self._reply(m.route, ClientReply(Status.OK.value, info={
            "backup": bid, "index": m.index, "term": m.term, "size": meta.size,
            "members": [list(x) for x in m.members], "node": self.node_id}))

    def read(self, m: BackupRead) -> None:
        """Answer one chunk request (or the end of a backup)."""
        self.sweep()
        b = self.active.get(m.backup_id)
        if b is None:
            self._reply(m.route, ClientReply(Status.INVALID.value, error=(
                f"{self.node_id}: no backup {m.backup_id!r} here (finished, unread for {IDLE_S:.0f}s, or the node "
                "restarted): start the backup again")))
            return
        size = b.meta.size
        if m.offset >= size:
            self._drop(m.backup_id)  # the client has it all
            log.info("%s: backup %s read (%d bytes)", self.node_id, m.backup_id, size)
            self._reply(m.route, ClientReply(Status.OK.value, value=b"", info={"offset": m.offset, "size": size}))
            return
        b.used = time.monotonic()
        try:
            data = CheckpointStore.read(b.meta, m.offset, min(m.length or CHUNK_BYTES, CHUNK_BYTES))
        except OSError as e:
            self._drop(m.backup_id)
            self._reply(m.route, ClientReply(Status.INVALID.value, error=(
                f"{self.node_id}: backup {m.backup_id} cannot be read ({e}): start the backup again")))
            return
        self._reply(m.route, ClientReply(Status.OK.value, value=data, info={"offset": m.offset, "size": size}))

    def close(self) -> None:
        """Delete every backup (the node stops; a client reading one starts again)."""
        for bid in list(self.active):
            self._drop(bid)
