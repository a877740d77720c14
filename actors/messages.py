"""Messages exchanged between the actors of one node (typed records; nothing here crosses a socket)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Optional

from .core import PersistBatch


@dataclass(slots=True)
class PeerBatch:
    """Raft messages received by the I/O thread: ``(sender, msg, route, cluster_id_offered)``."""

    items: list


@dataclass(slots=True)
class PeerLost:
    """The transport's connection to ``peer`` dropped (see RaftCore.peer_unreachable)."""

    peer: str


@dataclass(slots=True)
class ClientBatch:
    """Client requests received by the front door: ``(route, ClientRequest)``."""

    items: list


@dataclass(slots=True)
class Tick:
    """One unit of logical time for the core."""


@dataclass(slots=True)
class PersistRequest:
    """Write ``batch`` synced, then send ``after`` (persistence before speech), then report."""

    batch: PersistBatch
    after: list
    last: Optional[tuple]  # (index, term) of the last entry written, if any


@dataclass(slots=True)
class Persisted:
    """The log manager finished a PersistRequest."""

    last: Optional[tuple]


@dataclass(slots=True)
class Apply:
    """Committed entries ``(index, Entry)`` in order; ``waiters`` maps index -> (term, route), or
    (term, route, cmd, payload) for a leader's own proposal (actors/own_commands.py)."""

    entries: list
    waiters: dict = field(default_factory=dict)


@dataclass(slots=True)
class Read:
    """Serve ``handles`` ((route, ClientRequest)) once the FSM has applied ``index``."""

    index: int
    handles: list


@dataclass(slots=True)
class SetMeta:
    """Store identity metadata (e.g. the cluster id a joining node learned) durably."""

    values: dict


@dataclass(slots=True)
class DiskState:
    """From the log writer to the role actor: the log cannot be written (``error`` says why), or
    ``error`` is empty: it can again. The role actor is the only keeper of this state."""

    error: str


@dataclass(slots=True)
class StatusQuery:
    """Asked of the role actor (``ask``): this node's status dict, built in the thread that owns it."""


@dataclass(slots=True)
class HandOff:
    """Sent by the node before a planned shutdown: a leader transfers leadership (thesis 3.10)."""


@dataclass(slots=True)
class Restore:
    """Replace the FSM's state with the snapshot whose body ``body`` yields (at (index, term))."""

    body: Any
    index: int
    term: int
    members: list


@dataclass(slots=True)
class TakeSnapshot:
    """Take a snapshot now (kvclient snapshot); answer ``route`` when it is durable."""

    route: Any = None
    asked: float = field(default_factory=time.monotonic)  # when (logged: how long it queued for the FSM)


@dataclass(slots=True)
class RetrySnapshot:
    """The FSM's own reminder to try a snapshot it put off (actors/fsm.py ``Fsm._snapshot``)."""

    request: TakeSnapshot
    since: float  # when it was first put off: it is put off for SNAPSHOT_DEFER_MAX_S at most


@dataclass(slots=True)
class SnapshotDone:
    """The snapshotter finished (or failed) the snapshot at ``index``."""

    index: int
