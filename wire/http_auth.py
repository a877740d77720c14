"""Bearer-token authorization at the HTTP gateway of a secure cluster (issue 11).

Why here, and how forwarded requests keep their identity: docs/architecture.md, "The HTTP
gateway on a secure cluster".

Each request is decided from its method, path and ``Authorization: Bearer T`` header as soon as
its headers are parsed, before any of its body is read, so an unauthenticated client never makes
the node buffer a body: 401 (JSON error and ``WWW-Authenticate: Bearer realm="raftkv"``) without a
token or with an unknown, revoked or damaged one; 403 when the token's role lacks the right.
``/health`` is open; ``/metrics`` is open only with ``metrics_open``.

The decision uses the node's current replicated token table (``TokenTable``, swapped whole when a
token entry is applied), so a revocation takes effect on the next request, also on a kept-alive
connection. Decoding and hashing a token costs a few microseconds; decisions are cached per
header value and reused only while the table still holds the *same* stored token (equal name,
role, hash and key), so a revoked or re-created token is decided afresh.
"""
from __future__ import annotations

from typing import Optional

from .http_server import AsyncRoute, HttpError
from .security.auth import AuthDecision, AuthOutcome, TokenTable, authorize_bearer, bearer_token
from .security.tokens import ClientToken, StoredToken, TokenError, allowed

__all__ = ["GatewayAuth", "route_op", "REALM", "OPEN"]

REALM = 'Bearer realm="raftkv"'
OPEN = ""  # the op of a route anyone may ask (/health)
_CACHE_MAX = 1024  # distinct header values remembered; the cache is emptied when full
_ADMIN = "admin"  # stands for any route not listed: closed to all but admin tokens

_NODE_OPS = {"/health": OPEN, "/status": "status", "/members": "members", "/backup": "backup"}
_KV_OPS = {"GET": "get", "HEAD": "get", "PUT": "put", "DELETE": "delete"}


def route_op(method: str, path: str, metrics_open: bool) -> str:
    """The client op a request stands for (its role is ``required_role(op)``); ``OPEN`` for none.

    A key listing is ``list``; a PUT is ``put`` whatever its query (a CAS or create needs the
    same write role). Routes added later (``/txn``, ``/watch``, ``/lease``) take their family's
    op; any other path is admin-only, as ``required_role`` closes op names it does not list.
    """
    if path == "/kv" or path.startswith("/kv/"):
        if method in ("GET", "HEAD") and path in ("/kv", "/kv/"):
            return "list"
        return _KV_OPS.get(method, "put")  # another method: a write route's 405, after the check
    if path == "/metrics":
        return OPEN if metrics_open else "status"
    op = _NODE_OPS.get(path)
    if op is not None:
        return op
    for family in ("txn", "watch", "lease"):
        if path == f"/{family}" or path.startswith(f"/{family}/"):
            return family
    return _ADMIN


def _path(url: bytes) -> str:
    end = len(url)
    for sep in (b"?", b"#"):
        i = url.find(sep)
        if 0 <= i < end:
            end = i
    return url[:end].decode("latin-1")


class _Known:
    """A bearer header value already verified: its stored token, the token text to forward as,
    and the ops decided for it so far (op -> allowed)."""

    __slots__ = ("stored", "text", "ops")

    def __init__(self, stored: StoredToken, text: str) -> None:
        self.stored, self.text = stored, text
        self.ops: dict[str, bool] = {}


class GatewayAuth:
    """Decides each HTTP request of a secure node against its token table (module docstring)."""

    def __init__(self, table: TokenTable, metrics_open: bool = False) -> None:
        self.table = table
        self.metrics_open = metrics_open
        # raw Authorization header value -> what it was verified as; see the module docstring
        self._seen: dict[bytes, _Known] = {}

    def check(self, r: AsyncRoute) -> None:
        """Raise HttpError 401/403 unless ``r`` (headers parsed) may run; set ``r.token`` to the
        bearer token when it may, so that a forwarded request travels as that token."""
        op = _fast_op(r.method, r.url) or route_op(r.method, _path(r.url), self.metrics_open)
        if op == OPEN:
            return
        raw = r.headers.get(b"authorization")
        # The hot path (a token seen before, unchanged in the table, an op decided before):
        # three dict lookups and an identity check, no decoding or hashing.
        known = self._seen.get(raw) if raw is not None else None
        if known is not None:
            stored = known.stored
            current = self.table.get(stored.name)
            if current is stored or current == stored:
                ok = known.ops.get(op)
                if ok is None:
                    ok = known.ops[op] = allowed(stored.role, op)
                if ok:
                    r.token = known.text
                    return
            else:
                del self._seen[raw]
        header = None if raw is None else raw.decode("latin-1")
        d = self.decide(header, op)
        if d.outcome is AuthOutcome.UNAUTHENTICATED:
            raise HttpError(401, d.message, close=_has_body(r), www_authenticate=REALM)
        if d.outcome is AuthOutcome.FORBIDDEN:
            raise HttpError(403, d.message, close=_has_body(r))
        r.token = bearer_token(header)

    def decide(self, header: Optional[str], op: str) -> AuthDecision:
        """The decision for one ``Authorization`` header value and op; a verified token is
        remembered (module docstring)."""
        d = authorize_bearer(self.table, header, op)
        text = bearer_token(header)
        if d.outcome is not AuthOutcome.UNAUTHENTICATED and text is not None and header is not None:
            try:
                token = ClientToken.decode(text)
            except TokenError:  # never: authorize_bearer decoded it
                return d
            stored = self.table.get(token.name)
            if stored is not None:
                if len(self._seen) >= _CACHE_MAX:
                    self._seen.clear()
                self._seen[header.encode("latin-1")] = _Known(stored, text)
        return d


def _fast_op(method: str, url: bytes) -> Optional[str]:
    """The op of a plain key request (``/kv/K``, no query): the hot path; None for anything else."""
    if url.startswith(b"/kv/") and len(url) > 4 and b"?" not in url and b"#" not in url:
        return _KV_OPS.get(method)
    return None


def _has_body(r: AsyncRoute) -> bool:
    h = r.headers
    cl = h.get(b"content-length")
    return (cl is not None and cl.strip() not in (b"", b"0")) or b"transfer-encoding" in h
