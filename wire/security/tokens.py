"""Join tokens, client tokens, roles, and the stored (hashed) form of a token.

A token is one printable, URL-safe word: a prefix naming its kind and format version, then the
base64url (no padding) of a small binary record ending in a 4-byte checksum. The checksum is
not security (the secret is): it turns a token cut short or mistyped by hand into the clear
error "damaged" instead of a confusing "not authorized".

- Join token ``kvj1_...``: the cluster id, the cluster's CURVE server public key and a secret.
  The joiner connects with that server key, so the CURVE handshake fails unless the other end
  holds the cluster's secret key (no trust on first use), and proves the token by connecting
  with the key pair derived from the secret (``derive_keypair(secret, b"join")``).
- Client token ``kvt1_...``: the token's name, its role, the cluster id, the server public key
  and a secret. The role in the token is only informative: the cluster decides from its own
  stored record, looked up by name.

Secrets are 32 random bytes. The cluster stores only ``hash_secret(secret)`` (and the public key
derived from it). Why BLAKE2b and not scrypt/PBKDF2: a slow hash protects *guessable* secrets
(passwords) against offline guessing; these secrets are 256 uniformly random bits that nobody
can guess whatever the hash costs, and a slow hash would cost milliseconds on every HTTP request
that presents a bearer token. BLAKE2b with its own personalisation string is a fast one-way
function kept apart from the key derivation. No salt is needed for the same reason (no two
secrets are equal, no precomputed table covers 2^256). Comparisons use
:func:`hmac.compare_digest` so the time taken says nothing of how much matched.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import struct
from dataclasses import dataclass
from enum import Enum
from typing import Union

from zmq.utils import z85

from .keys import RAW_KEY_LEN, KeyPair, check_public_key, derive_keypair

SECRET_LEN = 32
CHECK_LEN = 4
MAX_NAME_LEN = 64
MAX_CLUSTER_ID_LEN = 200
JOIN_PREFIX = "kvj1_"
CLIENT_PREFIX = "kvt1_"
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
_B64URL_RE = re.compile(r"[A-Za-z0-9_-]+\Z")


class TokenError(ValueError):
    """A token that cannot be used: not a token, the wrong kind, damaged, or with bad fields."""


class Role(str, Enum):
    """What a client token may do. Each role includes the ones before it."""

    READ = "read"
    WRITE = "write"
    ADMIN = "admin"


# Ops by the least role allowed to run them. An op name not listed (a future op, token
# management, backup, membership) is admin-only: a new op is closed until someone opens it.
_READ_OPS = frozenset({"get", "list", "status", "members", "watch"})
_WRITE_OPS = frozenset({"put", "delete", "cas", "create", "txn", "lease"})
_RANK = {Role.READ: 0, Role.WRITE: 1, Role.ADMIN: 2}


def required_role(op: Union[str, Enum]) -> Role:
    """The least role that may run ``op`` (an ``Op`` member or its name).

    Families count as their head: ``watch_cancel`` is a read, ``lease_grant`` a write.
    """
    name = op.value if isinstance(op, Enum) else op
    if not isinstance(name, str):
        return Role.ADMIN
    family = name.split("_", 1)[0]
    if name in _READ_OPS or family == "watch":
        return Role.READ
    if name in _WRITE_OPS or family == "lease":
        return Role.WRITE
    return Role.ADMIN


def allowed(role: Role, op: Union[str, Enum]) -> bool:
    """True if a client holding ``role`` may run ``op``."""
    return _RANK[Role(role)] >= _RANK[required_role(op)]


def new_secret() -> bytes:
    """A fresh token secret: 32 bytes from the OS's CSPRNG."""
    return secrets.token_bytes(SECRET_LEN)


def hash_secret(secret: bytes) -> bytes:
    """The stored form of a token secret (BLAKE2b-256, personalised; see the module docstring)."""
    return hashlib.blake2b(secret, digest_size=32, person=b"raftkv-tok-hash").digest()


def verify_secret(secret: bytes, stored_hash: bytes) -> bool:
    """True if ``secret`` hashes to ``stored_hash`` (constant-time comparison)."""
    return hmac.compare_digest(hash_secret(secret), stored_hash)


def check_token_name(name: str) -> str:
    """``name`` if it is a valid token name (1-64 of A-Z a-z 0-9 . _ -, not starting with . _ -)."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise TokenError(f"bad token name {name!r}: use 1-{MAX_NAME_LEN} letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit")
    return name


def _check(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=CHECK_LEN, person=b"raftkv-tok-chk").digest()


def _encode(prefix: str, body: bytes) -> str:
    return prefix + base64.urlsafe_b64encode(body + _check(body)).rstrip(b"=").decode("ascii")


def _decode(text: object, prefix: str, kind: str) -> bytes:
    """The body of a token of this kind, checked for shape and checksum; TokenError otherwise."""
    if not isinstance(text, str):
        raise TokenError(f"a {kind} token is text, got {type(text).__name__}")
    text = text.strip()
    if not text:
        raise TokenError(f"empty {kind} token")
    other = {JOIN_PREFIX: "join", CLIENT_PREFIX: "client"}
    if not text.startswith(prefix):
        for p, k in other.items():
            if text.startswith(p):
                raise TokenError(f"this is a {k} token, not a {kind} token")
        if text[:3] in ("kvj", "kvt"):
            raise TokenError(f"{kind} token of an unknown format version (this raftkv reads '{prefix}...')")
        raise TokenError(f"not a raftkv {kind} token (it should start with '{prefix}')")
    data = text[len(prefix):]
    if not data:
        raise TokenError(f"{kind} token is too short (nothing after '{prefix}'): copy it again in full")
    if not _B64URL_RE.match(data):
        raise TokenError(f"{kind} token has characters a token never holds (spaces, quotes?): copy it again")
    try:
        raw = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
    except (binascii.Error, ValueError):
        raise TokenError(f"{kind} token is damaged (cut short?): copy it again in full") from None
    if len(raw) <= CHECK_LEN:
        raise TokenError(f"{kind} token is too short: copy it again in full")
    body, check = raw[:-CHECK_LEN], raw[-CHECK_LEN:]
    if not hmac.compare_digest(_check(body), check):
        raise TokenError(f"{kind} token is damaged (checksum mismatch): copy it again in full")
    return body


class _Reader:
    """Reads the length-prefixed fields of a token body; TokenError on a short or long body."""

    def __init__(self, body: bytes, kind: str) -> None:
        self.body, self.pos, self.kind = body, 0, kind

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.body):
            raise TokenError(f"{self.kind} token is malformed (too short)")
        out = self.body[self.pos:self.pos + n]
        self.pos += n
        return out

    def text(self, what: str) -> str:
        n = self.take(1)[0]
        try:
            return self.take(n).decode("utf-8")
        except UnicodeDecodeError:
            raise TokenError(f"{self.kind} token is malformed ({what} is not UTF-8)") from None

    def end(self) -> None:
        if self.pos != len(self.body):
            raise TokenError(f"{self.kind} token is malformed (trailing bytes)")


def _text_field(value: str, what: str, limit: int) -> bytes:
    raw = value.encode("utf-8")
    if not raw or len(raw) > limit:
        raise TokenError(f"{what}: 1 to {limit} bytes, got {len(raw)}")
    return struct.pack("B", len(raw)) + raw


def _raw_key(public_key: bytes) -> bytes:
    try:
        return z85.decode(check_public_key(public_key))
    except ValueError as e:
        raise TokenError(f"server public key: {e}") from None


@dataclass(frozen=True, slots=True)
class JoinToken:
    """What a node needs to join a secure cluster: whom to trust, and the secret that lets it in."""

    cluster_id: str
    server_public_key: bytes  # Z85: the cluster's CURVE server key
    secret: bytes

    def __repr__(self) -> str:
        return (f"JoinToken(cluster_id={self.cluster_id!r}, server_public_key={self.server_public_key!r}, "
                "secret=<hidden>)")

    def encode(self) -> str:
        """The token as one URL-safe word."""
        if len(self.secret) != SECRET_LEN:
            raise TokenError(f"secret: {SECRET_LEN} bytes")
        body = (_text_field(self.cluster_id, "cluster id", MAX_CLUSTER_ID_LEN)
                + _raw_key(self.server_public_key) + self.secret)
        return _encode(JOIN_PREFIX, body)

    @classmethod
    def decode(cls, text: str) -> "JoinToken":
        """Parse a join token; :class:`TokenError` with a clear message for anything else."""
        r = _Reader(_decode(text, JOIN_PREFIX, "join"), "join")
        cluster_id = r.text("cluster id")
        key = z85.encode(r.take(RAW_KEY_LEN))
        secret = r.take(SECRET_LEN)
        r.end()
        if not cluster_id:
            raise TokenError("join token is malformed (empty cluster id)")
        return cls(cluster_id, key, secret)

    def keypair(self) -> KeyPair:
        """The CURVE client key pair that proves this token at the peer door."""
        return derive_keypair(self.secret, b"join")


@dataclass(frozen=True, slots=True)
class ClientToken:
    """What a client needs: its token name and secret, its role, and the cluster's server key."""

    name: str
    role: Role
    cluster_id: str
    server_public_key: bytes  # Z85
    secret: bytes

    def __repr__(self) -> str:
        return (f"ClientToken(name={self.name!r}, role={self.role.value!r}, cluster_id={self.cluster_id!r}, "
                f"server_public_key={self.server_public_key!r}, secret=<hidden>)")

    def encode(self) -> str:
        """The token as one URL-safe word."""
        if len(self.secret) != SECRET_LEN:
            raise TokenError(f"secret: {SECRET_LEN} bytes")
        check_token_name(self.name)
        body = (struct.pack("B", _RANK[Role(self.role)])
                + _text_field(self.name, "token name", MAX_NAME_LEN)
                + _text_field(self.cluster_id, "cluster id", MAX_CLUSTER_ID_LEN)
                + _raw_key(self.server_public_key) + self.secret)
        return _encode(CLIENT_PREFIX, body)

    @classmethod
    def decode(cls, text: str) -> "ClientToken":
        """Parse a client token; :class:`TokenError` with a clear message for anything else."""
        r = _Reader(_decode(text, CLIENT_PREFIX, "client"), "client")
        rank = r.take(1)[0]
        roles = [role for role, n in _RANK.items() if n == rank]
        if not roles:
            raise TokenError("client token is malformed (unknown role)")
        name = r.text("token name")
        cluster_id = r.text("cluster id")
        key = z85.encode(r.take(RAW_KEY_LEN))
        secret = r.take(SECRET_LEN)
        r.end()
        check_token_name(name)
        if not cluster_id:
            raise TokenError("client token is malformed (empty cluster id)")
        return cls(name, roles[0], cluster_id, key, secret)

    def keypair(self) -> KeyPair:
        """The CURVE client key pair that proves this token at the client door."""
        return derive_keypair(self.secret, b"client")

    def stored(self) -> "StoredToken":
        """The record the cluster keeps for this token (no secret in it)."""
        return StoredToken(self.name, Role(self.role), hash_secret(self.secret), self.keypair().public)


@dataclass(frozen=True, slots=True)
class StoredToken:
    """A client token as the replicated state keeps it: never the secret, only what verifies it.

    ``secret_hash`` checks a bearer token at the HTTP gateway; ``curve_public`` is the key the
    ZAP handler admits at the client door (the user id it reports is ``name``).
    """

    name: str
    role: Role
    secret_hash: bytes
    curve_public: bytes  # Z85

    def verify(self, token: ClientToken) -> bool:
        """True if ``token`` is this stored token (same name, right secret)."""
        return token.name == self.name and verify_secret(token.secret, self.secret_hash)

    def to_wire(self) -> list:
        """A msgpack-able form for the replicated state."""
        return [self.name, self.role.value, self.secret_hash, self.curve_public]

    @classmethod
    def from_wire(cls, v: object) -> "StoredToken":
        """The inverse of :meth:`to_wire`, checking every field; ValueError on anything else."""
        if not isinstance(v, list) or len(v) != 4:
            raise ValueError("stored token: expected [name, role, secret_hash, curve_public]")
        name, role, h, key = v
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise ValueError("stored token: bad name")
        if not isinstance(h, bytes) or len(h) != 32:
            raise ValueError("stored token: bad secret hash")
        if not isinstance(key, bytes):
            raise ValueError("stored token: bad key")
        return cls(name, Role(role), h, check_public_key(key))


def new_client_token(name: str, role: Role, cluster_id: str, server_public_key: bytes) -> ClientToken:
    """A new client token with a fresh secret (``.encode()`` it for the user, ``.stored()`` for the state)."""
    return ClientToken(check_token_name(name), Role(role), cluster_id, check_public_key(server_public_key),
                       new_secret())


def new_join_token(cluster_id: str, server_public_key: bytes) -> JoinToken:
    """A new join token with a fresh secret."""
    return JoinToken(cluster_id, check_public_key(server_public_key), new_secret())
