"""The LogManager actor and its LogWriter: the durable log (storage.log_store), written in group commits.

The role actor keeps at most one PersistRequest in flight and merges everything produced
meanwhile into the next one, so one synced RocksDB WriteBatch carries every proposal, vote and
truncation that arrived during the previous sync (group commit). Messages that promise
durability (votes, append acknowledgements) are sent right after the sync.

The leader hands its writes to the LogManager actor, so that its own sync runs in parallel
with replication. A follower has nothing to do meanwhile but wait, so it writes in its own
thread through the same LogWriter (:meth:`LogWriter.try_persist`) and acknowledges straight
after the sync: two thread hand-offs fewer on every write's path. Either way one write is in
flight at a time, so the store is never written by two threads at once.

A failing disk (full, read-only, I/O errors) is not a reason to crash: the batch is retried
(a WriteBatch is atomic, so a retry is idempotent) with the store reopened, and meanwhile
nothing that depends on it is acknowledged; the writer reports the fault to the role actor
(``DiskState``, then ``HandOff``: if it leads, it hands leadership to a node whose disk works)
and ``DiskState("")`` once the disk works again. The role actor alone keeps that state.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from raftkv.storage.log_store import UNSET, LogStore
from raftkv.wire.stats import LogStats

from .messages import DiskState, HandOff, PersistRequest, Persisted, SetMeta
from .supervision import SupervisedActor

log = logging.getLogger("actors.log")

RETRY_MAX_S = 2.0


def is_disk_error(e: BaseException) -> bool:
    """RocksDB reports I/O problems as plain Exceptions whose text starts with 'IO error'."""
    return isinstance(e, OSError) or "IO error" in str(e) or "No space left" in str(e)


class LogWriter:
    """Writes PersistRequests and metadata synced, sends their follow-up messages; retries a
    failing disk (see the module doc). ``report`` delivers messages to the role actor
    (Persisted, DiskState, HandOff).

    Owns the store: it is used under ``_lock`` only, by at most one PersistRequest at a time (the
    role actor's inline write or the LogManager's), plus metadata writes.
    """

    def __init__(self, store: LogStore, send_many: Callable[[list], None], report: Callable[[Any], None],
                 node_id: str = "") -> None:
        self.store = store
        self.send_many = send_many
        self.report = report
        self.node_id = node_id
        self._lock = threading.Lock()
        self._broken = False  # the store could not be reopened: every op fails until it can
        # Synced-write latency and entries per group commit; written under ``_lock``, read by
        # the node's metrics at scrape time.
        self.stats = LogStats()

    def persist(self, msg: PersistRequest) -> None:
        """Write ``msg`` durably (retrying while the disk fails), then send its messages."""
        self._durably(lambda: self._write(msg))
        self.send_many(msg.after)

    def try_persist(self, msg: PersistRequest) -> bool:
        """One attempt of :meth:`persist` in the caller's thread. False on a disk error: nothing
        was acknowledged, and the caller hands ``msg`` to the LogManager, which retries."""
        with self._lock:
            if self._broken:
                return False
            try:
                self._write(msg)
            except Exception as e:  # only disk errors fall back; see is_disk_error
                if not is_disk_error(e):
                    raise
                return False
        self.send_many(msg.after)
        return True

    def set_meta(self, values: dict) -> None:
        self._durably(lambda: self.store.set_meta(**values))

    def _write(self, msg: PersistRequest) -> None:
        b = msg.batch
        if b.commit_only():
            self._write_batch(b)  # not synced (see below): no fsync to measure
            return
        t0 = time.perf_counter()
        self._write_batch(b)
        stats = self.stats
        stats.fsync.observe(time.perf_counter() - t0)
        if b.entries:
            stats.batch.observe(len(b.entries))

    def _write_batch(self, b: Any) -> None:
        st = self.store
        if (b.compact_to is not None and b.truncate_from is not None and b.entries
                and b.first == b.compact_to[0] + 1):
            # A snapshot install that discarded the whole log, merged with the entries appended
            # after it: delete, move the base to the snapshot, then append from there.
            st.write(term=b.term, vote=b.vote if b.term is not None else UNSET, commit=b.commit,
                     truncate_from=b.truncate_from)
            st.drop_prefix(*b.compact_to)
            st.write(first_index=b.first, entries=b.entries)
            return
        st.write(
            term=b.term,
            vote=b.vote if b.term is not None else UNSET,
            commit=b.commit,
            truncate_from=b.truncate_from,
            first_index=b.first,
            entries=b.entries,
            # A commit index alone needs no sync: a lower one after a crash is only a lower bound
            # (the node learns the rest from the leader), and the next synced batch, written
            # after it in the WAL, makes it durable anyway. etcd's raft treats it the same way.
            sync=not b.commit_only(),
            drop_to=b.compact_to,  # in the same fsync when it can be (LogStore.write)
        )

    def _durably(self, op: Callable[[], None]) -> None:
        delay = 0.05
        failing = False
        while True:
            with self._lock:
                try:
                    if self._broken:
                        self._reopen()
                    op()
                    done = True
                except Exception as e:  # only disk errors are retried; see below
                    if not is_disk_error(e) and not self._broken:
                        raise  # a bug, not the disk: let supervision end the process
                    done = False
                    if not failing:
                        failing = True
                        log.error("%s: cannot write the log (%s); acknowledging nothing until it works again",
                                  self.node_id, e)
                        self.report(DiskState(f"disk failure: {e}"))
                        self.report(HandOff())
            if done:
                break
            time.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)
            with self._lock:
                self._reopen()
        if failing:
            log.warning("%s: the log is writable again", self.node_id)
            self.report(DiskState(""))

    def _reopen(self) -> None:
        # After a failed WAL write RocksDB refuses further writes until reopened.
        path = self.store.path
        try:
            self.store.close()
        except Exception:  # closing a broken store may fail too
            pass
        try:
            self.store = LogStore(path)
            self._broken = False
        except Exception as e:
            self._broken = True
            log.debug("%s: reopening the log failed: %s", self.node_id, e)


class LogManager(SupervisedActor):
    """The actor in front of a LogWriter: writes PersistRequests and reports them Persisted (to
    the role actor, through the writer's ``report``); writes SetMeta."""

    def __init__(self, writer: LogWriter) -> None:
        super().__init__()
        self.writer = writer

    def on_receive(self, msg: Any) -> Any:
        if type(msg) is PersistRequest:
            self.writer.persist(msg)
            self.writer.report(Persisted(msg.last))
        elif type(msg) is SetMeta:
            self.writer.set_meta(msg.values)
        return None
