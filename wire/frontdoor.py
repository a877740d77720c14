"""The client front door: the REQ/REP protocol, served by a ROUTER.

Clients use REQ sockets (one request in flight each, the ZeroMQ guide's Lazy Pirate pattern),
or a DEALER that tags each request with one frame before the delimiter (many in flight:
wire/pipeline.py);
the server side is a ROUTER so that requests of many clients are in flight at once, which is
what lets the leader group-commit them. One I/O thread owns the socket; requests reach the
node in batches through a callback, and replies come back from any thread through
:meth:`FrontDoor.reply_many` (an inproc PUSH socket per thread; a request submitted in-process,
by this node's HTTP gateway, is answered directly through its route's ``deliver``).
"""
from __future__ import annotations

import itertools
import logging
import threading
from typing import Callable, Optional

import zmq

from .address import zmq_endpoint
from .iothread import IoThread
from .messages import ClientReply, ClientRequest, DecodeError, Status, decode_client, encode_client

log = logging.getLogger("wire.frontdoor")

_MAX_BATCH = 2000


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
                 name: str = "") -> None:
        self.on_requests = on_requests
        self.name = name
        # Metrics, read at scrape time (actors/metrics.py). ``requests``: op -> count, written
        # by the I/O thread only. ``replies``: status -> itertools.count, advanced by whichever
        # thread replies: next() on it is one atomic C call, so no lock and no lost update.
        self.requests: dict[str, int] = {}
        self.replies: dict[str, itertools.count] = {}
        self._router = ctx.socket(zmq.ROUTER)
        self._router.setsockopt(zmq.LINGER, 0)
        self._router.setsockopt(zmq.SNDHWM, 100_000)
        self._router.setsockopt(zmq.RCVHWM, 100_000)
        self._router.bind(zmq_endpoint(bind_addr))
        super().__init__(ctx, f"frontdoor-{name}")

    def reply_many(self, items: list) -> None:
        """Answer many requests ``[(route, ClientReply)]`` with one hand-over to the I/O thread;
        callable from any thread."""
        if not items or self._stop.is_set():
            return
        frames = [b"M"]
        replies = self.replies
        for route, rep in items:
            if not isinstance(route, list):  # LocalRoute, the HTTP gateway's AsyncRoute: in-process
                route.deliver(rep)
                continue
            c = replies.get(rep.status)
            if c is None:
                c = replies.setdefault(rep.status, itertools.count())
            next(c)
            # A REQ client's route is its identity; a pipelining DEALER client (wire/pipeline.py)
            # adds one tag frame, which comes back with the reply.
            frames.append(route[0])
            frames.append(route[1] if len(route) > 1 else b"")
            frames.append(encode_client(rep))
        if len(frames) > 1:
            self._push().send_multipart(frames)

    def _send(self, frames: list) -> None:
        try:
            self._router.send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:
            pass  # the client went away; its Lazy Pirate retry will ask again
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
                    for _ in range(_MAX_BATCH):
                        try:
                            frames = router.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        if not 3 <= len(frames) <= 4 or frames[-2] != b"" or (len(frames) == 4 and frames[1] == b""):
                            continue  # neither a REQ envelope nor a tagged one: nothing sensible to answer
                        route = frames[:-2]
                        try:
                            req = decode_client(frames[-1], ClientRequest)
                        except DecodeError as e:
                            self._send([*route, b"", encode_client(ClientReply(Status.INVALID.value, error=f"malformed request: {e}"))])
                            continue
                        batch.append((route, req))
                    if batch:
                        counts = self.requests
                        for _, req in batch:
                            counts[req.op] = counts.get(req.op, 0) + 1
                        self.on_requests(batch)
        except zmq.ContextTerminated:
            pass
        finally:
            self._router.close(linger=0)
            self._pull.close(linger=0)
