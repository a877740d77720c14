"""A checkpoint built from the live DB's files by another thread (storage/kv_live_checkpoint.py):
at the index of the memtable switch whatever is applied meanwhile, refused rather than wrong when
that state is gone, and never built from a DB that was closed or replaced."""
from __future__ import annotations

import os
import threading

import pytest

from raftkv.storage.kv_checkpoint import CheckpointError, finish_checkpoint, read_info
from raftkv.storage.kv_install import verify_db
from raftkv.storage.kv_store import KvStore, Put

from .polling import wait_for

VALUE = b"v" * 100


def _fill(store: KvStore, first: int, n: int, per_batch: int = 500) -> int:
    index = store.applied_index()
    for start in range(first, first + n, per_batch):
        index += 1
        store.apply_batch([Put(f"k{i:09d}", VALUE) for i in range(start, min(start + per_batch, first + n))], index)
    return index


def test_checkpoint_holds_exactly_the_state_of_the_switch(tmp_path):
    store = KvStore(str(tmp_path / "kv"))
    try:
        for round_ in range(3):  # several SST files, and L0 compactions among the rounds
            _fill(store, round_ * 30_000, 30_000)
            store.prepare_checkpoint()
        at = store.applied_index()
        pending = store.begin_checkpoint(str(tmp_path / "snaps" / "ckpt"))
        assert pending.applied_index == at
        later = _fill(store, 90_000, 20_000)  # applied before the checkpoint is built
        finish_checkpoint(pending)
        assert read_info(pending.path).applied_index == at == verify_db(pending.path)
        os.unlink(os.path.join(pending.path, "RAFTKV-CHECKPOINT"))
        ckpt = KvStore(pending.path)
        try:
            assert ckpt.get("k000089999") == VALUE and ckpt.get("k000090000") is None
        finally:
            ckpt.close()
        assert store.applied_index() == later and store.get("k000109999") == VALUE
    finally:
        store.close()


def test_a_later_memtable_switch_refuses_the_checkpoint(tmp_path):
    store = KvStore(str(tmp_path / "kv"))
    try:
        _fill(store, 0, 10_000)
        pending = store.begin_checkpoint(str(tmp_path / "snaps" / "ckpt"))
        _fill(store, 10_000, 1_000)
        store.checkpoint(str(tmp_path / "backup"))  # e.g. a backup: flushes the entries past the index
        with pytest.raises(CheckpointError, match="switched again"):
            finish_checkpoint(pending)
        assert not os.path.exists(pending.path) and not os.path.exists(pending.path + ".partial")
    finally:
        store.close()


def test_a_replaced_store_refuses_a_checkpoint_begun_before(tmp_path):
    store = KvStore(str(tmp_path / "kv"))
    try:
        _fill(store, 0, 1_000)
        pending = store.begin_checkpoint(str(tmp_path / "snaps" / "ckpt"))
        store.reopen()
        with pytest.raises(CheckpointError, match="closed or replaced"):
            finish_checkpoint(pending)
        assert not os.path.exists(pending.path)
    finally:
        store.close()


def test_closing_waits_for_a_checkpoint_being_built(tmp_path):
    store = KvStore(str(tmp_path / "kv"))
    _fill(store, 0, 50_000)
    pending = store.begin_checkpoint(str(tmp_path / "snaps" / "ckpt"))
    errors: list = []

    def build() -> None:
        try:
            finish_checkpoint(pending)
        except CheckpointError as e:  # closed first: refused, never built from a closed DB
            errors.append(e)

    t = threading.Thread(target=build)
    t.start()
    store.close()
    t.join(timeout=60)
    assert not t.is_alive()
    if not errors:
        assert verify_db(pending.path) == pending.applied_index


def test_preparing_the_next_snapshot_waits_until_the_checkpoint_is_built(tmp_path):
    store = KvStore(str(tmp_path / "kv"))
    try:
        _fill(store, 0, 10_000)
        pending = store.begin_checkpoint(str(tmp_path / "snaps" / "ckpt"))
        _fill(store, 10_000, 1_000)
        store.prepare_checkpoint()  # the FSM nearing its next threshold: must not flush past the index
        finish_checkpoint(pending)
        assert verify_db(pending.path) == pending.applied_index
    finally:
        store.close()




def test_a_running_compaction_is_not_waited_for(tmp_path):
    # A snapshot's own flush often starts an L0 compaction, and at 10M keys one runs for seconds:
    # the checkpoint is built from the files live meanwhile (the compaction's inputs) instead.
    import rocksdict

    from raftkv.storage.kv_db import kv_options
    from raftkv.storage.kv_live_checkpoint import link_checkpoint, newest_wal

    path = str(tmp_path / "db")
    db = rocksdict.Rdict(path, kv_options())
    for i in range(60_000):
        db[b"k%06d" % i] = os.urandom(100)
    db.compact_range(None, None)  # ~7 MB in the bottom level, which the compaction below rewrites
    db.close()
    opts = kv_options()
    opts.set_ratelimiter(2 << 20, 100_000, 10)  # 2 MB/s: that compaction runs for seconds
    db = rocksdict.Rdict(path, opts)
    compaction = threading.Thread(target=lambda: db.compact_range(None, None))  # releases the GIL
    try:
        for f in range(2):
            for i in range(f, 60_000, 50):
                db[b"k%06d" % i] = b"file %d" % f
            db.flush(True)
        compaction.start()
        wait_for(lambda: db.property_int_value("rocksdb.num-running-compactions") == 1, "the compaction to start",
                 timeout=10)
        db[b"last"] = b"in the switched memtable"
        db.flush(False)
        dest = str(tmp_path / "ckpt")
        link_checkpoint(db, path, dest, newest_wal(path))
        assert db.property_int_value("rocksdb.num-running-compactions") == 1  # still running
        ckpt = rocksdict.Rdict(dest, kv_options(), access_type=rocksdict.AccessType.read_only())
        try:
            assert ckpt[b"last"] == b"in the switched memtable"
            assert ckpt[b"k000050"] == b"file 0" and ckpt[b"k000051"] == b"file 1"
            assert sum(1 for _ in ckpt.keys()) == 60_001
        finally:
            ckpt.close()
    finally:
        if compaction.is_alive():
            compaction.join()
        db.close()
