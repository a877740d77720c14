"""The FSM actor: applies committed commands in log order and serves reads.

The state is a dict of key -> bytes. Commands are applied exactly once per (client id,
sequence number) (Raft thesis 6.3): the FSM keeps, per client, the results of its most recent
sequence numbers (a window, since several requests of one client may be in flight) and
answers a duplicate with the stored result instead of applying it again.
"""
from __future__ import annotations

import bisect
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Optional

import msgpack
import pykka

from raftkv.records import WRITE_OPS, Op, Status, UndecodableEntry
from raftkv.storage.kv_record import KeyRecord
from raftkv.wire.codec import record_decoder
from raftkv.wire.messages import ClientReply, Command, DecodeError, EntryKind

from . import kv_apply
from .backup_serving import take_backup
from .core import decode_config
from .lease_state import LEASE_WRITE_OPS, LeaseTable, execute_with_lease, result_reply
from .messages import Apply, Read, Restore, RetrySnapshot, SnapshotDone, TakeSnapshot
from .own_commands import own_command
from .snapshotter import SaveSnapshot
from .supervision import SupervisedActor, die
from .token_state import TOKEN_WRITE_OPS, TokenState
from .watch_events import WatchEvent

log = logging.getLogger("actors.fsm")

SESSION_WINDOW = 1024  # results kept per client: more than any client keeps in flight
SESSION_TTL = 100_000  # a session unused for this many log entries expires
EXPIRED_TTL = 10 * SESSION_TTL  # how long an expired session is remembered (to reject its requests)
SWEEP_EVERY = 1024  # entries between expiry sweeps
SNAPSHOT_VERSION = 3  # 2: the session table packed as maps; 3: keys with their revisions ("kvr")
READABLE_SNAPSHOT_VERSIONS = frozenset({2, 3})
SNAPSHOT_CHUNK_KEYS = 4096
_WATCH, _OK = Op.WATCH.value, Status.OK.value
_CONFIG = int(EntryKind.CONFIG)  # compared with each applied entry's kind: a plain int, not the enum's lookup


# committed_command runs for every entry a follower applies: an int and one set, not the enum
# and three sets, and the Command's decoder without decode_record's layers (wire/codec.py)
_COMMAND = int(EntryKind.COMMAND)
_APPLIED_OPS = WRITE_OPS | LEASE_WRITE_OPS | TOKEN_WRITE_OPS
_decode_command = record_decoder(Command)


def committed_command(index: int, kind: int, payload: bytes) -> Optional[Command]:
    """The client command of committed entry ``index``, or None for a no-op or a configuration.

    An entry this build cannot read stops the node (UndecodableEntry), on every replica alike,
    rather than being skipped on some and applied on others.
    """
    if kind != _COMMAND:
        if kind == EntryKind.NOOP or kind == EntryKind.CONFIG:
            return None
        raise UndecodableEntry(index, f"unknown entry kind {kind!r}")
    try:
        cmd = _decode_command(payload)
    except DecodeError as e:
        raise UndecodableEntry(index, str(e)) from None
    if cmd.op not in _APPLIED_OPS:
        raise UndecodableEntry(index, f"unknown write operation {cmd.op!r}")
    return cmd


class Session:
    """One client's recent results by sequence number, and the log index of its last request."""

    __slots__ = ("results", "last_index")

    def __init__(self) -> None:
        self.results: OrderedDict = OrderedDict()
        self.last_index = 0


class KVState:
    """The replicated map plus the session table. Plain code, used by the actor and by tests.

    Sessions expire by log position, never by clock, so every node expires the same ones at the
    same entry. A request of an expired session, or one older than its session's window, is
    answered "expired" and not applied: its earlier attempt may have been applied already.
    """

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        # key -> (create_revision, mod_revision, version), beside ``data`` so that a read of a
        # value stays one dict lookup; a key absent here has unknown revisions (0, 0, 1)
        self.meta: dict[str, tuple[int, int, int]] = {}
        self.sessions: dict[str, Session] = {}
        self.expired: OrderedDict = OrderedDict()  # client id -> index at which it expired
        self.applied = 0
        self.events: list[WatchEvent] = []  # changes applied since the last take_events()
        self.leases = LeaseTable()  # actors/lease_state.py
        self.tokens = TokenState()  # issue 11: client tokens and the join secret (actors/token_state.py)

    def take_events(self) -> list[WatchEvent]:
        """The user-key changes applied since the last call, in log order (see watch_events)."""
        ev, self.events = self.events, []
        return ev

    def apply(self, index: int, kind: int, payload: bytes, cmd: Optional[Command] = None) -> Optional[tuple]:
        """Apply one committed entry; returns a command's result (actors/kv_apply.py's
        ``(status, value, revision, txn)``), None for any other entry. ``cmd``: the Command
        decoding ``payload`` gives, when the caller has it already (the leader's own proposal,
        actors/own_commands.py).

        Raises UndecodableEntry for an entry this build cannot decode: never skipped, since a
        node that can decode it applies it (the states would diverge silently)."""
        self.applied = index
        if index % SWEEP_EVERY == 0:
            self._expire(index)
        if cmd is None:
            cmd = committed_command(index, kind, payload)
        if cmd is None:
            return None
        cid = cmd.client_id
        if not cid:
            return self._leased(cmd)
        sess = self.sessions.get(cid)
        if sess is None:
            if cid in self.expired:
                return kv_apply.EXPIRED
            sess = self.sessions[cid] = Session()
        else:
            done = sess.results.get(cmd.seq)
            if done is not None:
                return done
            if sess.results and len(sess.results) >= SESSION_WINDOW and cmd.seq < next(iter(sess.results)):
                return kv_apply.EXPIRED  # its result left the window: it may have been applied
        sess.last_index = index
        result = self._leased(cmd)
        sess.results[cmd.seq] = result
        if len(sess.results) > SESSION_WINDOW:
            sess.results.popitem(last=False)
        return result

    def _expire(self, index: int) -> None:
        horizon = index - SESSION_TTL
        gone = [cid for cid, s in self.sessions.items() if s.last_index < horizon]
        for cid in gone:
            del self.sessions[cid]
            self.expired[cid] = index
        while self.expired:
            cid, at = next(iter(self.expired.items()))
            if at >= index - EXPIRED_TTL:
                break
            del self.expired[cid]

    def end_batch(self, term: int, members: Optional[list]) -> None:
        """The end of an applied batch: nothing to write for the in-memory state."""

    # ---------------------------------------------------------------- snapshots

    def prepare_snapshot(self) -> None:
        """Nothing to prepare for the in-memory state."""

    def switch_would_wait(self) -> bool:
        """Never: taking the in-memory state's payload waits for nothing."""
        return False

    def snapshot_payload(self, path: Optional[str]) -> "KVState":
        """What the snapshotter serialises: a frozen copy (``path`` is unused here)."""
        return self.frozen()

    def restored(self, body: Iterable[bytes], index: int, term: int, members: list) -> "KVState":
        """A state rebuilt from a snapshot's body."""
        return KVState.restore(body)

    def frozen(self) -> "KVState":
        """A consistent copy to serialise off the FSM's thread: the dict copy is one C call."""
        c = KVState()
        c.data = self.data.copy()
        c.meta = self.meta.copy()
        for cid, sess in self.sessions.items():
            n = Session()
            n.results = OrderedDict(sess.results)
            n.last_index = sess.last_index
            c.sessions[cid] = n
        c.expired = OrderedDict(self.expired)
        c.applied = self.applied
        c.leases.load(self.leases.records())
        c.tokens = self.tokens.copy()
        return c

    def chunks(self, per_chunk: int = SNAPSHOT_CHUNK_KEYS) -> Iterator[bytes]:
        """The state as a stream of msgpack records, a bounded number of keys each, so that
        serialising a large map never holds the GIL long enough to stall heartbeats."""
        yield msgpack.packb(["state", SNAPSHOT_VERSION, self.applied], use_bin_type=True)
        meta = self.meta
        items = [(k, v, *meta.get(k, (0, 0, 1))) for k, v in self.data.items()]
        for i in range(0, len(items), per_chunk):
            yield msgpack.packb(["kvr", items[i:i + per_chunk]], use_bin_type=True)
        # Packed by msgpack's C packer straight from the dicts: the table can hold ~10^5 results
        # (a Python loop over them stalled writes at every snapshot).
        sessions = {cid: [s.last_index, s.results] for cid, s in self.sessions.items()}
        yield msgpack.packb(["sessions", sessions, self.expired], use_bin_type=True)
        if self.leases.ttl:  # absent when there is none: older builds read the snapshot as before
            yield msgpack.packb(["leases", self.leases.records()], use_bin_type=True)
        # An older build ignores this record; a snapshot without it loads with no tokens.
        yield msgpack.packb(["tokens", self.tokens.encode()], use_bin_type=True)

    @classmethod
    def restore(cls, body: Iterable[bytes]) -> "KVState":
        """Rebuild a state from the chunks written by :meth:`chunks`."""
        st = cls()
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=1 << 30)
        for piece in body:
            unpacker.feed(piece)
            for rec in unpacker:
                kind = rec[0]
                if kind == "state":
                    if rec[1] not in READABLE_SNAPSHOT_VERSIONS:
                        raise ValueError(f"snapshot state version {rec[1]}, this build reads "
                                         f"{sorted(READABLE_SNAPSHOT_VERSIONS)}")
                    st.applied = rec[2]
                elif kind == "kv":  # version 2: revisions unknown
                    st.data.update(rec[1])
                elif kind == "kvr":
                    for k, v, c, m, ver in rec[1]:
                        st.data[k] = v
                        st.meta[k] = (c, m, ver)
                elif kind == "sessions":
                    for cid, (last, results) in rec[1].items():
                        sess = Session()
                        sess.last_index = last
                        sess.results = OrderedDict((seq, kv_apply.normalize_result(r)) for seq, r in results.items())
                        st.sessions[cid] = sess
                    st.expired = OrderedDict(rec[2])
                elif kind == "leases":
                    st.leases.load(rec[1])
                elif kind == "tokens":
                    st.tokens = TokenState.decode(rec[1])
        return st

    def _leased(self, cmd: Command) -> tuple:
        # The lease table's hooks around _execute (actors/lease_state.py); a revoked lease's
        # keys are deleted through _execute itself, like any delete. Token commands never touch
        # user keys or leases.
        if cmd.op in TOKEN_WRITE_OPS:
            return kv_apply.normalize_result(self.tokens.apply(cmd))
        return execute_with_lease(self.leases, cmd, self.applied, self._execute,
                                  lambda key: self._execute(Command("delete", key)))

    def _execute(self, cmd: Command) -> tuple:
        return kv_apply.execute(self, self.events, self.applied, cmd)

    # the RecordView of actors/kv_apply.py

    def record(self, key: str) -> Optional[KeyRecord]:
        """The key's value and revisions (None: absent)."""
        v = self.data.get(key)
        if v is None:
            return None
        m = self.meta.get(key)
        return KeyRecord(v, 0, 0, 1) if m is None else KeyRecord(v, m[0], m[1], m[2])

    def put_record(self, key: str, rec: KeyRecord) -> None:
        """Set the key's record."""
        self.data[key] = rec.value
        self.meta[key] = (rec.create_revision, rec.mod_revision, rec.version)

    def delete_record(self, key: str) -> None:
        """Remove the key."""
        del self.data[key]
        self.meta.pop(key, None)

    def read(self, op: str, key: str, limit: int = 0) -> ClientReply:
        """Serve a read; the reply carries the revision it reflects (the applied index, read
        after the value: at least the value's mod revision) and a get's key revisions."""
        if op == "get":
            rec = self.record(key)
            rev = self.applied
            if rec is None:
                return ClientReply("not_found", revision=rev)
            return ClientReply("ok", value=rec.value, revision=rev, create_revision=rec.create_revision,
                               mod_revision=rec.mod_revision, version=rec.version)
        if op == "list":
            keys = sorted(k for k in self.data if k.startswith(key))
            if limit > 0:
                keys = keys[:limit]
            return ClientReply("ok", items=[(k, self.data[k]) for k in keys], revision=self.applied)
        return ClientReply("invalid", error=f"not a read: {op}")


@dataclass(frozen=True, slots=True)
class AppliedView:
    """What the FSM has applied, published by the FSM (and only by it) after every batch and
    restore, as one immutable record: a reader takes one reference and gets an index and a
    state that belong together.

    ``state`` is the FSM's live KVState, which the FSM keeps mutating: it holds at least
    ``index``, possibly more, which serves a read confirmed at ``index`` (linearizable reads need
    an applied index at least the read index). Other threads may only call ``state.read("get",
    key)`` on it (one dict lookup, atomic under the GIL); anything that iterates it goes through
    the FSM actor. ``state`` is None until the FSM first publishes.
    """

    index: int
    state: Any  # a KVState or a DbState (actors/db_state.py): readers call only read()


NOTHING_APPLIED = AppliedView(0, None)


SLOW_SWITCH_S = 0.05  # a snapshot's memtable switch slower than this is logged at info
# A snapshot whose memtable switch would wait for a running flush is put off (applying goes on)
# and tried again this often, for this long at most; then it is taken, waiting as before.
SNAPSHOT_RETRY_S = 0.02
SNAPSHOT_DEFER_MAX_S = 2.0


class Fsm(SupervisedActor):
    """Applies ``Apply`` batches, answers the waiting writers, serves ``Read`` requests, and hands a
    frozen copy of the state to the snapshotter every ``snapshot_threshold`` entries.

    Owns the KVState, the applied index and term, and the configuration last applied. After every
    applied batch and restore it calls ``publish(AppliedView)`` (its one way of telling other
    threads what is applied).
    """

    def __init__(self, reply_many: Callable[[list], None], publish: Callable[[AppliedView], None],
                 save_snapshot: Callable[[Any], None], snapshot_threshold: int,
                 state: Optional[Any] = None, applied_term: int = 0, members: Optional[list] = None,
                 checkpoint_path: Optional[Callable[[int], str]] = None, last_snapshot: Optional[int] = None,
                 hub: Optional[Any] = None,
                 schedule: Optional[Callable[[float, RetrySnapshot], None]] = None) -> None:
        super().__init__()
        # how a put-off snapshot is tried again: a message to this actor after a delay
        self.schedule = schedule or self._tell_later
        self.hub = hub  # the node's WatchHub (actors/watch_hub.py), or None: events are dropped
        # A KVState (in memory) or a DbState (actors/db_state.py: RocksDB); same interface.
        self.state = state or KVState()
        self.checkpoint_path = checkpoint_path  # where a checkpoint at an index goes (DbState)
        self.reply_many = reply_many
        self.publish = publish
        self.save_snapshot = save_snapshot
        self.threshold = snapshot_threshold
        self.applied_term = applied_term
        self.members: list = list(members or [])
        self.last_snapshot = self.state.applied if last_snapshot is None else last_snapshot
        self.snapshotting = False
        self.prepared = False  # prepare_snapshot() called for the coming snapshot
        self.pending_reads: list = []  # (index, seq, handles) sorted by index

    def on_receive(self, msg: Any) -> Any:
        t = type(msg)
        if t is Apply:
            self._apply(msg)
        elif t is Read:
            if msg.index <= self.state.applied:
                self._serve(msg.handles)
            else:
                bisect.insort(self.pending_reads, (msg.index, id(msg), msg.handles))
        elif t is Restore:
            self._restore(msg)
        elif t is TakeSnapshot:
            self._snapshot(msg)
        elif t is RetrySnapshot:
            self.snapshotting = False  # it was put off, not begun
            self._snapshot(msg.request, msg.since)
        elif t is SnapshotDone:
            self.snapshotting = False
            self.last_snapshot = max(self.last_snapshot, msg.index)
        return None

    def _apply(self, msg: Apply) -> None:
        st = self.state
        replies = []
        waiters = msg.waiters
        config_applied = False
        for index, e in msg.entries:
            if index <= st.applied:
                continue  # already in the snapshot the state was restored from
            if index != st.applied + 1:
                # Never apply across a gap: the core holds entries back until a snapshot fills it.
                log.error("fsm: entry %d does not follow applied index %d; not applied", index, st.applied)
                break
            w = waiters.get(index) if waiters else None
            try:
                # the leader's own Command when this entry holds the bytes it encoded from it
                res = st.apply(index, e.kind, e.data, None if w is None else own_command(w, e.data))
            except UndecodableEntry as err:
                die(str(err))  # one CRITICAL line naming the index, then a non-zero exit
            self.applied_term = e.term
            if e.kind == _CONFIG:
                self.members = decode_config(e.data)
                config_applied = True
            if w is not None:
                term, route = w[0], w[1]
                if term != e.term:
                    # our proposal at this index was overwritten: it may exist elsewhere, retry it
                    replies.append((route, ClientReply("timeout", error="leadership changed; retry")))
                elif res is not None:
                    status, cur, rev, txn = res
                    if status == _OK and cur is None and txn is None:
                        rep = ClientReply(_OK, revision=rev)  # nearly every write: result_reply's answer
                    else:
                        rep = result_reply(status, cur, rev)  # actors/lease_state.py: a grant's id, a refusal's why
                        if txn is not None:
                            rep.succeeded, rep.responses = txn
                    replies.append((route, rep))
        # Durable state first (one unsynced write batch), then the view, then the answers: a
        # client told that its entry is applied must find this node acting on it (a revoked
        # token refused at the door: the view's publication swaps the door's token table).
        st.end_batch(self.applied_term, self.members if config_applied else None)
        events = st.take_events()  # taken even with no hub, so that they never pile up
        if self.hub is not None:
            self.hub.publish(events, st.applied)
        self.publish(AppliedView(st.applied, st))
        if replies:
            self.reply_many(replies)
        self._serve_pending()
        since = st.applied - self.last_snapshot
        if since >= self.threshold and not self.snapshotting:
            self._snapshot(TakeSnapshot())
        elif not self.prepared and not self.snapshotting and since >= self.threshold - self.threshold // 8:
            # Not while one is put off (the switch would wait for the flush) or being built (the
            # store would refuse: a switch would lose the checkpoint's state), and so not spent.
            self.prepared = True
            st.prepare_snapshot()

    def _serve_pending(self) -> None:
        st = self.state
        if self.pending_reads and self.pending_reads[0][0] <= st.applied:
            ready = []
            while self.pending_reads and self.pending_reads[0][0] <= st.applied:
                ready.extend(self.pending_reads.pop(0)[2])
            self._serve(ready)

    def _snapshot(self, request: TakeSnapshot, deferred_since: Optional[float] = None) -> None:
        route, asked = request.route, request.asked
        if self.snapshotting or self.state.applied == 0:
            if route is not None:
                why = "a snapshot is already being taken" if self.snapshotting else "nothing to snapshot yet"
                self.reply_many([(route, ClientReply("unavailable", error=why))])
            return
        st = self.state
        now = time.monotonic()
        first = now if deferred_since is None else deferred_since
        if now - first < SNAPSHOT_DEFER_MAX_S and st.switch_would_wait():
            # RocksDB would hold the switch until the running flush ends, and this thread with it:
            # every write would wait that long. Apply meanwhile; the snapshot takes the wait.
            self.snapshotting = True  # one at a time: a request meanwhile is told one is under way
            self.schedule(SNAPSHOT_RETRY_S, RetrySnapshot(request, first))
            return
        self.snapshotting = True
        self.prepared = False
        # On RocksDB this only switches the memtable; the snapshotter builds the checkpoint from
        # the SST files and the switched memtable's WAL files (storage/kv_live_checkpoint.py).
        path = self.checkpoint_path(st.applied) if self.checkpoint_path is not None else None
        t0 = time.monotonic()
        payload = st.snapshot_payload(path)
        took = time.monotonic() - t0
        # Slow only when RocksDB held the memtable switch back (a flush still running, or too many
        # L0 files): applying waits meanwhile, so an operator should see it.
        (log.info if took > SLOW_SWITCH_S else log.debug)(
            "fsm: snapshot payload at %d taken in %.1f ms (asked %.1f ms before)", st.applied, took * 1000,
            (t0 - asked) * 1000)
        self.save_snapshot(SaveSnapshot(payload, st.applied, self.applied_term, list(self.members), route, asked))

    def _tell_later(self, delay: float, msg: RetrySnapshot) -> None:
        def tell() -> None:
            try:
                self.actor_ref.tell(msg)
            except pykka.ActorDeadError:
                pass  # stopped meanwhile: no snapshot to take

        timer = threading.Timer(delay, tell)
        timer.daemon = True
        timer.start()

    def _restore(self, msg: Restore) -> None:
        t0 = time.monotonic()
        self.publish(AppliedView(self.state.applied, None))  # other threads read through us meanwhile
        self.state = self.state.restored(msg.body, msg.index, msg.term, msg.members)
        self.applied_term = msg.term
        self.members = list(msg.members)
        self.last_snapshot = self.state.applied
        if self.hub is not None:
            self.hub.reset(self.state.applied)  # the events before the snapshot are not known here
        log.info("fsm: restored the state at index %d from a snapshot in %.2fs", self.state.applied,
                 time.monotonic() - t0)
        self.publish(AppliedView(self.state.applied, self.state))
        self._serve_pending()

    def _serve(self, handles: list) -> None:
        st = self.state
        out: list = []
        for route, req in handles:
            if req.op == Op.BACKUP:  # checkpointed here, between two batches (actors/backup_serving.py)
                self.save_snapshot(take_backup(st, self.checkpoint_path, self.applied_term, self.members, route))
                continue
            if req.op == _WATCH:  # a watch's confirmed start: the revision it starts after
                out.append((route, ClientReply(_OK, revision=st.applied)))
                continue
            rep = st.read(req.op, req.key, req.limit)
            out.append((route, rep))
            # A list answer read from RocksDB is a fresh copy of its values: hand each one over
            # (where the front door's reply budget may refuse it) before building the next, so a
            # batch of large lists never lives in memory all at once.
            if rep.items or len(out) >= 256:
                self.reply_many(out)
                out = []
        if out:
            self.reply_many(out)
