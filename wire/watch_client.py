"""The library's watch: an iterator of a prefix's events, resumed across nodes (issue 14).

::

    with kv.watch("config/") as w:          # or kv.watch("config/", start_revision=N)
        for ev in w:                        # raftkv.records.Event: revision, type, key, value, ...
            print(ev.revision, ev.type, ev.key, ev.value)

Transport (docs/architecture.md "Watches"): long polls over the client door's REQ/REP. Each
request names the prefix, the first revision wanted and how long the node may hold it; the
node answers with the matching events (in revision order, never cut inside a revision) and the
revision the answer is complete up to, or after the wait with no event and its current revision
(a progress answer). The watch resumes from that revision + 1, on the same node or, when it
does not answer, on the next one: any node serves watches from the events it has applied, and a
revision is the same log index on every node, so a resumed watch has no gap and no duplicate.

A node whose history no longer reaches back to the revision asked answers COMPACTED; the watch
then asks the other nodes, and raises :class:`~raftkv.wire.errors.Compacted` only when none of
them has it (``revision``: the oldest revision every one of them can start from).
"""
from __future__ import annotations

import collections
import threading
import time
from typing import TYPE_CHECKING, Any, Optional

from .errors import ClientError, Compacted, InvalidRequest, Unavailable
from .messages import ClientReply, ClientRequest, Op, Status, encode_client
from .session import rejection

if TYPE_CHECKING:
    from raftkv.records import Event

    from .client import Client

__all__ = ["Watch", "DEFAULT_WAIT", "event_json"]

DEFAULT_WAIT = 2.0  # seconds a node may hold one long poll
_GRACE = 2.0  # how much longer than the wait an attempt waits for the answer
_OK, _COMPACTED = Status.OK.value, Status.COMPACTED.value
_RETRY = frozenset({Status.NOT_LEADER.value, Status.UNAVAILABLE.value, Status.TIMEOUT.value,
                    Status.EXPIRED.value})


def event_json(ev: "Event") -> dict:
    """An event as a JSON-ready dict, as ``kvclient watch --json`` and ``GET /watch/`` print it:
    ``revision``, ``type``, ``key``, ``value`` (absent for a delete; base64 with ``"value_b64":
    true`` when not UTF-8, as :func:`json_item`), ``create_revision`` and ``version`` when the
    node tracks them, ``prev_value`` when known (``prev_value_b64`` likewise)."""
    from .client import json_item

    out: dict = {"revision": ev.revision, "type": ev.type, "key": ev.key}
    if ev.value is not None:
        item = json_item(ev.key, ev.value)
        out["value"] = item["value"]
        if "value_b64" in item:
            out["value_b64"] = True
    if ev.create_revision:
        out["create_revision"] = ev.create_revision
        out["version"] = ev.version
    if ev.prev_value is not None:
        prev = json_item(ev.key, ev.prev_value)
        out["prev_value"] = prev["value"]
        if "value_b64" in prev:
            out["prev_value_b64"] = True
    return out


class Watch:
    """An iterator of :class:`raftkv.records.Event` under ``prefix`` from ``start_revision`` (or
    from now: a linearizable start), in revision order, until :meth:`close`. Made by
    :meth:`Client.watch`; it talks to the cluster through a Client of its own (``kv``), so that
    its long polls never hold the caller's Client.

    ``next_revision`` is the first revision not yet delivered (the resume point); ``server`` the
    node it is watching through. If no node answers for ``kv.timeout`` seconds, iteration raises
    :class:`Unavailable` (iterate again to keep trying from where it stopped).
    """

    def __init__(self, kv: "Client", prefix: str, start_revision: Optional[int] = None, *,
                 wait: float = DEFAULT_WAIT, consistency: str = "linearizable", limit: int = 0) -> None:
        if not isinstance(prefix, str):
            raise InvalidRequest("prefix must be a string")
        if start_revision is not None and (type(start_revision) is not int or start_revision < 1):
            raise InvalidRequest("start_revision must be a positive integer (or None: from now)")
        if not 0 < wait <= 60:
            raise InvalidRequest("wait must be in (0, 60] seconds")
        self._kv = kv
        self.prefix = prefix
        self.next_revision: Optional[int] = start_revision
        self.wait = float(wait)
        self.consistency = consistency
        self.limit = limit
        self._buf: collections.deque = collections.deque()
        self._closed = False
        self._lock = threading.Lock()  # held by the iterating thread while it talks to a node
        self._i = 0  # index into the server list of the node watched through
        self.revision = 0  # the latest revision a node reported (its applied index when it answered)
        self._last_answer = time.monotonic()

    # ------------------------------------------------------------------ the iterator

    def __iter__(self) -> "Watch":
        return self

    def __next__(self) -> "Event":
        while not self._buf:
            if self._closed:
                self._release()
                raise StopIteration
            self._fill()
        return self._buf.popleft()

    def __enter__(self) -> "Watch":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def server(self) -> str:
        """The client address of the node this watch asks first."""
        servers = self._kv.servers
        return servers[self._i % len(servers)]

    def close(self) -> None:
        """Cancel the watch (any thread): iteration ends after the poll in flight, if any (at
        most ``wait`` plus a little). Idempotent."""
        self._closed = True
        if self._lock.acquire(blocking=False):
            try:
                self._kv.close()
            finally:
                self._lock.release()

    def _release(self) -> None:
        with self._lock:
            self._kv.close()

    # ------------------------------------------------------------------ one poll

    def begin(self) -> None:
        """Start now (Client.watch calls it): a start "now" is fixed, so that a write acknowledged
        after ``watch()`` returned is seen; a given start revision is checked with a first poll
        that does not wait, so that a compacted one raises here."""
        with self._lock:
            if self._closed:
                return
            if self.next_revision is None:
                self.next_revision = self._start() + 1
            else:
                self._buf.extend(self._long_poll(wait_ms=0))

    def poll(self) -> list:
        """The events not handed out yet, after one long poll if there were none (up to
        ``wait`` seconds; then possibly none). An alternative to iterating, for a caller that
        wants control back regularly. Raises Compacted, Unavailable, or InvalidRequest."""
        if not self._buf:
            self._fill()
        out = list(self._buf)
        self._buf.clear()
        return out

    def _fill(self) -> None:
        """One long poll; its events are queued."""
        with self._lock:
            if self._closed:
                return
            if self.next_revision is None:
                self.next_revision = self._start() + 1
            self._buf.extend(self._long_poll())

    def _start(self) -> int:
        """The revision "now" is at: a read confirmed as ``consistency`` says (any node)."""
        reply = self._kv._call(ClientRequest(Op.WATCH.value, key=self.prefix, consistency=self.consistency))
        if reply.status != _OK:
            raise ClientError(f"watch: unexpected reply {reply.status!r}")
        self.revision = max(self.revision, reply.revision)
        return reply.revision

    def _long_poll(self, wait_ms: Optional[int] = None) -> list:
        kv = self._kv
        servers = kv.servers
        compacted: dict[str, ClientReply] = {}
        deadline = time.monotonic() + kv.timeout
        backoff = 0.05
        why = "no server answered"
        while True:
            if self._closed:
                return []
            start = self.next_revision
            assert start is not None
            addr = servers[self._i % len(servers)]
            req = ClientRequest(Op.WATCH.value, key=self.prefix, start_revision=start,
                                wait_ms=int(self.wait * 1000) if wait_ms is None else wait_ms, limit=self.limit)
            reply = self._ask(addr, req)
            if reply is None:
                why = f"{addr} did not answer"
            elif reply.status == _OK:
                return self._take(reply, start)
            elif reply.status == _COMPACTED:
                compacted[addr] = reply
                if len(compacted) >= len(servers):
                    oldest = max(r.revision for r in compacted.values())
                    raise Compacted(f"watch {self.prefix!r}: revision {start} is compacted on every node; "
                                    f"restart the watch from revision {oldest} (after re-reading the keys)",
                                    oldest)
                why = f"{addr}: {reply.error}"
            elif reply.status in _RETRY:
                why = f"{addr}: {reply.status}" + (f" ({reply.error})" if reply.error else "")
            else:
                raise rejection(reply.status, reply.error, reply.revision)
            # Ask the next node: any node serves watches.
            self._i += 1
            if time.monotonic() > deadline:
                raise Unavailable(f"watch {self.prefix!r}: no node served it for {kv.timeout:g}s ({why})")
            if self._i % len(servers) == 0:
                time.sleep(min(backoff, max(0.0, deadline - time.monotonic())))
                backoff = min(backoff * 2, 1.0)

    def _ask(self, addr: str, req: ClientRequest) -> Optional[ClientReply]:
        kv = self._kv
        wait = self.wait + _GRACE
        local = kv._local
        if local is not None and addr == local[0]:
            return local[1](req, wait)
        reply, _why = kv._exchange(addr, encode_client(req), wait)
        if reply is None:
            kv._unreachable[addr] = time.monotonic()
        return reply

    def _take(self, reply: ClientReply, start: int) -> list:
        """The events of an OK answer not delivered yet; moves the resume point past the answer."""
        self.revision = max(self.revision, reply.revision)
        out = [e for e in reply.events if e.revision >= start]
        nxt = max(start, reply.revision + 1)
        if out:
            nxt = max(nxt, out[-1].revision + 1)
        self.next_revision = nxt
        return out
