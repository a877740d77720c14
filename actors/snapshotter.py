"""The Snapshotter actor: writes snapshots and moves snapshot bytes between nodes.

Taking a snapshot: the FSM hands over a frozen copy of its state; serialising it (in chunks,
yielding the GIL between them) and writing the file happen here, off the FSM's and the
leader's critical path. Only once the file and its directory are synced does the role actor
compact the log (DESIGN.md 8).

Streaming: every decision (which snapshot, which offset next, resend, give up, which chunks a
follower accepts) is the core's (actors/snapshot_transfer.py). This actor executes them: a
:class:`SendChunk` reads CHUNK_BYTES at an offset of a snapshot file and sends them as an
InstallSnapshot; a :class:`StoreChunk` writes accepted bytes to a temporary file and, on the
last chunk, saves the complete body through the SnapshotStore (checksummed, synced, renamed);
then the role actor restores the FSM from it and tells the core (Figure 13).
"""
from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from raftkv.storage.snapshot_store import CorruptSnapshot, SnapshotMeta, SnapshotStore
from raftkv.wire.messages import ClientReply, InstallSnapshot

from .snapshot_transfer import SendChunk, StoreChunk
from .supervision import SupervisedActor

log = logging.getLogger("actors.snapshot")

CHUNK_BYTES = 512 * 1024


@dataclass(slots=True)
class SaveSnapshot:
    """From the FSM: persist ``state`` (a frozen KVState) as the snapshot at (index, term)."""

    state: Any
    index: int
    term: int
    members: list
    route: Optional[list] = None  # a client that asked for this snapshot (kvclient snapshot)


@dataclass(slots=True)
class SnapshotSaved:
    """To the role actor: the snapshot at (index, term), ``size`` bytes, is durable; the log may
    be compacted and the snapshot streamed."""

    index: int
    term: int
    size: int = 0
    seconds: float = 0.0  # how long writing it took (metrics)


@dataclass(slots=True)
class SnapshotSendFailed:
    """To the role actor: the snapshot the core named could not be read for ``peer`` (pruned or
    corrupt); the core starts over with its newest."""

    peer: str


@dataclass(slots=True)
class SnapshotReceived:
    """To the role actor: a complete snapshot from ``leader`` is durable at ``meta``."""

    leader: str
    term: int
    meta: SnapshotMeta


@dataclass
class _Incoming:
    last_index: int
    last_term: int
    path: str
    started: float = field(default_factory=time.monotonic)


class Snapshotter(SupervisedActor):
    """Owns the SnapshotStore."""

    def __init__(self, node_id: str, store: SnapshotStore, send: Callable[[str, Any], None],
                 tell_role: Callable[[Any], None], fsm_done: Callable[[int], None],
                 reply_many: Callable[[list], None]) -> None:
        super().__init__()
        self.node_id = node_id
        self.store = store
        self.send = send
        self.tell_role = tell_role
        self.fsm_done = fsm_done
        self.reply_many = reply_many
        self.sending: dict[int, SnapshotMeta] = {}  # snapshot index -> its file, while streamed
        self.incoming: Optional[_Incoming] = None

    def on_receive(self, msg: Any) -> Any:
        t = type(msg)
        if t is SaveSnapshot:
            self._save(msg)
        elif t is SendChunk:
            self._send_chunk(msg)
        elif t is StoreChunk:
            self._store_chunk(msg)
        return None

    def on_stop(self) -> None:
        if self.incoming is not None:
            _unlink(self.incoming.path)

    # ------------------------------------------------------------------ taking

    def _save(self, m: SaveSnapshot) -> None:
        t0 = time.monotonic()
        try:
            path = self.store.save(m.index, m.term, m.members, _yielding(m.state.chunks()))
        finally:
            self.fsm_done(m.index)
        seconds = time.monotonic() - t0
        log.info("%s: snapshot at index %d (term %d) of %d keys written in %.2fs", self.node_id, m.index, m.term,
                 len(m.state.data), seconds)
        self.tell_role(SnapshotSaved(m.index, m.term, self.store.read_meta(path).size, seconds))
        if m.route is not None:
            self.reply_many([(m.route, ClientReply("ok", info={"index": m.index, "term": m.term}))])

    # ------------------------------------------------------------------ sending

    def _meta(self, index: int, offset: int) -> Optional[SnapshotMeta]:
        meta = self.sending.get(index)
        if meta is None or offset == 0:
            meta = next((m for m in self.store.list() if m.last_index == index), None)
            if meta is None:
                log.warning("%s: snapshot %d is no longer here", self.node_id, index)
                return None
            try:
                self.store.open_verified(meta).close()  # never stream a damaged body
            except (CorruptSnapshot, OSError) as e:
                log.warning("%s: snapshot %d cannot be streamed: %s", self.node_id, index, e)
                return None
            self.sending = {index: meta}  # the core streams only its newest snapshot
        return meta

    def _send_chunk(self, c: SendChunk) -> None:
        meta = self._meta(c.index, c.offset)
        data = None
        if meta is not None:
            try:
                with open(meta.path, "rb") as f:
                    f.seek(meta.body_offset + c.offset)
                    data = f.read(min(CHUNK_BYTES, max(meta.size - c.offset, 0)))
            except OSError as e:  # pruned under us by a newer snapshot: the core starts over
                log.info("%s: snapshot %d for %s went away (%s)", self.node_id, c.index, c.peer, e)
                self.sending.pop(c.index, None)
        if data is None:
            self.tell_role(SnapshotSendFailed(c.peer))
            return
        if c.offset == 0:
            log.info("%s: sending snapshot at index %d (%d bytes) to %s", self.node_id, meta.last_index, meta.size,
                     c.peer)
        elif c.offset % (16 * CHUNK_BYTES) == 0:
            log.info("%s: snapshot to %s: %d of %d bytes", self.node_id, c.peer, c.offset, meta.size)
        done = c.offset + len(data) >= meta.size
        self.send(c.peer, InstallSnapshot(c.term, meta.last_index, meta.last_term, c.offset, data, done,
                                          list(meta.members)))

    # ------------------------------------------------------------------ receiving

    def _store_chunk(self, sc: StoreChunk) -> None:
        m = sc.msg
        inc = self.incoming
        if m.offset == 0:
            # A new stream (the core accepts offset 0 only to start one): drop any partial file.
            if inc is not None:
                _unlink(inc.path)
            fd, path = tempfile.mkstemp(dir=self.store.directory, prefix="recv-", suffix=".part")
            os.close(fd)
            inc = self.incoming = _Incoming(m.last_index, m.last_term, path)
            log.info("%s: receiving snapshot at index %d from %s", self.node_id, m.last_index, sc.leader)
        elif inc is None or (inc.last_index, inc.last_term) != (m.last_index, m.last_term):
            return  # cannot happen: the core accepts only the next offset of the stream it started
        with open(inc.path, "r+b") as f:
            f.seek(m.offset)
            f.write(m.data)
        if m.done:
            self._finish(sc.leader, m)

    def _finish(self, leader: str, m: InstallSnapshot) -> None:
        inc = self.incoming
        self.incoming = None
        try:
            path = self.store.save(m.last_index, m.last_term, m.members, _file_chunks(inc.path))
        finally:
            _unlink(inc.path)
        meta = self.store.read_meta(path)
        log.info("%s: received snapshot at index %d (%d bytes) in %.2fs", self.node_id, m.last_index, meta.size,
                 time.monotonic() - inc.started)
        self.tell_role(SnapshotReceived(leader, m.term, meta))


def _yielding(chunks: Any) -> Any:
    # Hand the GIL to other threads between chunks: a large snapshot must not stall heartbeats.
    for c in chunks:
        yield c
        time.sleep(0)


def _file_chunks(path: str) -> Any:
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                return
            yield b


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


__all__ = ["Snapshotter", "SaveSnapshot", "SnapshotSaved", "SendChunk", "StoreChunk", "SnapshotSendFailed",
           "SnapshotReceived", "CorruptSnapshot"]
