"""The token table of the replicated state (issue 11): client tokens (hashed) and the join secret.

Tokens are kept apart from user keys: ``get``/``list`` never see them. They change only through
committed log entries, so every node holds the same table at the same index:

* ``token_create`` with ``key`` = the token name and ``value`` = msgpack of
  ``StoredToken.to_wire()`` adds a client token (the secret never reaches a node: the client made
  it and sends only the hash and the derived CURVE public key);
* ``token_create`` with ``key`` = :data:`JOIN_SECRET_KEY` and ``value`` = msgpack of
  ``[secret_hash, curve_public]`` sets the join secret (bootstrap writes it in the first entries);
* ``token_revoke`` with ``key`` = the name removes a client token.

The table is copy-on-write: :meth:`TokenState.apply` builds a new dict, so another thread that
took ``tokens`` (the node refreshing its doors) never sees half a change. ``version`` grows at
every change, which is how the node notices one after an applied batch.

The state classes (``KVState`` in fsm.py, ``DbState`` in db_state.py) hold one ``TokenState``
each and hand it token commands; ``encode``/``decode`` is what they persist (a snapshot record,
a DB meta key) so the table survives restarts, snapshots and reaches new members.
"""
from __future__ import annotations

from typing import Any, Optional

import msgpack

from raftkv.records import Command, Op
from raftkv.wire.security.bootstrap import StoredJoinSecret
from raftkv.wire.security.keys import check_public_key
from raftkv.wire.security.tokens import Role, StoredToken
from raftkv.wire.security.zap import JOINER_USER_ID

TOKEN_WRITE_OPS = frozenset({Op.TOKEN_CREATE.value, Op.TOKEN_REVOKE.value})
JOIN_SECRET_KEY = JOINER_USER_ID  # not a valid token name (':'), so no client can create it
MAX_TOKENS = 1000
_FORMAT = 1


def _pack(v: Any) -> bytes:
    return msgpack.packb(v, use_bin_type=True)


def parse_join_secret(v: Any) -> StoredJoinSecret:
    """A StoredJoinSecret from ``[secret_hash, curve_public]``; ValueError for anything else."""
    if not isinstance(v, list) or len(v) != 2 or not isinstance(v[0], bytes) or len(v[0]) != 32 \
            or not isinstance(v[1], bytes):
        raise ValueError("join secret: expected [32-byte hash, public key]")
    return StoredJoinSecret(v[0], check_public_key(v[1]))


def parse_stored_token(name: str, value: Optional[bytes]) -> StoredToken:
    """The StoredToken a ``token_create`` request or command carries; ValueError saying what is wrong."""
    if value is None:
        raise ValueError("token_create needs a value (msgpack of the stored token)")
    try:
        raw = msgpack.unpackb(value, raw=False, max_bin_len=256, max_str_len=256, max_array_len=8)
    except Exception as e:  # msgpack raises several types for garbage
        raise ValueError(f"token_create: value is not msgpack ({type(e).__name__})") from None
    t = StoredToken.from_wire(raw)
    if t.name != name:
        raise ValueError(f"token_create: the key {name!r} is not the token's name {t.name!r}")
    return t


def create_command(t: StoredToken) -> Command:
    """The log command that adds ``t`` (bootstrap's admin token)."""
    return Command(Op.TOKEN_CREATE.value, t.name, _pack(t.to_wire()))


def join_secret_command(js: StoredJoinSecret) -> Command:
    """The log command that sets the join secret (bootstrap)."""
    return Command(Op.TOKEN_CREATE.value, JOIN_SECRET_KEY, _pack([js.secret_hash, js.curve_public]))


class TokenState:
    """Client tokens by name and the join secret, as of the applied index."""

    __slots__ = ("tokens", "join_secret", "version")

    def __init__(self, tokens: Optional[dict] = None, join_secret: Optional[StoredJoinSecret] = None) -> None:
        self.tokens: dict[str, StoredToken] = dict(tokens or {})
        self.join_secret = join_secret
        self.version = 0

    # ------------------------------------------------------------ checks (the leader, before proposing)

    def check_create(self, name: str, value: Optional[bytes]) -> Optional[str]:
        """Why a ``token_create`` request cannot be proposed, or None. The join secret's key is the
        join-token rotation (``kvclient join-token rotate``): a new ``[hash, public key]``."""
        if name == JOIN_SECRET_KEY:
            try:
                parse_join_secret(msgpack.unpackb(value or b"", raw=False, max_bin_len=256, max_array_len=8))
            except Exception as e:  # msgpack raises several types for garbage
                return f"join secret: {e}"
            return None
        try:
            parse_stored_token(name, value)
        except ValueError as e:
            return str(e)
        if name in self.tokens:
            return f"a token named {name!r} exists already (revoke it first, or pick another name)"
        if len(self.tokens) >= MAX_TOKENS:
            return f"too many tokens ({MAX_TOKENS}); revoke some first"
        return None

    def check_revoke(self, name: str) -> Optional[str]:
        """Why ``token_revoke name`` must be refused, or None (a missing token is not_found later)."""
        t = self.tokens.get(name)
        if t is not None and t.role is Role.ADMIN and self.admin_count() == 1:
            return (f"refusing to revoke {name!r}: it is the last admin token (create another admin "
                    f"token first)")
        return None

    def admin_count(self) -> int:
        return sum(1 for t in self.tokens.values() if t.role is Role.ADMIN)

    # ------------------------------------------------------------ applying (every node, in log order)

    def apply(self, cmd: Command) -> tuple:
        """Apply a committed token command: ``(status, None)`` like any write.

        Deterministic: every node decides the same on the same table, so a refusal here (a
        name taken meanwhile, the last admin) is a refusal everywhere."""
        if cmd.op == Op.TOKEN_CREATE.value:
            if cmd.key == JOIN_SECRET_KEY:
                try:
                    raw = msgpack.unpackb(cmd.value or b"", raw=False)
                    js = parse_join_secret(raw)
                except Exception:
                    return ("invalid", None)
                self.join_secret = js
                self.version += 1
                return ("ok", None)
            try:
                t = parse_stored_token(cmd.key, cmd.value)
            except ValueError:
                return ("invalid", None)
            if t.name in self.tokens:
                return ("cas_failed", None)
            if len(self.tokens) >= MAX_TOKENS:
                return ("invalid", None)
            new = dict(self.tokens)
            new[t.name] = t
            self.tokens = new
            self.version += 1
            return ("ok", None)
        if cmd.op == Op.TOKEN_REVOKE.value:
            if cmd.key not in self.tokens:
                return ("not_found", None)
            if self.check_revoke(cmd.key):
                return ("cas_failed", None)
            new = dict(self.tokens)
            del new[cmd.key]
            self.tokens = new
            self.version += 1
            return ("ok", None)
        return ("invalid", None)

    # ------------------------------------------------------------ persistence

    def encode(self) -> bytes:
        js = self.join_secret
        return _pack([_FORMAT, [t.to_wire() for t in self.tokens.values()],
                      [js.secret_hash, js.curve_public] if js is not None else None])

    @classmethod
    def decode(cls, raw: Optional[bytes]) -> "TokenState":
        """The table :meth:`encode` wrote (None: an empty table, e.g. a state made before issue 11)."""
        if raw is None:
            return cls()
        v = msgpack.unpackb(raw, raw=False)
        if not isinstance(v, list) or len(v) < 3 or v[0] != _FORMAT or not isinstance(v[1], list):
            raise ValueError("token table: unknown format")
        tokens = {}
        for w in v[1]:
            t = StoredToken.from_wire(w)
            tokens[t.name] = t
        return cls(tokens, parse_join_secret(v[2]) if v[2] is not None else None)

    def copy(self) -> "TokenState":
        c = TokenState(self.tokens, self.join_secret)
        c.version = self.version
        return c

    def listing(self) -> list:
        """``token_list``'s answer: names and roles, sorted, never hashes."""
        return [{"name": n, "role": self.tokens[n].role.value} for n in sorted(self.tokens)]
