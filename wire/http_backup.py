"""The gateway's backup route (issue 13): ``GET /backup`` streams the file ``kvclient backup FILE`` writes.

::

    GET /backup   -> 200 application/octet-stream, Content-Length: the file's size,
                     X-Raft-Revision: the applied index it holds; the body is a backup file
                     (storage/backup_file.py), which ``kvnode restore FILE`` takes

It is the same backup, taken the same way: the route runs the client library's
:meth:`~raftkv.wire.client.Client.backup` (the leader confirms its leadership, so every write
acknowledged before the request is in the copy; it checkpoints its state without stopping
writes; the copy is read from it in chunks, one at a time) with a file object that writes to the
HTTP connection instead of a file. The library connects as the request's bearer token, so on a
secure cluster the node that takes the backup checks that token's role again (admin), after the
gateway's own 401/403 (wire/http_auth.py).

Memory stays bounded whatever the size of the state: the answer's head waits until the backup's
header is known (its checkpoint taken), so that its Content-Length is exact; then each chunk is
written to the connection as it arrives, and the next one is asked for only once the
connection's send buffer is down to :data:`LOW_WATER`. A slow reader slows the backup; one that
reads nothing for :data:`STALL_S` is dropped, and the node deletes its checkpoint.

Errors before the first byte are answered like every other route's (JSON, 403 not authorized,
503 no leader or the node is busy with other backups, 400 a query parameter: the route takes
none). An error after it can only cut the connection short: the body is then shorter than its
Content-Length (curl says so and exits 18), and ``kvnode restore`` refuses a short file anyway
(its length and SHA-256 are checked before anything is written).

Each backup holds one thread of this module (not the gateway's worker pool); at most
:data:`MAX_BACKUPS` at once per gateway, beyond that 503. Like a watch stream, a backup takes
over its connection: it must be the connection's only unanswered request, and the connection
closes after it.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Optional

from raftkv.storage.backup_file import BackupError, header_of_start

from .client import Client
from .errors import ClientError, InvalidRequest, NotAuthorized
from .http_long_routes import LongRoutes, live_transport
from .http_server import AsyncRoute, HttpError, HttpServer

__all__ = ["HttpBackups", "MAX_BACKUPS", "LOW_WATER", "STALL_S"]

log = logging.getLogger("raftkv.wire.http")

MAX_BACKUPS = 2  # backups streaming at once from one gateway (each pins a checkpoint on a node)
LOW_WATER = 1 << 20  # unsent bytes of a connection below which the next chunk is read
STALL_S = 120.0  # seconds a client may read nothing before its backup is dropped
DRAIN_CHECK_S = 0.01  # how often the loop looks whether a full send buffer drained
PATH = b"/backup"


class _Stream:
    """One backup being streamed: what the backup thread and the loop share about it."""

    __slots__ = ("r", "gone", "why", "sent_head", "drained")

    def __init__(self, r: AsyncRoute) -> None:
        self.r = r
        self.gone = False  # the connection is unusable (closed, aborted, refused): stop
        self.why = "the HTTP client closed the connection"
        self.sent_head = False
        self.drained = threading.Event()  # set by the loop once the last write is down to LOW_WATER


class _ConnectionFile:
    """The binary file object :meth:`Client.backup` writes the backup file to: its first bytes
    (the header) are kept until the header is complete, then everything goes to the connection,
    one write at a time, each waiting for the connection to drain (module docstring). A write
    on a connection that is gone raises OSError, which makes the backup stop and the node drop
    its checkpoint."""

    def __init__(self, backups: "HttpBackups", st: _Stream) -> None:
        self.backups = backups
        self.st = st
        self.start = bytearray()  # the file's first bytes, until its header is complete
        self.size: Optional[int] = None
        self.sent = 0

    def write(self, data: bytes) -> int:
        n = len(data)
        if self.size is None:
            self.start += data
            try:
                got = header_of_start(self.start)
            except BackupError as e:  # never: the library writes the header itself
                raise OSError(f"backup stream does not start with a backup header: {e}") from None
            if got is None:
                return n
            header, self.size = got
            data, self.start = bytes(self.start), bytearray()
            self._send(data, (self.size, header.index))
        else:
            self._send(data, None)
        return n

    def flush(self) -> None:
        pass

    def _send(self, data: bytes, head: Optional[tuple]) -> None:
        st = self.st
        st.drained.clear()
        if not self.backups.post(self.backups.write, st, data, head):
            raise BrokenPipeError("the HTTP gateway stopped")
        if not st.drained.wait(STALL_S):
            st.gone = True
            st.why = f"the HTTP client read nothing for {STALL_S:g}s"
            self.backups.post(self.backups.abort, st)
        if st.gone:
            raise BrokenPipeError(st.why)
        self.sent += len(data)


class HttpBackups(LongRoutes):
    """The backup route of one gateway (module docstring).

    ``server``: the HTTP server (its loop writes the streams). ``make_client(token)``: a new
    Client to the cluster (the gateway's servers, and the in-process path to its node),
    connecting as ``token``.
    """

    thread_name = "http-backup"

    def __init__(self, server: HttpServer, make_client: Callable[[Optional[str]], Client],
                 max_backups: int = MAX_BACKUPS) -> None:
        super().__init__(server, make_client, max_backups)

    # ------------------------------------------------------------------ the loop side

    @staticmethod
    def claims(r: AsyncRoute) -> bool:
        """Whether ``r`` is this route's (loop thread; a bytes test per request)."""
        url = r.url
        return url.startswith(PATH) and url[len(PATH):len(PATH) + 1] in (b"", b"?", b"#")

    def prepare(self, r: AsyncRoute) -> None:
        """Refuse a claimed request that is not a plain ``GET /backup`` (loop thread)."""
        if r.method != "GET":
            raise HttpError(405, f"{r.method} not allowed on /backup", allow="GET")
        url = r.url.decode("latin-1").split("#", 1)[0]
        if "?" in url and url.split("?", 1)[1]:
            name = url.split("?", 1)[1].split("&", 1)[0].split("=", 1)[0]
            raise HttpError(400, f"unknown query parameter {name[:64]!r} for GET /backup (it takes none)")

    def busy(self) -> str:
        return (f"{self.max_active} backups are streaming from this gateway (the limit); "
                "retry when one is done or ask another node")

    def write(self, st: _Stream, data: bytes, head: Optional[tuple]) -> None:
        """Send the next bytes of a backup (loop thread); ``head``: ``(file size, index)``,
        send the answer's head first."""
        r = st.r
        t = live_transport(r)
        if st.gone or t is None:
            self._gone(st)
            return
        if head is not None:
            if not self.take_over(r, "a backup"):
                st.why = "the connection could not carry the backup (gone, or pipelined behind other requests)"
                self._gone(st)
                return
            size, index = head
            t.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n"
                    b"Content-Disposition: attachment; filename=\"raftkv-%d.bak\"\r\nX-Raft-Revision: %d\r\n"
                    b"Cache-Control: no-store\r\nConnection: close\r\n\r\n" % (size, index, index))
            st.sent_head = True
        t.write(data)
        self._wait_drained(st)

    def _wait_drained(self, st: _Stream) -> None:
        t = live_transport(st.r)
        if st.gone or t is None:
            self._gone(st)
        elif t.get_write_buffer_size() <= LOW_WATER:
            st.drained.set()
        else:
            self.server.loop.call_later(DRAIN_CHECK_S, self._wait_drained, st)

    @staticmethod
    def _gone(st: _Stream) -> None:
        st.gone = True
        st.drained.set()

    def end(self, st: _Stream) -> None:
        """The whole file is written (loop thread): close once it is sent."""
        t = st.r.conn.transport
        if t is not None and not t.is_closing():
            t.close()  # asyncio sends what is buffered, then closes

    def abort(self, st: _Stream) -> None:
        """Cut a started backup short (loop thread): the client sees fewer bytes than announced."""
        t = st.r.conn.transport
        if t is not None:
            t.abort()

    # ------------------------------------------------------------------ the backup threads

    def serve(self, r: AsyncRoute, job: None) -> None:
        """Take the backup and stream it to ``r``'s connection (the request's thread)."""
        st = _Stream(r)
        f = _ConnectionFile(self, st)
        kv = self.make_client(r.token)
        t0 = time.monotonic()
        try:
            info = kv.backup(f)
        except Exception as e:
            self._failed(st, f, e)
        else:
            self.post(self.end, st)
            log.info("HTTP backup at index %d (taken on %s): %d bytes sent in %.1fs", info["index"], info["node"],
                     f.sent, time.monotonic() - t0)
        finally:
            kv.close()

    def _failed(self, st: _Stream, f: _ConnectionFile, e: Exception) -> None:
        if st.sent_head or f.sent:
            log.warning("HTTP backup cut short after %d bytes: %s", f.sent, e)
            self.post(self.abort, st)
            return
        if st.gone:
            return  # nothing to answer: the client left, or was answered already
        if isinstance(e, NotAuthorized):
            err = HttpError(403, str(e))
        elif isinstance(e, InvalidRequest):
            err = HttpError(400, str(e))
        elif isinstance(e, ClientError):  # Unavailable and Timeout among them
            err = HttpError(503, "the backup could not be taken (no leader, no quorum, or the node is busy with "
                                 "other backups); retry", detail=str(e))
        else:
            log.exception("HTTP backup failed")
            err = HttpError(500, "internal error", close=True)
        self.server.post(st.r, err.answer())
