"""Serving a backup (actors/backup_serving.py): a checkpoint at the applied index, read back in
bounded chunks into a stream the snapshot receiver accepts; unknown, finished, idle and
too-many backups answered clearly, and their checkpoints deleted."""
from __future__ import annotations

import os

from raftkv.actors import backup_serving as bs
from raftkv.actors.backup_serving import BackupRead, BackupServer, take_backup
from raftkv.actors.db_state import DbState
from raftkv.actors.fsm import KVState
from raftkv.records import Member
from raftkv.storage.checkpoint_store import CheckpointStore, StreamReceiver
from raftkv.storage.kv_store import KvStore
from raftkv.wire.messages import Command, EntryKind, encode_record

ME = [Member("n1", "127.0.0.1:9001")]


def _state(tmp_path, n: int = 200) -> tuple:
    kv = KvStore(str(tmp_path / "kv"))
    st = DbState(kv)
    for i in range(1, n + 1):
        st.apply(i, EntryKind.COMMAND, encode_record(Command("put", f"k{i}", b"v" * 5000)))
    st.end_batch(2, ME)
    snaps = CheckpointStore(str(tmp_path / "snapshots"))
    return kv, st, snaps


class Replies:
    def __init__(self) -> None:
        self.got: list = []

    def __call__(self, items: list) -> None:
        self.got.extend(rep for _, rep in items)

    def last(self):
        return self.got[-1]


def test_a_backup_streams_a_checkpoint_at_the_applied_index(tmp_path, monkeypatch):
    monkeypatch.setattr(bs, "CHUNK_BYTES", 64 * 1024)
    kv, st, snaps = _state(tmp_path)
    replies = Replies()
    server = BackupServer("n1", replies)
    taken = take_backup(st, snaps.path_for, 2, ME, "route")
    server.taken(taken)
    info = replies.last().info
    assert replies.last().status == "ok" and info["index"] == 200 and info["term"] == 2 and info["node"] == "n1"
    rx = StreamReceiver(str(tmp_path / "rx"))
    offset = 0
    while offset < info["size"]:
        server.read(BackupRead("r", info["backup"], offset, 10 << 20))  # asks for more: gets a chunk at most
        data = replies.last().value
        assert 0 < len(data) <= 64 * 1024
        rx.feed(data)
        offset += len(data)
    got, _ = rx.finish()
    assert got.applied_index == 200
    assert os.path.isdir(taken.path)
    server.read(BackupRead("r", info["backup"], offset, 0))  # the end: the checkpoint goes
    assert replies.last().status == "ok" and not os.path.exists(taken.path)
    server.read(BackupRead("r", info["backup"], 0, 0))
    assert replies.last().status == "invalid" and "start the backup again" in replies.last().error
    assert CheckpointStore(snaps.directory).list() == []  # a backup is no snapshot
    kv.close()


def test_limits_idle_expiry_and_the_in_memory_state(tmp_path, monkeypatch):
    kv, st, snaps = _state(tmp_path, 5)
    replies = Replies()
    server = BackupServer("n1", replies)
    paths = []
    for _ in range(bs.MAX_BACKUPS + 1):
        t = take_backup(st, snaps.path_for, 1, ME, "r")
        paths.append(t.path)
        server.taken(t)
    assert replies.last().status == "unavailable" and "being read already" in replies.last().error
    assert not os.path.exists(paths[-1]) and len(server.active) == bs.MAX_BACKUPS
    monkeypatch.setattr(bs, "IDLE_S", -1.0)  # every backup is idle now
    server.read(BackupRead("r", "nope", 0, 0))
    assert server.active == {} and not any(os.path.exists(p) for p in paths)

    server.taken(take_backup(KVState(), None, 1, ME, "r"))
    assert replies.last().status == "invalid" and "RocksDB" in replies.last().error
    server.taken(take_backup(st, snaps.path_for, 1, ME, "r"))
    server.close()
    assert server.active == {} and [n for n in os.listdir(snaps.directory) if n.startswith("backup-")] == []
    kv.close()
