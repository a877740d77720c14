"""The gateway's routes (docs/architecture.md 6): HTTP requests to ClientRequests, replies to answers.

::

    PUT    /kv/{key}   body = value       -> 204   (?prev_value=V: compare-and-set; ?prev_exist=false: create;
                                                    412 {"error": "compare failed"} when the condition fails)
    GET    /kv/{key}                      -> 200 value | 404    (?consistency=stale|lease; ?meta=1: a JSON
                                                    body with the revisions; headers X-Raft-Revision,
                                                    X-Create-Revision, X-Mod-Revision, X-Version)
    DELETE /kv/{key}                      -> 204 | 404  (?prev_value=V: compare-and-delete, 412 if not V)
    POST   /txn        body = JSON        -> 200 {"succeeded", "revision", "responses"} (wire/http_txn.py)
    GET    /kv/?prefix=P&limit=N          -> 200 [{"key", "value"}, ...]
    GET    /status, /health, /metrics
    /lease routes, and PUT /kv/{key}?lease=ID: wire/http_lease.py

:func:`kv_request` turns a key request into the ClientRequest the request engine sends to the
node; :func:`get_answer` and :func:`write_answer` turn the node's final reply into the HTTP answer. :func:`handle`
serves every other request (and all of them when the gateway has no in-process path) on a
worker thread, through the gateway's pooled Clients (:class:`GatewayApi`). Every decision on a
reply's status reads the status table (wire/session.py ``outcome``) or names a ``Status``.

Query parameters are checked before anything is sent: one a route does not take, or a bad value
(a limit that is not an integer in [0, 2^63), a value that is not UTF-8 once percent-decoded,
``consistency=lease`` on a node whose lease reads are off), is a 400 that names it, so a 4xx
always means nothing was proposed.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Protocol
from urllib.parse import unquote, urlsplit

from .client import CONSISTENCY_LEVELS, Client, json_item
from .http_lease import is_lease_path, lease_route, parse_lease_id
from .http_server import JSON, OCTETS, Answer, AsyncRoute, HttpError, json_body
from .http_txn import meta_answer, parse_txn_body, txn_answer
from .messages import ClientReply, ClientRequest, Op, Status
from .session import idempotency_session

__all__ = ["GatewayApi", "handle", "kv_request", "get_answer", "write_answer", "invalid", "PROMETHEUS"]

PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"
_METHODS = frozenset({"GET", "PUT", "DELETE", "POST", "PATCH", "HEAD"})
_LINEARIZABLE = CONSISTENCY_LEVELS[0]
# The plain strings of the enums, looked up once: ``Op.GET.value`` costs ~0.3 us per use on
# Python 3.11, and these run for every request of the hot path.
_GET, _PUT, _DELETE, _CAS = Op.GET.value, Op.PUT.value, Op.DELETE.value, Op.CAS.value
_OK, _NOT_FOUND, _CAS_FAILED = Status.OK.value, Status.NOT_FOUND.value, Status.CAS_FAILED.value
_LEASE = CONSISTENCY_LEVELS[1]
_MAX_LIMIT = 2 ** 63 - 1

# The query parameters each route takes (anything else is a 400 naming it).
_GET_PARAMS = ("consistency", "meta")
_PUT_PARAMS = ("prev_value", "prev_exist", "lease")
_DELETE_PARAMS: tuple = ("prev_value",)
_LIST_PARAMS = ("prefix", "limit", "consistency")
_NODE_PARAMS: tuple = ()
# Parameters known elsewhere but not (yet) on this route: a message of their own.
_NOT_HERE = {("DELETE", "prev_exist"): "prev_exist is not supported on DELETE",
             ("PUT", "ttl"): 'ttl is not a PUT parameter: grant a lease (POST /lease {"ttl": N}), then PUT ?lease=ID'}


class GatewayApi(Protocol):
    """What the routes need of the gateway (worker threads)."""

    metrics_fn: Optional[Callable[[], Any]]
    lease_reads: Optional[bool]  # the node's raft.lease_reads; None when not known

    def call(self, fn: Callable[[Client], Any], *, write: bool = False,
             timeout: Optional[float] = None) -> Any: ...

    def node_status(self) -> dict: ...


def invalid(msg: str, leader: Optional[str]) -> HttpError:
    """The answer to a request refused as invalid: 413 when it is about size, else 400."""
    code = 413 if msg.startswith(("value too large", "key too large")) else 400
    return HttpError(code, msg, leader=leader)


# ------------------------------------------------------------------ the in-process path (loop thread)


def kv_request(r: AsyncRoute, lease_ok: bool = True) -> Optional[ClientRequest]:
    """The ClientRequest of a /kv/{key} GET, HEAD, PUT or DELETE (``r.write`` set for a write,
    whose session is the Idempotency-Key's if one is given: ``r.idem``); None for any other
    request. Raises HttpError for a bad one. ``lease_ok``: whether consistency=lease may be asked."""
    method = r.method
    if method not in ("GET", "HEAD", "PUT", "DELETE"):
        return None
    url = r.url.decode("latin-1")
    if url.startswith("/kv/") and "?" not in url and "#" not in url:
        path, q = url, None
    else:
        path, q = _split(url)
        if not path.startswith("/kv/"):
            return None
    key = _key(path[4:])
    if not key:
        return None  # a listing, or a 400: the worker path has the words for it
    if method in ("GET", "HEAD"):
        if not q:
            return ClientRequest(_GET, key=key, consistency=_LINEARIZABLE)
        _check_params(q, method, _GET_PARAMS)
        if _meta(q):
            return None  # a JSON body: the worker path answers it
        return ClientRequest(_GET, key=key, consistency=_consistency(q, lease_ok))
    if method == "PUT":
        if q:
            _check_params(q, method, _PUT_PARAMS)
            req = _write_request(key, q, r.body)
        else:  # a plain put: what _write_request gives for no query, without its checks
            req = ClientRequest(_PUT, key=key, value=bytes(r.body))
    else:
        if q:
            _check_params(q, method, _DELETE_PARAMS)
            return None  # compare-and-delete: a transaction, through the worker path
        req = ClientRequest(_DELETE, key=key)
    r.write = True
    if b"idempotency-key" in r.headers:  # (a dict lookup first: nearly no request has one)
        session = _session(r)
        if session is not None:
            req.client_id, req.seq = session
            r.idem = True
    return req


_REVISION_HEADER = b"X-Raft-Revision: %d\r\n"
_GET_HEADERS = b"X-Raft-Revision: %d\r\nX-Create-Revision: %d\r\nX-Mod-Revision: %d\r\nX-Version: %d\r\n"


def get_answer(rep: ClientReply) -> Answer:
    """The answer to the node's final reply (Outcome.FINAL) to a GET."""
    st = rep.status
    if st == _OK:
        # meta_headers' four headers, rendered at once (HttpServer.finish takes them as bytes)
        headers = _GET_HEADERS % (rep.revision, rep.create_revision, rep.mod_revision, rep.version)
        return 200, rep.value if rep.value is not None else b"", OCTETS, headers, False
    if st == _NOT_FOUND:
        return HttpError(404, "key not found", leader=rep.leader_id).answer()
    return HttpError(500, f"get: unexpected reply {st!r}", leader=rep.leader_id).answer()


def write_answer(op: str, status: str, leader: Optional[str], revision: int = 0) -> Answer:
    """The answer to a write's final reply status (Outcome.FINAL); ``revision``: its entry's."""
    if status == _OK:
        # the header rendered at once (HttpServer.finish takes it as bytes), as get_answer's
        return 204, b"", JSON, _REVISION_HEADER % revision if revision else (), False
    if status == _CAS_FAILED and op != _DELETE:
        return HttpError(412, "compare failed", leader=leader).answer()
    if status == _NOT_FOUND and op == _DELETE:
        return HttpError(404, "key not found", leader=leader).answer()
    return HttpError(500, f"unexpected reply {status!r}", leader=leader).answer()


# ------------------------------------------------------------------ every route (worker threads)


def handle(gw: GatewayApi, r: AsyncRoute) -> Answer:
    """Any request, blocking (a worker thread): through the client library and the node's functions."""
    try:
        method = r.method
        if method not in _METHODS:
            raise HttpError(501, f"unsupported method {method!r}")
        path, q = _split(r.url.decode("latin-1"))
        if path == "/kv" or path.startswith("/kv/"):
            return _kv(gw, r, method, path[4:], q)
        if path == "/txn":
            return _txn(gw, r, method, q)
        if path in ("/status", "/health", "/metrics"):
            if method not in ("GET", "HEAD"):
                raise HttpError(405, f"{method} not allowed on {path}", allow="GET")
            if q:
                _check_params(q, method, _NODE_PARAMS)
            return _NODE_ROUTES[path](gw)
        if is_lease_path(path):
            return lease_route(gw, r, method, path, q)  # wire/http_lease.py
        raise HttpError(404, f"no such endpoint: {path}")
    except HttpError as e:
        return e.answer()


def _kv(gw: GatewayApi, r: AsyncRoute, method: str, raw_key: str, q: dict) -> Answer:
    key = _key(raw_key)
    lease_ok = getattr(gw, "lease_reads", None) is not False
    if method in ("GET", "HEAD") and not key:
        return _list(gw, q, lease_ok)
    if not key:
        raise HttpError(400, "key must be non-empty")
    if method in ("GET", "HEAD"):
        _check_params(q, method, _GET_PARAMS)
        consistency = _consistency(q, lease_ok)
        as_json = _meta(q)
        meta = gw.call(lambda kv: kv.get_meta(key, consistency=consistency))
        return meta_answer(meta, as_json)
    if method == "PUT":
        _check_params(q, method, _PUT_PARAMS)
        req = _write_request(key, q, r.body)
    elif method == "DELETE":
        _check_params(q, method, _DELETE_PARAMS)
        if "prev_value" in q:
            return _delete_if(gw, r, key, q["prev_value"])
        req = ClientRequest(_DELETE, key=key)
    else:
        raise HttpError(405, f"{method} not allowed on /kv", allow="GET, PUT, DELETE")
    cid, seq = _session(r) or (None, None)
    reply = gw.call(lambda kv: kv.write(req.op, key, req.value, expected=req.expected,
                                        expect_absent=req.expect_absent, client_id=cid, seq=seq, lease=req.lease),
                    write=True)
    return write_answer(req.op, reply.status, reply.leader_id, reply.revision)


def _meta(q: dict) -> bool:
    m = q.get("meta")
    if m is None or m in ("0", "false"):
        return False
    if m in ("1", "true"):
        return True
    raise HttpError(400, "meta must be 1 or 0 (true or false)")


def _delete_if(gw: GatewayApi, r: AsyncRoute, key: str, prev_value: str) -> Answer:
    """DELETE ?prev_value=V: one transaction (value(key) = V -> delete key); 412 if it did not hold."""
    from raftkv import txn as t

    try:
        expected = prev_value.encode("utf-8")
    except UnicodeEncodeError:
        raise HttpError(400, "expected value is not valid UTF-8") from None
    cid, seq = _session(r) or (None, None)
    res = gw.call(lambda kv: kv.txn([t.value(key) == expected], [t.delete(key)], client_id=cid, seq=seq),
                  write=True)
    if not res.succeeded:
        raise HttpError(412, "compare failed")
    return 204, b"", JSON, [("X-Raft-Revision", str(res.revision))], False


def _txn(gw: GatewayApi, r: AsyncRoute, method: str, q: dict) -> Answer:
    if method != "POST":
        raise HttpError(405, f"{method} not allowed on /txn", allow="POST")
    if q:
        _check_params(q, method, (), "/txn")
    txn = parse_txn_body(bytes(r.body))
    cid, seq = _session(r) or (None, None)
    res = gw.call(lambda kv: kv.txn(txn.compare, txn.success, txn.failure, client_id=cid, seq=seq), write=True)
    return txn_answer(res)


def _list(gw: GatewayApi, q: dict, lease_ok: bool = True) -> Answer:
    _check_params(q, "GET", _LIST_PARAMS, "/kv/")
    limit_s = q.get("limit") or "0"
    # ASCII digits only (str.isdigit also takes "²" and other digits int() refuses), and a
    # number the wire can carry: anything else is the client's mistake, not a 500.
    if not (limit_s.isascii() and limit_s.isdigit()) or int(limit_s) > _MAX_LIMIT:
        raise HttpError(400, f"limit must be a non-negative integer below 2^63 (got {limit_s[:40]!r})")
    limit = int(limit_s)
    prefix = q.get("prefix", "")
    consistency = _consistency(q, lease_ok)
    items = gw.call(lambda kv: kv.list(prefix, limit, consistency=consistency))
    return 200, json_body([json_item(k, v) for k, v in items]), JSON, (), False


def _status(gw: GatewayApi) -> Answer:
    return 200, json_body(gw.node_status()), JSON, (), False


def _health(gw: GatewayApi) -> Answer:
    try:
        leader = gw.node_status().get("leader_id")
    except HttpError as e:
        raise HttpError(503, f"node not answering: {e.message}") from None
    if not leader:
        raise HttpError(503, "no leader")
    return 200, json_body({"leader": leader}), JSON, (), False


def _metrics(gw: GatewayApi) -> Answer:
    fn = gw.metrics_fn
    if fn is None:
        raise HttpError(404, "no metrics on this node")
    data = fn()
    return 200, data.encode("utf-8") if isinstance(data, str) else bytes(data), PROMETHEUS, (), False


_NODE_ROUTES: dict[str, Callable[[GatewayApi], Answer]] = {"/status": _status, "/health": _health, "/metrics": _metrics}


# ------------------------------------------------------------------ request helpers (no I/O)


def _split(url: str) -> tuple[str, dict]:
    u = urlsplit(url)
    return u.path, _query(u.query) if u.query else {}


def _query(qs: str) -> dict:
    """``name=value&...`` to a dict (the last of repeated names wins; ``+`` is a space, as with
    parse_qs); a name or value that is not UTF-8 once percent-decoded is a 400 naming it."""
    out: dict = {}
    for pair in qs.split("&"):
        if not pair:
            continue
        name, _, value = pair.partition("=")
        name = _unquote(name, None)
        out[name] = _unquote(value, name)
    return out


def _unquote(s: str, name: Optional[str]) -> str:
    if "+" in s:
        s = s.replace("+", " ")
    if "%" not in s:
        return s
    try:
        return unquote(s, errors="strict")
    except UnicodeDecodeError:
        what = "a query parameter name" if name is None else f"query parameter {name!r}"
        raise HttpError(400, f"{what} is not valid UTF-8 once percent-decoded") from None


def _check_params(q: dict, method: str, allowed: tuple, route: str = "/kv/{key}") -> None:
    """400 for the first query parameter the route does not take."""
    for name in q:
        if name not in allowed:
            msg = _NOT_HERE.get((method, name))
            if msg is None:
                takes = f"it takes {', '.join(allowed)}" if allowed else "it takes none"
                msg = f"unknown query parameter {name[:64]!r} for {method} {route} ({takes})"
            raise HttpError(400, msg)


def _consistency(q: dict, lease_ok: bool) -> str:
    consistency = q.get("consistency") or _LINEARIZABLE
    if consistency not in CONSISTENCY_LEVELS:
        raise HttpError(400, f"consistency must be one of {', '.join(CONSISTENCY_LEVELS)}")
    if consistency == _LEASE and not lease_ok:
        raise HttpError(400, "consistency=lease: lease reads are off on this node (raft.lease_reads: false); "
                             "ask for the default (linearizable) or stale")
    return consistency


def _key(raw: str) -> str:
    if "%" not in raw:
        key = raw
    else:
        try:
            key = unquote(raw, errors="strict")
        except UnicodeDecodeError:
            raise HttpError(400, "key is not valid UTF-8") from None
    if key:
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            raise HttpError(400, "key is not valid UTF-8") from None
    return key


def _session(r: AsyncRoute) -> Optional[tuple[str, int]]:
    idem = r.header(b"idempotency-key")
    if idem is None:
        return None
    if not idem.strip():
        raise HttpError(400, "empty Idempotency-Key")
    return idempotency_session(idem.strip())


def _write_request(key: str, q: dict, body: bytes) -> ClientRequest:
    """The ClientRequest of a PUT (put, CAS or create), its query checked."""
    prev_exist = q.get("prev_exist")
    prev_value = q.get("prev_value")
    if prev_exist not in (None, "true", "false"):
        raise HttpError(400, "prev_exist must be true or false")
    if prev_exist == "false" and prev_value is not None:
        raise HttpError(400, "prev_exist=false and prev_value exclude each other")
    if prev_exist == "true" and prev_value is None:
        raise HttpError(400, "prev_exist=true needs prev_value")
    body = bytes(body)
    lease = parse_lease_id(q["lease"], "lease") if "lease" in q else 0
    if prev_exist == "false":
        return ClientRequest(_CAS, key=key, value=body, expect_absent=True, lease=lease)
    if prev_value is not None:
        try:
            expected = prev_value.encode("utf-8")
        except UnicodeEncodeError:
            raise HttpError(400, "expected value is not valid UTF-8") from None
        return ClientRequest(_CAS, key=key, value=body, expected=expected, lease=lease)
    return ClientRequest(_PUT, key=key, value=body, lease=lease)


