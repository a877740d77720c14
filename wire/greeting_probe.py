"""Which security mechanism a ZeroMQ door speaks, read from its ZMTP 3 greeting (RFC 23/ZMTP).

Why this exists: a plain (NULL) client at a CURVE door is meant to learn it from libzmq's
``EVENT_HANDSHAKE_FAILED_PROTOCOL`` (mechanism mismatch), which it raises when it reads the
server's greeting. But libzmq 4.3's engine (``zmtp_engine.cpp``, ``receive_greeting``) only
*queues* the second part of its greeting, the one that names its mechanism, when it has read
the peer's version byte; the bytes go out when the socket is next polled writable. When the
peer's whole greeting comes in the same read (the client wrote it in one piece because the
server's signature and version reached it in one segment: common on a loaded host, and always
through a proxy that forwards a connection once its first bytes are in), the server sees the
mismatch first and hangs up with its mechanism never sent. The client then sees only
``EVENT_HANDSHAKE_FAILED_NO_DETAIL``, on every reconnection (issue 11's flake: a token-less
client timed out as "not reachable" instead of being told the cluster needs a token).

The probe sends only the signature and the major version, which makes the server send its
whole greeting while it waits for the rest of ours; it reads those 64 bytes and hangs up (the
server sees a connection dropped during the handshake, as from any client that goes away).
"""
from __future__ import annotations

import socket
import time
from typing import Optional

from .address import AddressError, parse_address

_SIGNATURE = b"\xff" + b"\x00" * 8 + b"\x7f"  # ZMTP 3: 0xFF, 8 padding bytes, 0x7F
_MAJOR = b"\x03"
_GREETING = 64  # signature (10), version (2), mechanism (20), as-server (1), filler (31)


def door_mechanism(addr: str, timeout: float) -> Optional[str]:
    """The mechanism ("NULL", "CURVE", "PLAIN", ...) the ZeroMQ door at ``HOST:PORT`` announces
    in its greeting, or None when no ZMTP 3 greeting arrives within ``timeout`` seconds (nothing
    listens, the connection drops, or the peer is not a ZMTP 3 door)."""
    try:
        a = parse_address(addr, wildcard=False)
    except AddressError:
        return None
    deadline = time.monotonic() + timeout
    data = b""
    try:
        with socket.create_connection((a.bare_host, a.port), timeout=max(0.001, timeout)) as s:
            s.sendall(_SIGNATURE + _MAJOR)
            while len(data) < _GREETING:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                s.settimeout(left)
                chunk = s.recv(_GREETING - len(data))
                if not chunk:
                    return None
                data += chunk
    except OSError:  # refused, unreachable, reset, timed out
        return None
    if data[0] != 0xFF or not data[9] & 0x01 or data[10] < 3:
        return None  # not a ZMTP 3 greeting
    return data[12:32].rstrip(b"\x00").decode("ascii", "replace")
