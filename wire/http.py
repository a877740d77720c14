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

HTTP/1.1 keep-alive; one thread per connection (ThreadingHTTPServer). Clients of the front door
are pooled: a request borrows an idle :class:`~wire.client.Client` (ZeroMQ sockets are not
thread-safe) and gives it back, so the leader cache and sockets outlive short connections.
"""
from __future__ import annotations

import collections
import hashlib
import json
import logging
import socket
import socketserver
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable, Optional
from urllib.parse import parse_qs, unquote, urlsplit

from wire.client import (
    Client, ClientError, InvalidRequest, NotFound, Timeout, Unavailable, json_item, parse_servers,
)

__all__ = ["HttpGateway", "idempotency_session", "parse_bind"]

log = logging.getLogger(__name__)

JSON = "application/json"
OCTETS = "application/octet-stream"
PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"


def parse_bind(bind: str) -> tuple[str, int]:
    """``":8001"`` -> ("0.0.0.0", 8001); ``"HOST:PORT"`` -> (HOST, PORT); ``"[::1]:80"`` -> ("::1", 80)."""
    host, sep, port = bind.strip().rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"bad HTTP address {bind!r}: expected [HOST]:PORT")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def idempotency_session(key: str) -> tuple[str, int]:
    """The write session (client_id, seq) an ``Idempotency-Key`` header value stands for."""
    return "idem-" + hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:32], 1


class _HttpError(Exception):
    """An error answer: status code, message, and whether the connection must close."""

    def __init__(self, code: int, message: str, close: bool = False, **extra: Any) -> None:
        super().__init__(message)
        self.code, self.message, self.close, self.extra = code, message, close, extra


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a stuck keep-alive connection must not block shutdown
    request_queue_size = 128  # benchmarks open 64 connections at once; the default backlog is 5
    gateway: "HttpGateway"

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver prints tracebacks to stderr; a client hanging up is routine.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            log.debug("connection from %s ended: %s", client_address, exc)
        else:
            log.exception("HTTP connection from %s failed", client_address)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, which can stall on DNS: skip it.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


class HttpGateway:
    """The HTTP API of one node (module docstring), forwarding to the cluster's front doors.

    ``bind``: ``":PORT"`` (all interfaces) or ``"HOST:PORT"``; port 0 picks a free one (see
    :attr:`port`). ``servers``: client (ZeroMQ) addresses, the local node's first.
    ``status_fn``: returns this node's status dict (called from request threads, so it must be
    thread-safe); when None, the local node is asked through the client library.
    ``metrics_fn``: returns Prometheus text (bytes or str); when None, /metrics answers 404.
    ``timeout``: the deadline of one forwarded call, retries included.
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
    ) -> None:
        self.host, self._port = parse_bind(bind)
        self.servers = parse_servers(list(servers))
        self.status_fn = status_fn
        self.metrics_fn = metrics_fn
        self.timeout = timeout
        self.max_body = max_body
        self.pool_size = pool_size
        self.local = local  # (this node's client address, in-process call): see Client
        self._idle: collections.deque[Client] = collections.deque()
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None
        self._stopped = False

    @property
    def port(self) -> int:
        """The port listened on (the real one once started, also when bound to port 0)."""
        return self._server.server_address[1] if self._server is not None else self._port

    def start(self) -> None:
        """Bind (raises OSError if the port is in use) and serve in a daemon thread."""
        server_cls = _Server
        if ":" in self.host:
            server_cls = type("_Server6", (_Server,), {"address_family": socket.AF_INET6})
        self._server = server_cls((self.host, self._port), _Handler)
        self._server.gateway = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name=f"http-{self.port}", daemon=True)
        self._thread.start()
        log.info("HTTP gateway listening on %s:%d", self.host, self.port)

    def stop(self) -> None:
        """Stop listening, end open connections and close the pooled clients."""
        self._stopped = True
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)  # wakes the connection's thread, which then ends
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(5)
        while self._idle:
            self._idle.pop().close()

    # ------------------------------------------------------------ client pool

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

    def call(self, fn: Callable[[Client], Any], *, write: bool = False) -> Any:
        """Run ``fn`` with a pooled Client, turning library errors into HTTP errors."""
        client = self._borrow()
        try:
            return fn(client)
        except NotFound:
            raise _HttpError(404, "key not found", leader=client.leader_id) from None
        except InvalidRequest as e:
            msg = str(e)
            code = 413 if msg.startswith(("value too large", "key too large")) else 400
            raise _HttpError(code, msg, leader=client.leader_id) from None
        except Timeout as e:
            msg = "timed out; the write may still be applied" if write else "timed out"
            raise _HttpError(503, msg, leader=client.leader_id, detail=str(e)) from None
        except Unavailable as e:
            raise _HttpError(503, "no leader or no quorum", leader=client.leader_id, detail=str(e)) from None
        except ClientError as e:
            raise _HttpError(500, str(e), leader=client.leader_id) from None
        finally:
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


class _Handler(BaseHTTPRequestHandler):
    """One connection; requests are routed to the gateway's methods below."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = 120  # idle keep-alive connections end after this many seconds
    server: _Server

    # ------------------------------------------------------------ plumbing

    def setup(self) -> None:
        super().setup()
        gw = self.server.gateway
        with gw._lock:
            gw._conns.add(self.connection)

    def finish(self) -> None:
        gw = self.server.gateway
        with gw._lock:
            gw._conns.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def _send(self, code: int, body: bytes = b"", ctype: str = JSON, headers: Iterable[tuple[str, str]] = ()) -> None:
        """Write the whole response at once (one send: no Nagle/delayed-ACK stall)."""
        phrase = self.responses.get(code, ("",))[0]
        lines = [f"{self.protocol_version} {code} {phrase}", f"Date: {self.date_time_string()}"]
        if code != 204:  # RFC 9110: no Content-Length on 204; every other answer carries one
            lines.append(f"Content-Length: {len(body)}")
            if body:
                lines.append(f"Content-Type: {ctype}")
        lines += [f"{k}: {v}" for k, v in headers]
        if self.close_connection:
            lines.append("Connection: close")
        elif self.request_version == "HTTP/1.0":
            lines.append("Connection: keep-alive")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(head if code == 204 or self.command == "HEAD" else head + body)
        log.debug('%s "%s" %d %d', self.address_string(), self.requestline, code, len(body))

    def _send_json(self, code: int, obj: Any, headers: Iterable[tuple[str, str]] = ()) -> None:
        self._send(code, json.dumps(obj, ensure_ascii=False).encode("utf-8"), JSON, headers)

    def _read_body(self) -> bytes:
        gw = self.server.gateway
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked(gw.max_body)
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        if not length.strip().isdigit():
            raise _HttpError(400, "bad Content-Length", close=True)
        n = int(length)
        if n > gw.max_body:
            raise _HttpError(413, f"value too large: {n} > {gw.max_body} bytes", close=True)
        return self.rfile.read(n)

    def _read_chunked(self, limit: int) -> bytes:
        parts, total = [], 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _HttpError(400, "bad chunked encoding", close=True) from None
            if size == 0:
                while self.rfile.readline(1024).strip():
                    pass  # trailers
                return b"".join(parts)
            total += size
            if total > limit:
                raise _HttpError(413, f"value too large: more than {limit} bytes", close=True)
            parts.append(self.rfile.read(size))
            self.rfile.readline(8)  # the CRLF after the chunk

    def _dispatch(self, method: str) -> None:
        try:
            # Read the body first: an error answer with the body unread would break keep-alive.
            body = self._read_body()
            url = urlsplit(self.path)
            query = parse_qs(url.query, keep_blank_values=True)
            path = url.path
            if path == "/kv" or path.startswith("/kv/"):
                self._kv(method, path[4:], query, body)
            elif path in ("/status", "/health", "/metrics"):
                if method not in ("GET", "HEAD"):
                    raise _HttpError(405, f"{method} not allowed on {path}", allow="GET")
                getattr(self, "_" + path[1:])()
            else:
                raise _HttpError(404, f"no such endpoint: {path}")
        except _HttpError as e:
            if e.close:
                self.close_connection = True
            extra = {k: v for k, v in e.extra.items() if k not in ("leader", "allow")}
            headers = [("Allow", e.extra["allow"])] if "allow" in e.extra else []
            self._send_json(e.code, {"error": e.message, "leader": e.extra.get("leader"), **extra}, headers)
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception:
            log.exception("HTTP %s %s failed", method, self.path)
            self.close_connection = True
            self._send_json(500, {"error": "internal error", "leader": None})

    # ------------------------------------------------------------ /kv

    def _kv(self, method: str, raw_key: str, query: dict, body: bytes) -> None:
        gw = self.server.gateway
        try:
            key = unquote(raw_key, errors="strict")
        except UnicodeDecodeError:
            raise _HttpError(400, "key is not valid UTF-8") from None
        q = {k: v[-1] for k, v in query.items()}
        if method in ("GET", "HEAD") and not key:
            self._list(q)
            return
        if not key:
            raise _HttpError(400, "key must be non-empty")
        if method in ("GET", "HEAD"):
            consistency = q.get("consistency") or "linearizable"
            value = gw.call(lambda kv: kv.get(key, consistency=consistency))
            self._send(200, value, OCTETS)
        elif method == "PUT":
            self._put(key, q, body)
        elif method == "DELETE":
            session = self._session()
            reply = gw.call(lambda kv: kv.write("delete", key, **session), write=True)
            if reply.status == "not_found":
                raise _HttpError(404, "key not found", leader=reply.leader_id)
            self._send(204)
        else:
            raise _HttpError(405, f"{method} not allowed on /kv", allow="GET, PUT, DELETE")

    def _session(self) -> dict:
        idem = self.headers.get("Idempotency-Key")
        if idem is None:
            return {}
        if not idem.strip():
            raise _HttpError(400, "empty Idempotency-Key")
        client_id, seq = idempotency_session(idem.strip())
        return {"client_id": client_id, "seq": seq}

    def _put(self, key: str, q: dict, body: bytes) -> None:
        gw = self.server.gateway
        prev_exist = q.get("prev_exist")
        prev_value = q.get("prev_value")
        if prev_exist not in (None, "true", "false"):
            raise _HttpError(400, "prev_exist must be true or false")
        if prev_exist == "false" and prev_value is not None:
            raise _HttpError(400, "prev_exist=false and prev_value exclude each other")
        if prev_exist == "true" and prev_value is None:
            raise _HttpError(400, "prev_exist=true needs prev_value")
        session = self._session()
        if prev_exist == "false":
            reply = gw.call(lambda kv: kv.write("cas", key, body, expect_absent=True, **session), write=True)
        elif prev_value is not None:
            reply = gw.call(lambda kv: kv.write("cas", key, body, expected=prev_value, **session), write=True)
        else:
            reply = gw.call(lambda kv: kv.write("put", key, body, **session), write=True)
        if reply.status == "cas_failed":
            raise _HttpError(412, "compare failed", leader=reply.leader_id)
        if reply.status != "ok":
            raise _HttpError(500, f"unexpected reply {reply.status!r}", leader=reply.leader_id)
        self._send(204)

    def _list(self, q: dict) -> None:
        gw = self.server.gateway
        limit_s = q.get("limit") or "0"
        if not limit_s.isdigit():
            raise _HttpError(400, "limit must be a non-negative integer")
        prefix = q.get("prefix", "")
        consistency = q.get("consistency") or "linearizable"
        items = gw.call(lambda kv: kv.list(prefix, int(limit_s), consistency=consistency))
        self._send_json(200, [json_item(k, v) for k, v in items])

    # ------------------------------------------------------------ /status /health /metrics

    def _status(self) -> None:
        self._send_json(200, self.server.gateway.node_status())

    def _health(self) -> None:
        try:
            leader = self.server.gateway.node_status().get("leader_id")
        except _HttpError as e:
            raise _HttpError(503, f"node not answering: {e.message}") from None
        if not leader:
            raise _HttpError(503, "no leader")
        self._send_json(200, {"leader": leader})

    def _metrics(self) -> None:
        fn = self.server.gateway.metrics_fn
        if fn is None:
            raise _HttpError(404, "no metrics on this node")
        data = fn()
        self._send(200, data.encode("utf-8") if isinstance(data, str) else bytes(data), PROMETHEUS)
