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
from .security.auth import AuthDecision, AuthOutcome, TokenTable, authorize_bearer, authorize_user_id, bearer_token
from .security.tokens import ClientToken, StoredToken, TokenError

__all__ = ["GatewayAuth", "route_op", "REALM", "OPEN"]

REALM = 'Bearer realm="raftkv"'
OPEN = ""  # the op of a route anyone may ask (/health)
_CACHE_MAX = 1024  # distinct header values remembered; the cache is emptied when full
_ADMIN = "admin"  # stands for any route not listed: closed to all but admin tokens

_NODE_OPS = {"/health": OPEN, "/status": "status", "/members": "members"}
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


class GatewayAuth:
    """Decides each HTTP request of a secure node against its token table (module docstring)."""

    def __init__(self, table: TokenTable, metrics_open: bool = False) -> None:
        self.table = table
        self.metrics_open = metrics_open
        # header value -> (the stored token it matched, its decoded token); see the docstring
        self._seen: dict[str, tuple[StoredToken, ClientToken]] = {}

    def check(self, r: AsyncRoute) -> None:
        """Raise HttpError 401/403 unless ``r`` (headers parsed) may run; set ``r.token`` to the
        bearer token when it may, so that a forwarded request travels as that token."""
        op = route_op(r.method, _path(r.url), self.metrics_open)
        if op == OPEN:
            return
        header = r.header(b"authorization")
        d = self.decide(header, op)
        if d.outcome is AuthOutcome.UNAUTHENTICATED:
            raise HttpError(401, d.message, close=_has_body(r), www_authenticate=REALM)
        if d.outcome is AuthOutcome.FORBIDDEN:
            raise HttpError(403, d.message, close=_has_body(r))
        r.token = bearer_token(header)

    def decide(self, header: Optional[str], op: str) -> AuthDecision:
        """The decision for one ``Authorization`` header value and op (cached, module docstring)."""
        text = bearer_token(header)
        if text is not None:
            hit = self._seen.get(text)
            if hit is not None:
                stored, token = hit
                if self.table.get(token.name) == stored:
                    return authorize_user_id(self.table, token.name, op)  # the role check alone
                del self._seen[text]
        d = authorize_bearer(self.table, header, op)
        if d.outcome is not AuthOutcome.UNAUTHENTICATED and text is not None:
            try:
                token = ClientToken.decode(text)
            except TokenError:  # never: authorize_bearer decoded it
                return d
            stored = self.table.get(token.name)
            if stored is not None:
                if len(self._seen) >= _CACHE_MAX:
                    self._seen.clear()
                self._seen[text] = (stored, token)
        return d


def _has_body(r: AsyncRoute) -> bool:
    h = r.headers
    cl = h.get(b"content-length")
    return (cl is not None and cl.strip() not in (b"", b"0")) or b"transfer-encoding" in h
