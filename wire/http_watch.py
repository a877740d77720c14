"""The gateway's watch routes (issue 14): a stream of JSON lines, and a long poll on one key.

::

    GET /watch/{prefix}?rev=N   -> 200, chunked: one JSON object per line per event, in revision
                                   order, until the client closes (``rev`` omitted: from now)
    GET /kv/{key}?wait_rev=N&timeout=30s
                                -> 200 the value (X-Mod-Revision) at the key's first change at a
                                   revision >= N; 404 if that change was a delete; 204 (no body,
                                   X-Raft-Revision: the revision it waited up to) at the timeout

An event line is :func:`~raftkv.wire.watch_client.event_json`'s object: ``revision``, ``type``
(put|delete), ``key``, ``value`` (base64 with ``"value_b64": true`` if not UTF-8), and when known
``create_revision``, ``version``, ``prev_value``. A stream that cannot go on (the history no
longer reaches back to it on any node, or no node answers) ends with one line
``{"error": ..., "revision": N}`` (N: the revision to restart from) and the end of the chunks.
Before the stream starts, the same conditions are answered 410 Gone ``{"error", "revision"}``
(compacted) and 503, like every other route; a bad or unknown query parameter is 400. A long
poll whose ``wait_rev`` is older than every node's history reads the key instead (linearizable):
its mod revision says whether it already changed at or after ``wait_rev`` (then 200 at once),
and otherwise nothing changed up to the read and the wait goes on from there.

Each stream and each long poll holds one thread of this module (not the gateway's worker pool),
which follows the watch through the client library (wire/watch_client.py: in-process to this
node, or any other node if it fails); at most ``max_watches`` at once per gateway, beyond that
503. A stream takes over its connection: it must be the connection's only unanswered request
(pipelining behind it is refused), and nothing further is read from it. A client that does not
read its stream is dropped once ``MAX_BUFFERED`` bytes wait for it.
"""
from __future__ import annotations

import json
import logging
import re
import time
from typing import Any, Callable, Optional

from .client import Client
from .errors import ClientError, Compacted, InvalidRequest, NotFound, Unavailable
from .http_long_routes import LongRoutes, live_transport
from .http_server import JSON, OCTETS, AsyncRoute, HttpError, HttpServer, json_body
from .watch_client import Watch, event_json

__all__ = ["HttpWatches", "MAX_WATCHES", "parse_timeout"]

log = logging.getLogger("raftkv.wire.http")

MAX_WATCHES = 128  # streams and long polls open at once on one gateway
MAX_BUFFERED = 8 * 1024 * 1024  # unsent bytes of a stream before its client is dropped as not reading
MAX_TIMEOUT = 300.0  # the longest long poll (seconds)
DEFAULT_TIMEOUT = 30.0
STREAM_POLL = 1.0  # seconds one long poll of a stream lasts (how soon a closed client is noticed)
_MAX_REV = 2 ** 63 - 1
_NDJSON = "application/x-ndjson"
_TIMEOUT_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m)?\Z")


def parse_timeout(text: str) -> float:
    """``30s``, ``500ms``, ``2m`` or plain seconds, in (0, MAX_TIMEOUT]; HttpError 400 otherwise."""
    m = _TIMEOUT_RE.match(text.strip())
    if m is None:
        raise HttpError(400, f"timeout must be a duration like 30s, 500ms or 2m (got {text[:40]!r})")
    n = float(m.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[m.group(2)]
    if not 0 < n <= MAX_TIMEOUT:
        raise HttpError(400, f"timeout must be more than 0 and at most {MAX_TIMEOUT:g}s (got {text[:40]!r})")
    return n


def _revision(q: dict, name: str) -> Optional[int]:
    v = q.get(name)
    if v is None:
        return None
    if not (v.isascii() and v.isdigit()) or not 1 <= int(v) <= _MAX_REV:
        raise HttpError(400, f"{name} must be a revision: an integer in [1, 2^63) (got {v[:40]!r})")
    return int(v)


def _check(q: dict, allowed: tuple, route: str) -> None:
    for name in q:
        if name not in allowed:
            if name == "consistency" and route.startswith("GET /kv"):
                raise HttpError(400, "consistency does not apply to a long poll (wait_rev): it waits for a "
                                     "change this node has applied")
            raise HttpError(400, f"unknown query parameter {name[:64]!r} for {route} (it takes {', '.join(allowed)})")


class _Stream:
    """One open watch stream: its route and whether its client is gone (loop thread writes it)."""

    __slots__ = ("r", "gone", "chunked")

    def __init__(self, r: AsyncRoute) -> None:
        self.r = r
        self.gone = False
        self.chunked = not r.http10


class HttpWatches(LongRoutes):
    """The watch routes of one gateway (module docstring).

    ``server``: the HTTP server (its loop writes the streams). ``make_client(token)``: a new
    Client to the cluster (the gateway's servers, and the in-process path to its node), connecting
    as ``token``.
    ``split(url) -> (path, query)`` and ``key(raw) -> str``: the routes' URL parsing, so every
    route decodes alike.
    """

    thread_name = "http-watch"

    def __init__(self, server: HttpServer, make_client: Callable[[Optional[str]], Client],
                 split: Callable[[str], tuple], key: Callable[[str], str], max_watches: int = MAX_WATCHES) -> None:
        super().__init__(server, make_client, max_watches)
        self.split = split
        self.key = key

    # ------------------------------------------------------------------ the loop side

    @staticmethod
    def claims(r: AsyncRoute) -> bool:
        """Whether ``r`` is a watch route's (loop thread; a bytes test or two per request)."""
        url = r.url
        if url.startswith(b"/watch"):
            return url[6:7] in (b"", b"/", b"?")
        return (url.startswith(b"/kv/") and b"?" in url and r.method in ("GET", "HEAD")
                and (b"wait_rev" in url or b"timeout" in url))

    def busy(self) -> str:
        return f"{self.max_active} watches are open on this gateway (the limit); retry later or ask another node"

    def prepare(self, r: AsyncRoute) -> Callable[[AsyncRoute], Any]:
        """What a claimed request asks (loop thread): the job its thread runs; HttpError if bad."""
        path, q = self.split(r.url.decode("latin-1"))
        if path == "/watch" or path.startswith("/watch/"):
            if r.method != "GET":
                raise HttpError(405, f"{r.method} not allowed on /watch/", allow="GET")
            _check(q, ("rev",), "GET /watch/{prefix}")
            prefix = self.key(path[7:])
            rev = _revision(q, "rev")
            return lambda route: self._stream(route, prefix, rev)
        _check(q, ("wait_rev", "timeout"), "GET /kv/{key} with wait_rev")
        key = self.key(path[4:])
        if not key:
            raise HttpError(400, "wait_rev needs a key: GET /kv/{key}?wait_rev=N")
        wait_rev = _revision(q, "wait_rev")
        if wait_rev is None:
            raise HttpError(400, "timeout applies to a long poll: give wait_rev=N too")
        timeout = parse_timeout(q["timeout"]) if "timeout" in q else DEFAULT_TIMEOUT
        return lambda route: self._long_poll(route, key, wait_rev, timeout)

    def _open(self, st: _Stream) -> None:
        """Send the stream's head (loop thread); the connection is the stream's from now on."""
        r = st.r
        t = live_transport(r)
        if t is None or not self.take_over(r, "a watch stream"):
            st.gone = True
            return
        head = [b"HTTP/1.1 200 OK\r\nContent-Type: " + _NDJSON.encode() + b"\r\nCache-Control: no-cache\r\n"]
        head.append(b"Transfer-Encoding: chunked\r\n\r\n" if st.chunked else b"Connection: close\r\n\r\n")
        t.write(b"".join(head))

    def _write(self, st: _Stream, data: bytes, end: bool) -> None:
        """Send part of a stream (loop thread); ``end``: and finish it."""
        t = live_transport(st.r)
        if st.gone or t is None:
            st.gone = True
            return
        if t.get_write_buffer_size() > MAX_BUFFERED:
            log.warning("HTTP watch stream dropped: its client read nothing while %d bytes waited",
                        t.get_write_buffer_size())
            st.gone = True
            t.abort()
            return
        if data:
            t.write(b"%x\r\n%s\r\n" % (len(data), data) if st.chunked else data)
        if end:
            st.gone = True
            if st.chunked:
                t.write(b"0\r\n\r\n")
            t.close()

    # ------------------------------------------------------------------ the watch threads

    def serve(self, r: AsyncRoute, job: Callable[[AsyncRoute], Any]) -> None:
        """Run the stream or long poll ``job`` for ``r`` (the request's thread)."""
        try:
            job(r)
        except Exception:
            log.exception("HTTP watch failed")
            self.server.post(r, HttpError(500, "internal error", close=True).answer())

    def _stream(self, r: AsyncRoute, prefix: str, rev: Optional[int]) -> None:
        kv = self.make_client(r.token)
        w = Watch(kv, prefix, rev, wait=0.01)  # the first poll only establishes the start
        try:
            try:
                first = w.poll()
            except Compacted as e:
                self.server.post(r, HttpError(410, str(e), revision=e.revision).answer())
                return
            except InvalidRequest as e:
                self.server.post(r, HttpError(400, str(e)).answer())
                return
            except ClientError as e:
                self.server.post(r, HttpError(503, "no node served the watch", detail=str(e)).answer())
                return
            st = _Stream(r)
            if not self.post(self._open, st):
                return
            w.wait = STREAM_POLL
            got = first
            while True:
                if got:
                    data = b"".join(json_body(event_json(ev)) + b"\n" for ev in got)
                    self.post(self._write, st, data, False)
                if st.gone or self.stopped:
                    return
                try:
                    got = w.poll()
                except (Compacted, Unavailable) as e:
                    end = {"error": str(e), "revision": e.revision if isinstance(e, Compacted) else w.next_revision}
                    self.post(self._write, st, json.dumps(end).encode() + b"\n", True)
                    return
        finally:
            w.close()
            kv.close()

    def _long_poll(self, r: AsyncRoute, key: str, wait_rev: int, timeout: float) -> None:
        kv = self.make_client(r.token)
        deadline = time.monotonic() + timeout
        w = Watch(kv._fork(), key, wait_rev, wait=min(timeout, STREAM_POLL * 5))
        try:
            while True:
                try:
                    got = [ev for ev in w.poll() if ev.key == key]
                except Compacted:
                    # No node's history reaches back to wait_rev: read the key. Its mod revision
                    # is its last change as of the read, so either it already answers, or nothing
                    # changed between wait_rev and the read and the wait goes on after it.
                    try:
                        meta = kv.get_meta(key)
                    except NotFound:
                        meta = None
                    if meta is not None and meta.mod_revision >= wait_rev:
                        self.server.post(r, self._current(meta))
                        return
                    w.close()
                    w = Watch(kv._fork(), key, None if meta is None else meta.revision + 1, wait=w.wait)
                    continue
                except ClientError as e:
                    self.server.post(r, HttpError(503, "no node served the long poll", detail=str(e)).answer())
                    return
                if got:
                    self.server.post(r, self._changed(got[0]))
                    return
                left = deadline - time.monotonic()
                if left <= 0 or self.stopped:
                    self.server.post(r, (204, b"", JSON, [("X-Raft-Revision", str(w.revision))], False))
                    return
                w.wait = max(0.01, min(left, STREAM_POLL * 5))
        finally:
            w.close()
            kv.close()

    @staticmethod
    def _current(meta: Any) -> tuple:
        """The long poll's answer from a read of the key (its history was compacted)."""
        headers = [("X-Raft-Revision", str(meta.revision)), ("X-Mod-Revision", str(meta.mod_revision)),
                   ("X-Create-Revision", str(meta.create_revision)), ("X-Version", str(meta.version))]
        return 200, meta.value, OCTETS, headers, False

    @staticmethod
    def _changed(ev: Any) -> tuple:
        """The long poll's answer: the key's first change at or after the revision asked."""
        headers = [("X-Raft-Revision", str(ev.revision)), ("X-Mod-Revision", str(ev.revision))]
        if ev.create_revision:
            headers += [("X-Create-Revision", str(ev.create_revision)), ("X-Version", str(ev.version))]
        if ev.type == "delete":
            body = json_body({"error": "key deleted", "revision": ev.revision, "leader": None})
            return 404, body, JSON, headers, False
        return 200, ev.value if ev.value is not None else b"", OCTETS, headers, False
