"""A snapshot asked while RocksDB still flushes the last switched memtable is put off, so the FSM
thread goes on applying instead of waiting inside the memtable switch (issue 12: write latency
during a snapshot); it is taken once the flush is done, or after SNAPSHOT_DEFER_MAX_S regardless."""
from __future__ import annotations

import os

from raftkv.actors import fsm
from raftkv.actors.fsm import KVState
from raftkv.actors.messages import Apply, RetrySnapshot, SnapshotDone, TakeSnapshot
from raftkv.storage import kv_store
from raftkv.storage.kv_store import KvStore, Put
from raftkv.wire.messages import Command, Entry, EntryKind, encode_record

from .polling import wait_for


class FlushingState(KVState):
    """The in-memory state, with a flush said to be running while ``flushing`` is True."""

    flushing = True
    prepares = 0

    def switch_would_wait(self) -> bool:
        return self.flushing

    def prepare_snapshot(self) -> None:
        self.prepares += 1


def put(index: int) -> tuple:
    return (index, Entry(1, EntryKind.COMMAND, encode_record(Command("put", f"k{index}", b"v", client_id="c", seq=index))))


def make(state: KVState) -> tuple:
    saved: list = []
    replies: list = []
    retries: list = []
    actor = fsm.Fsm(replies.extend, lambda v: None, saved.append, snapshot_threshold=1_000, state=state,
                    schedule=lambda delay, msg: retries.append((delay, msg)))
    return actor, saved, replies, retries


def test_a_snapshot_waits_for_the_flush_while_batches_go_on_being_applied():
    state = FlushingState()
    actor, saved, replies, retries = make(state)
    actor.on_receive(Apply([put(1), put(2)], {}))
    actor.on_receive(TakeSnapshot(route="client1"))
    assert saved == [] and len(retries) == 1
    delay, retry = retries[0]
    assert isinstance(retry, RetrySnapshot) and retry.request.route == "client1" and 0 < delay < 1
    actor.on_receive(Apply([put(3)], {3: (1, "writer3")}))  # applied and answered meanwhile
    assert state.applied == 3 and [(r, rep.status) for r, rep in replies] == [("writer3", "ok")]
    actor.on_receive(TakeSnapshot(route="client2"))  # one snapshot at a time, as while one is built
    assert replies[-1][0] == "client2" and "already being taken" in replies[-1][1].error
    actor.on_receive(retry)  # still flushing: put off again, counted from the first time
    assert saved == [] and retries[-1][1].since == retry.since
    state.flushing = False
    actor.on_receive(retries[-1][1])
    assert [(s.index, s.route) for s in saved] == [(3, "client1")]
    assert saved[0].asked == retry.request.asked  # its log line counts the time it was put off


def test_a_snapshot_is_put_off_for_a_bounded_time_only(monkeypatch):
    monkeypatch.setattr(fsm, "SNAPSHOT_DEFER_MAX_S", 0.0)  # a flush that never seems to end
    actor, saved, _replies, retries = make(FlushingState())
    actor.on_receive(Apply([put(1)], {}))
    actor.on_receive(TakeSnapshot(route="client"))
    assert retries == [] and [(s.index, s.route) for s in saved] == [(1, "client")]


def test_the_automatic_snapshot_is_put_off_too_and_prepared_only_for_the_next_one():
    state = FlushingState()
    actor, saved, _replies, retries = make(state)
    actor.threshold = 8  # prepared (a flush begun) 7 entries after the last snapshot
    actor.on_receive(Apply([put(i) for i in range(1, 9)], {}))
    assert saved == [] and len(retries) == 1 and retries[0][1].request.route is None
    actor.on_receive(Apply([put(9)], {}))  # no second one, and no flush begun, while it is put off
    assert len(retries) == 1 and state.prepares == 0
    state.flushing = False
    actor.on_receive(retries[0][1])
    assert [s.index for s in saved] == [9]
    actor.on_receive(Apply([put(10)], {}))  # while it is built: a switch now would lose its state
    assert state.prepares == 0
    actor.on_receive(SnapshotDone(9))
    actor.on_receive(Apply([put(i) for i in range(11, 17)], {}))
    assert state.prepares == 1  # 7 after the snapshot: the next one's flush begins


def test_the_store_says_a_flush_is_running_until_it_is_done(tmp_path, monkeypatch):
    def slow_flushes(*args, **kwargs):
        opts = kv_options(*args, **kwargs)
        opts.set_ratelimiter(2 << 20, 100_000, 10)  # 2 MB/s: the flush below runs for seconds
        return opts

    kv_options = kv_store.kv_options
    monkeypatch.setattr(kv_store, "kv_options", slow_flushes)
    store = KvStore(str(tmp_path / "kv"))
    try:
        value = os.urandom(100)
        for b in range(60):
            store.apply_batch([Put(f"k{b:03d}{i:04d}", value) for i in range(1_000)], b + 1)
        assert not store.flush_running()
        store.prepare_checkpoint()  # switches the memtable; RocksDB flushes it in its background
        assert store.flush_running()
        wait_for(lambda: not store.flush_running(), timeout=60, what="the flush to end")
    finally:
        store.close()
