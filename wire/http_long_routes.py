"""What the gateway's long-lived routes share: watch streams and long polls (wire/http_watch.py)
and backups (wire/http_backup.py).

Such a request outlives the gateway's worker pool's patience, so each one gets a thread of its
own, at most ``max_active`` at once per gateway (beyond that: 503 at once). Its thread talks to
the event loop only through :meth:`LongRoutes.post`. A route that streams its answer takes over
its connection (:meth:`LongRoutes.take_over`): it must be the connection's only unanswered
request (one pipelined behind others is refused with 400), and nothing further is read from the
connection, which closes after the answer.
"""
from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable, Optional

from .client import Client
from .http_server import WORKER, AsyncRoute, HttpError, HttpServer

__all__ = ["LongRoutes", "live_transport"]


def live_transport(r: AsyncRoute) -> Optional[asyncio.Transport]:
    """``r``'s connection's transport, or None once it can no longer carry bytes (closed or
    closing; loop thread)."""
    t = r.conn.transport
    return None if t is None or t.is_closing() else t


class LongRoutes:
    """The base of a family of long-lived routes of one gateway (module docstring).

    ``server``: the HTTP server (its loop writes the answers). ``make_client(token)``: a new
    Client to the cluster (the gateway's servers, and the in-process path to its node),
    connecting as ``token``. A subclass says what a request is (:meth:`prepare`, on the loop)
    and serves it (:meth:`serve`, in the request's thread).
    """

    thread_name = "http-long"

    def __init__(self, server: HttpServer, make_client: Callable[[Optional[str]], Client],
                 max_active: int) -> None:
        self.server = server
        self.make_client = make_client
        self.max_active = max_active
        self.active = 0  # loop thread only
        self.stopped = False  # set by the gateway's stop: threads end, nothing more is posted

    # ------------------------------------------------------------------ for subclasses

    def prepare(self, r: AsyncRoute) -> Any:
        """Check a claimed request (loop thread): raise HttpError to answer it at once, else
        return what :meth:`serve` is given."""
        raise NotImplementedError

    def busy(self) -> str:
        """The 503 message when ``max_active`` requests are being served."""
        raise NotImplementedError

    def serve(self, r: AsyncRoute, job: Any) -> None:
        """Serve ``r`` in its own thread; ``job``: what :meth:`prepare` returned."""
        raise NotImplementedError

    # ------------------------------------------------------------------ the loop side

    def dispatch(self, r: AsyncRoute) -> None:
        """Serve a claimed request (loop thread): a 4xx/503 at once, or a thread of its own."""
        try:
            job = self.prepare(r)
            if self.active >= self.max_active:
                raise HttpError(503, self.busy())
        except HttpError as e:
            self.server.finish(r, e.answer())
            r.conn.flush()
            return
        r.state = WORKER
        self.active += 1
        threading.Thread(target=self._run, args=(r, job), name=self.thread_name, daemon=True).start()

    def take_over(self, r: AsyncRoute, what: str) -> bool:
        """Make ``r``'s connection carry ``r``'s streamed answer alone (loop thread), before its
        head is written; False if it cannot: the connection is gone, or ``r`` is pipelined behind
        other requests (then answered 400, ``what`` naming the route)."""
        conn = r.conn
        if live_transport(r) is None or not conn.slots:
            return False
        if conn.slots[0] is not r:
            self.server.finish(r, HttpError(400, f"{what} cannot be pipelined behind other requests",
                                            close=True).answer())
            conn.flush()
            return False
        conn.closing = True  # read nothing more: the connection carries the answer
        return True

    def post(self, fn: Callable[..., None], *args: Any) -> bool:
        """Run ``fn(*args)`` on the loop (any thread); False when the gateway stopped."""
        loop = self.server.loop
        if self.stopped or loop is None:
            return False
        try:
            loop.call_soon_threadsafe(fn, *args)
            return True
        except RuntimeError:  # the loop is closed: the gateway stopped
            return False

    def _done(self) -> None:
        self.active -= 1

    # ------------------------------------------------------------------ the request threads

    def _run(self, r: AsyncRoute, job: Any) -> None:
        try:
            self.serve(r, job)
        finally:
            self.post(self._done)
