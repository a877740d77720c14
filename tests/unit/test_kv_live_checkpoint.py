"""A checkpoint built from the live DB's files by another thread (storage/kv_live_checkpoint.py):
at the index of the memtable switch whatever is applied meanwhile, refused rather than wrong when
that state is gone, and never built from a DB that was closed or replaced."""
from __future__ import annotations

import os
import threading
import zlib

import pytest

from raftkv.storage.kv_checkpoint import CheckpointError, build_manifest, finish_checkpoint, read_info
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


def _keys(path: str) -> int:
    import rocksdict

    from raftkv.storage.kv_db import kv_options
    db = rocksdict.Rdict(path, kv_options(cache_mb=8), access_type=rocksdict.AccessType.read_only())
    try:
        return sum(1 for k in db.keys() if k.startswith(b"v"))
    finally:
        db.close()


def test_the_switched_memtable_is_carried_in_its_wal_file_without_waiting_for_its_flush(tmp_path):
    # The flush is held back (2 MB/s): the checkpoint is built while it runs, from the SST files
    # plus the switched memtable's WAL file, and opens (read-only, read-write, restored) at its index.
    import rocksdict

    from raftkv.storage.checkpoint_store import stage_copy
    from raftkv.storage.kv_checkpoint import file_key
    from raftkv.storage.kv_db import K_APPLIED, kv_options
    from raftkv.storage.kv_live_checkpoint import link_checkpoint, newest_wal

    path = str(tmp_path / "db")
    opts = kv_options()
    opts.set_ratelimiter(2 << 20, 100_000, 10)
    db = rocksdict.Rdict(path, opts)
    try:
        for i in range(20_000):
            db[b"v%06d" % i] = os.urandom(100)
        db.flush(True)
        for i in range(20_000, 60_000):  # ~5 MB in the memtable: its flush takes seconds here
            db[b"v%06d" % i] = os.urandom(100)
        db[K_APPLIED] = b"\x00" * 7 + b"\x2a"
        db.flush(False)
        wal = newest_wal(path)
        db[b"v999999"] = b"after the index"  # in the new memtable and WAL file
        dest = str(tmp_path / "ckpt")
        crcs: dict = {}
        link_checkpoint(db, path, dest, wal, crcs)
        assert db.property_int_value("rocksdb.num-immutable-mem-table") == 1  # its flush still runs
        wals = [n for n in os.listdir(dest) if n.endswith(".log")]
        assert wals
        for name in wals:  # summed while being fsynced, for the snapshot's manifest
            with open(os.path.join(dest, name), "rb") as f:
                assert crcs[file_key(os.stat(f.fileno()))] == zlib.crc32(f.read())
    finally:
        db.close()
    assert _keys(dest) == 60_000
    restored = str(tmp_path / "restored")
    stage_copy(dest, restored)
    live = rocksdict.Rdict(restored, kv_options())  # read-write: replays and flushes the WAL file
    try:
        assert live[b"v059999"] is not None and live.get(b"v999999") is None
        assert live[K_APPLIED] == b"\x00" * 7 + b"\x2a"
    finally:
        live.close()
    assert _keys(dest) == 60_000  # the restore copied the WAL file: the checkpoint is unchanged


def _put_and_flush(db, first: int, n: int) -> None:
    for i in range(first, first + n):
        db[b"v%06d" % i] = VALUE
    db.flush(True)


class _LaggingLiveFiles:
    """A DB whose live_files still lists the files of an earlier version: RocksDB's state between
    writing a flush's MANIFEST record and installing its version (storage/rocks_manifest.py)."""

    def __init__(self, files: list) -> None:
        self.files = files

    def live_files(self) -> list:
        return self.files


def test_an_sst_file_the_manifest_names_before_live_files_lists_it_is_linked(tmp_path):
    # CI caught this race twice (a follower could not open the checkpoint it was sent: "No such
    # file ... 000015.sst ... MANIFEST may be corrupted"); here the gap is held open for good.
    import rocksdict

    from raftkv.storage.kv_db import kv_options
    from raftkv.storage.kv_live_checkpoint import link_checkpoint, newest_wal

    path = str(tmp_path / "db")
    db = rocksdict.Rdict(path, kv_options())
    try:
        _put_and_flush(db, 0, 20_000)
        earlier = db.live_files()
        _put_and_flush(db, 20_000, 20_000)  # its MANIFEST record names a second SST file that `earlier` lacks
        assert len(db.live_files()) == len(earlier) + 1
        dest = str(tmp_path / "ckpt")
        link_checkpoint(_LaggingLiveFiles(earlier), path, dest, newest_wal(path))
    finally:
        db.close()
    assert _keys(dest) == 40_000


def test_a_manifest_this_build_cannot_read_makes_each_checkpoint_opened_before_it_is_trusted(tmp_path, monkeypatch, caplog):
    # rocksdict is not pinned: a newer RocksDB may write a record rocks_manifest does not know.
    # Then only the listed files are linked, and the checkpoint is opened to check it.
    import rocksdict

    from raftkv.storage import kv_live_checkpoint
    from raftkv.storage.kv_db import kv_options
    from raftkv.storage.rocks_manifest import ManifestError

    def unreadable(self, path: str) -> set:
        raise ManifestError("unknown version edit tag 999")

    monkeypatch.setattr(kv_live_checkpoint.TableFiles, "read", unreadable)
    monkeypatch.setattr(kv_live_checkpoint, "_warned", [])
    path = str(tmp_path / "db")
    db = rocksdict.Rdict(path, kv_options())
    try:
        _put_and_flush(db, 0, 20_000)
        earlier = db.live_files()
        kv_live_checkpoint.link_checkpoint(db, path, str(tmp_path / "good"), kv_live_checkpoint.newest_wal(path))
        _put_and_flush(db, 20_000, 20_000)
        with pytest.raises(CheckpointError, match="does not open"):  # the race's checkpoint, caught
            kv_live_checkpoint.link_checkpoint(_LaggingLiveFiles(earlier), path, str(tmp_path / "bad"),
                                               kv_live_checkpoint.newest_wal(path))
    finally:
        db.close()
    assert _keys(str(tmp_path / "good")) == 20_000 and not os.path.exists(tmp_path / "bad")
    assert sum("cannot read the MANIFEST" in r.message for r in caplog.records) == 1  # once, not per snapshot


def test_checkpoints_read_a_manifest_that_rolled_over(tmp_path):
    # A new MANIFEST starts with the whole file list (the DB runs with max_manifest_file_size 1 MB;
    # here 1 KB so that it rolls over every few flushes).
    import rocksdict

    from raftkv.storage.kv_db import kv_options
    from raftkv.storage.kv_live_checkpoint import link_checkpoint, newest_wal

    path = str(tmp_path / "db")
    opts = kv_options()
    opts.set_max_manifest_file_size(1024)
    db = rocksdict.Rdict(path, opts)
    manifests = set()
    try:
        for round_ in range(12):
            _put_and_flush(db, round_ * 2_000, 2_000)
            with open(os.path.join(path, "CURRENT")) as f:
                manifests.add(f.read().strip())
            link_checkpoint(db, path, str(tmp_path / f"ckpt{round_}"), newest_wal(path))
    finally:
        db.close()
    assert len(manifests) >= 3
    for round_ in range(12):
        assert _keys(str(tmp_path / f"ckpt{round_}")) == (round_ + 1) * 2_000


def test_a_manifest_replaced_while_it_is_copied_is_copied_again(tmp_path, monkeypatch):
    # CURRENT was read just before RocksDB started a new MANIFEST and deleted the one it named.
    import rocksdict

    from raftkv.storage import kv_live_checkpoint
    from raftkv.storage.kv_db import kv_options

    real = kv_live_checkpoint._copy_prefix
    calls: list = []

    def replaced_once(src: str, dest: str, size: int) -> None:
        calls.append(src)
        if len(calls) == 1:
            raise FileNotFoundError(src)
        real(src, dest, size)

    monkeypatch.setattr(kv_live_checkpoint, "_copy_prefix", replaced_once)
    path = str(tmp_path / "db")
    db = rocksdict.Rdict(path, kv_options())
    try:
        _put_and_flush(db, 0, 5_000)
        dest = str(tmp_path / "ckpt")
        kv_live_checkpoint.link_checkpoint(db, path, dest, kv_live_checkpoint.newest_wal(path))
    finally:
        db.close()
    assert len(calls) == 2 and _keys(dest) == 5_000


def test_checkpoints_built_while_batches_are_applied_hold_exactly_their_index(tmp_path):
    # The production pattern: one thread applies batches and switches the memtable (begin), another
    # builds each checkpoint meanwhile; flushes and L0 compactions finish at random points of the
    # builds (which then copy again). Each checkpoint opens at its index with exactly its keys.
    import queue

    store = KvStore(str(tmp_path / "kv"))
    pending: queue.Queue = queue.Queue()
    built = threading.Event()
    taken: list = []
    errors: list = []

    def apply() -> None:
        try:
            for round_ in range(8):
                _fill(store, round_ * 12_000, 12_000, per_batch=200)
                built.clear()
                pending.put((store.begin_checkpoint(str(tmp_path / "snaps" / f"ckpt{round_}")), (round_ + 1) * 12_000))
                _fill(store, 1_000_000 + round_ * 3_000, 3_000, per_batch=200)  # while it is built
                built.wait(60)
        except BaseException as e:  # reported by the main thread
            errors.append(e)
        finally:
            pending.put(None)

    t = threading.Thread(target=apply)
    t.start()
    try:
        while (item := pending.get(timeout=120)) is not None:
            p, _ = item
            finish_checkpoint(p)
            taken.append(item)
            built.set()
        t.join(60)
    finally:
        store.close()
    assert not errors
    assert len(taken) == 8
    for p, firsts in taken:
        assert verify_db(p.path) == p.applied_index
        round_ = firsts // 12_000 - 1
        assert _keys(p.path) == firsts + round_ * 3_000  # the batches up to its index, none after
        assert build_manifest(p.path, summed=p.crcs) == build_manifest(p.path)  # the WAL files summed while built


def test_a_crash_while_a_checkpoint_is_built_leaves_the_previous_one_and_the_live_db(tmp_path, monkeypatch):
    from raftkv.storage import kv_live_checkpoint
    from raftkv.storage.kv_checkpoint import list_checkpoints

    class Crash(BaseException):
        pass

    store = KvStore(str(tmp_path / "kv"))
    snaps = tmp_path / "snaps"
    _fill(store, 0, 5_000)
    first = store.begin_checkpoint(str(snaps / "ckpt-00000000000000000010"))
    finish_checkpoint(first)
    at = _fill(store, 5_000, 5_000)
    second = store.begin_checkpoint(str(snaps / "ckpt-00000000000000000020"))

    def crash(*args: object) -> None:
        # the process dies after the links, while copying the MANIFEST: it cleans nothing up
        monkeypatch.setattr(kv_live_checkpoint.shutil, "rmtree", lambda *a, **k: None)
        raise Crash()

    monkeypatch.setattr(kv_live_checkpoint, "_copy_prefix", crash)
    with pytest.raises(Crash):
        finish_checkpoint(second)
    monkeypatch.undo()
    store.close()
    assert os.path.isdir(second.path + ".partial")
    found = list_checkpoints(str(snaps))  # start-up: the half-built one is deleted
    assert [c.applied_index for c in found] == [first.applied_index]
    assert not os.path.exists(second.path + ".partial") and not os.path.exists(second.path)
    assert verify_db(first.path) == first.applied_index
    store = KvStore(str(tmp_path / "kv"))
    try:
        assert store.applied_index() == at and store.get("k000009999") == VALUE
    finally:
        store.close()


def test_every_file_and_the_directory_are_synced_before_the_checkpoint_gets_its_name(tmp_path, monkeypatch):
    # The fsyncs of a build run at once (storage/kv_live_checkpoint.py, _run_all), but all of them,
    # the linked WAL files' (the live DB's durability up to the index) included, end before the
    # rename that makes the checkpoint a real one; the store's describe then fsyncs its directory.
    import stat as stat_

    from raftkv.storage.checkpoint_store import CheckpointStore
    from raftkv.storage.kv_checkpoint import checkpoint_name

    store = KvStore(str(tmp_path / "kv"))
    snaps = CheckpointStore(str(tmp_path / "snaps"))
    synced: list = []  # (path, kind) in the order their fsyncs returned
    events: list = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd: int) -> None:
        real_fsync(fd)
        st = os.fstat(fd)
        synced.append((os.readlink(f"/proc/self/fd/{fd}"), stat_.S_ISDIR(st.st_mode), st.st_ino))

    def rename(src: str, dst: str) -> None:
        events.append(("rename", src, dst, len(synced)))
        real_rename(src, dst)

    try:
        _fill(store, 0, 20_000)
        store.prepare_checkpoint()
        at = _fill(store, 20_000, 5_000)  # in the memtable switched below: carried as its WAL file
        pending = store.begin_checkpoint(snaps.path_for(at))
        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "rename", rename)
        finish_checkpoint(pending, sync_parent=False)
        [(_, src, dst, before_rename)] = [e for e in events if e[0] == "rename"]
        assert dst == pending.path and os.path.basename(dst) == checkpoint_name(at)
        done = synced[:before_rename]
        files = {ino for _, is_dir, ino in done if not is_dir}
        for name in os.listdir(dst):
            if not name.endswith(".sst"):  # SST files: synced by RocksDB when it wrote them
                assert os.stat(os.path.join(dst, name)).st_ino in files, name
        assert any(name.endswith(".log") for name in os.listdir(dst))
        dirs = {path for path, is_dir, _ in done if is_dir}
        assert src in dirs and store.path in dirs  # its entries, and the live DB's WAL file names
        meta = snaps.describe(pending, 1, [], prune=False)
        assert any(is_dir and path == snaps.directory for path, is_dir, _ in synced[before_rename:])
    finally:
        monkeypatch.undo()
        store.close()
    assert verify_db(meta.path) == at


def test_a_failed_fsync_fails_the_build_and_leaves_no_checkpoint(tmp_path, monkeypatch):
    from raftkv.storage import kv_live_checkpoint

    store = KvStore(str(tmp_path / "kv"))
    try:
        _fill(store, 0, 5_000)
        pending = store.begin_checkpoint(str(tmp_path / "snaps" / "ckpt"))
        real = kv_live_checkpoint._fsync_file

        def fsync_file(path: str) -> None:
            if path.endswith(".log"):
                raise OSError(5, "Input/output error")
            real(path)

        monkeypatch.setattr(kv_live_checkpoint, "_fsync_file", fsync_file)
        with pytest.raises(OSError, match="Input/output"):
            finish_checkpoint(pending)
        assert not os.path.exists(pending.path) and not os.path.exists(pending.path + ".partial")
    finally:
        store.close()
