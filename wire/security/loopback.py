"""Loopback-only ("protected") mode: a cluster made without ``--secure`` talks to loopback only.

Like Redis's protected mode: with no credentials configured, every door (peer, client, HTTP)
accepts connections from loopback addresses only. :class:`LoopbackGuard` is the one decision,
used by the ZAP handler (ZeroMQ doors) and by the HTTP gateway on accept; refusals are logged
by a :class:`RateLimitedLog`, so a scanner cannot fill the log.

Hostnames are never resolved here: the only name accepted as loopback is ``localhost``
(resolution is slow and can be made to lie).
"""
from __future__ import annotations

import ipaddress
import logging
import threading
import time
from typing import Callable, Optional

WILDCARD_HOSTS = frozenset({"", "*", "0.0.0.0", "::", "[::]"})


def _strip(host: str) -> str:
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host.split("%", 1)[0]  # an IPv6 zone (fe80::1%eth0) is not part of the address


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1, IPv4-mapped loopback (::ffff:127.x.y.z) and ``localhost``."""
    if not isinstance(host, str):
        return False
    h = _strip(host)
    if h.lower() == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(h)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def is_wildcard(host: str) -> bool:
    """True for a bind host meaning "every interface" (``*``, ``0.0.0.0``, ``::``, empty)."""
    return _strip(host) in WILDCARD_HOSTS or host.strip() in WILDCARD_HOSTS


def bind_refusal(host: str, *, secure: bool, insecure: bool) -> Optional[str]:
    """Why a node must not bind ``host`` (kvnode exits 2 with it), or None if it may.

    A secure cluster or ``--insecure`` may bind anything. Otherwise a *specific* non-loopback
    address is refused; a wildcard is allowed, since the doors still refuse non-loopback peers.
    """
    if secure or insecure or is_loopback(host) or is_wildcard(host):
        return None
    return (f"refusing to listen on {host}: this cluster was made without --secure, so it only talks "
            f"to loopback addresses. Make a secure cluster (kvnode --bootstrap --secure, then join "
            f"with --token) or start with --insecure to accept anyone who can reach this address")


class RateLimitedLog:
    """Logs the first of a run of similar events at once, then at most one line per ``interval``.

    Each line after the first says how many events were suppressed since the last line. It is
    driven by events (no timer thread): suppressed events are reported with the next logged one.
    Thread-safe (the ZAP handler runs on its own thread).
    """

    def __init__(self, logger: logging.Logger, interval: float = 60.0, level: int = logging.WARNING,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger, self.interval, self.level, self.clock = logger, interval, level, clock
        self._lock = threading.Lock()
        self._last: Optional[float] = None
        self._suppressed = 0

    def log(self, msg: str, *args: object) -> bool:
        """Log ``msg % args`` unless a line was logged less than ``interval`` ago; True if logged."""
        now = self.clock()
        with self._lock:
            if self._last is not None and now - self._last < self.interval:
                self._suppressed += 1
                return False
            suppressed, self._suppressed, self._last = self._suppressed, 0, now
        if suppressed:
            self.logger.log(self.level, msg + " (and %d more like it in the last %.0f s)", *args, suppressed,
                            self.interval)
        else:
            self.logger.log(self.level, msg, *args)
        return True


class LoopbackGuard:
    """The loopback-only decision for one node: ``admit(address)`` is False for a non-loopback peer.

    ``enabled`` is False on secure clusters and with ``--insecure``; then everyone is admitted
    (by this guard: CURVE still decides on secure clusters).
    """

    def __init__(self, enabled: bool, logger: Optional[logging.Logger] = None, interval: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.enabled = enabled
        self.refused = 0
        self._log = RateLimitedLog(logger or logging.getLogger("raftkv.security"), interval, clock=clock)

    def admit(self, address: str, door: str = "") -> bool:
        """True if a connection from ``address`` (an IP, as ZAP or ``getpeername`` gives it) may proceed."""
        if not self.enabled or is_loopback(address):
            return True
        self.refused += 1
        self._log.log("refused a connection from %s%s: this cluster accepts loopback connections only "
                      "(it was made without --secure; see --insecure)", address, f" at the {door} door" if door else "")
        return False
