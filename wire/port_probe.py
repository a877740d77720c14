"""Whether this process could listen on an address, checked before a secure join is sent (a
cluster must not admit a node that then fails to start).

The probe binds as libzmq does, with SO_REUSEADDR: the connections of a process just killed on
that port (TIME_WAIT, e.g. a node whose disk was wiped and that is restarted at once with the
same command line) do not make it busy; a process still listening there does.
"""
from __future__ import annotations

import socket


def check_bindable(host: str, port: int) -> None:
    """Return if ``host:port`` can be bound now; raise OSError (EADDRINUSE, ...) otherwise."""
    host = host.strip("[]")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
