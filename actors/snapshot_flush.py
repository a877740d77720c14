"""Flushing the key-value state's memtable before a snapshot, off the FSM's thread.

A snapshot of the RocksDB state is a checkpoint taken by the FSM's thread between two applied
batches (so that it is at an applied index). A checkpoint first flushes the memtable (up to
64 MB): done on the FSM's thread, every write waited for it (kvbench snapshot, 2M keys: write
p99 7.6 ms without a snapshot, 165 ms during one), and rocksdict's checkpoint call holds the
GIL, so the whole node stopped while it flushed. So the FSM first has the memtable written by a
helper thread (RocksDB's flush is thread-safe and releases the GIL; the batches applied
meanwhile go into a new memtable), keeps applying, and takes the checkpoint when told the flush
is over: then only what it applied in between is left to flush. A few rounds at most, in case
the writes keep the memtable large.

Superseded for the RocksDB state (``KvStore.CHECKPOINTS_OFF_THREAD``): its snapshot only switches
the memtable on the FSM's thread and the snapshotter builds the checkpoint from the files once
RocksDB flushed it (storage/kv_live_checkpoint.py), so nothing is flushed first here.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional

import pykka

log = logging.getLogger("actors.fsm")

# A checkpoint flushes a memtable this small on the FSM's thread in a few milliseconds. (A
# memtable's size counts its arena's blocks: one just switched in reports about 1 MB.)
SMALL_MEMTABLE_BYTES = 2 * 1024 * 1024
MAX_ROUNDS = 3


@dataclass(slots=True)
class SnapshotFlushed:
    """To the FSM: the background flush number ``rounds`` for the snapshot asked by ``route``
    (None: the threshold's) is over; take the checkpoint now (or flush once more)."""

    route: Optional[list]
    rounds: int


def flush_first(state: Any, fsm: "pykka.ActorRef", route: Optional[list], rounds: int) -> bool:
    """Before the snapshot's checkpoint: if ``state`` (a DbState; the in-memory KVState has no
    memtable) holds a memtable worth flushing and fewer than MAX_ROUNDS flushes were done for
    this snapshot, start one in the background and return True (``fsm`` receives
    SnapshotFlushed(route, rounds + 1) when it is over); else False: checkpoint now."""
    store = getattr(state, "store", None)
    if store is None or getattr(store, "CHECKPOINTS_OFF_THREAD", False):
        return False  # the store's checkpoint only switches the memtable on this thread
    if rounds >= MAX_ROUNDS or store.memtable_bytes() <= SMALL_MEMTABLE_BYTES:
        return False
    log.debug("fsm: flushing %d bytes of memtable before a snapshot (round %d)", store.memtable_bytes(), rounds + 1)

    def done() -> None:
        try:
            fsm.tell(SnapshotFlushed(route, rounds + 1))
        except pykka.ActorDeadError:  # the node is stopping
            pass

    store.flush_in_background(done)
    return True
