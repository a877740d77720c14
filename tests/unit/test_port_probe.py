"""The bind probe a secure joiner runs before it asks to join (wire/port_probe.py)."""
from __future__ import annotations

import errno
import socket

import pytest

from raftkv.wire.port_probe import check_bindable


def _port_in_time_wait() -> int:
    """A port whose listener is gone but whose accepted connection, closed by the server side
    first, sits in TIME_WAIT: what a killed node leaves behind."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    cli = socket.create_connection(("127.0.0.1", port))
    conn, _ = srv.accept()
    conn.close()  # the server side closes first: its end goes to TIME_WAIT
    cli.recv(1)
    cli.close()
    srv.close()
    return port


def test_a_port_left_in_time_wait_by_a_killed_process_is_bindable():
    port = _port_in_time_wait()
    with socket.socket() as plain, pytest.raises(OSError) as e:
        plain.bind(("127.0.0.1", port))  # the old probe's way: refused, though nobody listens
    assert e.value.errno == errno.EADDRINUSE
    check_bindable("127.0.0.1", port)


def test_a_port_someone_listens_on_is_busy():
    with socket.socket() as srv:
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        with pytest.raises(OSError) as e:
            check_bindable("127.0.0.1", srv.getsockname()[1])
    assert e.value.errno == errno.EADDRINUSE
