"""Snapshot streaming decisions, as pure data (Raft Figure 13; docs/architecture.md 3).

Owned by :class:`actors.core.RaftCore`. The leader streams its newest durable snapshot to a
follower whose next entry is compacted away, stop-and-wait: each chunk is answered with the
next offset the follower wants, so memory stays bounded on both sides and a lost chunk or reply
is resumed from where the follower is. The core decides which snapshot, which offset next, when
to resend an unanswered chunk and when to give up; the follower's core decides which chunks it
accepts. The Snapshotter actor (or the simulation) only moves bytes: it executes
:class:`SendChunk` (read the bytes at ``offset`` of snapshot ``index`` and send them as an
InstallSnapshot) and :class:`StoreChunk` (write the bytes at their offset; save the file when
``done``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from raftkv.wire.messages import InstallSnapshot


@dataclass(frozen=True)
class SnapshotRef:
    """A durable local snapshot: what the leader may stream (its size bounds the offsets)."""

    index: int
    term: int
    size: int


@dataclass(frozen=True)
class SendChunk:
    """Ready output (leader): send ``peer`` the chunk at ``offset`` of snapshot ``index`` in
    ``term``. The transport picks the chunk length and sets ``done`` on the last one; if the
    snapshot is gone it reports ``RaftCore.snapshot_failed(peer)``."""

    peer: str
    term: int
    index: int
    offset: int


@dataclass(frozen=True)
class StoreChunk:
    """Ready output (follower): ``msg`` is accepted; write its data at ``msg.offset`` of the
    snapshot being received from ``leader`` (offset 0 starts a new file, dropping any partial
    one). On ``msg.done`` make it durable, then call ``RaftCore.install_snapshot``."""

    leader: str
    msg: InstallSnapshot


@dataclass
class OutgoingStream:
    """The leader's stream to one follower."""

    term: int
    snap: SnapshotRef
    offset: int = 0
    sent_at: int = 0  # tick of the last chunk sent
    progressed_at: int = 0  # tick the follower last moved forward (or the stream started)

    def finished(self) -> bool:
        """The follower holds every byte: it is saving the snapshot; its done reply comes next."""
        return self.offset >= self.snap.size

    def on_ack(self, next_offset: int, now: int) -> bool:
        """A not-done reply: returns whether another chunk is to be sent. A follower that lost
        its partial file (restart) asks for offset 0 again: resume from there."""
        if next_offset > self.offset:
            self.progressed_at = now
        if next_offset >= self.snap.size:
            self.offset = self.snap.size
            return False
        self.offset = next_offset
        return True

    def due(self, now: int, resend_ticks: int, give_up_ticks: int) -> Optional[str]:
        """What the clock asks of this stream: "give_up" (no progress for ``give_up_ticks``:
        counted from the last answer that moved forward, not the last resend), "resend" (the
        last chunk is unanswered for ``resend_ticks``) or None."""
        if now - self.progressed_at > give_up_ticks:
            return "give_up"
        if not self.finished() and now - self.sent_at > resend_ticks:
            return "resend"
        return None


@dataclass
class IncomingStream:
    """The follower's view of the snapshot it is receiving: the next offset it expects."""

    index: int
    term: int
    offset: int = 0

    def accepts(self, m: InstallSnapshot) -> bool:
        return m.offset == self.offset


def receive_decision(incoming: Optional[IncomingStream], m: InstallSnapshot) -> tuple:
    """What a follower does with chunk ``m``: ``(stream, accept)``. A chunk of another snapshot
    starts a new stream only at offset 0 (``stream`` None then means: ask for offset 0, we have
    no state for it, e.g. after a restart); a chunk at the expected offset is accepted; any
    other (duplicate, reordered) is answered with the offset expected."""
    if incoming is None or (incoming.index, incoming.term) != (m.last_index, m.last_term):
        if m.offset != 0:
            return None, False
        incoming = IncomingStream(m.last_index, m.last_term)
    return incoming, incoming.accepts(m)


__all__ = ["SnapshotRef", "SendChunk", "StoreChunk", "OutgoingStream", "IncomingStream", "receive_decision"]
