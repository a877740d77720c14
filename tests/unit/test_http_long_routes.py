"""The gateway's long-lived routes (wire/http_long_routes.py, shared by GET /backup and the watch
routes): at most ``max_active`` at once per gateway, 503 beyond that, and a slot is free again
once its request is over."""
from __future__ import annotations

import http.client
import json
import time

import pytest

from tests.unit.fake_frontdoor import FakeFrontDoor
from tests.unit.test_http import make_gateway
from tests.unit.test_http_backup import MiB, FakeBackupClient, _get_raw


@pytest.fixture
def gw():
    with FakeFrontDoor() as fd:
        g = make_gateway(fd)
        yield g
        g.stop()


def _get(port: int, path: str) -> tuple:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def test_backups_beyond_the_cap_get_503_until_one_is_over(gw):
    gw.backups.max_active = 1
    slow = FakeBackupClient(256 * MiB)  # its client reads nothing: it streams until the client leaves
    gw.backups.make_client = lambda token: slow
    s = _get_raw(gw.port)
    deadline = time.monotonic() + 10
    while slow.written < MiB and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gw.backups.active == 1
    status, body = _get(gw.port, "/backup")
    assert status == 503 and "1 backups are streaming" in json.loads(body)["error"]
    s.close()  # the first client leaves: its slot is free again
    deadline = time.monotonic() + 10
    while gw.backups.active and time.monotonic() < deadline:
        time.sleep(0.01)
    gw.backups.make_client = lambda token: FakeBackupClient(MiB)
    status, body = _get(gw.port, "/backup")
    assert status == 200 and len(body) > MiB


def test_watches_beyond_the_cap_get_503_and_bad_ones_400_first(gw):
    gw.watches.max_active = 0
    status, body = _get(gw.port, "/watch/a?rev=1")
    assert status == 503 and "0 watches are open" in json.loads(body)["error"]
    status, body = _get(gw.port, "/watch/a?rev=x")  # a bad request is told so, cap or not
    assert status == 400 and "rev" in json.loads(body)["error"]
    assert gw.watches.active == 0
