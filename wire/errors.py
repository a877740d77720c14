"""The client library's exceptions, one type per cause (docs/architecture.md 6).

They live apart from wire/client.py so that the pipeline and the session engine can raise them
without importing the Client; ``raftkv.wire.client`` re-exports them, and that stays their
public home.
"""
from __future__ import annotations

__all__ = ["ClientError", "NotFound", "Unavailable", "Timeout", "InvalidRequest", "Refused", "NotAuthorized",
           "Compacted"]


class ClientError(Exception):
    """Base class of every error raised by this library."""


class NotFound(ClientError):
    """The key (or, for admin calls, the member) does not exist."""


class Unavailable(ClientError):
    """The cluster could not serve the call: no leader, no quorum, or no server reachable."""


class Timeout(Unavailable):
    """No definite answer before the call's deadline. A write may still have been applied:
    retrying it through the same Client is safe only if you re-send it with the same session,
    see :meth:`Client.write`."""


class InvalidRequest(ClientError):
    """The request is malformed or was refused as invalid (bad key, value too large, ...).
    Nothing was applied; retrying the same request cannot succeed."""


class Refused(ClientError):
    """An admin change the cluster refused because of its current state (removing its last
    voter): nothing was applied; it can succeed once the state changes."""


class NotAuthorized(ClientError):
    """The cluster refused the caller: no token, an unknown or revoked one, or a token whose role
    does not allow the operation. Nothing was applied."""


class Compacted(ClientError):
    """A watch asked for events older than the node's history keeps; ``revision`` is the oldest
    revision it can still start from (restart the watch there after re-reading the state)."""

    def __init__(self, message: str, revision: int = 0) -> None:
        super().__init__(message)
        self.revision = revision


# Keep the names' module what it always was, for reprs, pickles and docs.
for _cls in (ClientError, NotFound, Unavailable, Timeout, InvalidRequest, Refused, NotAuthorized, Compacted):
    _cls.__module__ = "raftkv.wire.client"
del _cls
