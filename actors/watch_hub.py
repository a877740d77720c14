"""The node's watch history and its waiting watchers (issue 14; docs/architecture.md "Watches").

The FSM hands every applied batch's events to :meth:`WatchHub.publish` (``state.take_events()``,
actors/watch_events.py), with the applied index: the hub's *current revision*. The history is a
bounded window of the most recent events, kept in revision order:

- at most ``history_revisions`` revisions back: events of revision ``current - history_revisions``
  or older are dropped (as an etcd compaction at that revision would);
- at most ``history_bytes`` (keys and values counted), dropping whole revisions, oldest first.

``floor`` is the revision below which events may be missing: every event of a revision above it
is kept. It starts at the applied index the node opened its state at (a restart) or installed a
snapshot at (:meth:`reset`): a node's history never reaches back before its own start. A watch
that asks for a revision at or below ``floor`` is answered Status.COMPACTED with ``floor + 1``,
the oldest revision this node can start from: never a silent gap.

Watch requests (ClientRequest op "watch", key = prefix, ``start_revision``, ``wait_ms``) are
handed over by the role actor (:meth:`submit`) and served in the hub's own thread, so that
neither the role actor nor the FSM ever scans the history. An answer holds the matching events
of revisions ``start_revision ..`` in revision order, cut only between revisions (never inside a
transaction's set of changes), at most ``MAX_EVENTS_PER_REPLY`` events (fewer if the request's
``limit`` asks) or about ``MAX_REPLY_BYTES``, and
``revision``: the revision the answer is complete up to (the client resumes after it, or
at its own start if that is later: a start beyond the node's current revision waits for it).
With nothing matching, the request waits up to ``wait_ms`` for an event, then gets an empty
answer whose ``revision`` is the node's current revision (a progress notification, as
etcd's: a quiet prefix still moves its watcher's resume point forward, so it does not fall
below the history window while other keys change).

Bounds: at most ``max_waiters`` requests wait at once (more are answered "unavailable": the
client tries another node, or later); a wait is at most ``MAX_WAIT_S``.

Threads: :meth:`publish` and :meth:`reset` run in the FSM's thread, :meth:`submit` in the role
actor's; everything else in the hub's thread. The history and the waiters are guarded by one
lock, held only for list appends and scans, never while replying.
"""
from __future__ import annotations

import bisect
import logging
import threading
import time
from typing import Any, Callable, Optional

from raftkv.records import ClientReply, ClientRequest, Event, Status

from ..config.node import DEFAULT_WATCH_HISTORY
from .watch_events import WatchEvent

log = logging.getLogger("actors.watch_hub")

DEFAULT_HISTORY_REVISIONS = DEFAULT_WATCH_HISTORY  # watch.history_revisions (raftkv/config/node.py)
DEFAULT_HISTORY_BYTES = 64 * 1024 * 1024  # keys and values the history holds at most
DEFAULT_MAX_WAITERS = 4096  # watch requests waiting at once on one node
MAX_EVENTS_PER_REPLY = 1000  # events of one answer, unless the request asks for fewer
MAX_REPLY_BYTES = 4 * 1024 * 1024  # keys and values of one answer (a single larger revision still goes whole)
MAX_WAIT_S = 30.0  # the longest a request is held
_EVENT_OVERHEAD = 96  # bytes an event costs beyond its key and values (object, list slot, msgpack)

_OK, _COMPACTED, _UNAVAILABLE = Status.OK.value, Status.COMPACTED.value, Status.UNAVAILABLE.value


def event_size(e: WatchEvent) -> int:
    """What an event is counted as against the byte bounds (WatchHub.publish inlines it)."""
    return len(e.key) + len(e.value or b"") + len(e.prev_value or b"") + _EVENT_OVERHEAD


def wire_event(e: WatchEvent) -> Event:
    """An event as the client door carries it (a tuple: msgpack packs it as an array; an
    in-process caller, this node's HTTP gateway, gets it as is)."""
    return Event(e.revision, e.type.value if hasattr(e.type, "value") else e.type, e.key, e.value, e.prev_value,
                 e.create_revision, e.version)


class _Waiter:
    """A watch request held until an event matches or its deadline passes."""

    __slots__ = ("route", "prefix", "start", "limit", "deadline")

    def __init__(self, route: Any, prefix: str, start: int, limit: int, deadline: float) -> None:
        self.route = route
        self.prefix = prefix
        self.start = start  # the first revision not yet scanned for it
        self.limit = limit
        self.deadline = deadline


class WatchHub:
    """The bounded event history of one node and the watch requests waiting on it (module docstring).

    ``reply_many([(route, ClientReply)])`` answers requests (the front door's; callable from any
    thread). ``start_index``: the applied index the node's state opened at.
    """

    def __init__(self, reply_many: Callable[[list], None], start_index: int = 0, *,
                 history_revisions: int = DEFAULT_HISTORY_REVISIONS, history_bytes: int = DEFAULT_HISTORY_BYTES,
                 max_waiters: int = DEFAULT_MAX_WAITERS, name: str = "") -> None:
        if history_revisions < 1 or history_bytes < 1 or max_waiters < 1:
            raise ValueError("watch history bounds and max_waiters must be positive")
        self.reply_many = reply_many
        self.history_revisions = history_revisions
        self.history_bytes = history_bytes
        self.max_waiters = max_waiters
        self.name = name
        self._cond = threading.Condition(threading.Lock())
        self._events: list[WatchEvent] = []
        self._revs: list[int] = []  # the events' revisions, for bisect
        self._sizes: list[int] = []
        # Trimmed events are dropped from the front of the three lists in bulk, not at every
        # publish (a delete from a list's front moves all of it: 5 us per batch at 10,000 events):
        # the first ``_dead`` slots are outside the window (events cleared to None), every
        # revision there is at or below ``floor``, so bisects for revisions above it pass them.
        self._dead = 0
        self._bytes = 0
        self.floor = start_index  # every event of a revision above it is kept
        self.current = start_index  # the applied index
        self._inbox: list = []  # (route, ClientRequest) handed over by the role actor
        self._waiters: list[_Waiter] = []
        self._fresh = False  # events arrived (or a reset) since the waiters were last scanned
        self._stop = False
        self._thread: Optional[threading.Thread] = None
        # Counters for metrics and tests (hub thread; read without the lock: plain ints).
        self.delivered = 0
        self.refused = 0

    # ------------------------------------------------------------------ life cycle

    def start(self) -> None:
        """Serve requests in a daemon thread."""
        self._thread = threading.Thread(target=self._run, name=f"watch-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=2)

    # ------------------------------------------------------------------ the FSM's side

    def publish(self, events: list, applied: int) -> None:
        """A batch was applied up to ``applied``; ``events`` are its changes in order (FSM thread).

        With no watcher waiting this is an append to the window and a trim of its old end."""
        with self._cond:
            self.current = applied
            if events:
                self._events.extend(events)
                # event_size and e.revision of each, inlined (one per applied write on every node)
                self._revs.extend([e[0] for e in events])
                sizes = [len(e[2]) + len(e[3] or b"") + len(e[4] or b"") + _EVENT_OVERHEAD for e in events]
                self._sizes.extend(sizes)
                self._bytes += sum(sizes)
                self._trim()
                if self._waiters:
                    self._fresh = True
                    self._cond.notify()
            elif applied - self.history_revisions > self.floor:
                self._trim()

    def reset(self, index: int) -> None:
        """The state was replaced by a snapshot at ``index`` (FSM thread): the events before it are
        unknown here, so the history restarts there; waiting watchers are re-examined (those
        behind the snapshot are told COMPACTED)."""
        with self._cond:
            self._events, self._revs, self._sizes, self._bytes, self._dead = [], [], [], 0, 0
            self.floor = self.current = index
            self._fresh = True
            self._cond.notify()
        log.info("%s: watch history restarts at revision %d (snapshot installed)", self.name, index)

    def _trim(self) -> None:
        """Drop what is outside the window (lock held); moves ``floor`` up to what was dropped."""
        revs = self._revs
        dead = self._dead
        floor = max(self.floor, self.current - self.history_revisions)
        cut = bisect.bisect_right(revs, floor, dead) if len(revs) > dead and revs[dead] <= floor else dead
        if self._bytes > self.history_bytes:
            total, sizes, n = self._bytes, self._sizes, len(revs)
            i = cut
            total -= sum(sizes[dead:cut])
            while i < n and total > self.history_bytes:
                total -= sizes[i]
                i += 1
            while dead < i < n and revs[i] == revs[i - 1]:  # a revision goes whole
                total -= sizes[i]
                i += 1
            if i > cut:
                floor = max(floor, revs[i - 1])
                cut = i
        if cut > dead:
            self._bytes -= sum(self._sizes[dead:cut])
            self._events[dead:cut] = [None] * (cut - dead)  # values freed now
            self._dead = dead = cut
            if dead * 2 >= len(revs):  # compact: amortised O(1) per event
                del self._events[:dead], revs[:dead], self._sizes[:dead]
                self._dead = 0
        self.floor = floor

    # ------------------------------------------------------------------ requests

    def submit(self, items: list) -> None:
        """Watch requests ``[(route, ClientRequest)]`` to serve (role actor's thread)."""
        with self._cond:
            self._inbox.extend(items)
            self._cond.notify()

    def answer_now(self, req: ClientRequest) -> ClientReply:
        """The answer a request gets from the history as it is now, without waiting (any thread)."""
        with self._cond:
            return self._scan(req.key, req.start_revision, req.limit)[0]

    def stats(self) -> dict:
        """The window and the waiters, for logs and tests."""
        with self._cond:
            return {"floor": self.floor, "current": self.current, "events": len(self._events) - self._dead,
                    "bytes": self._bytes, "waiters": len(self._waiters)}

    def _scan(self, prefix: str, start: int, limit: int) -> tuple[ClientReply, bool]:
        """(answer, matched) for the events of revisions ``start ..`` under ``prefix`` (lock held)."""
        if start <= self.floor:
            return ClientReply(_COMPACTED, revision=self.floor + 1, error=(
                f"revision {start} is compacted on this node: its watch history starts at revision "
                f"{self.floor + 1}; restart the watch from revision {self.floor + 1} (after re-reading the "
                "keys), or ask another node")), False
        revs, events = self._revs, self._events
        i = bisect.bisect_left(revs, start)
        n = len(events)
        most = min(limit, MAX_EVENTS_PER_REPLY) if limit > 0 else MAX_EVENTS_PER_REPLY
        out: list = []
        size = 0
        upto = self.current
        while i < n:
            e = events[i]
            if (len(out) >= most or size >= MAX_REPLY_BYTES) and e.revision != revs[i - 1]:
                upto = revs[i - 1]  # complete up to the revision before this one
                break
            if e.key.startswith(prefix):
                out.append(wire_event(e))
                size += self._sizes[i]
            i += 1
        return ClientReply(_OK, events=out, revision=upto), bool(out)

    # ------------------------------------------------------------------ the hub's thread

    def _run(self) -> None:
        try:
            while True:
                replies: list = []
                with self._cond:
                    while not self._stop and not self._inbox and not self._fresh and not self._due():
                        self._cond.wait(self._next_wait())
                    if self._stop:
                        break
                    now = time.monotonic()
                    inbox, self._inbox = self._inbox, []
                    for route, req in inbox:
                        self._take(route, req, now, replies)
                    if self._fresh:
                        self._fresh = False
                        self._rescan(replies)
                    self._expire(now, replies)
                if replies:
                    self.delivered += len(replies)
                    self.reply_many(replies)
        except Exception:  # a failure here must end the node, not leave watchers hanging
            from .supervision import die
            import traceback
            die(f"watch hub failed: {traceback.format_exc().strip()}")

    def _due(self) -> bool:
        return bool(self._waiters) and min(w.deadline for w in self._waiters) <= time.monotonic()

    def _next_wait(self) -> Optional[float]:
        if not self._waiters:
            return None
        return max(0.0, min(w.deadline for w in self._waiters) - time.monotonic()) + 0.001

    def _take(self, route: Any, req: ClientRequest, now: float, replies: list) -> None:
        """A new request (lock held): answered now, or held as a waiter."""
        rep, matched = self._scan(req.key, req.start_revision, req.limit)
        if matched or rep.status != _OK or req.wait_ms <= 0:
            replies.append((route, rep))
            return
        if len(self._waiters) >= self.max_waiters:
            self.refused += 1
            replies.append((route, ClientReply(_UNAVAILABLE, error=(
                f"{self.name}: {self.max_waiters} watch requests already wait on this node; retry, or ask "
                "another node"))))
            return
        wait = min(req.wait_ms / 1000.0, MAX_WAIT_S)
        self._waiters.append(_Waiter(route, req.key, max(req.start_revision, self.current + 1), req.limit, now + wait))

    def _rescan(self, replies: list) -> None:
        """New events (or a reset): answer the waiters that now have a match (lock held)."""
        keep = []
        for w in self._waiters:
            rep, matched = self._scan(w.prefix, w.start, w.limit)
            if matched or rep.status != _OK:
                replies.append((w.route, rep))
            else:
                w.start = max(w.start, self.current + 1)  # scanned up to here: the next scan starts after it
                keep.append(w)
        self._waiters = keep

    def _expire(self, now: float, replies: list) -> None:
        """Waiters whose wait is over get the progress answer: nothing matched up to ``current``."""
        if not self._waiters or min(w.deadline for w in self._waiters) > now:
            return
        keep = []
        for w in self._waiters:
            if w.deadline <= now:
                replies.append((w.route, ClientReply(_OK, revision=self.current)))
            else:
                keep.append(w)
        self._waiters = keep
