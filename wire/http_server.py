"""The HTTP/1.1 server of the gateway: connections, parsing, limits, keep-alive and pipelining.

One asyncio event-loop thread (uvloop's where installed) owns every connection; requests are
parsed with ``httptools`` (llhttp). Connections are kept alive and may pipeline: answers go out
in request order per connection, whatever order they are ready in; a connection with
``MAX_PIPELINED`` unanswered requests, ``MAX_PENDING_BYTES`` of unanswered bodies (or a full send
buffer) stops being read. Idle connections end after ``IDLE_TIMEOUT``.

Limits, so that no client can make the node buffer without bound or stall the loop: a body
longer than ``max_body`` is answered 413 as soon as its Content-Length (or the streamed body)
says so, and the rest is never buffered (read and dropped for at most ``LINGER`` seconds, so the
client sees the answer rather than a reset, then the connection closes); a URL longer than
``max_url`` is 414 and headers over ``max_headers`` bytes are 431, both counted as they arrive;
a request whose headers are not complete ``header_timeout`` seconds after they began (slowloris)
gets 408 and the connection closes; beyond ``max_connections`` open connections, new ones are
accepted and closed at once (one rate-limited log line).

This module knows nothing of keys, routes or the node: each parsed request, an
:class:`AsyncRoute`, goes to the ``dispatch`` callable it is given (on the loop thread);
answers ``(code, body, content type, headers, close)`` are rendered by :meth:`HttpServer.finish`.
Other threads hand results back with :meth:`HttpServer.post`, which wakes the loop at most once
per burst; the loop gives each to ``deliver``. The loop itself never blocks.
"""
from __future__ import annotations

import asyncio
import collections
import email.utils
import json
import logging
import socket
import ssl
import threading
import time
from http import HTTPStatus
from typing import Any, Callable, Optional

import httptools

from .address import parse_bind
from .messages import ClientReply, ClientRequest
from .ratelog import RateLimitedLog

__all__ = ["AsyncRoute", "HttpError", "HttpServer", "Answer", "json_body", "JSON", "OCTETS",
           "PARSING", "LOCAL", "WORKER", "DONE"]

log = logging.getLogger("raftkv.wire.http")
_ratelog = RateLimitedLog(log)

JSON = "application/json"
OCTETS = "application/octet-stream"

IDLE_TIMEOUT = 120.0  # idle keep-alive connections end after this many seconds
MAX_PIPELINED = 128  # unanswered requests per connection before it stops being read
MAX_PENDING_BYTES = 4 * 1024 * 1024  # unanswered body bytes per connection before it stops being read
HEADER_TIMEOUT = 10.0  # seconds from a request's first byte to the end of its headers
MAX_HEADER_BYTES = 64 * 1024  # all header names and values of one request (431 beyond)
MAX_URL_BYTES = 64 * 1024  # the request target (414 beyond), unless the server is given another
MAX_CONNECTIONS = 1024  # open connections; more are accepted and closed at once
LINGER = 2.0  # seconds an answered-and-closing connection's unread request body is drained
_HEAD_SLACK = 1024  # request line and header punctuation, beyond the URL and header bytes counted
_PHRASES = {s.value: s.phrase for s in HTTPStatus}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

# An answer: (status code, body, content type, extra headers, close the connection after it).
Answer = tuple

# AsyncRoute states (ints, not an Enum: compared on every request of the hot path)
PARSING, LOCAL, WORKER, DONE = 0, 1, 2, 3  # being parsed; at the local node; at a worker; answered


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop where it is installed (a dependency on Linux and macOS): its transports and
    thread-safe wake-ups cost less of the GIL (GET c=64 over HTTP 25-26k -> 31k req/s)."""
    try:
        import uvloop
    except ImportError:  # e.g. Windows: the standard loop does the same, slower
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class HttpError(Exception):
    """An error answer: status code, message, and whether the connection must close. Its JSON
    body is ``{"error": message, "leader": id-or-null, ...extra}``; ``allow`` becomes a header."""

    def __init__(self, code: int, message: str, close: bool = False, **extra: Any) -> None:
        super().__init__(message)
        self.code, self.message, self.close, self.extra = code, message, close, extra

    def answer(self) -> Answer:
        extra = {k: v for k, v in self.extra.items() if k not in ("leader", "allow", "www_authenticate")}
        headers = [("Allow", self.extra["allow"])] if "allow" in self.extra else []
        if "www_authenticate" in self.extra:  # a 401 of a secure gateway (wire/http_auth.py)
            headers.append(("WWW-Authenticate", self.extra["www_authenticate"]))
        body = {"error": self.message, "leader": self.extra.get("leader"), **extra}
        return self.code, json_body(body), JSON, headers, self.close


def json_body(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")




# ------------------------------------------------------------------ one request


class AsyncRoute:
    """One HTTP request from parse to answer, and the route its node reply comes back on.

    The server fills in the request (method, url, headers, body, keep-alive); the request engine
    (wire/http_engine.py) the rest: its ClientRequest, state, deadline.

    ``deliver(reply)`` may be called from any thread (the node's actors call it through
    ``FrontDoor.reply_many``); it queues the reply on the gateway's mailbox, which wakes the event
    loop at most once per burst of replies. A reply after the request was handed to the worker
    pool (its attempt timed out) is ignored there.
    """

    __slots__ = ("box", "conn", "state", "method", "url", "headers", "body", "nbody", "keep_alive", "http10",
                 "t0", "deadline", "req", "write", "idem", "data", "close", "token")

    def __init__(self, box: "Mailbox", conn: "Connection") -> None:
        self.box = box
        self.conn = conn
        self.state = PARSING
        self.method = ""
        self.url = b""
        self.headers: dict[bytes, bytes] = {}
        self.body: Any = b""  # bytes, or a list of chunks while more than one arrives
        self.nbody = 0
        self.keep_alive = True
        self.http10 = False
        self.t0 = 0.0
        self.deadline = 0.0
        self.req: Optional[ClientRequest] = None
        self.write = False  # a write (PUT or DELETE of a key)
        self.idem = False
        self.data: Optional[bytes] = None  # the rendered answer, once ready
        self.close = False
        self.token: Optional[str] = None  # the bearer token it was authorized with (secure gateway)

    def deliver(self, rep: ClientReply) -> None:
        """The node's reply (any thread)."""
        self.box.put(self, rep)

    def header(self, name: bytes) -> Optional[str]:
        v = self.headers.get(name)
        return None if v is None else v.decode("latin-1")


class Mailbox:
    """Replies from other threads to the loop: a deque plus one wake-up per idle-to-busy edge."""

    __slots__ = ("q", "armed", "loop", "drain")

    def __init__(self, loop: asyncio.AbstractEventLoop, drain: Callable[[], None]) -> None:
        self.q: collections.deque = collections.deque()
        self.armed = False
        self.loop = loop
        self.drain = drain

    def put(self, token: Any, item: Any) -> None:
        self.q.append((token, item))
        # The loop clears ``armed`` before it empties the queue, so an item appended before we read
        # True is always seen; reading False costs at worst one spare wake-up.
        if not self.armed:
            self.armed = True
            try:
                self.loop.call_soon_threadsafe(self.drain)
            except RuntimeError:  # the loop is closed: the gateway stopped, nobody waits
                pass


# ------------------------------------------------------------------ connections


class Connection(asyncio.Protocol):
    """One client connection: httptools callbacks build AsyncRoutes; answers leave in order."""

    __slots__ = ("srv", "transport", "parser", "cur", "slots", "closing", "paused", "write_paused",
                 "want_continue", "last", "upgrade", "in_head", "began_here", "head_fed", "head_t0", "url_n",
                 "hdr_n", "pending", "drain", "linger_until")

    def __init__(self, srv: "HttpServer") -> None:
        self.srv = srv
        self.transport: Optional[asyncio.Transport] = None
        self.parser = httptools.HttpRequestParser(self)
        self.cur: Optional[AsyncRoute] = None
        self.slots: collections.deque[AsyncRoute] = collections.deque()
        self.closing = False  # a close is decided: read no more requests
        self.paused = False
        self.write_paused = False
        self.want_continue = False
        self.last = time.monotonic()
        self.upgrade = False
        # Limits (module docstring). A request's head (request line and headers) is counted as it
        # arrives: ``url_n`` and ``hdr_n`` exactly, from the parser's callbacks; ``head_fed`` by
        # whole chunks that arrived while a head begun in an earlier chunk was still incomplete
        # (httptools joins a header's pieces itself before it hands it over, so a single endless
        # header is only visible that way).
        self.in_head = False
        self.began_here = False
        self.head_fed = 0
        self.head_t0 = self.last  # when the head now due began (0: none due, the connection is idle)
        self.url_n = 0
        self.hdr_n = 0
        self.pending = 0  # body bytes of requests parsed and not yet answered
        self.drain = False  # closing with a request body unread: drain it for LINGER seconds
        self.linger_until = 0.0

    # ------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        srv = self.srv
        admit = srv.admit
        if admit is not None:  # loopback-only mode (issue 11): refuse before reading a byte
            peer = transport.get_extra_info("peername")
            if not peer or not admit(peer[0]):
                self.closing = True
                transport.abort()
                return
        if len(srv.conns) >= srv.max_connections:
            self.closing = True
            transport.close()
            _ratelog.warn("http-conn-cap", "HTTP gateway: %d connections open (the limit): closing new ones",
                          len(srv.conns))
            return
        srv.conns.add(self)

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.srv.conns.discard(self)
        self.closing = True
        self.slots.clear()

    def pause_writing(self) -> None:
        self.write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._update_reading()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return  # answered and closing (or draining an unread body): dropped unread
        self.last = time.monotonic()
        if self.in_head and self.head_fed > self.url_n + self.srv.max_headers + _HEAD_SLACK:
            self._fail(HttpError(431, f"request headers too large: more than {self.srv.max_headers} bytes",
                                 close=True))
            self._update_reading()
            return
        self.began_here = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # We do not switch protocols: the request (e.g. curl's h2c offer) was answered in
            # HTTP/1.1 with Connection: close (see on_message_complete); what follows is ignored.
            pass
        except httptools.HttpParserCallbackError as e:
            err = e.__context__
            if isinstance(err, HttpError):
                self._fail(err)
            else:
                log.error("HTTP request handling failed", exc_info=err or e)
                self._fail(HttpError(500, "internal error", close=True))
        except httptools.HttpParserError as e:
            self._fail(HttpError(400, f"bad request: {e}", close=True))
        if self.in_head and not self.began_here:
            self.head_fed += len(data)
        self._update_reading()

    def eof_received(self) -> bool:
        # The client is done sending; answer what was asked, then close (keep the transport open).
        if self.linger_until:
            return False  # it read our answer and closed: done draining
        self.closing = True
        if not self.slots:
            return False
        return True

    # ------------------------------------------------------------ httptools callbacks

    def on_message_begin(self) -> None:
        self.cur = AsyncRoute(self.srv.box, self)
        self.in_head = self.began_here = True
        self.head_fed = self.url_n = self.hdr_n = 0
        self.head_t0 = self.last

    def on_url(self, url: bytes) -> None:
        self.url_n += len(url)
        if self.url_n > self.srv.max_url:
            raise HttpError(414, f"URL too long: more than {self.srv.max_url} bytes", close=True)
        self.cur.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.hdr_n += len(name) + len(value) + 4
        if self.hdr_n > self.srv.max_headers:
            raise HttpError(431, f"request headers too large: more than {self.srv.max_headers} bytes", close=True)
        h = self.cur.headers
        name = name.lower()
        if name not in h:  # the first one wins, as with http.server's headers.get
            h[name] = value

    def on_headers_complete(self) -> None:
        self.in_head = False
        self.head_t0 = 0.0
        r = self.cur
        p = self.parser
        r.method = p.get_method().decode("latin-1")
        r.http10 = p.get_http_version() == "1.0"
        if self.srv.authorize is not None:
            self.srv.authorize(r)  # 401/403 before a byte of the body is read (wire/http_auth.py)
        h = r.headers
        cl = h.get(b"content-length")
        has_body = (cl is not None and cl.strip() not in (b"", b"0")) or b"transfer-encoding" in h
        if p.should_upgrade():
            self.upgrade = True
            if has_body:
                raise HttpError(400, "protocol upgrade with a request body is not supported", close=True)
        if cl is not None:
            try:
                n = int(cl)
            except ValueError:
                raise HttpError(400, "bad Content-Length", close=True) from None
            if n > self.srv.max_body:
                raise HttpError(413, f"value too large: {n} > {self.srv.max_body} bytes", close=True)
        exp = h.get(b"expect")
        if exp is not None and has_body and not r.http10 and exp.strip().lower() == b"100-continue":
            if self.slots:
                self.want_continue = True  # after the answers still owed on this connection
            else:
                self.transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        r = self.cur
        r.nbody += len(body)
        if r.nbody > self.srv.max_body:
            raise HttpError(413, f"value too large: more than {self.srv.max_body} bytes", close=True)
        if not r.body:
            r.body = body
        elif type(r.body) is list:
            r.body.append(body)
        else:
            r.body = [r.body, body]

    def on_message_complete(self) -> None:
        r = self.cur
        self.cur = None
        self.want_continue = False
        if self.closing or r is None:
            return  # after a request that closes the connection: ignored
        if type(r.body) is list:
            r.body = b"".join(r.body)
        r.keep_alive = self.parser.should_keep_alive() and not self.upgrade
        self.upgrade = False
        if not r.keep_alive:
            self.closing = True
        r.t0 = time.monotonic()
        self.pending += r.nbody
        self.slots.append(r)
        self.srv.dispatch(r)

    # ------------------------------------------------------------ answers

    def _fail(self, err: HttpError) -> None:
        """A request that could not be parsed: answer it (after those before it) and close."""
        r = self.cur or AsyncRoute(self.srv.box, self)
        self.cur = None
        r.keep_alive = False
        self.closing = True
        self.drain = True  # the client may still be sending what we refused
        self.in_head = False
        self.head_t0 = 0.0
        self.slots.append(r)
        self.srv.finish(r, err.answer())
        self.flush()

    def flush(self) -> None:
        """Write every answer that is ready at the head of the line, in one write."""
        slots = self.slots
        if not slots or slots[0].data is None:
            return
        t = self.transport
        out = []
        close = False
        while slots and slots[0].data is not None:
            r = slots.popleft()
            self.pending -= r.nbody
            out.append(r.data)
            if r.close:
                close = True
                slots.clear()
                break
        if t is None or t.is_closing():
            return
        t.write(out[0] if len(out) == 1 else b"".join(out))
        self.last = time.monotonic()
        if close:
            self.closing = True
            if self.drain and t.can_write_eof():
                # Half-close and drop what the client still sends for a while: closing with
                # unread data would reset the connection, and the client might never see why.
                t.write_eof()
                self.linger_until = self.last + LINGER
                if self.paused:
                    self.paused = False
                    t.resume_reading()
            else:
                t.close()
            return
        if not slots:
            if self.closing:  # the peer half-closed, or a request said Connection: close
                t.close()
                return
            if self.want_continue:
                self.want_continue = False
                t.write(_CONTINUE)
        # Answers sent only lower what stops the reading (a full send buffer pauses it through
        # pause_writing): only a paused connection may have to resume.
        if self.paused:
            self._update_reading()

    def _update_reading(self) -> None:
        t = self.transport
        if t is None or t.is_closing() or self.linger_until:
            return
        stop = self.write_paused or len(self.slots) >= MAX_PIPELINED or self.pending >= MAX_PENDING_BYTES
        if stop and not self.paused:
            self.paused = True
            t.pause_reading()
        elif not stop and self.paused:
            self.paused = False
            if self.head_t0:
                self.head_t0 = time.monotonic()  # we were the ones not reading: the client's clock restarts
            t.resume_reading()


# ------------------------------------------------------------------ the server


class HttpServer:
    """Listens on ``bind`` (``":PORT"`` or ``"HOST:PORT"``, wire/address.py; port 0 picks a free
    one) and serves HTTP/1.1 in a daemon thread running an event loop.

    Its user gives three callables, all called on the loop thread: ``dispatch(route)`` for each
    parsed request (it answers through :meth:`finish` and the connection's ``flush``, now or
    later); ``deliver(route, item) -> bool`` for each item :meth:`post`-ed from another thread
    (True when the route is now answered); ``tick(now) -> bool`` every 0.05-0.5 s (True while
    requests are waiting, which keeps the ticks frequent).
    """

    def __init__(self, bind: str, *, max_body: int, dispatch: Callable[[AsyncRoute], None],
                 deliver: Callable[[AsyncRoute, Any], bool], tick: Callable[[float], bool],
                 max_url: int = MAX_URL_BYTES, max_headers: int = MAX_HEADER_BYTES,
                 header_timeout: float = HEADER_TIMEOUT, max_connections: int = MAX_CONNECTIONS) -> None:
        self.host, self._port = parse_bind(bind)
        self.max_body = max_body
        self.max_url = max_url
        self.max_headers = max_headers
        self.header_timeout = header_timeout
        self.max_connections = max_connections
        self.dispatch = dispatch
        self._deliver = deliver
        self._on_tick = tick
        self.conns: set[Connection] = set()
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self.box: Optional[Mailbox] = None
        self._sock: Optional[socket.socket] = None
        self._server: Optional[asyncio.AbstractServer] = None
        self._thread: Optional[threading.Thread] = None
        self._timer: Optional[asyncio.TimerHandle] = None
        self._date = b""
        self._date_at = 0
        self._heads: dict[int, bytes] = {}  # code -> status line and Date header, for this second
        self._stopped = False
        # ``admit(peer_ip) -> bool``, asked on accept (loopback-only mode); None admits everyone.
        self.admit: Optional[Callable[[str], bool]] = None
        # ``authorize(route)``, asked once a request's headers are parsed: raises HttpError 401/403
        # (a secure node's bearer tokens, wire/http_auth.py); None lets every request in.
        self.authorize: Optional[Callable[[AsyncRoute], None]] = None
        self.ssl: Optional[ssl.SSLContext] = None  # HTTPS (a secure node) when set

    @property
    def port(self) -> int:
        """The port listened on (the real one once started, also when bound to port 0)."""
        return self._port

    def start(self) -> None:
        """Bind (raises OSError if the port is in use) and serve in a daemon thread."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._sock = socket.create_server((self.host, self._port), family=family, backlog=1024)
        self._port = self._sock.getsockname()[1]
        loop = self.loop = _new_loop()
        self.box = Mailbox(loop, self._drain)
        ready = threading.Event()
        failed: list = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                self._server = loop.run_until_complete(
                    loop.create_server(lambda: Connection(self), sock=self._sock, backlog=1024, ssl=self.ssl))
            except BaseException as e:  # reported to start()
                failed.append(e)
                ready.set()
                return
            self._timer = loop.call_later(0.5, self._tick)
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name=f"http-{self.port}", daemon=True)
        self._thread.start()
        ready.wait()
        if failed:
            self._sock.close()
            raise failed[0]
        log.info("HTTP%s gateway listening on %s:%d", "S" if self.ssl is not None else "", self.host, self.port)

    def stop(self) -> None:
        """Stop listening and end open connections."""
        if self._stopped:
            return
        self._stopped = True
        loop = self.loop
        if loop is not None and self._thread is not None and self._thread.is_alive():
            done = threading.Event()

            def shut() -> None:
                if self._server is not None:
                    self._server.close()
                for c in list(self.conns):
                    if c.transport is not None:
                        c.transport.abort()  # the client sees the connection end
                if self._timer is not None:
                    self._timer.cancel()
                loop.call_soon(last)  # after the aborts' connection_lost callbacks close the sockets

            def last() -> None:
                loop.stop()
                done.set()

            try:
                loop.call_soon_threadsafe(shut)
            except RuntimeError:
                pass
            done.wait(5)
            self._thread.join(5)
        if self._sock is not None:
            self._sock.close()

    # ------------------------------------------------------------ the loop side

    def _drain(self) -> None:
        """Items posted from other threads: hand each to ``deliver``, then write per connection."""
        box = self.box
        box.armed = False
        q = box.q
        dirty = set()
        deliver = self._deliver
        while q:
            r, item = q.popleft()
            if deliver(r, item):
                dirty.add(r.conn)
        for conn in dirty:
            conn.flush()

    def post(self, r: AsyncRoute, item: Any) -> None:
        """Hand ``item`` for request ``r`` to the loop (any thread): it reaches ``deliver``."""
        self.box.put(r, item)

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the loop after the current callbacks (loop thread)."""
        self.loop.call_soon(fn)

    def tick_within(self, delay: float) -> None:
        """Make the next tick come within ``delay`` seconds (loop thread)."""
        if self._timer is None or self._timer.when() > self.loop.time() + delay:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_later(delay, self._tick)

    def _tick(self) -> None:
        """Timers: the user's tick; idle, slow-header and lingering connections end."""
        now = time.monotonic()
        busy = self._on_tick(now)
        if int(now) % 10 == 0 or not busy:
            late = now - self.header_timeout
            for c in list(self.conns):
                t = c.transport
                if t is None:
                    continue
                if c.linger_until:
                    if now > c.linger_until:
                        t.abort()  # it never closed its side: enough draining
                elif c.head_t0 and c.head_t0 < late and not c.paused and not c.closing:
                    _ratelog.warn("http-header-timeout", "HTTP gateway: closed a connection whose request "
                                  "headers were not complete within %gs", self.header_timeout)
                    c._fail(HttpError(408, f"request headers not complete within {self.header_timeout:g}s",
                                      close=True))
                elif not c.slots and now - c.last > IDLE_TIMEOUT:
                    t.close()
        self._timer = self.loop.call_later(0.05 if busy else 0.5, self._tick)

    def finish(self, r: AsyncRoute, res: tuple) -> None:
        """Render an answer ``(code, body, ctype, headers, close)`` into the request's slot (loop
        thread); the connection's ``flush`` sends it when those before it are sent."""
        code, body, ctype, headers, close = res
        r.state = DONE
        if close:
            r.keep_alive = False
        now = int(time.time())
        if now != self._date_at:
            self._date_at = now
            self._date = email.utils.formatdate(now, usegmt=True).encode("ascii")
            self._heads = {}
        head = self._heads.get(code)
        if head is None:  # once per status code and second, not per answer
            head = self._heads[code] = b"HTTP/1.1 %d %s\r\nDate: %s\r\n" % (
                code, _PHRASES.get(code, "").encode("ascii"), self._date)
        parts = [head]
        if code != 204:  # RFC 9110: no Content-Length on 204; every other answer carries one
            parts.append(b"Content-Length: %d\r\n" % len(body))
            if body:
                parts.append(b"Content-Type: %s\r\n" % ctype.encode("latin-1"))
        if type(headers) is bytes:  # already rendered (a GET's revision headers: one % per answer)
            parts.append(headers)
        else:
            for k, v in headers:
                parts.append(f"{k}: {v}\r\n".encode("latin-1"))
        if not r.keep_alive:
            parts.append(b"Connection: close\r\n")
            r.close = True
        elif r.http10:
            parts.append(b"Connection: keep-alive\r\n")
        parts.append(b"\r\n")
        if body and code != 204 and r.method != "HEAD":
            parts.append(body)
        r.data = b"".join(parts)
        if log.isEnabledFor(logging.DEBUG):
            log.debug('"%s %s" %d %d', r.method, r.url.decode("latin-1"), code, len(body))
