"""Per-request authorization: who is asking (a token, by ZAP user id or HTTP bearer) and may they.

:class:`TokenTable` is the node's view of the replicated token table (name -> StoredToken). It
is swapped whole whenever a token entry is applied, and gives the client door's key ring
(:meth:`TokenTable.client_keys`). Each request is then checked against the *current* table, so a
revoked token stops working at once even on a connection made before the revocation (ZAP only
sees new handshakes).

Decisions are :class:`AuthDecision` records: ``OK``, ``UNAUTHENTICATED`` (HTTP 401: no token,
unknown, revoked or wrong secret) or ``FORBIDDEN`` (HTTP 403: a valid token whose role lacks the
right), with a message for the client ("not authorized: ...", kvclient exit status 4).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from enum import Enum
from typing import Iterable, Mapping, Optional, Union

from .tokens import ClientToken, StoredToken, TokenError, allowed, required_role


class AuthOutcome(Enum):
    """The result of an authorization check, with the HTTP status it maps to."""

    OK = 200
    UNAUTHENTICATED = 401
    FORBIDDEN = 403


@dataclass(frozen=True, slots=True)
class AuthDecision:
    """One authorization decision: outcome, the token name if known, and a message for the client."""

    outcome: AuthOutcome
    token_name: Optional[str] = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome is AuthOutcome.OK

    @property
    def http_status(self) -> int:
        return self.outcome.value


class TokenTable:
    """The current client tokens by name; replaced whole (copy-on-write) when the state changes."""

    def __init__(self, tokens: Iterable[StoredToken] = ()) -> None:
        self._lock = threading.Lock()
        self._by_name: dict[str, StoredToken] = {}
        self.replace(tokens)

    def replace(self, tokens: Iterable[StoredToken]) -> None:
        """Use exactly ``tokens`` from now on."""
        new = {t.name: t for t in tokens}
        with self._lock:
            self._by_name = new

    def get(self, name: str) -> Optional[StoredToken]:
        """The stored token of that name, None if there is none (never made, or revoked)."""
        return self._by_name.get(name)

    def names(self) -> list[str]:
        """Token names, sorted (``kvclient token list``)."""
        return sorted(self._by_name)

    def client_keys(self) -> Mapping[bytes, str]:
        """The client door's key ring: each token's derived CURVE public key -> its name."""
        return {t.curve_public: t.name for t in self._by_name.values()}

    def __len__(self) -> int:
        return len(self._by_name)


def _role_check(stored: StoredToken, op: Union[str, Enum]) -> AuthDecision:
    if allowed(stored.role, op):
        return AuthDecision(AuthOutcome.OK, stored.name)
    name = op.value if isinstance(op, Enum) else op
    return AuthDecision(AuthOutcome.FORBIDDEN, stored.name,
                        f"not authorized: token {stored.name!r} has role {stored.role.value}, "
                        f"{name} needs {required_role(op).value}")


def authorize_user_id(table: TokenTable, user_id: Optional[str], op: Union[str, Enum]) -> AuthDecision:
    """Decide a client-door request from the ZAP user id its connection carries (a token name)."""
    stored = table.get(user_id) if user_id else None
    if stored is None:
        return AuthDecision(AuthOutcome.UNAUTHENTICATED, None, "not authorized: unknown or revoked token")
    return _role_check(stored, op)


def bearer_token(header: Optional[str]) -> Optional[str]:
    """The token in an ``Authorization: Bearer T`` header value, None if there is none."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def authorize_bearer(table: TokenTable, header: Optional[str], op: Union[str, Enum]) -> AuthDecision:
    """Decide an HTTP request from its ``Authorization`` header (401 without or with a bad token)."""
    text = bearer_token(header)
    if text is None:
        return AuthDecision(AuthOutcome.UNAUTHENTICATED, None,
                            "not authorized: send the token as 'Authorization: Bearer TOKEN'")
    try:
        token = ClientToken.decode(text)
    except TokenError as e:
        return AuthDecision(AuthOutcome.UNAUTHENTICATED, None, f"not authorized: {e}")
    stored = table.get(token.name)
    if stored is None or not stored.verify(token):
        return AuthDecision(AuthOutcome.UNAUTHENTICATED, None, "not authorized: unknown or revoked token")
    return _role_check(stored, op)

