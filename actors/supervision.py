"""Supervision: an actor that fails ends the process.

Pykka stops an actor whose ``on_receive`` raised on a ``tell`` and lets the process live on
(docs/architecture.md 3). A Raft node with a dead actor is a zombie that may still answer heartbeats; a
crashed node is safe (it restarts from its synced state). So every actor of the node derives
from :class:`SupervisedActor`, whose failure hook logs the reason and exits the process.
"""
from __future__ import annotations

import logging
import os
import queue
import sys
import traceback

import pykka

log = logging.getLogger("actors")

EXIT_ACTOR_FAILURE = 70  # EX_SOFTWARE


def die(reason: str) -> None:
    """Log ``reason`` and end the process at once (no cleanup that could hang)."""
    log.critical("%s; exiting so that a supervisor restarts this node from its synced state", reason)
    for h in logging.getLogger().handlers:
        try:
            h.flush()
        except Exception:
            pass
    sys.stderr.flush()
    os._exit(EXIT_ACTOR_FAILURE)


class SupervisedActor(pykka.ThreadingActor):
    """A Pykka actor whose unhandled exception ends the process with a logged reason."""

    use_daemon_thread = True  # a node that failed to start or was stopped must not hang on its actors

    @staticmethod
    def _create_actor_inbox() -> queue.SimpleQueue:
        # The one Pykka hook outside its public API left in the node (Pykka documents it as the
        # method for implementors of actor types): queue.SimpleQueue (in C) instead of Pykka's
        # queue.Queue (Python, a Condition per operation). A streamed tell costs ~0.7 us of CPU
        # instead of ~4.8 us, and without it PUT c=1 (kvbench load, 3 interleaved rounds) fell
        # from 524-596 to 455-557 writes/s. Nothing else relies on the inbox's type: it is only
        # put to by tell/ask and peeked at with empty() (RoleActor).
        return queue.SimpleQueue()

    def on_failure(self, exc_type, exc_value, tb) -> None:  # pykka's signature
        die(f"actor {type(self).__name__} failed: "
            + "".join(traceback.format_exception(exc_type, exc_value, tb)).strip())
