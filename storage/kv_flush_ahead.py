"""Flushing the live key-value DB's memtable ahead of a requested snapshot.

A snapshot's checkpoint switches the memtable and waits for RocksDB to write it (see
:mod:`.kv_live_checkpoint`). Before a threshold snapshot the FSM switches it some entries ahead
(:meth:`~.kv_store.KvStore.prepare_checkpoint`), so the checkpoint finds only what was applied
since; a requested snapshot (kvclient snapshot, a damaged checkpoint replaced) used to find the
whole memtable (up to 64 MB; ~28 MB after a 400k-key preload) and have its flush inside the
checkpoint. Here the memtable is switched at the request and another thread waits for its flush,
while the applying thread goes on; only then is the checkpoint begun, and its own flush is small.

Nothing about durability changes: the switched memtable's flush is RocksDB's ordinary flush, and
the checkpoint begun afterwards is at its own applied index, built as before.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

log = logging.getLogger("storage.kv_flush_ahead")

POLL_S = 0.002
WAIT_S = 120.0  # after this the checkpoint is begun anyway (it then waits for the flush itself)


def flush_pending(prop: Callable[[str], object]) -> bool:
    """Whether a switched memtable is still waiting to be written (``prop``: the DB's
    ``property_int_value``)."""
    return bool(prop("rocksdb.num-immutable-mem-table"))


def wait_then(pending: Callable[[], bool], done: Callable[[], None], name: str,
              wait_s: float = WAIT_S) -> threading.Thread:
    """Call ``done()`` from a daemon thread once ``pending()`` is false (or raised: the DB was
    closed or replaced; the checkpoint begun then finds out), or ``wait_s`` passed; returns the
    thread (started)."""

    def run() -> None:
        deadline = time.monotonic() + wait_s
        try:
            while time.monotonic() < deadline:
                try:
                    if not pending():
                        break
                except Exception as e:  # rocksdict raises a bare Exception once closed
                    log.debug("flush ahead: stopped waiting: %s", e)
                    break
                time.sleep(POLL_S)  # the thread holds nothing while it waits
            else:
                log.warning("flush ahead: the memtable was not written in %.0f s; snapshotting anyway", wait_s)
        finally:
            done()

    t = threading.Thread(target=run, name=name, daemon=True)
    t.start()
    return t
