"""GET /backup at the gateway (wire/http_backup.py): the answer streams what the library's backup
writes, as the client reads it (the gateway holds about LOW_WATER, not the file), with an exact
Content-Length; a client that leaves stops the backup; errors before the first byte are JSON."""
from __future__ import annotations

import http.client
import json
import socket
import threading
import time

import pytest

from raftkv.records import Member
from raftkv.storage.backup_file import BackupWriter, new_header, verify
from raftkv.wire.errors import NotAuthorized, Unavailable
from raftkv.wire.http_auth import route_op
from raftkv.wire.security.tokens import Role, required_role
from tests.unit.fake_frontdoor import FakeFrontDoor
from tests.unit.test_http import call, make_gateway

MiB = 1 << 20


class FakeBackupClient:
    """Stands for Client.backup: writes a real backup file of ``size`` stream bytes to the file
    object it is given, 1 MiB at a time, counting what the gateway accepted."""

    def __init__(self, size: int, fail: Exception | None = None) -> None:
        self.size = size
        self.fail = fail
        self.written = 0
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.closed = False

    def backup(self, f) -> dict:
        try:
            if self.fail is not None:
                raise self.fail
            w = BackupWriter(f, new_header("cid", 7, 2, [Member("n1", "127.0.0.1:1")], self.size, "n1"))
            for off in range(0, self.size, MiB):
                w.write(bytes([off // MiB % 251]) * min(MiB, self.size - off))
                self.written = off + min(MiB, self.size - off)
            w.finish()
            return {"index": 7, "node": "n1"}
        except BaseException as e:
            self.error = e
            raise
        finally:
            self.done.set()

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def gw():
    with FakeFrontDoor() as fd:
        g = make_gateway(fd)
        yield g
        g.stop()


def _get_raw(port: int) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # before connect: a small window
    s.connect(("127.0.0.1", port))
    s.sendall(b"GET /backup HTTP/1.1\r\nHost: x\r\n\r\n")
    return s


def test_the_backup_streams_as_the_client_reads_and_the_gateway_holds_little(gw, tmp_path):
    fake = FakeBackupClient(64 * MiB)
    gw.backups.make_client = lambda token: fake
    s = _get_raw(gw.port)
    try:
        # Nothing read for a while: the backup waits for the client instead of filling memory.
        until = time.monotonic() + 2.0
        while time.monotonic() < until:
            assert fake.written <= 16 * MiB, "the gateway took far more than it could send"
            assert not fake.done.is_set()
            time.sleep(0.05)
        assert fake.written >= MiB  # it did start
        out = tmp_path / "f.bak"
        f = s.makefile("rb")
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += f.read(1)
        headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:] if ": " in line)
        assert head.startswith(b"HTTP/1.1 200 ")
        assert headers["X-Raft-Revision"] == "7"
        with open(out, "wb") as o:
            while chunk := f.read(MiB):
                o.write(chunk)
        assert out.stat().st_size == int(headers["Content-Length"])
        assert verify(str(out)).index == 7  # whole, checksum and all
    finally:
        s.close()
    assert fake.error is None and fake.closed


def test_a_client_that_leaves_stops_the_backup(gw):
    fake = FakeBackupClient(256 * MiB)
    gw.backups.make_client = lambda token: fake
    s = _get_raw(gw.port)
    deadline = time.monotonic() + 10
    while fake.written < MiB and time.monotonic() < deadline:
        time.sleep(0.01)
    s.close()
    assert fake.done.wait(10)
    assert isinstance(fake.error, OSError) and fake.written < fake.size
    deadline = time.monotonic() + 5
    while gw.backups.active and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gw.backups.active == 0 and fake.closed


@pytest.mark.parametrize("error, code", [(NotAuthorized("not authorized: backup needs admin"), 403),
                                         (Unavailable("no leader"), 503)])
def test_errors_before_the_first_byte_are_json(gw, error, code):
    gw.backups.make_client = lambda token: FakeBackupClient(MiB, fail=error)
    c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    try:
        c.request("GET", "/backup")
        r = c.getresponse()
        assert r.status == code and "error" in json.loads(r.read())
    finally:
        c.close()


def test_query_parameters_and_methods_are_refused_before_any_backup(gw):
    fake = FakeBackupClient(MiB)
    gw.backups.make_client = lambda token: fake
    c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    try:
        c.request("GET", "/backup?since=5")
        r = c.getresponse()
        assert r.status == 400 and "since" in json.loads(r.read())["error"]
        c.request("DELETE", "/backup")
        r = c.getresponse()
        assert r.status == 405 and r.getheader("Allow") == "GET"
        r.read()
    finally:
        c.close()
    assert not fake.done.is_set(), "no backup was started"


def test_the_route_needs_an_admin_token_on_a_secure_gateway():
    assert route_op("GET", "/backup", False) == "backup"
    assert required_role("backup") is Role.ADMIN


def test_backups_beyond_the_cap_get_503_until_one_is_over(gw):
    # The cap and the slot bookkeeping are wire/http_long_routes.py's, shared with the watch routes.
    gw.backups.max_active = 1
    slow = FakeBackupClient(256 * MiB)  # its client reads nothing: it streams until the client leaves
    gw.backups.make_client = lambda token: slow
    s = _get_raw(gw.port)
    deadline = time.monotonic() + 10
    while slow.written < MiB and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gw.backups.active == 1
    c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    try:
        r, body = call(c, "GET", "/backup")
        assert r.status == 503 and "1 backups are streaming" in json.loads(body)["error"]
        s.close()  # the first client leaves: its slot is free again
        deadline = time.monotonic() + 10
        while gw.backups.active and time.monotonic() < deadline:
            time.sleep(0.01)
        gw.backups.make_client = lambda token: FakeBackupClient(MiB)
        c.close()
        r, body = call(c, "GET", "/backup")  # http.client reconnects
        assert r.status == 200 and len(body) > MiB
    finally:
        c.close()
