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
    GET    /backup  -> the backup file ``kvclient backup`` writes, streamed (wire/http_backup.py)

Errors are JSON ``{"error": "...", "leader": id-or-null}``: 400 bad key or input, 413 value (or
key) too large, 412 compare failed, 503 no leader, no quorum or timeout (a timed-out write may
still be applied, and the message says so). A 4xx means nothing was proposed.

An ``Idempotency-Key: K`` header on a write makes it exactly-once across HTTP retries: it is
sent with the session ``("idem-" + sha256(K)[:32], seq 1)``, so every retry with the same key is
deduplicated by the cluster's session table (Raft thesis 6.3), like the library's retries.

Three parts, one module each:

- wire/http_server.py, the HTTP/1.1 server: one asyncio event-loop thread owns every
  connection; requests are parsed with ``httptools`` (llhttp); limits; keep-alive and
  pipelining (answers go out in request order per connection, whatever order they are ready in).
- wire/http_routes.py, the routes: requests to ClientRequests, replies to answers and error JSON.
- wire/http_engine.py, the request engine: how a request reaches the node or the leader.

Serving model
-------------
With ``submit`` (the node's in-process entry point), the key/value requests parsed in one loop
iteration go to the node as ONE call ``submit([(route, ClientRequest), ...])``. Each route is an
:class:`AsyncRoute`; the node answers from its own threads with ``route.deliver(reply)``, which
queues the reply and wakes the loop at most once per burst. Answers the local node cannot give
(not_leader, unavailable, timeout, or no answer within one attempt's time) are finished in a
small pool of worker threads by a pooled :class:`~raftkv.wire.client.Client` (leader redirects, retries
and backoff until the overall ``timeout``, with the same write session, so a write applies at most
once), and so are /status, /health, /metrics, listings, and every request when ``submit`` is None.
The loop itself never blocks.
"""
from __future__ import annotations

import logging
import ssl
from typing import Any, Callable, Iterable, Optional

from .address import parse_bind
from .client import Client, parse_servers
from .http_auth import GatewayAuth
from .http_backup import HttpBackups
from .http_engine import REMOTE_LEADER_HINT, SESSION_CHUNK, RequestEngine
from .http_routes import _key, _split, handle
from .http_watch import HttpWatches
from .http_server import (HEADER_TIMEOUT, IDLE_TIMEOUT, MAX_CONNECTIONS, MAX_PIPELINED, MAX_URL_BYTES, AsyncRoute,
                          HttpError, HttpServer)
from .security.auth import TokenTable
from .session import idempotency_session

__all__ = ["AsyncRoute", "HttpGateway", "idempotency_session", "parse_bind", "IDLE_TIMEOUT", "MAX_PIPELINED",
           "REMOTE_LEADER_HINT", "SESSION_CHUNK"]

log = logging.getLogger(__name__)


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
    ``admit(peer_ip) -> bool``: asked for each accepted connection (loopback-only mode refuses
    non-loopback peers); None admits everyone.

    Limits (wire/http_server.py): ``max_value`` and ``max_key`` are the node's ``max_value_bytes``
    and ``max_key_bytes``; given, the body limit (413) is ``max_value`` and the URL limit (414)
    leaves room for a key and a ``prev_value`` of the largest sizes, percent-encoded (else
    ``max_body`` and 64 KiB). ``lease_reads``: the node's ``raft.lease_reads``; False makes
    ``consistency=lease`` a 400 that says so (None: not known here, passed on to the node).
    ``header_timeout`` and ``max_connections``: see the server.

    A secure node (issue 11) also gives ``ssl_context`` (HTTPS) and ``tokens``, its current
    replicated TokenTable: every request but /health then needs ``Authorization: Bearer T``
    (wire/http_auth.py; /metrics too unless ``metrics_open``), and requests forwarded to other
    nodes travel as that token (docs/architecture.md, "The HTTP gateway on a secure cluster").
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
        max_value: Optional[int] = None,
        max_key: int = 4096,
        lease_reads: Optional[bool] = None,
        header_timeout: float = HEADER_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
        admit: Optional[Callable[[str], bool]] = None,
        ssl_context: Optional[ssl.SSLContext] = None,
        tokens: Optional[TokenTable] = None,
        metrics_open: bool = False,
    ) -> None:
        self.servers = parse_servers(list(servers))
        self.status_fn = status_fn
        self.metrics_fn = metrics_fn
        self.timeout = timeout
        self.lease_reads = lease_reads
        max_url = MAX_URL_BYTES
        if max_value is not None:
            max_body = max_value
            max_url = max(MAX_URL_BYTES, 3 * (max_value + max_key) + 4096)
        self.engine = RequestEngine(self.servers, timeout=timeout, pool_size=pool_size, local=local,
                                    submit=submit, handle=self._handle, lease_reads=lease_reads)
        self.server = HttpServer(bind, max_body=max_body, dispatch=self.engine.dispatch,
                                 deliver=self.engine.deliver, tick=self.engine.tick, max_url=max_url,
                                 header_timeout=header_timeout, max_connections=max_connections)
        self.server.admit = admit
        self.server.ssl = ssl_context
        self.auth = GatewayAuth(tokens, metrics_open) if tokens is not None else None
        if self.auth is not None:
            self.server.authorize = self.auth.check
        self.engine.attach(self.server)
        self.watches = self.engine.watches = HttpWatches(self.server, self.engine.new_client, _split, _key)
        self.backups = self.engine.backups = HttpBackups(self.server, self.engine.new_client)
        self.host = self.server.host

    @property
    def port(self) -> int:
        """The port listened on (the real one once started, also when bound to port 0)."""
        return self.server.port

    def start(self) -> None:
        """Bind (raises OSError if the port is in use) and serve in a daemon thread."""
        self.server.start()
        log.info("HTTP gateway listening on %s:%d", self.host, self.port)

    def stop(self) -> None:
        """Stop listening, end open connections and close the pooled clients."""
        self.watches.stopped = True
        self.backups.stopped = True
        self.server.stop()
        self.engine.stop()

    def call(self, fn: Callable[[Client], Any], *, write: bool = False, timeout: Optional[float] = None) -> Any:
        """Run ``fn`` with a pooled Client (``timeout``: this call's deadline, default the
        gateway's), turning library errors into HTTP errors. Blocks: worker threads only."""
        return self.engine.call(fn, write=write, timeout=timeout)

    def node_status(self) -> dict:
        """This node's status: from status_fn, else asked of the local node (servers[0])."""
        if self.status_fn is not None:
            try:
                return self.status_fn()
            except Exception as e:  # the node may be starting or stopping: that is "unavailable"
                log.warning("status_fn failed: %s", e)
                raise HttpError(503, f"status unavailable: {e}") from None
        return self.call(lambda kv: kv.status(server=self.servers[0]))

    def _handle(self, r: AsyncRoute) -> tuple:
        # Any request but an in-process key request, on a worker thread (wire/http_routes.py).
        return handle(self, r)

