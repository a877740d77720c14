"""The role actor's door: every input of the role actor goes through it, and a read-path input
that finds the actor idle is handled in the caller's own thread instead of waking the actor.

Why (docs/performance.md, "Reads: thread hand-offs"): a linearizable read is a heartbeat round,
and each of its legs used to cross one Python thread hand-off more than it needs, at 30-60 us
each on this machine: the gateway's loop -> the leader's role actor (which sends the round),
a follower's peer I/O thread -> its role actor (which answers), and the leader's peer I/O thread
-> its role actor (which confirms and serves the reads). When the role actor has nothing queued,
the thread that holds the input can just as well step the core itself: it takes the same lock
the actor holds while it handles an input, so the core still has one owner at a time.

Order. An input is run in the caller's thread only when every input told before it has been
handled: ``told`` counts inputs put in the actor's inbox (under ``_count``), ``started`` the ones
the actor began (under ``lock``); with ``lock`` held and the two equal, the inbox holds nothing
that came before. So the actor sees its inputs in the order they were given, as before; only
the thread differs.

Scope. Only inputs on the read path run this way (:func:`inline_peer_batch`,
:func:`inline_client_batch`): heartbeats and their replies, follower-read requests and replies,
and batches of gets. Anything that may write the log at length (appends, votes) or that belongs
to the write path keeps going through the actor. A failure while handling one ends the process,
as an actor failure does (actors/supervision.py).
"""
from __future__ import annotations

import threading
import traceback
from typing import Any, Optional

from raftkv.wire.messages import Heartbeat, HeartbeatReply, ReadIndexReply, ReadIndexRequest

from .messages import ClientBatch, PeerBatch
from .supervision import die

__all__ = ["RoleDoor", "inline_peer_batch", "inline_client_batch"]

# Peer messages of the read path: a ReadIndex round and a follower read (thesis 6.4, 6.4.1).
_READ_PEER_TYPES = frozenset({Heartbeat, HeartbeatReply, ReadIndexRequest, ReadIndexReply})


def inline_peer_batch(msg: Any) -> bool:
    """Whether ``msg`` is a PeerBatch holding only read-path messages."""
    if type(msg) is not PeerBatch:
        return False
    types = _READ_PEER_TYPES
    for item in msg.items:
        if type(item[1]) not in types:
            return False
    return True


def inline_client_batch(msg: Any) -> bool:
    """Whether ``msg`` is a ClientBatch of gets only."""
    if type(msg) is not ClientBatch:
        return False
    for item in msg.items:
        if item[1].op != "get":
            return False
    return True


class RoleDoor:
    """Counts the inputs told to the role actor and runs an idle actor's read-path input in the
    caller's thread (module docstring). ``actor`` is the RoleActor, registered by it at start."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # held while an input is handled, by the actor or a caller
        self._count = threading.Lock()  # guards ``told``
        self.told = 0  # inputs put in the actor's inbox
        self.started = 0  # inputs the actor began handling (written with ``lock`` held)
        self.actor: Optional[Any] = None
        self.inline = 0  # inputs handled in a caller's thread (a counter for tests and profiles)

    def counted(self) -> None:
        """An input is about to be put in the actor's inbox (call before ``tell``/``ask``)."""
        with self._count:
            self.told += 1

    def begin(self) -> None:
        """The actor begins handling an input (call with ``lock`` held)."""
        self.started += 1

    def try_run(self, msg: Any) -> bool:
        """Handle ``msg`` now in this thread if the actor is idle with nothing queued; False
        (nothing done) otherwise, and the caller tells the actor as usual."""
        actor = self.actor
        if actor is None or not self.lock.acquire(blocking=False):
            return False
        try:
            if self.told != self.started:
                return False  # inputs given earlier are queued: they go first
            try:
                actor.handle(msg)
            except BaseException:  # as an actor failure: a half-alive node is not safe
                die(f"role input handled in thread {threading.current_thread().name} failed: "
                    f"{traceback.format_exc().strip()}")
            self.inline += 1
            return True
        finally:
            self.lock.release()
