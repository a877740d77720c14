"""A new checkpoint's manifest carries over the CRC-32s of the SST files it shares (hard links)
with a described one, instead of reading them again, and a damaged file is still caught."""
from __future__ import annotations

import os

import pytest

from raftkv.records import Member
from raftkv.storage import kv_checkpoint
from raftkv.storage.checkpoint_store import CheckpointStore, StreamCheck
from raftkv.storage.crc_warmer import CrcWarmer
from raftkv.storage.kv_checkpoint import CheckpointError, CheckpointManifest, build_manifest
from raftkv.storage.kv_store import KvStore, Put

MEMBERS = [Member("n1", "127.0.0.1:1", "127.0.0.1:2", "", True)]


def _two_checkpoints(tmp_path):
    kv = KvStore(str(tmp_path / "kv"))
    kv.apply_batch([Put(f"k{i:05d}", os.urandom(100)) for i in range(5000)], 7)
    store = CheckpointStore(str(tmp_path / "snaps"), keep=3)
    first = store.describe(kv.checkpoint(store.path_for(7)), 3, MEMBERS)
    kv.apply_batch([Put("x", b"new")], 8)
    return kv, store, first


def _ssts(meta) -> dict:
    return {f.name: f for f in CheckpointManifest.from_bytes(meta.manifest).files if f.name.endswith(".sst")}


def test_shared_sst_files_are_not_read_again(tmp_path, monkeypatch):
    kv, store, first = _two_checkpoints(tmp_path)
    read = []
    real_open = open

    def counting_open(path, *a, **k):
        read.append(os.path.basename(str(path)))
        return real_open(path, *a, **k)

    monkeypatch.setattr(kv_checkpoint, "open", counting_open, raising=False)
    second = store.describe(kv.checkpoint(store.path_for(8)), 3, MEMBERS)
    old, new = _ssts(first), _ssts(second)
    shared = set(old) & set(new)
    assert shared and set(new) - set(old)  # the first's file, and the flush of "x"
    assert not shared & set(read)  # shared files: carried over, not read
    assert set(new) - set(old) <= set(read)  # new files: summed
    # and the carried-over CRC-32s are the files' own (the manifest a full read builds)
    monkeypatch.undo()
    assert build_manifest(second.path) == CheckpointManifest.from_bytes(second.manifest)
    kv.close()


def test_a_shared_file_damaged_since_is_caught_before_it_is_streamed(tmp_path):
    kv, store, first = _two_checkpoints(tmp_path)
    name = sorted(_ssts(first))[0]
    with open(os.path.join(first.path, name), "r+b") as f:  # the same inode as the live DB's file
        f.seek(100)
        b = f.read(1)
        f.seek(100)
        f.write(bytes([b[0] ^ 0xFF]))
    second = store.describe(kv.checkpoint(store.path_for(8)), 3, MEMBERS)
    with pytest.raises(CheckpointError, match="corrupt"):
        store.open_verified(second)
    check = StreamCheck(second)
    with pytest.raises(CheckpointError, match="corrupt"):
        check.check(0, store.read(second, 0, second.size))
    kv.close()


def test_files_summed_in_the_background_are_not_read_by_the_snapshot(tmp_path, monkeypatch):
    kv = KvStore(str(tmp_path / "kv"))
    store = CheckpointStore(str(tmp_path / "snaps"), keep=3)
    store.warmer = CrcWarmer(kv.path, kv.sst_files, store._manifest_crcs)  # not started: stepped by hand
    kv.apply_batch([Put(f"k{i:05d}", os.urandom(100)) for i in range(5000)], 7)
    kv._db.flush(True)
    assert store.warmer.scan_once() >= 1
    live = {name for name, _ in kv.sst_files()}
    assert store.warmer.scan_once() == 0  # summed once only
    read = []
    real_open = open

    def counting_open(path, *a, **k):
        read.append(os.path.basename(str(path)))
        return real_open(path, *a, **k)

    monkeypatch.setattr(kv_checkpoint, "open", counting_open, raising=False)
    meta = store.describe(kv.checkpoint(store.path_for(7)), 3, MEMBERS)
    assert live and not live & set(read)
    monkeypatch.undo()
    assert build_manifest(meta.path) == CheckpointManifest.from_bytes(meta.manifest)
    kv.close()


def test_a_file_whose_size_is_not_rocksdbs_yet_is_not_summed(tmp_path):
    kv = KvStore(str(tmp_path / "kv"))
    kv.apply_batch([Put("a", b"1")], 1)
    kv._db.flush(True)
    files = kv.sst_files()
    growing = CrcWarmer(kv.path, lambda: [(n, s + 1) for n, s in files], dict)
    assert growing.scan_once() == 0 and growing.known() == {}
    whole = CrcWarmer(kv.path, lambda: files, dict)
    assert whole.scan_once() == len(files)
    kv.close()


def test_the_background_pass_leaves_a_checkpoint_being_taken_alone(tmp_path):
    kv, store, first = _two_checkpoints(tmp_path)
    info = kv.checkpoint(store.path_for(8), finish=False)  # the FSM's: a .partial until finished
    partial = info.path + ".partial"
    assert os.path.isdir(partial)
    warmer = CrcWarmer(kv.path, kv.sst_files, store._manifest_crcs)
    warmer.scan_once()
    store.known_crcs(exclude=info.path)
    assert os.path.isdir(partial)
    kv_checkpoint.finish_checkpoint(info)
    second = store.describe(info, 3, MEMBERS)
    assert set(_ssts(second)) and build_manifest(second.path) == CheckpointManifest.from_bytes(second.manifest)
    kv.close()


def test_listing_snapshots_while_the_fsm_takes_one_leaves_it_alone(tmp_path):
    kv, store, first = _two_checkpoints(tmp_path)
    info = kv.checkpoint(store.path_for(8), finish=False)
    assert [m.last_index for m in store.list()] == [7]  # e.g. the snapshotter sending snapshot 7
    kv_checkpoint.finish_checkpoint(info)
    assert store.describe(info, 3, MEMBERS).last_index == 8
    kv.close()
