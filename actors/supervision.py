"""Supervision: an actor that fails ends the process.

Pykka stops an actor whose ``on_receive`` raised on a ``tell`` and lets the process live on
(DESIGN.md 8). A Raft node with a dead actor is a zombie that may still answer heartbeats; a
crashed node is safe (it restarts from its synced state). So every actor of the node derives
from :class:`SupervisedActor`, whose failure hook logs the reason and exits the process.

Only Pykka's public API is used (start, tell, ask, stop, the on_* hooks, ``actor_inbox`` read
but never drained, ActorRegistry): the inbox is Pykka's own queue.Queue.
"""
from __future__ import annotations

import logging
import os
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

    def on_failure(self, exc_type, exc_value, tb) -> None:  # noqa: ANN001 (pykka's signature)
        die(f"actor {type(self).__name__} failed: "
            + "".join(traceback.format_exception(exc_type, exc_value, tb)).strip())
