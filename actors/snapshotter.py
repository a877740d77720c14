"""The Snapshotter actor: describes snapshots and moves snapshot bytes between nodes.

Taking a snapshot: the FSM fixes a checkpoint of its key-value store (a memtable switch, on its
own thread); here its files are linked (the SST files and the switched memtables' WAL files,
fsynced: storage/kv_live_checkpoint.py) and summed up (manifest with sizes and CRC-32s) and the
sidecar written, off the FSM's and the leader's critical path. Only then does the role actor
compact the log (docs/architecture.md 7); the fsynced WAL files made the live state durable up
to the snapshot's index.

Streaming: every decision (which snapshot, which offset next, resend, give up, which chunks a
follower accepts) is the core's (actors/snapshot_transfer.py). The checkpoint is one logical byte
stream (magic, manifest, files concatenated: storage/checkpoint_store.py), so the core's
(offset, done) protocol is unchanged. A :class:`SendChunk` reads CHUNK_BYTES at an offset of it
and sends them as an InstallSnapshot; a :class:`StoreChunk` feeds accepted bytes to a
StreamReceiver that rebuilds the files in a staging directory (size cap, checksums) and, on the
last chunk, checks that the DB opens at its index and keeps it as a local checkpoint; then the
role actor has the FSM swap it in atomically and tells the core (Figure 13).
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from raftkv.storage.checkpoint_store import CheckpointMeta, CheckpointStore, StreamCheck, StreamReceiver
from raftkv.storage.free_memory import release_free_memory
from raftkv.storage.kv_checkpoint import CheckpointError, finish_checkpoint
from raftkv.storage.snapshot_store import CorruptSnapshot
from raftkv.wire.messages import ClientReply, InstallSnapshot

from .backup_serving import BackupRead, BackupServer, BackupTaken
from .snapshot_transfer import SendChunk, StoreChunk
from .supervision import SupervisedActor

log = logging.getLogger("actors.snapshot")

# Chunks of 4 MiB (within MAX_CHUNK_BYTES and the peer door's MAXMSGSIZE), WINDOW of them in
# flight per follower: the core asks for one chunk per answer (stop-and-wait), and the sender keeps
# the follower's pipe full ahead of those answers (see _Window), so the stream runs at the speed of
# its slowest stage instead of one round trip per chunk.
CHUNK_BYTES = 4 * 1024 * 1024
WINDOW = 4
RESEND_GAP = 0.5  # seconds: one rewind per gap at most, however many answers report it


@dataclass(slots=True)
class SaveSnapshot:
    """From the FSM: persist ``state`` (a frozen KVState) as the snapshot at (index, term)."""

    state: Any
    index: int
    term: int
    members: list
    route: Optional[list] = None  # a client that asked for this snapshot (kvclient snapshot)
    asked: float = 0.0  # time.monotonic() when it was asked (0: unknown)


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
    meta: CheckpointMeta


@dataclass
class _Window:
    """The sender's side of one follower's stream: the core's last asked offset (everything
    before it is acknowledged) and the end of what was sent ahead of it. Chunks are sent in
    order over one connection (FIFO), so the follower accepts each in turn; a repeated ask (the
    core's resend timer, or the follower answering a chunk it could not take with the offset it
    expects) rewinds the window to that offset."""

    index: int
    term: int
    acked: int
    sent_to: int
    rewound_at: float = 0.0
    check: Optional[StreamCheck] = None  # the files' CRC-32s, summed as they are read for sending


@dataclass
class _Incoming:
    last_index: int
    last_term: int
    rx: StreamReceiver
    started: float = field(default_factory=time.monotonic)
    failed: bool = False


class Snapshotter(SupervisedActor):
    """Owns the CheckpointStore (its describing, pruning, reading and receiving)."""

    def __init__(self, node_id: str, store: CheckpointStore, send: Callable[[str, Any], None],
                 tell_role: Callable[[Any], None], fsm_done: Callable[[int], None],
                 reply_many: Callable[[list], None], take_snapshot: Optional[Callable[[], None]] = None) -> None:
        super().__init__()
        self.node_id = node_id
        self.store = store
        self.send = send
        self.tell_role = tell_role
        self.fsm_done = fsm_done
        self.reply_many = reply_many
        self.take_snapshot = take_snapshot  # asks the FSM for a fresh checkpoint (a damaged one was found)
        self.sending: dict[int, CheckpointMeta] = {}  # snapshot index -> its checkpoint, while streamed
        self.windows: dict[str, _Window] = {}  # follower -> its stream's window
        self.opened: set[int] = set()  # indexes in `sending` whose checkpoint was opened here (_opens)
        self.incoming: Optional[_Incoming] = None
        self.backups = BackupServer(node_id, reply_many)  # kvclient backup (actors/backup_serving.py)

    def on_receive(self, msg: Any) -> Any:
        t = type(msg)
        if t is SaveSnapshot:
            self._save(msg)
        elif t is SendChunk:
            self._send_chunk(msg)
        elif t is StoreChunk:
            self._store_chunk(msg)
        elif t is BackupTaken:
            self.backups.taken(msg)
        elif t is BackupRead:
            self.backups.read(msg)
        return None

    def on_stop(self) -> None:
        if self.incoming is not None:
            self.incoming.rx.discard()
        self.backups.close()

    # ------------------------------------------------------------------ taking

    def _save(self, m: SaveSnapshot) -> None:
        # The FSM fixed the checkpoint (a memtable switch, its thread); here its files are linked
        # and summed up for streaming, off the write path. Its fsynced WAL files made the live DB
        # durable up to m.index, so the log may be compacted below it.
        self.backups.sweep()  # abandoned backups go even when no backup is asked for again
        t0 = time.monotonic()
        done = 0  # the FSM's last snapshot stays where it was unless this one is kept
        try:
            # its files (storage/kv_live_checkpoint.py), info file and rename: off the FSM's thread
            finish_checkpoint(m.state, sync_parent=False)  # describe() fsyncs the store's directory
            t_built = time.monotonic()
            meta = self.store.describe(m.state, m.term, m.members, prune=False)
            done = m.index
        except CheckpointError as e:  # its state was replaced or flushed past meanwhile: rare
            log.warning("%s: snapshot at index %d not taken: %s", self.node_id, m.index, e)
            if m.route is not None:
                self.reply_many([(m.route, ClientReply("unavailable", error=f"snapshot not taken: {e}; retry"))])
            return
        finally:
            self.fsm_done(done)
        seconds = time.monotonic() - t0
        # The split says where a slow snapshot's time went: links and the WAL files' fsync (built) or
        # summing files the background CRC pass had not reached (storage/crc_warmer.py).
        # ... and "asked" how long the request queued before (the FSM's inbox, behind apply batches).
        log.info("%s: snapshot at index %d (term %d, %d bytes) described in %.2fs (checkpoint built in %.2fs, "
                 "manifest in %.2fs; asked %.2fs before)", self.node_id, m.index, m.term, meta.size, seconds,
                 t_built - t0, seconds - (t_built - t0), t0 - m.asked if m.asked else 0.0)
        self.tell_role(SnapshotSaved(m.index, m.term, meta.size, seconds))
        if m.route is not None:
            self.reply_many([(m.route, ClientReply("ok", info={"index": m.index, "term": m.term}))])
        # The oldest checkpoints go after the announcement and the reply: deleting one at 10M keys
        # took 60-70 ms of a 0.19 s snapshot, and nothing waits for it.
        self.store.prune(keep_path=meta.path)
        # The checkpoint flushed the memtable: hand its freed blocks back to the OS (after the
        # reply: a few ms nobody waits for). storage/free_memory.py says why glibc keeps them.
        release_free_memory()

    # ------------------------------------------------------------------ sending

    def _meta(self, index: int, offset: int) -> Optional[CheckpointMeta]:
        meta = self.sending.get(index)
        if meta is None or offset == 0:
            meta = next((m for m in self.store.list() if m.last_index == index), None)
            if meta is None:
                log.warning("%s: snapshot %d is no longer here", self.node_id, index)
                return None
            # Sizes only: the CRC-32s are checked as the files are read for sending (StreamCheck),
            # not in a full pass before the first chunk.
            if not self._passes(meta, self.store.check_sizes):
                return None
            self.sending = {index: meta}  # the core streams only its newest snapshot
            self.opened &= {index}
        return meta

    def _damaged(self, meta: CheckpointMeta, e: CheckpointError) -> None:
        # Never stream it; delete it and take a fresh checkpoint of the live state (the core
        # streams that one once it is saved: SnapshotSaved).
        log.warning("%s: snapshot %d cannot be streamed: %s; taking a fresh one", self.node_id, meta.last_index, e)
        self.sending.pop(meta.last_index, None)
        self.store.remove(meta)
        if self.take_snapshot is not None:
            self.take_snapshot()

    def _passes(self, meta: CheckpointMeta, check: Callable[[CheckpointMeta], object]) -> bool:
        """Whether ``check`` (a CheckpointStore check, raising CheckpointError) passes; if not, the
        checkpoint is replaced (:meth:`_damaged`)."""
        try:
            check(meta)
        except CheckpointError as e:
            self._damaged(meta, e)
            return False
        return True

    def _opens(self, meta: CheckpointMeta) -> bool:
        """Whether the checkpoint opens at its index here, checked once per checkpoint; if it does
        not, it is deleted and a fresh one taken (:meth:`_damaged`).

        Why: a follower that cannot open a stream it received (it checks every file's CRC-32 and
        then opens the DB) says nothing to the leader; the core just streams the same checkpoint
        again from the start, every resend timeout, for good. The CRC-32s cannot catch a checkpoint
        that is whole but inconsistent (a MANIFEST naming a file it lacks: CI's stalled followers
        before storage/rocks_manifest.py), so the first time a follower asks for a checkpoint
        from the start again after all of it was sent, the leader opens it read-only itself (a WAL
        replay, up to a memtable's worth: not on the first send's path)."""
        if meta.last_index in self.opened:
            return True
        if not self._passes(meta, self.store.check_opens):
            return False
        self.opened.add(meta.last_index)
        return True

    def _send_chunk(self, c: SendChunk) -> None:
        meta = self._meta(c.index, c.offset)
        w = self.windows.get(c.peer)
        if (meta is not None and c.offset == 0 and w is not None and (w.index, w.term) == (c.index, c.term)
                and w.sent_to >= meta.size and not self._opens(meta)):
            meta = None  # sent whole and asked for again: the follower may have failed to open it
        if meta is None:
            self.windows.pop(c.peer, None)
            self.tell_role(SnapshotSendFailed(c.peer))
            return
        now = time.monotonic()
        if w is None or (w.index, w.term) != (c.index, c.term) or c.offset == 0 and w.acked != 0:
            w = self.windows[c.peer] = _Window(c.index, c.term, c.offset, c.offset, now, StreamCheck(meta))
            log.info("%s: sending snapshot at index %d (%d bytes) to %s from offset %d", self.node_id,
                     meta.last_index, meta.size, c.peer, c.offset)
        elif c.offset > w.acked:  # progress: slide the window
            w.acked = c.offset
            w.sent_to = max(w.sent_to, c.offset)
        elif c.offset < w.sent_to and now - w.rewound_at >= RESEND_GAP:  # asked again: rewind
            w.acked, w.sent_to, w.rewound_at = c.offset, c.offset, now
        elif c.offset < w.sent_to:
            return  # the window was rewound just now; its chunks are on their way
        try:
            while w.sent_to < meta.size and w.sent_to < w.acked + WINDOW * CHUNK_BYTES:
                data = self.store.read(meta, w.sent_to, CHUNK_BYTES)
                if not data:
                    raise OSError(f"nothing to read at offset {w.sent_to}")
                if w.check is not None:
                    w.check.check(w.sent_to, data)  # before the chunk with a damaged file's end goes out
                done = w.sent_to + len(data) >= meta.size
                # sent at once: the follower starts on the first chunk while the next are read
                self.send(c.peer, InstallSnapshot(c.term, meta.last_index, meta.last_term, w.sent_to, data, done,
                                                  list(meta.members)))
                if w.sent_to % (16 * CHUNK_BYTES) < len(data) and w.sent_to:
                    log.info("%s: snapshot to %s: %d of %d bytes", self.node_id, c.peer, w.sent_to, meta.size)
                w.sent_to += len(data)
        except CheckpointError as e:
            self._damaged(meta, e)
            self.windows.pop(c.peer, None)
            self.tell_role(SnapshotSendFailed(c.peer))
        except OSError as e:  # pruned under us by a newer snapshot: the core starts over
            log.info("%s: snapshot %d for %s went away (%s)", self.node_id, c.index, c.peer, e)
            self.sending.pop(c.index, None)
            self.windows.pop(c.peer, None)
            self.tell_role(SnapshotSendFailed(c.peer))

    # ------------------------------------------------------------------ receiving

    def _store_chunk(self, sc: StoreChunk) -> None:
        m = sc.msg
        inc = self.incoming
        if m.offset == 0:
            # A new stream (the core accepts offset 0 only to start one): drop any partial one.
            if inc is not None:
                inc.rx.discard()
            staging = os.path.join(self.store.directory, f"recv-{m.last_index}-{m.last_term}")
            inc = self.incoming = _Incoming(m.last_index, m.last_term, StreamReceiver(staging))
            log.info("%s: receiving snapshot at index %d from %s", self.node_id, m.last_index, sc.leader)
        elif inc is None or (inc.last_index, inc.last_term) != (m.last_index, m.last_term) or inc.failed:
            return  # a stream we gave up on (bad data); the leader starts over when it gives up too
        try:
            inc.rx.feed(m.data)
            if m.done:
                self._finish(sc.leader, m)
        except CheckpointError as e:
            log.error("%s: rejecting snapshot at index %d from %s: %s", self.node_id, m.last_index, sc.leader, e)
            inc.failed = True
            inc.rx.discard()

    def _finish(self, leader: str, m: InstallSnapshot) -> None:
        inc = self.incoming
        meta = inc.rx.adopt(self.store, m.last_term, m.members)
        self.incoming = None
        log.info("%s: received snapshot at index %d (%d bytes) in %.2fs", self.node_id, m.last_index, meta.size,
                 time.monotonic() - inc.started)
        self.tell_role(SnapshotReceived(leader, m.term, meta))


__all__ = ["Snapshotter", "SaveSnapshot", "SnapshotSaved", "SendChunk", "StoreChunk", "SnapshotSendFailed",
           "SnapshotReceived", "CorruptSnapshot"]
