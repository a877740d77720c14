"""LogWriter: what reaches the disk synced, what may wait, and a follower's inline write on a
failing disk acknowledging nothing."""
from __future__ import annotations

import pytest

from raftkv.actors.core import PersistBatch
from raftkv.actors.log_manager import LogWriter
from raftkv.actors.messages import DiskState, HandOff, PersistRequest
from raftkv.storage.log_store import LogStore
from raftkv.wire.messages import AppendReply, Entry, EntryKind

from .test_log_store import _record_writes


@pytest.fixture
def writer(tmp_path):
    sent: list = []
    w = LogWriter(LogStore(str(tmp_path / "log")), sent.extend, lambda m: None, node_id="n2")
    w.sent = sent
    yield w
    w.store.close()


def _entries(first: int, n: int) -> PersistBatch:
    return PersistBatch(first=first, entries=[Entry(1, EntryKind.COMMAND, b"x")] * n)


def test_entries_and_votes_are_synced_a_commit_alone_is_not(writer, monkeypatch):
    calls = _record_writes(writer.store, monkeypatch)
    writer.persist(PersistRequest(PersistBatch(term=1, vote="n1"), [], None))
    writer.persist(PersistRequest(_entries(1, 2), [], (2, 1)))
    writer.persist(PersistRequest(PersistBatch(commit=2), [], None))
    assert [c.sync for c in calls] == [True, True, False]
    assert writer.store.stable().commit == 2


def test_acknowledgements_leave_only_after_the_write(writer, monkeypatch):
    ack = ("n1", AppendReply(1, True, 2))
    assert writer.try_persist(PersistRequest(_entries(1, 2), [ack], (2, 1)))
    assert writer.sent == [ack] and writer.store.last_index() == 2


def test_inline_write_on_a_failing_disk_acknowledges_nothing(writer, monkeypatch):
    def broken(**kw):
        raise Exception("IO error: No space left on device")

    monkeypatch.setattr(writer.store, "write", broken)
    ack = ("n1", AppendReply(1, True, 1))
    assert not writer.try_persist(PersistRequest(_entries(1, 1), [ack], (1, 1)))
    assert writer.sent == []


def test_a_bug_is_not_taken_for_a_disk_error(writer):
    # entries that leave a gap: LogStore refuses them (ValueError), which must end the node
    with pytest.raises(ValueError):
        writer.try_persist(PersistRequest(_entries(5, 1), [], (5, 1)))


def test_a_failing_disk_is_reported_by_message_and_so_is_its_recovery(tmp_path, monkeypatch):
    # The role actor keeps the disk state: the writer tells it (DiskState, then HandOff so that a
    # leader hands over), keeps retrying, and tells it again once the write went through.
    reported: list = []
    sent: list = []
    w = LogWriter(LogStore(str(tmp_path / "log")), sent.extend, reported.append, node_id="n2")
    fails = {"left": 1}
    real_write = LogStore.write

    def flaky(self, **kw):
        if fails["left"]:
            fails["left"] -= 1
            raise Exception("IO error: No space left on device")
        return real_write(self, **kw)

    monkeypatch.setattr(LogStore, "write", flaky)
    ack = ("n1", AppendReply(1, True, 1))
    w.persist(PersistRequest(_entries(1, 1), [ack], (1, 1)))
    assert [type(m) for m in reported] == [DiskState, HandOff, DiskState]
    assert "No space left" in reported[0].error and reported[2].error == ""
    assert sent == [ack] and w.store.last_index() == 1  # acknowledged only once written
    w.store.close()
