"""ZAP (ZeroMQ authentication) for the node's doors, and CURVE set-up for server and client sockets.

One :class:`DoorAuthenticator` per ZeroMQ context serves every door of the node; a door is a ZAP
*domain* (``Door.PEER``, ``Door.CLIENT``) set on its ROUTER socket. For each door a
:class:`KeyRing` maps the CURVE public keys allowed in to the user id the socket reports with
every message (``Frame.get("User-Id")``): a member's node id at the peer door, a token name at
the client door, :data:`JOINER_USER_ID` for a node proving a join token. The node replaces a
key ring whenever the configuration or the token table changes; the next handshake sees the new
set at once.

ZAP is consulted only when a connection is made: a key removed later does not cut a connection
that is already up. So the user id must also be checked per message against the current tables
(a removed member's or revoked token's messages are then dropped), see SECURITY-PLAN.

A refused handshake is final for the connecting socket: libzmq 4.3 does not retry it (the client
sees ``EVENT_HANDSHAKE_FAILED_AUTH``). A client that may become allowed later (a joiner's peers)
must close and reconnect its socket.

Built on pyzmq's :class:`zmq.auth.thread.ThreadAuthenticator` (its thread, ZAP socket and reply
framing); the decision itself is :meth:`DoorAuthenticator.decide`, a plain function of the ZAP
request, unit-testable without sockets.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from enum import Enum
from typing import Mapping, Optional

import zmq
from zmq.auth.base import VERSION as ZAP_VERSION
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from .keys import KeyPair, check_public_key
from .loopback import LoopbackGuard, RateLimitedLog

JOINER_USER_ID = "join:"  # a member id or token name never contains ':' (see security_tokens.NAME_RE)


class Door(str, Enum):
    """The ZAP domain of each ZeroMQ door."""

    PEER = "peer"
    CLIENT = "client"


class KeyRing:
    """The CURVE public keys (Z85 bytes) allowed through one door, each with the user id it maps to.

    Copy-on-write: readers (the ZAP thread) take the current dict without a lock, writers swap in
    a new one under a lock, so a lookup never sees half an update.
    """

    def __init__(self, keys: Optional[Mapping[bytes, str]] = None) -> None:
        self._lock = threading.Lock()
        self._keys: dict[bytes, str] = {}
        if keys:
            self.replace(keys)

    def replace(self, keys: Mapping[bytes, str]) -> None:
        """Allow exactly ``keys`` (public key -> user id) from now on."""
        new = {check_public_key(k): uid for k, uid in keys.items()}
        with self._lock:
            self._keys = new

    def add(self, key: bytes, user_id: str) -> None:
        """Allow one more key."""
        key = check_public_key(key)
        with self._lock:
            new = dict(self._keys)
            new[key] = user_id
            self._keys = new

    def remove(self, key: bytes) -> None:
        """Refuse ``key`` from the next handshake on (no error if it was not there)."""
        with self._lock:
            new = dict(self._keys)
            new.pop(bytes(key), None)
            self._keys = new

    def user_id(self, key: bytes) -> Optional[str]:
        """The user id of an allowed key, None if the key is not allowed."""
        return self._keys.get(key)

    def __len__(self) -> int:
        return len(self._keys)

    # pyzmq's credentials-provider protocol (configure_curve_callback): callback(domain, z85_key)
    def callback(self, domain: str, key: bytes) -> bool:
        """True if ``key`` is allowed (the interface zmq.auth expects of a credentials provider)."""
        return self.user_id(key) is not None


@dataclass(frozen=True, slots=True)
class ZapDecision:
    """The answer to one ZAP request: a ZAP status code, its text, and the user id if allowed."""

    status: bytes
    text: bytes
    user_id: str = ""

    @property
    def ok(self) -> bool:
        return self.status == b"200"


class DoorAuthenticator(ThreadAuthenticator):
    """The ZAP handler of a node: CURVE keys per door, loopback-only refusals, one log line per interval.

    ``guard`` (a :class:`LoopbackGuard`) refuses non-loopback peers when the cluster was made
    without ``--secure``; give a disabled guard on secure clusters. NULL connections (insecure
    doors) are allowed when the guard admits the address; PLAIN and GSSAPI are always refused.
    """

    def __init__(self, context: zmq.Context, guard: LoopbackGuard, log: Optional[logging.Logger] = None,
                 log_interval: float = 60.0) -> None:
        log = log or logging.getLogger("raftkv.security")
        super().__init__(context=context, log=log)
        self.guard = guard
        self.rings: dict[str, KeyRing] = {}
        self._refusal_log = RateLimitedLog(log, log_interval)

    def ring(self, door: Door) -> KeyRing:
        """The key ring of ``door`` (made empty on first use: no key allowed)."""
        ring = self.rings.get(door.value)
        if ring is None:
            ring = self.rings[door.value] = KeyRing()
            self.configure_curve_callback(door.value, ring)
        return ring

    def decide(self, domain: str, address: str, mechanism: bytes, credentials: list[bytes]) -> ZapDecision:
        """The decision for one handshake (runs on the ZAP thread; no I/O but a rate-limited log)."""
        if not self.guard.admit(address, domain):
            return ZapDecision(b"400", b"loopback connections only")
        if mechanism == b"NULL":
            return ZapDecision(b"200", b"OK", "anonymous")
        if mechanism != b"CURVE" or len(credentials) != 1 or len(credentials[0]) != 32:
            self._refusal_log.log("refused a %s handshake from %s at the %s door: unsupported mechanism",
                                  mechanism.decode("ascii", "replace")[:16], address, domain)
            return ZapDecision(b"400", b"unsupported mechanism")
        ring = self.rings.get(domain)
        key = z85.encode(credentials[0])
        user_id = ring.user_id(key) if ring is not None else None
        if user_id is None:
            self._refusal_log.log("refused a CURVE handshake from %s at the %s door: unknown key %s",
                                  address, domain or "(no domain)", key.decode("ascii"))
            return ZapDecision(b"400", b"unknown key")
        return ZapDecision(b"200", b"OK", user_id)

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        """Answer one ZAP request (overrides pyzmq's, which has no per-domain user ids nor address ranges)."""
        if len(msg) < 6:
            if len(msg) >= 2:
                self._send_zap_reply(msg[1], b"400", b"Not enough frames")
            return
        version, request_id, domain, address, _identity, mechanism = msg[:6]
        if version != ZAP_VERSION:
            self._send_zap_reply(request_id, b"400", b"Invalid version")
            return
        try:
            d = self.decide(domain.decode("utf-8", "replace"), address.decode("utf-8", "replace"),
                            mechanism, msg[6:])
        except Exception:  # the ZAP thread must answer every request, or that peer's handshake hangs
            self.log.exception("ZAP decision failed")
            d = ZapDecision(b"500", b"internal error")
        self._send_zap_reply(request_id, d.status, d.text, d.user_id)


def configure_curve_server(sock: zmq.Socket, server: KeyPair, door: Door) -> None:
    """Make ``sock`` (a ROUTER, before bind) a CURVE server in ``door``'s ZAP domain."""
    sock.zap_domain = door.value.encode()
    sock.curve_server = True
    sock.curve_publickey = server.public
    sock.curve_secretkey = server.secret


def configure_null_server(sock: zmq.Socket, door: Door) -> None:
    """Make ``sock`` (before bind) consult ZAP for plain (NULL) connections, for loopback-only mode.

    libzmq asks the ZAP handler about NULL connections only if the socket has a ZAP domain.
    """
    sock.zap_domain = door.value.encode()


def configure_curve_client(sock: zmq.Socket, server_public_key: bytes, own: KeyPair) -> None:
    """Make ``sock`` (a DEALER or REQ, before connect) a CURVE client of the server with that key."""
    sock.curve_serverkey = check_public_key(server_public_key)
    sock.curve_publickey = own.public
    sock.curve_secretkey = own.secret


def user_id_of(frame: zmq.Frame) -> Optional[str]:
    """The ZAP user id of the connection a received frame came on (``recv(copy=False)``), or None."""
    try:
        uid = frame.get("User-Id")
    except (zmq.ZMQError, UnicodeDecodeError):
        return None
    return uid if isinstance(uid, str) else None
