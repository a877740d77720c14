"""The gateway's request engine: how an HTTP request reaches the node, or the leader.

With ``submit`` (the node's in-process entry point), the key/value requests parsed in one loop
iteration go to the node as ONE call ``submit([(route, ClientRequest), ...])``. Each route is an
:class:`~raftkv.wire.http_server.AsyncRoute`; the node answers from its own threads with
``route.deliver(reply)``, which queues the reply and wakes the loop at most once per burst.
Answers the local node cannot give (a RETRY outcome: not_leader, unavailable, timeout; or no
answer within one attempt's time) are finished in a small pool of worker threads by a pooled
:class:`~raftkv.wire.client.Client` (leader redirects, retries and backoff until the overall
``timeout``, with the same write session, so a write applies at most once), and so is every
other request (:func:`~raftkv.wire.http_routes.handle`), and every request when ``submit`` is
None. What a reply status means is the session engine's table (wire/session.py).
"""
from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from typing import Any, Callable, Optional

from .client import Client, ClientError, InvalidRequest, NotAuthorized, NotFound, Timeout, Unavailable
from .http_routes import get_answer, invalid, kv_request, write_answer
from .http_txn import meta_answer
from .http_server import DONE, LOCAL, WORKER, Answer, AsyncRoute, HttpError, HttpServer
from .messages import ClientReply, Status
from .session import OUTCOME_OF, Outcome, Session, attempt_time, may_renew
from .stats import RequestStats

__all__ = ["RequestEngine", "Workers", "SESSION_CHUNK", "REMOTE_LEADER_HINT"]

log = logging.getLogger("raftkv.wire.http")

REMOTE_LEADER_HINT = 1.0  # seconds a not_leader redirect sends requests straight to the workers
SESSION_CHUNK = 512  # writes per gateway session: below the FSM's per-session window (1024)
_STALE = "stale"
_CODES = {c: str(c) for c in (200, 204, 400, 404, 405, 412, 413, 500, 501, 503, 504)}  # no str() per request
_NODE_PATHS = {b"/status": "status", b"/health": "health", b"/metrics": "metrics"}


def _route_op(r: AsyncRoute) -> str:
    """The operation label of a request that never became a ClientRequest (a listing, a node
    route, an error, or any request when the gateway has no in-process path)."""
    url = r.url.split(b"?", 1)[0]
    if url.startswith(b"/kv"):
        if url in (b"/kv", b"/kv/"):
            return "list"
        return {"GET": "get", "HEAD": "get", "PUT": "put", "DELETE": "delete"}.get(r.method, "other")
    return _NODE_PATHS.get(url, "other")
_NOT_LEADER = Status.NOT_LEADER.value
_NOT_AUTHORIZED = Status.NOT_AUTHORIZED.value
MAX_TOKEN_POOLS = 64  # bearer tokens whose pooled Clients are kept (least recently used dropped)


class Workers:
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
            except BaseException:  # answered as a 500, logged
                log.exception("HTTP gateway worker failed")
                res = HttpError(500, "internal error", close=True).answer()
            try:
                done(res)
            except Exception:
                log.exception("HTTP gateway worker callback failed")

    def stop(self) -> None:
        for _ in self.threads:
            self.q.put(None)




class RequestEngine:
    """Carries the gateway's requests to the cluster (module docstring).

    ``servers``, ``timeout``, ``local``: as for :class:`~raftkv.wire.client.Client` (pooled,
    up to ``pool_size`` idle, used by as many worker threads). ``submit``: the node's batched
    in-process entry point, or None. ``handle(route) -> answer``: serves a request that is not an
    in-process key request (worker thread). :meth:`attach` gives it the server it answers through.
    """

    server: HttpServer  # set by attach(), before the server starts

    def __init__(self, servers: list[str], *, timeout: float, pool_size: int, local: Optional[tuple],
                 submit: Optional[Callable[[list], None]], handle: Callable[[AsyncRoute], Answer],
                 lease_reads: Optional[bool] = None) -> None:
        self.servers = servers
        self.lease_ok = lease_reads is not False  # consistency=lease allowed (see HttpGateway)
        self.timeout = timeout
        self.pool_size = pool_size
        self.local = local  # (this node's client address, in-process call): see Client
        self.submit: Callable[[list], None] | None = submit
        self.handle = handle
        # One attempt of the in-process path, as the Client's own per-attempt wait.
        self.attempt = attempt_time(timeout)
        # Idle pooled Clients by the token they connect as (None: an insecure cluster). A secure
        # gateway forwards a request as the bearer token it was authorized with, so that the
        # node it reaches checks that token's role again (docs/architecture.md, secure gateway).
        self._idle: collections.OrderedDict[Optional[str], collections.deque[Client]] = collections.OrderedDict()
        self._pool_lock = threading.Lock()
        self._who = threading.local()  # .token: the token of the request a worker thread serves
        self._workers = Workers(pool_size, "http-worker")
        self._batch: list = []  # (route, ClientRequest) parsed in this loop iteration
        self._inflight: collections.deque[AsyncRoute] = collections.deque()  # submitted, by deadline
        # Writes of the gateway's own session. Many are in flight at once and may be answered
        # out of order, so one session gets at most SESSION_CHUNK of them (never more than the
        # FSM's per-session result window); then a new one starts.
        self._session = Session(prefix="http-", chunk=SESSION_CHUNK)
        self._remote_until = 0.0  # until then, the local node is known not to lead
        self._stopped = False
        # Answered requests by operation and HTTP status, with their latency (loop thread only;
        # read by the node's metrics at scrape time).
        self.stats = RequestStats()
        self.watches: Any = None  # the watch routes (wire/http_watch.py), set by the gateway
        self.backups: Any = None  # GET /backup (wire/http_backup.py), set by the gateway

    def attach(self, server: HttpServer) -> None:
        self.server = server

    def stop(self) -> None:
        """Stop the workers and close the pooled clients."""
        if self._stopped:
            return
        self._stopped = True
        self._workers.stop()
        with self._pool_lock:
            pools, self._idle = list(self._idle.values()), collections.OrderedDict()
        for pool in pools:
            while pool:
                pool.pop().close()

    # ------------------------------------------------------------ the loop side

    def dispatch(self, r: AsyncRoute) -> None:
        """A parsed request: answer it now, submit it to the node, or hand it to a worker."""
        url = r.url
        # A /kv/{key} without a query (most requests) is neither a watch nor a backup route:
        # their claims() are not asked for it.
        if not url.startswith(b"/kv/") or b"?" in url:
            watches = self.watches
            if watches is not None and watches.claims(r):  # the watch routes (wire/http_watch.py)
                watches.dispatch(r)
                return
            backups = self.backups
            if backups is not None and backups.claims(r):  # GET /backup (wire/http_backup.py)
                backups.dispatch(r)
                return
        try:
            if self.submit is not None and self._fast(r):
                return
        except HttpError as e:
            self._finish(r, e.answer())
            r.conn.flush()
            return
        r.state = WORKER
        self._workers.run(lambda: self._as(r, self.handle), lambda res: self.server.post(r, res))

    def _as(self, r: AsyncRoute, fn: Callable[[AsyncRoute], Answer]) -> Answer:
        """Run ``fn(r)`` (worker thread) with ``r``'s token as the one its Client calls use."""
        self._who.token = r.token
        try:
            return fn(r)
        finally:
            self._who.token = None

    def _fast(self, r: AsyncRoute) -> bool:
        """Queue a /kv/{key} GET, HEAD, PUT or DELETE for the node; False for anything else."""
        req = kv_request(r, self.lease_ok)
        if req is None:
            return False
        if r.write and not r.idem:
            req.client_id, req.seq = self._session.next()
        r.req = req
        if r.t0 < self._remote_until and req.consistency != _STALE:
            # The local node just said who leads: go there directly, as the pooled Clients do.
            self._to_worker(r)
            return True
        r.state = LOCAL
        r.deadline = r.t0 + self.attempt
        batch = self._batch
        batch.append((r, req))
        self._inflight.append(r)
        if len(batch) == 1:
            self.server.call_soon(self._submit_batch)
        return True

    def _submit_batch(self) -> None:
        batch = self._batch
        if not batch:
            return
        self._batch = []
        submit = self.submit
        assert submit is not None  # only the in-process path (submit given) queues batches
        try:
            submit(batch)
        except Exception as e:  # (the node is stopping, say): let the workers retry
            log.warning("in-process submit of %d requests failed: %s", len(batch), e)
            for r, _ in batch:
                if r.state == LOCAL:
                    self._to_worker(r)
        self.server.tick_within(0.05)

    def deliver(self, r: AsyncRoute, item: Any) -> bool:
        """An item posted for ``r``: a worker's finished answer, or the node's reply. True if
        ``r`` is now answered."""
        if type(item) is tuple:  # a worker's finished answer
            if r.state == WORKER:
                self._finish(r, item)
                return True
            return False
        if r.state == LOCAL:  # a node reply; else a late one for a request already retried
            self._answer(r, item)
            return r.state == DONE
        return False

    def _answer(self, r: AsyncRoute, rep: ClientReply) -> None:
        """The local node's reply to an in-process request."""
        req = r.req
        if req is None:  # never: _fast sets it before the request goes to the node
            return
        st = rep.status
        oc = OUTCOME_OF.get(st)
        if oc is Outcome.FINAL:
            self._finish(r, write_answer(req.op, st, rep.leader_id, rep.revision) if r.write else get_answer(rep))
        elif oc is Outcome.RETRY:
            if st == _NOT_LEADER and rep.leader_client:
                self._remote_until = time.monotonic() + REMOTE_LEADER_HINT
            self._to_worker(r)
        elif oc is Outcome.REJECTED:
            if st == _NOT_AUTHORIZED:
                self._finish(r, HttpError(403, rep.error or "not authorized", leader=rep.leader_id).answer())
            else:
                self._finish(r, invalid(rep.error or "invalid request", rep.leader_id).answer())
        elif oc is Outcome.NEW_SESSION:
            if may_renew(write=r.write, unanswered_before=False, own_session=not r.idem):
                # Our own fresh session was unknown: nothing was applied; retry in a new one.
                req.client_id, req.seq = "", 0
                self._to_worker(r)
            else:
                self._finish(r, HttpError(503, "timed out; the write may still be applied", leader=rep.leader_id,
                                                detail="session expired before an answer arrived").answer())
        else:  # a status the table does not know: answered as "unexpected reply"
            self._finish(r, write_answer(req.op, st, rep.leader_id, rep.revision) if r.write else get_answer(rep))

    def _finish(self, r: AsyncRoute, answer: Answer) -> None:
        """Send ``answer`` and count it (loop thread): one dict update and one histogram observe."""
        self.server.finish(r, answer)
        req = r.req
        self.stats.done(req.op if req is not None else _route_op(r), _CODES.get(answer[0]) or str(answer[0]),
                        time.monotonic() - r.t0)

    def _to_worker(self, r: AsyncRoute) -> None:
        r.state = WORKER
        self._workers.run(lambda: self._as(r, self._retry), lambda res: self.server.post(r, res))

    def tick(self, now: float) -> bool:
        """An in-process attempt without an answer goes to the workers. True while some wait."""
        infl = self._inflight
        popleft = infl.popleft
        while infl:  # (every request passes here once, answered: one index and one state test)
            r = infl[0]
            if r.state == LOCAL:
                if r.deadline > now:
                    break
                popleft()
                self._to_worker(r)
            else:
                popleft()
        return bool(infl)

    # ------------------------------------------------------------ client pool (worker threads)

    def _borrow(self, token: Optional[str]) -> Client:
        with self._pool_lock:
            pool = self._idle.get(token)
            if pool:
                self._idle.move_to_end(token)
                return pool.pop()  # most recently used first: its sockets and leader are warm
        return Client(self.servers, timeout=self.timeout, local=self.local, token=token)

    def _give_back(self, client: Client, token: Optional[str]) -> None:
        dropped: list[Client] = []
        with self._pool_lock:
            pool = self._idle.get(token)
            if pool is None and not self._stopped:
                pool = self._idle[token] = collections.deque()
                while len(self._idle) > MAX_TOKEN_POOLS:  # many tokens: keep the recent ones
                    dropped.extend(self._idle.popitem(last=False)[1])
            if pool is None or self._stopped or len(pool) >= self.pool_size:
                dropped.append(client)
            else:
                self._idle.move_to_end(token)
                pool.append(client)
        for c in dropped:
            c.close()

    def call(self, fn: Callable[[Client], Any], *, write: bool = False, timeout: Optional[float] = None) -> Any:
        """Run ``fn`` with a pooled Client (``timeout``: this call's deadline, default the
        gateway's), turning library errors into HTTP errors. Blocks: worker threads only.
        The Client connects as the token of the request the thread serves (secure clusters)."""
        token = getattr(self._who, "token", None)
        client = self._borrow(token)
        if timeout is not None:
            client.timeout = timeout
        try:
            return fn(client)
        except NotFound:
            raise HttpError(404, "key not found", leader=client.leader_id) from None
        except NotAuthorized as e:  # the token was revoked after the gateway let the request in
            raise HttpError(403, str(e), leader=client.leader_id) from None
        except InvalidRequest as e:
            raise invalid(str(e), client.leader_id) from None
        except Timeout as e:
            msg = "timed out; the write may still be applied" if write else "timed out"
            raise HttpError(503, msg, leader=client.leader_id, detail=str(e)) from None
        except Unavailable as e:
            raise HttpError(503, "no leader or no quorum", leader=client.leader_id, detail=str(e)) from None
        except ClientError as e:
            raise HttpError(500, str(e), leader=client.leader_id) from None
        finally:
            client.timeout = self.timeout
            self._give_back(client, token)


    def _retry(self, r: AsyncRoute) -> tuple:
        """Finish an in-process request the local node could not answer: through a Client, which
        follows the leader and retries, with the same write session, until the deadline."""
        write = r.write
        left = self.timeout - (time.monotonic() - r.t0)
        if left <= 0.001:
            msg = "timed out; the write may still be applied" if write else "timed out"
            return HttpError(503, msg, leader=None, detail=f"no answer within {self.timeout:g}s").answer()
        req = r.req
        assert req is not None  # only in-process requests come here
        try:
            if not write:
                meta = self.call(lambda kv: kv.get_meta(req.key, consistency=req.consistency), timeout=left)
                return meta_answer(meta, False)
            # The request's own session if it has one (so that it applies at most once), else
            # the pooled Client's (a write whose fresh session the node did not know).
            cid, seq = (req.client_id, req.seq) if req.client_id else (None, None)
            reply = self.call(lambda kv: kv.write(req.op, req.key, req.value, expected=req.expected,
                                                  expect_absent=req.expect_absent, client_id=cid, seq=seq,
                                                  lease=req.lease),
                              write=True, timeout=left)
            return write_answer(req.op, reply.status, reply.leader_id, reply.revision)
        except HttpError as e:
            return e.answer()

    def new_client(self, token: Optional[str] = None) -> Client:
        """A Client of its own (the watch routes: each watch holds one for as long as it lasts),
        connecting as ``token``, the bearer token its request was authorized with (secure
        clusters), so that the node it reaches checks that token's role again."""
        return Client(self.servers, timeout=self.timeout, local=self.local, token=token)
