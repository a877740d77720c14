"""Where a node's role actor sends watch requests (issue 14; docs/architecture.md "Watches").

Any node serves watches, whatever its role: a request with a ``start_revision`` goes to the
node's WatchHub (actors/watch_hub.py), which answers from the events this node has applied. A
request without one asks "where does now begin": by default it is a linearizable read (thesis
6.4: the leader confirms its commit index with a heartbeat round; a follower asks the leader for
it), answered once the FSM has applied that index with the FSM's applied index (actors/fsm.py
``_serve``), so that a watch started after a write was acknowledged sees everything after it.
``consistency="stale"`` answers with this node's applied index at once.
"""
from __future__ import annotations

from typing import Any

from raftkv.records import ClientReply, Op, Status

from .core import NotLeader

_WATCH = Op.WATCH.value
_OK, _INVALID = Status.OK.value, Status.INVALID.value


def take_watches(ctx: Any, items: list) -> list:
    """Serve the watch requests of a client batch ``[(route, ClientRequest)]``; return the rest
    (role actor's thread). A batch without one costs one pass over its ops."""
    for _, req in items:
        if req.op == _WATCH:
            break
    else:
        return items
    hub = ctx.watch_hub
    rest: list = []
    served: list = []
    starts: list = []
    replies: list = []
    for route, req in items:
        if req.op != _WATCH:
            rest.append((route, req))
            continue
        err = ctx.validate_key(req.key) if req.key else None
        if hub is None:
            err = "this node does not serve watches"
        if err:
            replies.append((route, ClientReply(_INVALID, error=err)))
        elif req.start_revision > 0:
            served.append((route, req))
        elif req.consistency == "stale":
            replies.append((route, ClientReply(_OK, revision=hub.current)))
        elif req.consistency in ("linearizable", "lease"):
            starts.append((route, req))
        else:
            replies.append((route, ClientReply(_INVALID, error=f"unknown consistency {req.consistency!r}")))
    if served:
        hub.submit(served)
    if starts:
        try:
            ctx.core.read_index(starts)
        except NotLeader:
            replies.extend((r, ctx.redirect()) for r, _ in starts)
    if replies:
        ctx.frontdoor.reply_many(replies)
    return rest
