"""The Snapshotter actor: writes snapshots, streams them to lagging followers, receives them.

Taking a snapshot: the FSM hands over a frozen copy of its state; serialising it (in chunks,
yielding the GIL between them) and writing the file happen here, off the FSM's and the
leader's critical path. Only once the file and its directory are synced does the role actor
compact the log (DESIGN.md 8).

Sending: one stop-and-wait stream per follower, in chunks of CHUNK_BYTES, each answered with the
next offset the follower wants, so memory stays bounded on both sides and a lost chunk or
reply is resumed from where the follower is (a poll resends a chunk that got no answer).

Receiving: chunks are appended to a temporary file at the offset the follower expects; the
complete body is saved through the SnapshotStore (checksummed, synced, renamed), then the role
actor restores the FSM from it and tells the core (Figure 13).
"""
from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from raftkv.storage.snapshot_store import CorruptSnapshot, SnapshotMeta, SnapshotStore
from raftkv.wire.messages import ClientReply, InstallSnapshot, InstallSnapshotReply

from .supervision import SupervisedActor

log = logging.getLogger("actors.snapshot")

CHUNK_BYTES = 512 * 1024
RESEND_AFTER_S = 1.0  # a chunk unanswered this long is sent again
GIVE_UP_AFTER_S = 30.0  # a stream that made no progress this long is abandoned


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
    """To the role actor: the snapshot at (index, term) is durable; the log may be compacted."""

    index: int
    term: int


@dataclass(slots=True)
class SendSnapshot:
    """From the leader: stream the newest snapshot to ``peer`` in leader term ``term``."""

    peer: str
    term: int


@dataclass(slots=True)
class SnapshotAck:
    """From the leader: ``peer`` answered a chunk."""

    peer: str
    reply: InstallSnapshotReply


@dataclass(slots=True)
class SnapshotSendFailed:
    """To the role actor: no snapshot could be sent to ``peer``."""

    peer: str


@dataclass(slots=True)
class ReceiveChunk:
    """From a follower's role actor: a chunk of a snapshot from ``leader``."""

    leader: str
    msg: InstallSnapshot


@dataclass(slots=True)
class SnapshotReceived:
    """To the role actor: a complete snapshot from ``leader`` is durable at ``meta``."""

    leader: str
    term: int
    meta: SnapshotMeta


@dataclass(slots=True)
class SnapshotPoll:
    """Periodic: resend chunks that got no answer."""


@dataclass
class _Outgoing:
    term: int
    meta: SnapshotMeta
    offset: int = 0
    sent_at: float = 0.0
    progressed_at: float = field(default_factory=time.monotonic)  # the follower last moved forward


@dataclass
class _Incoming:
    last_index: int
    last_term: int
    path: str
    offset: int = 0
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
        self.outgoing: dict[str, _Outgoing] = {}
        self.incoming: Optional[_Incoming] = None

    def on_receive(self, msg: Any) -> Any:
        t = type(msg)
        if t is SaveSnapshot:
            self._save(msg)
        elif t is SendSnapshot:
            self._start_send(msg)
        elif t is SnapshotAck:
            self._on_ack(msg)
        elif t is ReceiveChunk:
            self._on_chunk(msg)
        elif t is SnapshotPoll:
            self._poll()
        return None

    def on_stop(self) -> None:
        if self.incoming is not None:
            _unlink(self.incoming.path)

    # ------------------------------------------------------------------ taking

    def _save(self, m: SaveSnapshot) -> None:
        t0 = time.monotonic()
        try:
            self.store.save(m.index, m.term, m.members, _yielding(m.state.chunks()))
        finally:
            self.fsm_done(m.index)
        log.info("%s: snapshot at index %d (term %d) of %d keys written in %.2fs", self.node_id, m.index, m.term,
                 len(m.state.data), time.monotonic() - t0)
        self.tell_role(SnapshotSaved(m.index, m.term))
        if m.route is not None:
            self.reply_many([(m.route, ClientReply("ok", info={"index": m.index, "term": m.term}))])

    # ------------------------------------------------------------------ sending

    def _start_send(self, m: SendSnapshot) -> None:
        cur = self.outgoing.get(m.peer)
        if cur is not None and cur.term == m.term and cur.offset < cur.meta.size:
            return  # already streaming to it
        # A finished stream (the follower needs a second snapshot in this term) or one of an
        # older term is started afresh with the newest snapshot.
        self.outgoing.pop(m.peer, None)
        newest = self.store.newest_valid()
        if newest is None:
            log.warning("%s: %s needs a snapshot but none is valid here", self.node_id, m.peer)
            self.tell_role(SnapshotSendFailed(m.peer))
            return
        meta, reader = newest
        reader.close()
        log.info("%s: sending snapshot at index %d (%d bytes) to %s", self.node_id, meta.last_index, meta.size, m.peer)
        self.outgoing[m.peer] = _Outgoing(m.term, meta)
        self._send_chunk(m.peer)

    def _send_chunk(self, peer: str) -> None:
        out = self.outgoing[peer]
        meta = out.meta
        try:
            with open(meta.path, "rb") as f:
                f.seek(meta.body_offset + out.offset)
                data = f.read(min(CHUNK_BYTES, meta.size - out.offset))
        except OSError as e:  # pruned under us by a newer snapshot: start over with that one
            log.info("%s: snapshot for %s went away (%s); restarting", self.node_id, peer, e)
            del self.outgoing[peer]
            self.tell_role(SnapshotSendFailed(peer))
            return
        done = out.offset + len(data) >= meta.size
        out.sent_at = time.monotonic()
        self.send(peer, InstallSnapshot(out.term, meta.last_index, meta.last_term, out.offset, data, done,
                                        list(meta.members)))

    def _on_ack(self, m: SnapshotAck) -> None:
        out = self.outgoing.get(m.peer)
        r = m.reply
        if out is None or r.last_index != out.meta.last_index:
            return
        if r.next_offset > out.offset:
            out.progressed_at = time.monotonic()
        if r.next_offset >= out.meta.size:
            out.offset = out.meta.size
            return  # the follower is saving it; its final (done) answer goes to the core
        out.offset = r.next_offset
        if out.offset and out.offset % (16 * CHUNK_BYTES) == 0:
            log.info("%s: snapshot to %s: %d of %d bytes", self.node_id, m.peer, out.offset, out.meta.size)
        self._send_chunk(m.peer)

    def _poll(self) -> None:
        now = time.monotonic()
        for peer, out in list(self.outgoing.items()):
            if now - out.progressed_at > GIVE_UP_AFTER_S:
                del self.outgoing[peer]  # the follower is gone; the core asks again if needed
                self.tell_role(SnapshotSendFailed(peer))
            elif out.offset < out.meta.size and now - out.sent_at > RESEND_AFTER_S:
                self._send_chunk(peer)

    def forget(self, peer: str) -> None:
        self.outgoing.pop(peer, None)

    # ------------------------------------------------------------------ receiving

    def _on_chunk(self, rc: ReceiveChunk) -> None:
        m = rc.msg
        inc = self.incoming
        if inc is None or (inc.last_index, inc.last_term) != (m.last_index, m.last_term):
            if m.offset != 0:
                # A stream we have no state for (we restarted): ask for it from the start.
                self.send(rc.leader, InstallSnapshotReply(m.term, m.last_index, 0, False))
                return
            if inc is not None:
                _unlink(inc.path)
            fd, path = tempfile.mkstemp(dir=self.store.directory, prefix="recv-", suffix=".part")
            os.close(fd)
            inc = self.incoming = _Incoming(m.last_index, m.last_term, path)
            log.info("%s: receiving snapshot at index %d from %s", self.node_id, m.last_index, rc.leader)
        if m.offset == inc.offset:
            with open(inc.path, "r+b") as f:
                f.seek(inc.offset)
                f.write(m.data)
            inc.offset += len(m.data)
            if m.done:
                self._finish(rc.leader, m)
                return
        self.send(rc.leader, InstallSnapshotReply(m.term, m.last_index, inc.offset, False))

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


__all__ = ["Snapshotter", "SaveSnapshot", "SnapshotSaved", "SendSnapshot", "SnapshotAck", "SnapshotSendFailed",
           "ReceiveChunk", "SnapshotReceived", "SnapshotPoll", "CorruptSnapshot"]
