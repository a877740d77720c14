"""The gateway's lease routes (issue 14), served on worker threads through the client library.

::

    POST   /lease              {"ttl": N}  -> 200 {"id": ID, "ttl": N}
    GET    /lease                          -> 200 {"leases": [{"id", "ttl", "remaining"}, ...]}
    GET    /lease/{id}                     -> 200 {"id", "ttl", "remaining", "keys"} | 404
    POST   /lease/{id}/keepalive           -> 200 {"id", "ttl"} | 404
    DELETE /lease/{id}                     -> 204 | 404   (its keys are deleted)

and ``PUT /kv/{key}?lease=ID`` attaches a key (wire/http_routes.py). No route here takes a query
parameter: any is a 400, as is a body that is not ``{"ttl": <positive integer>}``.
"""
from __future__ import annotations

import json
from typing import Any, Callable

from .client import Client, NotFound
from .http_server import JSON, Answer, AsyncRoute, HttpError, json_body

__all__ = ["is_lease_path", "lease_route", "parse_lease_id"]

_MAX_ID = (1 << 63) - 1


def is_lease_path(path: str) -> bool:
    """Whether ``path`` is one of this module's."""
    return path == "/lease" or path.startswith("/lease/")


def parse_lease_id(text: str, what: str = "lease id") -> int:
    """A lease id from a path segment or query value: 400 unless a positive integer below 2^63."""
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or not 0 < int(text) <= _MAX_ID:
        raise HttpError(400, f"{what} must be a positive integer (got {text[:40]!r})")
    return int(text)


def _found(gw: Any, lease_id: int, fn: Callable[[Client], Any]) -> Any:
    """``fn`` through the gateway; a lease that is gone is a 404 naming it (not "key not found")."""
    missing = object()

    def call(kv: Client) -> Any:
        try:
            return fn(kv)
        except NotFound:
            return missing

    out = gw.call(call)
    if out is missing:
        raise HttpError(404, f"lease {lease_id} not found (expired or revoked)")
    return out


def _ttl_from(body: bytes) -> int:
    try:
        doc = json.loads(bytes(body) or b"null")
    except (ValueError, UnicodeDecodeError):
        raise HttpError(400, 'the body must be JSON: {"ttl": SECONDS}') from None
    ttl = doc.get("ttl") if isinstance(doc, dict) else None
    if not isinstance(doc, dict) or set(doc) != {"ttl"} or type(ttl) is not int or ttl <= 0:
        raise HttpError(400, 'the body must be {"ttl": SECONDS} with a positive integer TTL')
    return ttl


def lease_route(gw: Any, r: AsyncRoute, method: str, path: str, q: dict) -> Answer:
    """Serve one /lease request (a worker thread)."""
    if q:
        raise HttpError(400, f"unknown query parameter {next(iter(q))[:64]!r} for {method} {path} (it takes none)")
    parts = path.split("/")[2:]  # "/lease/7/keepalive" -> ["7", "keepalive"]
    if not parts or parts == [""]:
        if method == "POST":
            ttl = _ttl_from(r.body)
            lid = gw.call(lambda kv: kv.lease_grant(ttl), write=True)
            return 200, json_body({"id": lid, "ttl": ttl}), JSON, (), False
        if method in ("GET", "HEAD"):
            leases = gw.call(lambda kv: kv.lease_list())
            return 200, json_body({"leases": leases}), JSON, (), False
        raise HttpError(405, f"{method} not allowed on /lease", allow="GET, POST")
    lid = parse_lease_id(parts[0])
    if len(parts) == 2 and parts[1] == "keepalive":
        if method != "POST":
            raise HttpError(405, f"{method} not allowed on {path}", allow="POST")
        ttl = _found(gw, lid, lambda kv: kv.lease_keepalive(lid))
        return 200, json_body({"id": lid, "ttl": ttl}), JSON, (), False
    if len(parts) != 1:
        raise HttpError(404, f"no such endpoint: {path}")
    if method in ("GET", "HEAD"):
        return 200, json_body(_found(gw, lid, lambda kv: kv.lease_ttl(lid))), JSON, (), False
    if method == "DELETE":
        _found(gw, lid, lambda kv: kv.lease_revoke(lid))
        return 204, b"", JSON, (), False
    raise HttpError(405, f"{method} not allowed on {path}", allow="GET, DELETE")
