"""The client front door: the REQ/REP protocol, served by a ROUTER.

Clients use REQ sockets (one request in flight each, the ZeroMQ guide's Lazy Pirate pattern),
or a DEALER that tags each request with one frame before the delimiter (many in flight:
wire/pipeline.py);
the server side is a ROUTER so that requests of many clients are in flight at once, which is
what lets the leader group-commit them. One I/O thread owns the socket; requests reach the
node in batches through a callback, and replies come back from any thread through
:meth:`FrontDoor.reply_many` (an inproc PUSH socket per thread; a request submitted in-process,
by this node's HTTP gateway, is answered directly through its route's ``deliver``).

Bounds, so that no client can grow the node without limit: a frame longer than
``max_request_bytes`` (a request with the largest key, value and CAS expected value, plus its
envelope) is refused by libzmq before it is read (``MAXMSGSIZE``: the connection is dropped);
the socket queues at most ``HWM`` messages per connection each way (the library's pipelining
window is at most 512); and since a message count alone does not bound bytes (a client that
sends ``list`` requests and never reads its answers), replies of more than ``LARGE_REPLY``
bytes are counted per connection as they are handed to the I/O thread (before they queue
anywhere: the hand-over queue itself would otherwise hold them all): once those among a
connection's last ``HWM`` replies exceed ``CONN_BUDGET`` bytes (or all connections' together
``TOTAL_BUDGET``), a further large reply is replaced by a small ``unavailable`` one (the client
retries; a read is safe to retry, and writes' replies are small). libzmq keeps at most ``HWM``
messages of a connection queued, so a connection's queue holds about ``CONN_BUDGET + HWM *
LARGE_REPLY`` bytes at most. The table of connections is an LRU of at most ``MAX_ROUTES`` entries.
"""
from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from typing import Callable, Optional

import zmq

from .address import zmq_endpoint
from .door_hardening import harden
from .iothread import IoThread
from .security.keys import KeyPair
from .security.zap import Door, configure_curve_server, configure_null_server, user_id_of
from .messages import CLIENT_OPS, ClientReply, ClientRequest, DecodeError, Status, decode_client, encode_client
from .ratelog import RateLimitedLog
from .stats import Histogram

log = logging.getLogger("wire.frontdoor")
_ratelog = RateLimitedLog(log)

_MAX_BATCH = 2000
HWM = 2048  # messages queued per connection, each way (at least 2x the pipelining window of 512)
LARGE_REPLY = 16 * 1024  # replies this long or longer are counted against the budgets below
CONN_BUDGET = 32 * 1024 * 1024  # large-reply bytes among one connection's last HWM replies
TOTAL_BUDGET = 256 * 1024 * 1024  # the same, all connections together
MAX_ROUTES = 4096  # connections whose large replies are tracked (LRU)
_ENVELOPE = 64 * 1024  # a request's fields other than key, value and expected (ids, member, msgpack)


def max_request_bytes(max_key: int, max_value: int) -> int:
    """The largest client frame worth reading: a CAS with the largest key, value and expected
    value, plus the envelope (the client door's ``MAXMSGSIZE``)."""
    return max_key + 2 * max_value + _ENVELOPE


class _Budget:
    """Large replies queued per connection (see the module docstring); callers hold a lock."""

    __slots__ = ("routes", "total")

    def __init__(self) -> None:
        self.routes: dict[bytes, list] = {}  # identity -> [replies accepted, deque((n, size)), bytes]
        self.total = 0

    def admit(self, ident: bytes, size: int) -> bool:
        """Whether a reply of ``size`` bytes (>= LARGE_REPLY) may be queued for ``ident`` now."""
        st = self._state(ident)
        self._forget(st)
        if st[2] and (st[2] + size > CONN_BUDGET or self.total + size > TOTAL_BUDGET):
            return False  # (a connection with nothing queued always gets one, however large)
        return True

    def sent(self, ident: bytes, size: int) -> None:
        """A reply of ``size`` bytes for ``ident`` was handed over to be sent."""
        st = self.routes.get(ident)
        if st is None:
            if size < LARGE_REPLY:
                return  # small replies of untracked connections need no state
            st = self._state(ident)
        st[0] += 1
        if size >= LARGE_REPLY:
            st[1].append((st[0], size))
            st[2] += size
            self.total += size

    def _state(self, ident: bytes) -> list:
        routes = self.routes
        st = routes.pop(ident, None)
        if st is None:
            st = [0, collections.deque(), 0]
            if len(routes) >= MAX_ROUTES:
                old = routes.pop(next(iter(routes)))
                self.total -= old[2]
                _ratelog.warn("fd-routes", "client door: more than %d connections with large replies queued; "
                              "forgetting the least recently used", MAX_ROUTES)
        routes[ident] = st  # (re)inserted last: the dict's order is the LRU order
        return st

    def _forget(self, st: list) -> None:
        """Large replies older than the connection's last HWM ones have left libzmq's queue."""
        q = st[1]
        while q and q[0][0] <= st[0] - HWM:
            _, size = q.popleft()
            st[2] -= size
            self.total -= size


class LocalRoute:
    """The route of a request submitted in-process (by this node's HTTP gateway) rather than over
    the ROUTER socket: the reply is handed back directly, with no encoding and no socket hop."""

    __slots__ = ("_done", "reply")

    def __init__(self) -> None:
        # A bare lock as a one-shot signal: cheaper than threading.Event (a Condition inside).
        self._done = threading.Lock()
        self._done.acquire()
        self.reply: Optional[ClientReply] = None

    def deliver(self, rep: ClientReply) -> None:
        if self.reply is None:
            self.reply = rep
            self._done.release()

    def wait(self, timeout: float) -> Optional[ClientReply]:
        return self.reply if self._done.acquire(True, timeout) else None


class FrontDoor(IoThread):
    """ROUTER on the node's client address. ``on_requests(batch)`` gets ``[(route, ClientRequest)]``."""

    def __init__(self, ctx: zmq.Context, bind_addr: str, on_requests: Callable[[list], None],
                 name: str = "", max_request_bytes: int = -1, zap_door: Optional[Door] = None,
                 curve_key: Optional[KeyPair] = None,
                 authorize: Optional[Callable[[Optional[str], ClientRequest], Optional[ClientReply]]] = None) -> None:
        """``max_request_bytes``: the longest frame read (:func:`max_request_bytes`); -1: no limit.
        ``zap_door``: ask the node's ZAP handler about every connection (loopback-only mode).
        ``curve_key``: a secure cluster's server key (issue 11): the door is a CURVE server whose
        ZAP handler admits the token table's keys, and ``authorize(user_id, request)`` (the
        connection's token name) answers a request the token may not make, in this thread,
        before it reaches the node (None: the request goes on)."""
        self.on_requests = on_requests
        self.name = name
        self._budget = _Budget()  # any thread that replies, under _budget_lock
        self._budget_lock = threading.Lock()
        self._busy_reply = encode_client(ClientReply(
            Status.UNAVAILABLE.value, error="too many unread replies on this connection; read them, then retry"))
        # Metrics, read at scrape time (actors/metrics.py). ``requests``: op -> count, written
        # by the I/O thread only. ``replies``: status -> itertools.count, advanced by whichever
        # thread replies: next() on it is one atomic C call, so no lock and no lost update.
        self.requests: dict[str, int] = {}
        self.replies: dict[str, itertools.count] = {}
        # op -> Histogram of the time from a request's arrival to its reply's hand-over, updated
        # under _budget_lock (several threads reply): one clock read per reply_many call.
        self.latency: dict[str, Histogram] = {}
        self._router = ctx.socket(zmq.ROUTER)
        self._router.setsockopt(zmq.LINGER, 0)
        self._router.setsockopt(zmq.SNDHWM, HWM)
        self._router.setsockopt(zmq.RCVHWM, HWM)
        self._router.setsockopt(zmq.MAXMSGSIZE, max_request_bytes)
        self._router.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a full queue is EAGAIN, not a silent drop
        harden(self._router)  # a draft-API build only: the PING abort guard (wire/door_hardening.py)
        self._authorize = authorize
        if curve_key is not None:
            configure_curve_server(self._router, curve_key, Door.CLIENT)
        elif zap_door is not None:  # loopback-only mode: the node's ZAP handler vets every connection
            configure_null_server(self._router, zap_door)
        self._router.bind(zmq_endpoint(bind_addr))
        super().__init__(ctx, f"frontdoor-{name}")

    def reply_many(self, items: list) -> None:
        """Answer many requests ``[(route, ClientReply)]`` with one hand-over to the I/O thread;
        callable from any thread."""
        if not items or self._stop.is_set():
            return
        frames = [b"M"]
        budget = self._budget
        replies = self.replies
        refused = 0
        latency = self.latency
        now = time.monotonic()
        with self._budget_lock:
            for route, rep in items:
                if not isinstance(route, list):  # LocalRoute, the HTTP gateway's AsyncRoute: in-process
                    route.deliver(rep)
                    continue
                c = replies.get(rep.status)
                if c is None:
                    c = replies.setdefault(rep.status, itertools.count())
                next(c)
                if len(route) == 4:  # [identity, tag, op, arrival] (see _run)
                    h = latency.get(route[2])
                    if h is None:
                        h = latency[route[2]] = Histogram()
                    h.observe(now - route[3])
                # A REQ client's route is its identity; a pipelining DEALER client (wire/pipeline.py)
                # adds one tag frame, which comes back with the reply.
                frames.append(route[0])
                frames.append(route[1] if len(route) > 1 else b"")
                data = encode_client(rep)
                size = len(data)
                if size >= LARGE_REPLY and not budget.admit(route[0], size):
                    data = self._busy_reply  # counted here, before it is queued anywhere
                    size = len(data)
                    refused += 1
                budget.sent(route[0], size)
                frames.append(data)
        if refused:
            _ratelog.warn("fd-budget", "client door: a client is not reading its replies (%d bytes of large "
                          "replies queued in all); answered %d large reads 'unavailable'", budget.total, refused)
        if len(frames) > 1:
            self._push().send_multipart(frames)

    def _send(self, frames: list) -> None:
        try:
            self._router.send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:
            # Its queue is full (HWM): it does not read, or it went away; a Lazy Pirate retry asks again.
            _ratelog.warn("fd-hwm", "client door: a client's reply queue is full (%d messages); reply dropped", HWM)
            return
        except zmq.ZMQError as e:  # e.g. EHOSTUNREACH for a vanished route
            log.debug("reply dropped: %s", e)

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._router, zmq.POLLIN)
        poller.register(self._pull, zmq.POLLIN)
        router, pull = self._router, self._pull
        try:
            while not self._stop.is_set():
                events = dict(poller.poll(100))
                if pull in events:
                    for _ in range(10_000):
                        try:
                            frames = pull.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        for i in range(1, len(frames), 3):
                            tag = frames[i + 1]
                            self._send([frames[i], tag, b"", frames[i + 2]] if tag else
                                       [frames[i], b"", frames[i + 2]])
                if router in events:
                    batch = []
                    authorize = self._authorize
                    t0 = time.monotonic()  # one clock read per batch: the arrival time of each
                    for _ in range(_MAX_BATCH):
                        try:
                            if authorize is None:
                                frames = router.recv_multipart(zmq.NOBLOCK)
                            else:
                                raw = router.recv_multipart(zmq.NOBLOCK, copy=False)
                                uid = user_id_of(raw[-1])
                                frames = [f.bytes for f in raw]
                        except zmq.Again:
                            break
                        if not 3 <= len(frames) <= 4 or frames[-2] != b"" or (len(frames) == 4 and frames[1] == b""):
                            _ratelog.warn("fd-envelope", "client door: dropped a request of %d frames "
                                          "(neither a REQ envelope nor a tagged one)", len(frames))
                            continue  # neither a REQ envelope nor a tagged one: nothing sensible to answer
                        route = frames[:-2]
                        try:
                            req = decode_client(frames[-1], ClientRequest)
                        except DecodeError as e:
                            bad = ClientReply(Status.INVALID.value, error=f"malformed request: {e}")
                            self._send([*route, b"", encode_client(bad)])
                            continue
                        if authorize is not None:
                            refused = authorize(uid, req)
                            if refused is not None:
                                self._send([*route, b"", encode_client(refused)])
                                continue
                        # The route comes back with the reply: identity, tag (b"" for REQ), and
                        # for the latency histogram the op and the arrival time.
                        # (An op no node serves is "other": a client must not be able to mint series.)
                        op = req.op if req.op in CLIENT_OPS else "other"
                        route = [route[0], route[1] if len(route) > 1 else b"", op, t0]
                        batch.append((route, req))
                    if batch:
                        counts = self.requests
                        for route, _ in batch:
                            counts[route[2]] = counts.get(route[2], 0) + 1
                        self.on_requests(batch)
        except zmq.ContextTerminated:
            pass
        finally:
            self._router.close(linger=0)
            self._pull.close(linger=0)
