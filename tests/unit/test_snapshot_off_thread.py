"""A snapshot of the RocksDB state: the FSM only switches the memtable, another thread builds the
checkpoint (SST files, and the switched memtable's WAL file while RocksDB flushes it) while the
FSM keeps applying, and the checkpoint is still at the applied index of the request (a prefix of
the log)."""
from __future__ import annotations

import os
import queue
import threading

from raftkv.actors.db_state import DbState
from raftkv.actors.fsm import Fsm
from raftkv.actors.messages import Apply, TakeSnapshot
from raftkv.storage.kv_checkpoint import checkpoint_name, finish_checkpoint, read_info
from raftkv.storage.kv_install import verify_db
from raftkv.storage.kv_store import KvStore
from raftkv.wire.messages import Command, Entry, EntryKind, encode_record

VALUE = b"v" * 100
# More than a checkpoint would flush in a few milliseconds on the applying thread.
BIG_MEMTABLE_BYTES = 2 * 1024 * 1024


def _key(i: int) -> str:
    return f"k{i:09d}"


def test_snapshot_is_taken_at_an_applied_index_while_batches_go_on(tmp_path):
    store = KvStore(str(tmp_path / "kv"))
    saved: queue.SimpleQueue = queue.SimpleQueue()
    snaps = tmp_path / "snapshots"
    ref = Fsm.start(lambda r: None, lambda v: None, saved.put, snapshot_threshold=10**9, state=DbState(store),
                    checkpoint_path=lambda i: str(snaps / checkpoint_name(i)))
    last = 0

    def apply(n: int) -> None:
        nonlocal last
        entries = [(i, Entry(1, EntryKind.COMMAND, encode_record(Command("put", _key(i), VALUE))))
                   for i in range(last + 1, last + n + 1)]
        last += n
        ref.tell(Apply(entries))

    try:
        for _ in range(50):
            apply(200)
        ref.ask(Apply([]))  # every batch above is applied
        assert store.memtable_bytes() > BIG_MEMTABLE_BYTES
        asked_at = last
        ref.tell(TakeSnapshot(None))
        m = saved.get(timeout=60)  # the FSM only switched the memtable
        assert not os.path.exists(m.state.path)  # built by the snapshotter (here: below), then renamed
        built = threading.Thread(target=finish_checkpoint, args=(m.state,))
        built.start()
        for _ in range(20):  # applied while the memtable is written and the files linked
            apply(200)
        built.join(timeout=60)
        ref.ask(Apply([]))
    finally:
        ref.stop()
    assert m.index == asked_at
    assert m.state.applied_index == m.index == read_info(m.state.path).applied_index
    assert verify_db(m.state.path) == m.index
    os.unlink(os.path.join(m.state.path, "RAFTKV-CHECKPOINT"))
    ckpt = KvStore(m.state.path)
    try:  # exactly the entries up to its index: a prefix of the log
        assert ckpt.get(_key(m.index)) == VALUE
        assert ckpt.get(_key(m.index + 1)) is None
    finally:
        ckpt.close()
    assert store.applied_index() == last
    store.close()

