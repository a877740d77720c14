"""``HOST:PORT`` addresses: the one parser behind config files, kvnode flags, the client's server
list, the HTTP gateway's bind address and the ZeroMQ endpoints.

One set of rules everywhere:

- ``HOST:PORT``; surrounding spaces are ignored; no scheme (``tcp://``).
- HOST is a name or IPv4 address (letters, digits, dots, hyphens), or an IPv6 address in
  brackets (``[::1]:9001``); an IPv6 address without brackets is refused, since its last
  colon would be read as the port's.
- An empty host or ``*`` (``:8001``) means all interfaces and becomes ``0.0.0.0`` where a
  listening address is wanted (``wildcard=True``); where the address is to be connected to
  (a client's server list) a host is required.
- PORT is a decimal number in 1..65535; 0 ("any free port") only where ``port_zero=True``
  (a gateway bound by tests).

Errors are :class:`AddressError` (a ValueError) whose message names the address and what is
wrong with it, in the form the config file and flag messages have always had:
``bad address '127.0.0.1:0': port 0 is not in 1..65535``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Address", "AddressError", "parse_address", "normalize_address", "split_address", "advertise",
           "zmq_endpoint", "parse_bind"]

_HOST_RE = re.compile(r"^(?:\*|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])$")
_EXAMPLE = "expected HOST:PORT, e.g. 127.0.0.1:9001 or :9001"
ALL_INTERFACES = "0.0.0.0"

# Hosts that are fine to bind but mean nothing (or something else) on another node.
_LOCAL_HOSTS = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "*": "127.0.0.1",
                "localhost": "127.0.0.1", "[::]": "[::1]"}


class AddressError(ValueError):
    """A ``HOST:PORT`` that cannot be used; the message says which and why."""


@dataclass(frozen=True)
class Address:
    """A checked address. ``host`` keeps the brackets of an IPv6 address (``[::1]``), so that
    ``str(address)`` is again a valid ``HOST:PORT``."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def bare_host(self) -> str:
        """The host without IPv6 brackets, as the socket module wants it."""
        return self.host[1:-1] if self.host.startswith("[") else self.host

    @property
    def is_ipv6(self) -> bool:
        return self.host.startswith("[")


def parse_address(text: object, *, wildcard: bool = True, port_zero: bool = False,
                  what: str = "address") -> Address:
    """Check ``text`` against the rules of the module docstring and return it as an Address.

    ``wildcard``: an empty host or ``*`` is allowed and becomes ``0.0.0.0`` (a listening
    address); when False a host is required (an address to connect to). ``port_zero``: port 0
    is allowed. ``what`` names the address in errors (``bad server address '...': ...``).
    """
    if not isinstance(text, str):
        raise AddressError(f"bad {what} {text!r}: {_EXAMPLE}")
    s = text.strip()
    if "://" in s:
        raise AddressError(f"bad {what} {text!r}: give HOST:PORT without a scheme")
    host, sep, port = s.rpartition(":")
    if not sep:
        raise AddressError(f"bad {what} {text!r}: {_EXAMPLE}")
    if ":" in host and not host.startswith("["):
        raise AddressError(f"bad {what} {text!r}: put an IPv6 host in brackets, e.g. [::1]:9001")
    if host and not _HOST_RE.match(host):
        raise AddressError(f"bad {what} {text!r}: bad host {host!r}")
    if not port.isdigit() or not port.isascii():
        raise AddressError(f"bad {what} {text!r}: port {port!r} is not a number")
    n = int(port)
    if not (0 if port_zero else 1) <= n <= 65535:
        raise AddressError(f"bad {what} {text!r}: port {n} is not in {0 if port_zero else 1}..65535")
    if host in ("", "*"):
        if not wildcard:
            raise AddressError(f"bad {what} {text!r}: no host (all interfaces is for listening, "
                               f"not connecting): expected HOST:PORT, e.g. 127.0.0.1:{n}")
        host = ALL_INTERFACES
    return Address(host, n)


def normalize_address(text: str) -> str:
    """Validate a listening ``HOST:PORT`` and return it normalised (``:8001`` -> ``0.0.0.0:8001``);
    raise AddressError (a ValueError) saying what is wrong. The form config files and flags use."""
    return str(parse_address(text))


def split_address(addr: str) -> tuple[str, int]:
    """Split a ``HOST:PORT`` into its host (brackets kept for IPv6) and port."""
    a = parse_address(addr)
    return a.host, a.port


def advertise(addr: str) -> str:
    """The address to give other nodes and clients for a bind address.

    ``0.0.0.0``, an empty host and ``localhost`` become ``127.0.0.1``: a wildcard is not
    connectable, and ``localhost`` may resolve to ``::1`` where a node listens on IPv4
    only. This is right for a single-machine cluster; across machines, configure a host
    name or address the other machines can reach.
    """
    a = parse_address(addr)
    return f"{_LOCAL_HOSTS.get(a.host.lower(), a.host)}:{a.port}"


def zmq_endpoint(addr: str) -> str:
    """``HOST:PORT`` -> the ZeroMQ endpoint ``tcp://HOST:PORT`` (an empty host: all interfaces)."""
    return f"tcp://{parse_address(addr, port_zero=True)}"


def parse_bind(bind: str) -> tuple[str, int]:
    """The HTTP gateway's ``--http`` address as ``(host, port)`` for the socket module:
    ``":8001"`` -> ("0.0.0.0", 8001); ``"[::1]:80"`` -> ("::1", 80); port 0 picks a free one."""
    a = parse_address(bind, port_zero=True, what="HTTP address")
    return a.bare_host, a.port
