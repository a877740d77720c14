"""The HTTP gateway: the tutorial's curl API on each node, served through the client library.

::

    PUT    /kv/{key}   body = value       -> 204   (?prev_value=V: compare-and-set; ?prev_exist=false: create;
                                                    412 {"error": "compare failed"} when the condition fails)
    GET    /kv/{key}                      -> 200 value | 404    (?consistency=stale|lease)
    DELETE /kv/{key}                      -> 204 | 404
    GET    /kv/?prefix=P&limit=N          -> 200 [{"key", "value"}, ...]  (non-UTF-8 values base64
                                             with "value_b64": true, as kvclient --json)
    GET    /status  -> the node's status JSON     GET /health -> 200 {"leader": id} | 503
    GET    /metrics -> Prometheus text (404 when the node gave no metrics function)

Errors are JSON ``{"error": "...", "leader": id-or-null}``: 400 bad key or input, 413 value (or
key) too large, 412 compare failed, 503 no leader, no quorum or timeout (a timed-out write may
still be applied, and the message says so). A 4xx means nothing was proposed.

An ``Idempotency-Key: K`` header on a write makes it exactly-once across HTTP retries: it is
sent with the session ``("idem-" + sha256(K)[:32], seq 1)``, so every retry with the same key is
deduplicated by the cluster's session table (Raft thesis 6.3), like the library's retries.

Serving model
-------------
One asyncio event-loop thread owns every connection; HTTP/1.1 is parsed with ``httptools``
(llhttp). Connections are kept alive and may pipeline: answers go out in request order per
connection, whatever order they are ready in.

With ``submit`` (the node's in-process entry point), the key/value requests parsed in one loop
iteration go to the node as ONE call ``submit([(route, ClientRequest), ...])``. Each route is an
:class:`AsyncRoute`; the node answers from its own threads with ``route.deliver(reply)``, which
queues the reply and wakes the loop at most once per burst. Answers the local node cannot give
(not_leader, unavailable, timeout, or no answer within one attempt's time) are finished in a
small pool of worker threads by a pooled :class:`~wire.client.Client` (leader redirects, retries
and backoff until the overall ``timeout``, with the same write session, so a write applies at most
once), and so are /status, /health, /metrics, listings, and every request when ``submit`` is None.
The loop itself never blocks.
"""
from __future__ import annotations

import asyncio
import collections
import email.utils
import json
import logging
import queue
import socket
import threading
import time
import uuid
from http import HTTPStatus
from typing import Any, Callable, Iterable, Optional
from urllib.parse import parse_qs, unquote, urlsplit

import httptools

from raftkv.wire.client import (
    CONSISTENCY_LEVELS, Client, ClientError, InvalidRequest, NotFound, Timeout, Unavailable, json_item,
    parse_servers,
)
from raftkv.wire.address import parse_bind
from raftkv.wire.messages import ClientReply, ClientRequest
from raftkv.wire.session import idempotency_session

__all__ = ["AsyncRoute", "HttpGateway", "idempotency_session", "parse_bind"]

log = logging.getLogger(__name__)

JSON = "application/json"
OCTETS = "application/octet-stream"
PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"

IDLE_TIMEOUT = 120.0  # idle keep-alive connections end after this many seconds
MAX_PIPELINED = 128  # unanswered requests per connection before it stops being read
REMOTE_LEADER_HINT = 1.0  # seconds a not_leader redirect sends requests straight to the workers
SESSION_CHUNK = 512  # writes per gateway session: below the FSM's per-session window (1024)
_METHODS = frozenset({"GET", "PUT", "DELETE", "POST", "PATCH", "HEAD"})
_PHRASES = {s.value: s.phrase for s in HTTPStatus}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_RETRY = frozenset({"not_leader", "unavailable", "timeout"})

# AsyncRoute states
_PARSING, _LOCAL, _WORKER, _DONE = 0, 1, 2, 3


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop where it is installed (a dependency on Linux and macOS): its transports and
    thread-safe wake-ups cost less of the GIL (GET c=64 over HTTP 25-26k -> 31k req/s)."""
    try:
        import uvloop
    except ImportError:  # e.g. Windows: the standard loop does the same, slower
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class _HttpError(Exception):
    """An error answer: status code, message, and whether the connection must close."""

    def __init__(self, code: int, message: str, close: bool = False, **extra: Any) -> None:
        super().__init__(message)
        self.code, self.message, self.close, self.extra = code, message, close, extra

    def answer(self) -> tuple:
        extra = {k: v for k, v in self.extra.items() if k not in ("leader", "allow")}
        headers = [("Allow", self.extra["allow"])] if "allow" in self.extra else []
        body = {"error": self.message, "leader": self.extra.get("leader"), **extra}
        return self.code, _json(body), JSON, headers, self.close


def _json(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


def _invalid(msg: str, leader: Optional[str]) -> _HttpError:
    code = 413 if msg.startswith(("value too large", "key too large")) else 400
    return _HttpError(code, msg, leader=leader)


# ------------------------------------------------------------------ one request


class AsyncRoute:
    """One HTTP request from parse to answer, and the route its node reply comes back on.

    ``deliver(reply)`` may be called from any thread (the node's actors call it through
    ``FrontDoor.reply_many``); it queues the reply on the gateway's mailbox, which wakes the event
    loop at most once per burst of replies. A reply after the request was handed to the worker
    pool (its attempt timed out) is ignored there.
    """

    __slots__ = ("box", "conn", "state", "method", "url", "headers", "body", "nbody", "keep_alive", "http10",
                 "t0", "deadline", "req", "kind", "idem", "data", "close")

    def __init__(self, box: "_Mailbox", conn: "_Connection") -> None:
        self.box = box
        self.conn = conn
        self.state = _PARSING
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
        self.kind = ""  # "get" or "write" on the in-process path
        self.idem = False
        self.data: Optional[bytes] = None  # the rendered answer, once ready
        self.close = False

    def deliver(self, rep: ClientReply) -> None:
        self.box.put(self, rep)

    def header(self, name: bytes) -> Optional[str]:
        v = self.headers.get(name)
        return None if v is None else v.decode("latin-1")


class _Mailbox:
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


class _Workers:
    """A small pool of daemon threads for blocking work (a stuck call must not delay exit)."""

    def __init__(self, size: int, name: str) -> None:
        self.size = max(1, size)
        self.name = name
        self.q: queue.SimpleQueue = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        self.idle = 0
        self.queued = 0

    def run(self, fn: Callable[[], Any], done: Callable[[Any], None]) -> None:
        with self.lock:
            self.queued += 1
            if self.queued > self.idle and len(self.threads) < self.size:
                t = threading.Thread(target=self._loop, name=f"{self.name}-{len(self.threads)}", daemon=True)
                self.threads.append(t)
                t.start()
        self.q.put((fn, done))

    def _loop(self) -> None:
        while True:
            with self.lock:
                self.idle += 1
            item = self.q.get()
            with self.lock:
                self.idle -= 1
                self.queued -= 1
            if item is None:
                return
            fn, done = item
            try:
                res = fn()
            except BaseException:  # noqa: BLE001 (answered as a 500, logged)
                log.exception("HTTP gateway worker failed")
                res = (500, _json({"error": "internal error", "leader": None}), JSON, [], True)
            try:
                done(res)
            except Exception:  # noqa: BLE001
                log.exception("HTTP gateway worker callback failed")

    def stop(self) -> None:
        for _ in self.threads:
            self.q.put(None)


# ------------------------------------------------------------------ connections


class _Connection(asyncio.Protocol):
    """One client connection: httptools callbacks build AsyncRoutes; answers leave in order."""

    __slots__ = ("gw", "transport", "parser", "cur", "slots", "closing", "paused", "write_paused",
                 "want_continue", "last", "upgrade")

    def __init__(self, gw: "HttpGateway") -> None:
        self.gw = gw
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

    # ------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.gw._conns.add(self)

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.gw._conns.discard(self)
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
            return
        self.last = time.monotonic()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # We do not switch protocols: the request (e.g. curl's h2c offer) was answered in
            # HTTP/1.1 with Connection: close (see on_message_complete); what follows is ignored.
            pass
        except httptools.HttpParserCallbackError as e:
            err = e.__context__
            if isinstance(err, _HttpError):
                self._fail(err)
            else:
                log.error("HTTP request handling failed", exc_info=err or e)
                self._fail(_HttpError(500, "internal error", close=True))
        except httptools.HttpParserError as e:
            self._fail(_HttpError(400, f"bad request: {e}", close=True))
        self._update_reading()

    def eof_received(self) -> bool:
        # The client is done sending; answer what was asked, then close (keep the transport open).
        self.closing = True
        if not self.slots:
            return False
        return True

    # ------------------------------------------------------------ httptools callbacks

    def on_message_begin(self) -> None:
        self.cur = AsyncRoute(self.gw._box, self)

    def on_url(self, url: bytes) -> None:
        self.cur.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        h = self.cur.headers
        name = name.lower()
        if name not in h:  # the first one wins, as with http.server's headers.get
            h[name] = value

    def on_headers_complete(self) -> None:
        r = self.cur
        p = self.parser
        r.method = p.get_method().decode("latin-1")
        r.http10 = p.get_http_version() == "1.0"
        h = r.headers
        cl = h.get(b"content-length")
        has_body = (cl is not None and cl.strip() not in (b"", b"0")) or b"transfer-encoding" in h
        if p.should_upgrade():
            self.upgrade = True
            if has_body:
                raise _HttpError(400, "protocol upgrade with a request body is not supported", close=True)
        if cl is not None:
            try:
                n = int(cl)
            except ValueError:
                raise _HttpError(400, "bad Content-Length", close=True) from None
            if n > self.gw.max_body:
                raise _HttpError(413, f"value too large: {n} > {self.gw.max_body} bytes", close=True)
        exp = h.get(b"expect")
        if exp is not None and has_body and not r.http10 and exp.strip().lower() == b"100-continue":
            if self.slots:
                self.want_continue = True  # after the answers still owed on this connection
            else:
                self.transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        r = self.cur
        r.nbody += len(body)
        if r.nbody > self.gw.max_body:
            raise _HttpError(413, f"value too large: more than {self.gw.max_body} bytes", close=True)
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
        self.slots.append(r)
        self.gw._dispatch(r)

    # ------------------------------------------------------------ answers

    def _fail(self, err: _HttpError) -> None:
        """A request that could not be parsed: answer it (after those before it) and close."""
        r = self.cur or AsyncRoute(self.gw._box, self)
        self.cur = None
        r.keep_alive = False
        self.closing = True
        self.slots.append(r)
        self.gw._finish(r, err.answer())
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
            t.close()
            return
        if not slots:
            if self.closing:  # the peer half-closed, or a request said Connection: close
                t.close()
                return
            if self.want_continue:
                self.want_continue = False
                t.write(_CONTINUE)
        self._update_reading()

    def _update_reading(self) -> None:
        t = self.transport
        if t is None or t.is_closing():
            return
        stop = self.write_paused or len(self.slots) >= MAX_PIPELINED
        if stop and not self.paused:
            self.paused = True
            t.pause_reading()
        elif not stop and self.paused:
            self.paused = False
            t.resume_reading()


# ------------------------------------------------------------------ the gateway


class HttpGateway:
    """The HTTP API of one node (module docstring), forwarding to the cluster's front doors.

    ``bind``: ``":PORT"`` (all interfaces) or ``"HOST:PORT"``; port 0 picks a free one (see
    :attr:`port`). ``servers``: client (ZeroMQ) addresses, the local node's first.
    ``status_fn``: returns this node's status dict (called from worker threads, so it must be
    thread-safe); when None, the local node is asked through the client library.
    ``metrics_fn``: returns Prometheus text (bytes or str); when None, /metrics answers 404.
    ``timeout``: the deadline of one request, retries and forwarding included.
    ``pool_size``: worker threads (and idle Clients kept) for forwarded and slow requests.
    ``local``: ``(this node's client address, call)``, the in-process hook of :class:`Client`.
    ``submit``: the node's batched in-process entry point, ``submit([(route, ClientRequest)])``,
    answered by ``route.deliver(ClientReply)`` from any thread; when None, every request goes
    through a pooled Client. For a second after the node answers not_leader (a follower),
    requests other than stale reads skip it and go to the leader through the workers.
    """

    def __init__(
        self,
        bind: str,
        servers: Iterable[str],
        status_fn: Optional[Callable[[], dict]] = None,
        metrics_fn: Optional[Callable[[], Any]] = None,
        *,
        timeout: float = 5.0,
        max_body: int = 64 * 1024 * 1024,
        pool_size: int = 64,
        local: Optional[tuple] = None,
        submit: Optional[Callable[[list], None]] = None,
    ) -> None:
        self.host, self._port = parse_bind(bind)
        self.servers = parse_servers(list(servers))
        self.status_fn = status_fn
        self.metrics_fn = metrics_fn
        self.timeout = timeout
        self.max_body = max_body
        self.pool_size = pool_size
        self.local = local  # (this node's client address, in-process call): see Client
        self.submit = submit
        # One attempt of the in-process path, as the Client's own per-attempt wait.
        self.attempt = min(2.0, max(0.1, timeout / 3))
        self._idle: collections.deque[Client] = collections.deque()
        self._conns: set[_Connection] = set()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._box: Optional[_Mailbox] = None
        self._sock: Optional[socket.socket] = None
        self._server: Optional[asyncio.AbstractServer] = None
        self._thread: Optional[threading.Thread] = None
        self._workers = _Workers(pool_size, "http-worker")
        self._batch: list = []  # (route, ClientRequest) parsed in this loop iteration
        self._inflight: collections.deque[AsyncRoute] = collections.deque()  # submitted, by deadline
        self._timer: Optional[asyncio.TimerHandle] = None
        self._date = b""
        self._date_at = 0
        self._session = ""
        self._session_left = 0
        self._remote_until = 0.0  # until then, the local node is known not to lead
        self._stopped = False

    @property
    def port(self) -> int:
        """The port listened on (the real one once started, also when bound to port 0)."""
        return self._port

    def start(self) -> None:
        """Bind (raises OSError if the port is in use) and serve in a daemon thread."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._sock = socket.create_server((self.host, self._port), family=family, backlog=1024)
        self._port = self._sock.getsockname()[1]
        loop = self._loop = _new_loop()
        self._box = _Mailbox(loop, self._drain)
        ready = threading.Event()
        failed: list = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                self._server = loop.run_until_complete(
                    loop.create_server(lambda: _Connection(self), sock=self._sock, backlog=1024))
            except BaseException as e:  # noqa: BLE001 (reported to start())
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
        log.info("HTTP gateway listening on %s:%d", self.host, self.port)

    def stop(self) -> None:
        """Stop listening, end open connections and close the pooled clients."""
        if self._stopped:
            return
        self._stopped = True
        loop = self._loop
        if loop is not None and self._thread is not None and self._thread.is_alive():
            done = threading.Event()

            def shut() -> None:
                if self._server is not None:
                    self._server.close()
                for c in list(self._conns):
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
        self._workers.stop()
        while self._idle:
            self._idle.pop().close()

    # ------------------------------------------------------------ the loop side

    def _dispatch(self, r: AsyncRoute) -> None:
        """A parsed request: answer it now, submit it to the node, or hand it to a worker."""
        try:
            if self.submit is not None and self._fast(r):
                return
        except _HttpError as e:
            self._finish(r, e.answer())
            r.conn.flush()
            return
        r.state = _WORKER
        self._workers.run(lambda: self._handle(r), lambda res: self._box.put(r, res))

    def _fast(self, r: AsyncRoute) -> bool:
        """Queue a /kv/{key} GET, HEAD, PUT or DELETE for the node; False for anything else."""
        method = r.method
        if method not in ("GET", "HEAD", "PUT", "DELETE"):
            return False
        url = r.url.decode("latin-1")
        if url.startswith("/kv/") and "?" not in url and "#" not in url:
            path, q = url, None
        else:
            path, q = _split(url)
            if not path.startswith("/kv/"):
                return False
        key = _key(path[4:])
        if not key:
            return False  # a listing, or a 400: the worker path has the words for it
        if method in ("GET", "HEAD"):
            consistency = (q.get("consistency") if q else None) or "linearizable"
            if consistency not in CONSISTENCY_LEVELS:
                raise _HttpError(400, f"consistency must be one of {', '.join(CONSISTENCY_LEVELS)}")
            req = ClientRequest("get", key=key, consistency=consistency)
            r.kind = "get"
        else:
            if method == "PUT":
                req = _write_request(key, q or {}, r.body)
            else:
                req = ClientRequest("delete", key=key)
            session = _session(r)
            if session is not None:
                req.client_id, req.seq = session
                r.idem = True
            else:
                req.client_id, req.seq = self._next_session()
            r.kind = "write"
        r.req = req
        if r.t0 < self._remote_until and req.consistency != "stale":
            # The local node just said who leads: go there directly, as the pooled Clients do.
            self._to_worker(r)
            return True
        r.state = _LOCAL
        r.deadline = r.t0 + self.attempt
        batch = self._batch
        batch.append((r, req))
        self._inflight.append(r)
        if len(batch) == 1:
            self._loop.call_soon(self._submit_batch)
        return True

    def _next_session(self) -> tuple[str, int]:
        # Writes of the gateway's own session. Many are in flight at once and may be answered
        # out of order, so one session gets at most SESSION_CHUNK of them (never more than the
        # FSM's per-session result window); then a new one starts.
        if self._session_left <= 0:
            self._session = "http-" + uuid.uuid4().hex
            self._session_left = SESSION_CHUNK
        self._session_left -= 1
        return self._session, SESSION_CHUNK - self._session_left

    def _submit_batch(self) -> None:
        batch = self._batch
        if not batch:
            return
        self._batch = []
        try:
            self.submit(batch)
        except Exception as e:  # noqa: BLE001 (the node is stopping, say): let the workers retry
            log.warning("in-process submit of %d requests failed: %s", len(batch), e)
            for r, _ in batch:
                if r.state == _LOCAL:
                    self._to_worker(r)
        if self._timer is None or self._timer.when() > self._loop.time() + 0.05:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._loop.call_later(0.05, self._tick)

    def _drain(self) -> None:
        """Answers from the node and from workers: render them, then write per connection."""
        box = self._box
        box.armed = False
        q = box.q
        dirty = set()
        while q:
            r, item = q.popleft()
            if type(item) is tuple:  # a worker's finished answer
                if r.state == _WORKER:
                    self._finish(r, item)
                    dirty.add(r.conn)
            elif r.state == _LOCAL:  # a node reply; else a late one for a request already retried
                self._answer(r, item)
                if r.state == _DONE:
                    dirty.add(r.conn)
        for conn in dirty:
            conn.flush()

    def _answer(self, r: AsyncRoute, rep: ClientReply) -> None:
        """The local node's reply to an in-process request."""
        st = rep.status
        if st in _RETRY:
            if st == "not_leader" and rep.leader_client:
                self._remote_until = time.monotonic() + REMOTE_LEADER_HINT
            self._to_worker(r)
            return
        if st == "invalid":
            self._finish(r, _invalid(rep.error or "invalid request", rep.leader_id).answer())
        elif st == "expired":
            if r.idem:
                self._finish(r, _HttpError(503, "timed out; the write may still be applied", leader=rep.leader_id,
                                           detail="session expired before an answer arrived").answer())
            else:
                # Our own fresh session was unknown: nothing was applied; retry in a new one.
                r.req.client_id, r.req.seq = "", 0
                self._to_worker(r)
                return
        elif r.kind == "get":
            if st == "ok":
                self._finish(r, (200, rep.value if rep.value is not None else b"", OCTETS, (), False))
            elif st == "not_found":
                self._finish(r, _HttpError(404, "key not found", leader=rep.leader_id).answer())
            else:
                self._finish(r, _HttpError(500, f"get: unexpected reply {st!r}", leader=rep.leader_id).answer())
        else:
            self._finish(r, _write_answer(r.req.op, st, rep.leader_id))

    def _to_worker(self, r: AsyncRoute) -> None:
        r.state = _WORKER
        self._workers.run(lambda: self._retry(r), lambda res: self._box.put(r, res))

    def _tick(self) -> None:
        """Timers: an in-process attempt without an answer goes to the workers; idle connections end."""
        loop = self._loop
        now = time.monotonic()
        infl = self._inflight
        while infl and (infl[0].state != _LOCAL or infl[0].deadline <= now):
            r = infl.popleft()
            if r.state == _LOCAL:
                self._to_worker(r)
        if int(now) % 10 == 0 or not infl:
            for c in list(self._conns):
                if not c.slots and now - c.last > IDLE_TIMEOUT and c.transport is not None:
                    c.transport.close()
        self._timer = loop.call_later(0.05 if infl else 0.5, self._tick)

    def _finish(self, r: AsyncRoute, res: tuple) -> None:
        """Render an answer ``(code, body, ctype, headers, close)`` into the request's slot."""
        code, body, ctype, headers, close = res
        r.state = _DONE
        if close:
            r.keep_alive = False
        now = int(time.time())
        if now != self._date_at:
            self._date_at = now
            self._date = email.utils.formatdate(now, usegmt=True).encode("ascii")
        parts = [b"HTTP/1.1 %d %s\r\nDate: %s\r\n" % (code, _PHRASES.get(code, "").encode("ascii"), self._date)]
        if code != 204:  # RFC 9110: no Content-Length on 204; every other answer carries one
            parts.append(b"Content-Length: %d\r\n" % len(body))
            if body:
                parts.append(b"Content-Type: %s\r\n" % ctype.encode("latin-1"))
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

    # ------------------------------------------------------------ client pool (worker threads)

    def _borrow(self) -> Client:
        try:
            return self._idle.pop()  # most recently used first: its sockets and leader are warm
        except IndexError:
            return Client(self.servers, timeout=self.timeout, local=self.local)

    def _give_back(self, client: Client) -> None:
        if self._stopped or len(self._idle) >= self.pool_size:
            client.close()
        else:
            self._idle.append(client)

    def call(self, fn: Callable[[Client], Any], *, write: bool = False, timeout: Optional[float] = None) -> Any:
        """Run ``fn`` with a pooled Client (``timeout``: this call's deadline, default the
        gateway's), turning library errors into HTTP errors. Blocks: worker threads only."""
        client = self._borrow()
        if timeout is not None:
            client.timeout = timeout
        try:
            return fn(client)
        except NotFound:
            raise _HttpError(404, "key not found", leader=client.leader_id) from None
        except InvalidRequest as e:
            raise _invalid(str(e), client.leader_id) from None
        except Timeout as e:
            msg = "timed out; the write may still be applied" if write else "timed out"
            raise _HttpError(503, msg, leader=client.leader_id, detail=str(e)) from None
        except Unavailable as e:
            raise _HttpError(503, "no leader or no quorum", leader=client.leader_id, detail=str(e)) from None
        except ClientError as e:
            raise _HttpError(500, str(e), leader=client.leader_id) from None
        finally:
            client.timeout = self.timeout
            self._give_back(client)

    def node_status(self) -> dict:
        """This node's status: from status_fn, else asked of the local node (servers[0])."""
        if self.status_fn is not None:
            try:
                return self.status_fn()
            except Exception as e:  # the node may be starting or stopping: that is "unavailable"
                log.warning("status_fn failed: %s", e)
                raise _HttpError(503, f"status unavailable: {e}") from None
        return self.call(lambda kv: kv.status(server=self.servers[0]))

    # ------------------------------------------------------------ worker side

    def _retry(self, r: AsyncRoute) -> tuple:
        """Finish an in-process request the local node could not answer: through a Client, which
        follows the leader and retries, with the same write session, until the deadline."""
        write = r.kind == "write"
        left = self.timeout - (time.monotonic() - r.t0)
        if left <= 0.001:
            msg = "timed out; the write may still be applied" if write else "timed out"
            return _HttpError(503, msg, leader=None, detail=f"no answer within {self.timeout:g}s").answer()
        req = r.req
        try:
            if not write:
                value = self.call(lambda kv: kv.get(req.key, consistency=req.consistency), timeout=left)
                return 200, value, OCTETS, (), False
            session = {"client_id": req.client_id, "seq": req.seq} if req.client_id else {}
            reply = self.call(lambda kv: kv.write(req.op, req.key, req.value, expected=req.expected,
                                                  expect_absent=req.expect_absent, **session),
                              write=True, timeout=left)
            return _write_answer(req.op, reply.status, reply.leader_id)
        except _HttpError as e:
            return e.answer()

    def _handle(self, r: AsyncRoute) -> tuple:
        """Any request, blocking (a worker thread): through the client library and the node's functions."""
        try:
            method = r.method
            if method not in _METHODS:
                raise _HttpError(501, f"unsupported method {method!r}")
            path, q = _split(r.url.decode("latin-1"))
            if path == "/kv" or path.startswith("/kv/"):
                return self._kv(r, method, path[4:], q)
            if path in ("/status", "/health", "/metrics"):
                if method not in ("GET", "HEAD"):
                    raise _HttpError(405, f"{method} not allowed on {path}", allow="GET")
                return getattr(self, "_" + path[1:])()
            raise _HttpError(404, f"no such endpoint: {path}")
        except _HttpError as e:
            return e.answer()

    def _kv(self, r: AsyncRoute, method: str, raw_key: str, q: dict) -> tuple:
        key = _key(raw_key)
        if method in ("GET", "HEAD") and not key:
            return self._list(q)
        if not key:
            raise _HttpError(400, "key must be non-empty")
        if method in ("GET", "HEAD"):
            consistency = q.get("consistency") or "linearizable"
            value = self.call(lambda kv: kv.get(key, consistency=consistency))
            return 200, value, OCTETS, (), False
        if method == "PUT":
            req = _write_request(key, q, r.body)
        elif method == "DELETE":
            req = ClientRequest("delete", key=key)
        else:
            raise _HttpError(405, f"{method} not allowed on /kv", allow="GET, PUT, DELETE")
        session = _session(r)
        kw = {"client_id": session[0], "seq": session[1]} if session else {}
        reply = self.call(lambda kv: kv.write(req.op, key, req.value, expected=req.expected,
                                              expect_absent=req.expect_absent, **kw), write=True)
        return _write_answer(req.op, reply.status, reply.leader_id)

    def _list(self, q: dict) -> tuple:
        limit_s = q.get("limit") or "0"
        if not limit_s.isdigit():
            raise _HttpError(400, "limit must be a non-negative integer")
        prefix = q.get("prefix", "")
        consistency = q.get("consistency") or "linearizable"
        items = self.call(lambda kv: kv.list(prefix, int(limit_s), consistency=consistency))
        return 200, _json([json_item(k, v) for k, v in items]), JSON, (), False

    def _status(self) -> tuple:
        return 200, _json(self.node_status()), JSON, (), False

    def _health(self) -> tuple:
        try:
            leader = self.node_status().get("leader_id")
        except _HttpError as e:
            raise _HttpError(503, f"node not answering: {e.message}") from None
        if not leader:
            raise _HttpError(503, "no leader")
        return 200, _json({"leader": leader}), JSON, (), False

    def _metrics(self) -> tuple:
        fn = self.metrics_fn
        if fn is None:
            raise _HttpError(404, "no metrics on this node")
        data = fn()
        return 200, data.encode("utf-8") if isinstance(data, str) else bytes(data), PROMETHEUS, (), False


# ------------------------------------------------------------------ request helpers (no I/O)


def _split(url: str) -> tuple[str, dict]:
    u = urlsplit(url)
    return u.path, {k: v[-1] for k, v in parse_qs(u.query, keep_blank_values=True).items()}


def _key(raw: str) -> str:
    if "%" not in raw:
        key = raw
    else:
        try:
            key = unquote(raw, errors="strict")
        except UnicodeDecodeError:
            raise _HttpError(400, "key is not valid UTF-8") from None
    if key:
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            raise _HttpError(400, "key is not valid UTF-8") from None
    return key


def _session(r: AsyncRoute) -> Optional[tuple[str, int]]:
    idem = r.header(b"idempotency-key")
    if idem is None:
        return None
    if not idem.strip():
        raise _HttpError(400, "empty Idempotency-Key")
    return idempotency_session(idem.strip())


def _write_request(key: str, q: dict, body: bytes) -> ClientRequest:
    """The ClientRequest of a PUT (put, CAS or create), its query checked."""
    prev_exist = q.get("prev_exist")
    prev_value = q.get("prev_value")
    if prev_exist not in (None, "true", "false"):
        raise _HttpError(400, "prev_exist must be true or false")
    if prev_exist == "false" and prev_value is not None:
        raise _HttpError(400, "prev_exist=false and prev_value exclude each other")
    if prev_exist == "true" and prev_value is None:
        raise _HttpError(400, "prev_exist=true needs prev_value")
    body = bytes(body)
    if prev_exist == "false":
        return ClientRequest("cas", key=key, value=body, expect_absent=True)
    if prev_value is not None:
        try:
            expected = prev_value.encode("utf-8")
        except UnicodeEncodeError:
            raise _HttpError(400, "expected value is not valid UTF-8") from None
        return ClientRequest("cas", key=key, value=body, expected=expected)
    return ClientRequest("put", key=key, value=body)


def _write_answer(op: str, status: str, leader: Optional[str]) -> tuple:
    if status == "ok":
        return 204, b"", JSON, (), False
    if status == "cas_failed" and op != "delete":
        return _HttpError(412, "compare failed", leader=leader).answer()
    if status == "not_found" and op == "delete":
        return _HttpError(404, "key not found", leader=leader).answer()
    return _HttpError(500, f"unexpected reply {status!r}", leader=leader).answer()
