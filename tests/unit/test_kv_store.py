"""KvStore: the replicated state in RocksDB. Batches are atomic with their applied index across
crashes, scans are bounded, checkpoints freeze a state, and a streamed checkpoint is swapped in
so that a crash at any step leaves the old state or the new one."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections import OrderedDict

import msgpack
import pytest
import rocksdict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftkv.storage import kv_install
from raftkv.storage.kv_checkpoint import (INFO_FILE, CheckpointError, CheckpointManifest, CheckpointReceiver,
                                          FileChunk, build_manifest, checkpoint_name, iter_chunks, list_checkpoints)
from raftkv.storage.kv_db import K_FORMAT, KvFormatError
from raftkv.storage.kv_install import SwapStep
from raftkv.storage.kv_record import KeyRecord
from raftkv.storage.kv_store import (Delete, DropResult, DropResultsBelow, ExpireSession, ForgetExpired, KvStore, Put,
                                     SaveResult, TouchSession)
from raftkv.storage.log_store import StorageError


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "kv")


@pytest.fixture
def store(path):
    s = KvStore(path, cache_mb=8)
    yield s
    s.close()


def everything(s: KvStore) -> list:
    return s.scan("", 0)


def reopen(s: KvStore) -> KvStore:
    s.close()
    return KvStore(s.path, cache_mb=8)


# ---------------------------------------------------------------- apply, get, scan


def test_apply_then_get_and_delete(store):
    store.apply_batch([Put("a", b"1"), Put("b", b"2"), Put("a", b"3"), Delete("b"), Delete("never")], 7)
    assert store.get("a") == b"3"
    assert store.get("b") is None
    assert store.applied_index() == 7


def test_scan_is_sorted_bounded_and_stays_inside_the_prefix(store):
    keys = ["user/%03d" % i for i in range(50)] + ["user", "user0", "usea", "uses/x", "é/1", "zz"]
    store.apply_batch([Put(k, k.encode()) for k in reversed(keys)], 1)
    got = store.scan("user/", 10)
    assert [k for k, _ in got] == ["user/%03d" % i for i in range(10)]
    assert all(v == k.encode() for k, v in got)
    assert [k for k, _ in store.scan("user/", 0)] == ["user/%03d" % i for i in range(50)]
    assert [k for k, _ in store.scan("use", 100)] == sorted(k for k in keys if k.startswith("use"))
    assert [k for k, _ in store.scan("", 3)] == sorted(keys)[:3]
    assert store.scan("é", 5) == [("é/1", b"\xc3\xa9/1")]
    assert store.scan("nothing", 5) == []


def test_scan_of_a_prefix_ending_in_the_highest_code_point(store):
    store.apply_batch([Put("a\U0010ffff", b"1"), Put("a\U0010ffffb", b"2"), Put("b", b"3")], 1)
    assert [k for k, _ in store.scan("a\U0010ffff", 0)] == ["a\U0010ffff", "a\U0010ffffb"]


def test_values_keep_their_bytes_and_meta_is_stored_with_the_batch(store):
    store.apply_batch([Put("k", b"\x00\xff")], 3, meta={"term": b"\x05", "members": b"m"})
    s = reopen(store)
    try:
        assert s.get("k") == b"\x00\xff"
        assert s.get_meta("term") == b"\x05" and s.get_meta("members") == b"m"
        assert s.get_meta("other") is None
        assert s.applied_index() == 3
    finally:
        s.close()


def test_a_batch_reads_its_own_writes_before_they_are_applied(store):
    store.apply_batch([Put("a", b"1"), Put("b", b"2")], 1)
    b = store.batch()
    b.put("a", b"new")
    b.delete("b")
    b.add(SaveResult("c", 1, "ok"))
    assert (b.get("a"), b.get("b"), b.get("z")) == (b"new", None, None)
    assert store.get("a") == b"1"  # nothing written yet
    with pytest.raises(TypeError):
        b.add(Put("x", b"y"))
    store.apply_batch(b.ops, 2)
    assert (store.get("a"), store.get("b"), store.session_result("c", 1)) == (b"new", None, ("ok", None))


def test_a_batch_writes_each_key_once_with_its_last_record(store):
    store.apply_batch([Put("gone", b"1"), Put("kept", b"1")], 1)
    b = store.batch()
    b.put_record("a", KeyRecord(b"1", 2, 2, 1))
    b.put_record("a", KeyRecord(b"2", 2, 2, 2))  # the same key twice: its last record is written
    b.delete("gone")
    b.put("c", b"x")
    b.delete("c")  # put, then deleted in the same batch: absent
    b.add(SaveResult("s", 1, "ok", revision=2))
    assert b.ops == [Put("a", b"2", 2, 2, 2), Delete("gone"), Delete("c"), SaveResult("s", 1, "ok", revision=2)]
    store.apply_batch(b.other, 2, records=b.records())
    assert [store.get_record(k) for k in ("a", "gone", "c", "kept")] == [KeyRecord(b"2", 2, 2, 2), None, None,
                                                                        KeyRecord(b"1", 0, 0, 1)]
    assert (store.applied_index(), store.session_result("s", 1)) == (2, ("ok", None, 2))


_keys = st.text(alphabet="ab/é\U0010ffff", max_size=4)
_batches = st.lists(st.lists(st.one_of(st.builds(lambda k, v: Put(k, v), _keys, st.binary(max_size=3)), st.builds(Delete, _keys)),
                             max_size=8), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=_batches, probes=st.lists(st.tuples(_keys, st.integers(0, 5)), min_size=1, max_size=5),
       reopen_at=st.integers(0, 12))
def test_the_store_behaves_like_a_sorted_dict(tmp_path_factory, batches, probes, reopen_at):
    path = str(tmp_path_factory.mktemp("model") / "kv")
    s = KvStore(path, cache_mb=8)
    model: dict[str, bytes] = {}
    try:
        for i, ops in enumerate(batches, 1):
            s.apply_batch(ops, i)
            for op in ops:
                if type(op) is Put:
                    model[op.key] = op.value
                else:
                    model.pop(op.key, None)
            if i == reopen_at:
                s = reopen(s)
            for prefix, limit in probes:
                want = sorted((k, v) for k, v in model.items() if k.startswith(prefix))
                assert s.scan(prefix, limit) == (want[:limit] if limit else want)
                assert s.get(prefix) == model.get(prefix)
        assert s.applied_index() == len(batches)
    finally:
        s.close()


def test_applied_index_never_goes_back(store):
    store.apply_batch([Put("a", b"1")], 5)
    with pytest.raises(ValueError):
        store.apply_batch([Put("b", b"1")], 4)
    with pytest.raises(ValueError):
        store.apply_batch([("put", "x", b"1")], 6)
    assert store.get("b") is None and store.get("x") is None and store.applied_index() == 5


def test_an_unknown_format_version_is_refused_with_a_clear_error(path):
    KvStore(path).close()
    db = rocksdict.Rdict(path, rocksdict.Options(raw_mode=True))
    db.put(K_FORMAT, msgpack.packb(99))
    db.close()
    with pytest.raises(KvFormatError, match="format version 99, this build reads 1, 2"):
        KvStore(path)


def test_a_second_process_cannot_open_the_same_store(store, path):
    with pytest.raises(StorageError, match="another process"):
        KvStore(path)
    child = subprocess.run([sys.executable, "-c", "import sys; from raftkv.storage.kv_store import KvStore; "
                            "KvStore(sys.argv[1])", path], capture_output=True, text=True, timeout=60)
    assert child.returncode != 0 and "another process" in child.stderr
    assert store.get("x") is None  # the store is still usable
    store.close()
    KvStore(path).close()  # and once closed, it opens again


# ---------------------------------------------------------------- crashes


_CHILD = textwrap.dedent("""
    import os, sys
    from raftkv.storage.kv_store import KvStore, Put
    s = KvStore(sys.argv[1], cache_mb=8)
    start = s.applied_index() + 1
    mode = sys.argv[2]
    if mode == "one":
        s.apply_batch([Put("k%d" % i, b"v" * 100) for i in range(512)], 10)
        os._exit(0)  # no close, no WAL sync: a crash right after the write
    i = start
    while True:  # batch i: 512 keys "b<i>/<j>" and the applied index i
        s.apply_batch([Put("b%06d/%03d" % (i, j), b"%d" % i) for j in range(512)], i)
        if i == start + 20:
            print("ready", flush=True)
        i += 1
""")


def _child(path, mode):
    return subprocess.Popen([sys.executable, "-c", _CHILD, path, mode], stdout=subprocess.PIPE, text=True)


def test_a_batch_written_just_before_a_crash_is_there_whole_with_its_index(path):
    assert _child(path, "one").wait(timeout=60) == 0
    s = KvStore(path)
    try:
        assert s.applied_index() == 10
        assert len(everything(s)) == 512
    finally:
        s.close()


def test_a_process_killed_mid_stream_leaves_a_consistent_prefix_of_the_batches(path):
    for _ in range(3):
        child = _child(path, "loop")
        assert child.stdout.readline().strip() == "ready"
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        child.stdout.close()
        s = KvStore(path)
        try:
            n = s.applied_index()
            keys = [k for k, _ in everything(s)]
            # exactly the 512 keys of each batch 1..n, none of batch n + 1
            assert len(keys) == 512 * n
            assert keys[-1] == "b%06d/511" % n
        finally:
            s.close()


# ---------------------------------------------------------------- sessions


def test_the_session_table_survives_a_reopen(store):
    store.apply_batch([SaveResult("c1", 3, "ok"), SaveResult("c1", 1, "cas_failed", b"cur"),
                       SaveResult("c1", -2, "ok"), TouchSession("c1", 10),
                       SaveResult("c2", 1, "ok"), TouchSession("c2", 11),
                       SaveResult("c\x00x", 9, "ok"), TouchSession("c\x00x", 12)], 12)
    store.apply_batch([DropResult("c1", 3), ExpireSession("c2", 20), ExpireSession("gone", 15),
                       ExpireSession("old", 13), ForgetExpired("never")], 20)
    s = reopen(store)
    try:
        t = s.sessions()
        assert set(t.sessions) == {"c1", "c\x00x"}
        assert t.sessions["c1"].last_index == 10
        assert t.sessions["c1"].results == OrderedDict([(-2, ("ok", None)), (1, ("cas_failed", b"cur"))])
        assert t.sessions["c\x00x"].results == OrderedDict([(9, ("ok", None))])
        assert list(t.expired.items()) == [("old", 13), ("gone", 15), ("c2", 20)]  # by expiry index
        assert s.session_result("c1", 1) == ("cas_failed", b"cur")
        assert s.session_result("c2", 1) is None
        s.apply_batch([ForgetExpired("gone")], 21)
        assert list(s.sessions().expired) == ["old", "c2"]
    finally:
        s.close()


def test_the_clients_of_the_session_table_and_each_ones_results_read_apart(store):
    store.apply_batch([SaveResult("c1", 3, "ok"), SaveResult("c1", 1, "cas_failed", b"cur"),
                       SaveResult("c1", -2, "ok"), TouchSession("c1", 10),
                       SaveResult("c1\x00", 5, "ok"), TouchSession("c1\x00", 11)], 12)
    store.apply_batch([DropResult("c1", 3), ExpireSession("old", 13)], 13)
    s = reopen(store)
    try:
        t = s.session_clients()
        assert {cid: r.last_index for cid, r in t.sessions.items()} == {"c1": 10, "c1\x00": 11}
        assert all(not r.results for r in t.sessions.values())  # the results are not read
        assert list(t.expired.items()) == [("old", 13)]
        # one client's rows only, in seq order ("c1\x00"'s share the prefix "c1" but not the length)
        assert s.client_results("c1") == OrderedDict([(-2, ("ok", None)), (1, ("cas_failed", b"cur"))])
        assert s.client_results("c1\x00") == OrderedDict([(5, ("ok", None))])
        assert s.client_results("nobody") == OrderedDict()
        s.apply_batch([DropResultsBelow("c1", 1), DropResultsBelow("c1\x00", -5)], 14)
        assert list(s.client_results("c1")) == [1] and list(s.client_results("c1\x00")) == [5]
    finally:
        s.close()


# ---------------------------------------------------------------- checkpoints


def _state(path: str) -> tuple:
    s = KvStore(path, cache_mb=8)
    try:
        return s.applied_index(), everything(s), s.sessions()
    finally:
        s.close()


def test_a_checkpoint_keeps_exactly_the_state_at_its_index(store, tmp_path):
    store.apply_batch([Put("k%03d" % i, b"a") for i in range(100)] + [SaveResult("c", 1, "ok")], 5)
    info = store.checkpoint(str(tmp_path / "cks" / checkpoint_name(5)))
    assert info.applied_index == 5
    store.apply_batch([Put("k000", b"b"), Delete("k001"), Put("new", b"n"), SaveResult("c", 2, "ok")], 6)
    assert list_checkpoints(str(tmp_path / "cks")) == [info]
    index, items, sessions = _state(info.path)
    assert index == 5
    assert items == [("k%03d" % i, b"a") for i in range(100)]
    assert list(sessions.sessions["c"].results) == [1]
    assert store.get("k000") == b"b" and store.get("k001") is None


def test_checkpoints_are_listed_newest_first_and_partial_ones_removed(store, tmp_path):
    cks = tmp_path / "cks"
    for i in range(1, 5):
        store.apply_batch([Put("k", b"%d" % i)], i)
        store.checkpoint(str(cks / checkpoint_name(i)))
    (cks / (checkpoint_name(9) + ".partial")).mkdir()
    assert [c.applied_index for c in list_checkpoints(str(cks), clean=False)] == [4, 3, 2, 1]
    assert (cks / (checkpoint_name(9) + ".partial")).is_dir()  # clean=False: left alone
    assert [c.applied_index for c in list_checkpoints(str(cks))] == [4, 3, 2, 1]
    assert sorted(os.listdir(cks)) == [checkpoint_name(i) for i in range(1, 5)]


def _send(src: str, receiver: CheckpointReceiver, chunk_size: int = 4096, stop_after: int = -1) -> None:
    manifest = build_manifest(src)
    for n, chunk in enumerate(iter_chunks(src, manifest, receiver.resume_point(), chunk_size)):
        if n == stop_after:
            return
        receiver.write(chunk)


@pytest.fixture
def leader_checkpoint(tmp_path):
    """A checkpoint at index 50 of a store with 2,000 keys (several SST files' worth of chunks)."""
    s = KvStore(str(tmp_path / "leader"), cache_mb=8)
    try:
        s.apply_batch([Put("key%05d" % i, b"L" * 100) for i in range(2000)] + [SaveResult("c", 7, "ok")], 50,
                      meta={"term": b"3"})
        return s.checkpoint(str(tmp_path / "leader-cks" / checkpoint_name(50))).path
    finally:
        s.close()


def test_a_streamed_checkpoint_is_rebuilt_and_swapped_in(store, leader_checkpoint, path):
    store.apply_batch([Put("mine", b"old")], 7)
    manifest = CheckpointManifest.from_bytes(build_manifest(leader_checkpoint).to_bytes())
    receiver = CheckpointReceiver(path + ".incoming", manifest, max_bytes=1 << 30)
    _send(leader_checkpoint, receiver, stop_after=5)  # the stream breaks off...
    assert receiver.resume_point() is not None
    with pytest.raises(CheckpointError, match="incomplete"):
        receiver.finish()
    _send(leader_checkpoint, receiver)  # ...and resumes where the receiver stands
    assert receiver.resume_point() is None
    staged = receiver.finish()
    assert staged.applied_index == 50
    assert store.install(staged.path) == 50
    assert store.applied_index() == 50
    assert store.get("mine") is None
    assert store.get("key01999") == b"L" * 100
    assert len(everything(store)) == 2000
    assert store.get_meta("term") == b"3"
    assert store.session_result("c", 7) == ("ok", None)
    assert not os.path.exists(path + ".incoming") and not os.path.exists(path + ".old")
    store.apply_batch([Put("after", b"1")], 51)  # the installed DB is the live one
    s = reopen(store)
    try:
        assert s.applied_index() == 51 and s.get("after") == b"1"
    finally:
        s.close()


def test_resent_chunks_are_ignored(leader_checkpoint, tmp_path):
    manifest = build_manifest(leader_checkpoint)
    receiver = CheckpointReceiver(str(tmp_path / "in"), manifest, max_bytes=1 << 30)
    chunks = list(iter_chunks(leader_checkpoint, manifest, chunk_size=1000))
    for c in chunks[:3] + chunks[:3] + chunks[3:]:
        receiver.write(c)
    assert receiver.finish().applied_index == 50


def test_the_receiver_refuses_what_the_manifest_does_not_allow(leader_checkpoint, tmp_path):
    manifest = build_manifest(leader_checkpoint)
    staging = str(tmp_path / "in")
    with pytest.raises(CheckpointError, match="exceeds the cap"):
        CheckpointReceiver(staging, manifest, max_bytes=manifest.total_bytes() - 1)
    for bad in ("../evil", "/etc/passwd", ".hidden", "a/b"):
        m = CheckpointManifest(50, manifest.files + [type(manifest.files[0])(bad, 1, 0)])
        with pytest.raises(CheckpointError, match="bad file entry"):
            CheckpointReceiver(staging, m, max_bytes=1 << 30)
    receiver = CheckpointReceiver(staging, manifest, max_bytes=1 << 30)
    big = max(manifest.files, key=lambda f: f.size)
    with pytest.raises(CheckpointError, match="not in the manifest"):
        receiver.write(FileChunk("other", 0, b"x"))
    with pytest.raises(CheckpointError, match="beyond its size"):
        receiver.write(FileChunk(big.name, big.size, b"x"))
    with pytest.raises(CheckpointError, match="missing"):
        receiver.write(FileChunk(big.name, 10, b"x"))
    assert os.listdir(staging) == []


def test_a_damaged_chunk_fails_the_checksum(leader_checkpoint, tmp_path):
    manifest = build_manifest(leader_checkpoint)
    receiver = CheckpointReceiver(str(tmp_path / "in"), manifest, max_bytes=1 << 30)
    for c in iter_chunks(leader_checkpoint, manifest):
        if c.name.endswith(".sst"):
            c = FileChunk(c.name, c.offset, bytes([c.data[0] ^ 1]) + c.data[1:])
        receiver.write(c)
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        receiver.finish()


def test_a_checkpoint_at_another_index_than_announced_is_refused(leader_checkpoint, tmp_path):
    manifest = build_manifest(leader_checkpoint)
    manifest.applied_index = 49
    receiver = CheckpointReceiver(str(tmp_path / "in"), manifest, max_bytes=1 << 30)
    _send(leader_checkpoint, receiver)
    with pytest.raises(CheckpointError, match="index 50"):
        receiver.finish()


class Crash(Exception):
    pass


@pytest.mark.parametrize("step", [SwapStep.STAGED, SwapStep.MARKED, SwapStep.OLD_MOVED, SwapStep.NEW_MOVED,
                                  SwapStep.UNMARKED])
def test_a_swap_interrupted_at_any_step_recovers_to_the_old_or_the_new_state(
        step, store, leader_checkpoint, path, monkeypatch):
    store.apply_batch([Put("mine", b"old")], 7)
    receiver = CheckpointReceiver(path + ".incoming", build_manifest(leader_checkpoint), max_bytes=1 << 30)
    _send(leader_checkpoint, receiver)
    staged = receiver.finish()

    def crash(at):
        if at == step:
            raise Crash(at)

    monkeypatch.setattr(kv_install, "_crash_point", crash)
    store.close()  # the node dies at that step: nothing of this process runs afterwards
    with pytest.raises(Crash):
        kv_install.install(path, staged.path)
    monkeypatch.undo()
    index, items, _ = _state(path)  # opening runs the recovery
    if step == SwapStep.STAGED:  # before the marker: not committed
        assert (index, items) == (7, [("mine", b"old")])
    else:
        assert index == 50 and len(items) == 2000 and ("mine", b"old") not in items
    leftovers = sorted(n for n in os.listdir(os.path.dirname(path)) if n.startswith("kv"))
    assert leftovers == ["kv", "kv.lock"]


def test_a_recovery_interrupted_itself_still_completes(store, leader_checkpoint, path, monkeypatch):
    store.apply_batch([Put("mine", b"old")], 7)
    receiver = CheckpointReceiver(path + ".incoming", build_manifest(leader_checkpoint), max_bytes=1 << 30)
    _send(leader_checkpoint, receiver)
    staged = receiver.finish()
    def crash(at):
        if at == SwapStep.MARKED:
            raise Crash(at)

    monkeypatch.setattr(kv_install, "_crash_point", crash)
    store.close()
    with pytest.raises(Crash):
        kv_install.install(path, staged.path)
    monkeypatch.undo()
    real_rename = os.rename
    calls = []

    def rename_once(a, b):  # the recovery crashes after its first rename
        calls.append((a, b))
        real_rename(a, b)
        if len(calls) == 1:
            raise Crash()

    monkeypatch.setattr(kv_install.os, "rename", rename_once)
    with pytest.raises(Crash):
        kv_install.recover(path)
    monkeypatch.undo()
    index, items, _ = _state(path)
    assert index == 50 and len(items) == 2000


def test_a_staged_dir_that_is_not_a_kv_db_leaves_the_live_state_alone(store, path, tmp_path):
    store.apply_batch([Put("mine", b"old")], 7)
    bogus = tmp_path / "bogus"
    bogus.mkdir()
    (bogus / INFO_FILE).write_bytes(b"x")
    with pytest.raises(StorageError):
        store.install(str(bogus))
    assert store.applied_index() == 7 and everything(store) == [("mine", b"old")]  # reopened as it was
    store.close()
    assert _state(path)[:2] == (7, [("mine", b"old")])


# ---------------------------------------------------------------- a bounded scan over many keys


def test_a_prefix_scan_visits_at_most_limit_plus_one_keys_of_a_million(tmp_path):
    s = KvStore(str(tmp_path / "big"), cache_mb=8, statistics=True)
    try:
        value = b"v" * 16
        for b in range(0, 1_000_000, 100_000):
            s.apply_batch([Put("p%d/%07d" % (i % 10, i), value) for i in range(b, b + 100_000)], b + 100_000)
        seeks, nexts = s.ticker("rocksdb.number.db.seek"), s.ticker("rocksdb.number.db.next")
        got = s.scan("p3/", 100)
        assert [k for k, _ in got] == ["p3/%07d" % i for i in range(3, 1003, 10)]
        assert s.ticker("rocksdb.number.db.seek") - seeks == 1
        assert s.ticker("rocksdb.number.db.next") - nexts <= 101
    finally:
        s.close()


def test_a_plain_ok_result_is_stored_as_the_same_msgpack_as_any_result(store):
    # The write path builds an "ok" result's bytes without packb: they must be packb's bytes,
    # so that older builds (and session_result) read them as before.
    revs = [1, 127, 128, 255, 256, 65_535, 65_536, 2**32 - 1, 2**32, 2**63 - 1]
    store.apply_batch([SaveResult("c", i, "ok", None, rev) for i, rev in enumerate(revs)]
                      + [SaveResult("c", 100, "ok", None, 0), SaveResult("c", 101, "cas_failed", b"v", 7)], 1)
    for i, rev in enumerate(revs):
        key = b"s" + len(b"c").to_bytes(2, "big") + b"c" + (i + (1 << 63)).to_bytes(8, "big")
        assert store._db.get(key) == msgpack.packb(["ok", None, rev], use_bin_type=True)
        assert store.session_result("c", i) == ("ok", None, rev)
    assert store.session_result("c", 100) == ("ok", None)
    assert store.session_result("c", 101) == ("cas_failed", b"v", 7)
