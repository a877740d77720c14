"""The gateway's limits and query-parameter rules (issues 11 and 13), against the fake front door.

Each rule is checked on both paths: the worker path (no ``submit``: every request through a
pooled Client to the fake front door) and the in-process path (``submit``: the fake node).
A refused request never reaches either: a 4xx means nothing was proposed.
"""
import http.client
import json
import socket
import time

import pytest

from tests.unit.fake_frontdoor import FakeFrontDoor
from tests.unit.test_http import FakeNode, read_response
from raftkv.wire.http import HttpGateway

MAX_VALUE = 1000


@pytest.fixture
def fd():
    with FakeFrontDoor() as f:
        f.store.update({"a": b"1", "k": b"v"})
        yield f


@pytest.fixture
def node(fd):
    n = FakeNode(fd.kv_handler)
    yield n
    n.close()


@pytest.fixture(params=["worker", "submit"])
def gw(request, fd, node):
    kw = {"submit": node.submit} if request.param == "submit" else {}
    g = HttpGateway("127.0.0.1:0", [fd.address], timeout=2.0, max_value=MAX_VALUE, max_key=100,
                    lease_reads=False, header_timeout=0.5, max_connections=4, **kw)
    g.start()
    yield g
    g.stop()


def writes(fd, node):
    """Every write that reached the fake cluster, by either path."""
    return [r for r in fd.requests() + node.requests() if r.op in ("put", "delete", "cas")]


def call(gw, method, path, body=None, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        return r.status, (json.loads(data) if r.getheader("Content-Type") == "application/json" and data else data)
    finally:
        c.close()


def raw(gw, data: bytes, timeout: float = 10.0) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=timeout)
    s.sendall(data)
    return s


def closed_within(s: socket.socket, seconds: float) -> bool:
    """Whether the server closes ``s`` within ``seconds`` (reading and dropping what it sends)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        s.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if s.recv(65536) == b"":
                return True
        except socket.timeout:
            return False
        except ConnectionError:
            return True
    return False


# ------------------------------------------------------------------ bodies


def test_body_over_max_value_is_413_from_content_length_alone(gw, fd, node):
    s = raw(gw, b"PUT /kv/big HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n" + b"x" * 5000)
    t0 = time.monotonic()
    f = s.makefile("rb")
    status, headers, body = read_response(f)
    assert status == 413 and "too large" in json.loads(body)["error"]
    assert headers["connection"] == "close"
    assert time.monotonic() - t0 < 2
    assert closed_within(s, 5)
    s.close()
    assert writes(fd, node) == []


def test_streamed_body_over_max_value_is_413(gw, fd, node):
    chunk = b"x" * 600
    s = raw(gw, b"PUT /kv/big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * 3)
    status, _, _ = read_response(s.makefile("rb"))
    assert status == 413
    assert closed_within(s, 5)
    s.close()
    assert writes(fd, node) == []


def test_body_at_max_value_is_accepted(gw, fd):
    assert call(gw, "PUT", "/kv/full", b"v" * MAX_VALUE)[0] == 204
    assert call(gw, "GET", "/kv/full") == (200, b"v" * MAX_VALUE)


# ------------------------------------------------------------------ heads


def test_huge_url_is_414_without_reading_it_all(gw, fd, node):
    s = raw(gw, b"GET /kv/" + b"a" * 200_000)
    status, _, body = read_response(s.makefile("rb"))
    assert status == 414 and "URL too long" in json.loads(body)["error"]
    s.close()


def test_url_for_largest_key_and_prev_value_is_accepted(gw, fd):
    fd.store["k" * 100] = b"\xff" * MAX_VALUE
    status, _ = call(gw, "PUT", "/kv/" + "k" * 100 + "?prev_value=" + "%FF" * MAX_VALUE, b"new")
    assert status == 400  # %FF is not UTF-8 (see below): refused for that, not for its length
    fd.store["k" * 100] = b"\xc3\xa9" * (MAX_VALUE // 2)
    assert call(gw, "PUT", "/kv/" + "k" * 100 + "?prev_value=" + "%C3%A9" * (MAX_VALUE // 2), b"new")[0] == 204


def test_huge_header_is_431(gw):
    s = raw(gw, b"GET /kv/a HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 200_000 + b"\r\n\r\n")
    status, _, body = read_response(s.makefile("rb"))
    assert status == 431 and "headers too large" in json.loads(body)["error"]
    s.close()


def test_many_headers_are_431(gw):
    s = raw(gw, b"GET /kv/a HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(20_000)) + b"\r\n")
    status, _, _ = read_response(s.makefile("rb"))
    assert status == 431
    s.close()


def test_slowloris_is_closed_after_the_header_timeout(gw):
    s = raw(gw, b"GET /kv/a HTTP/1.1\r\nHost: x\r\n")
    s.settimeout(5)
    status, _, body = read_response(s.makefile("rb"))
    assert status == 408 and "not complete" in json.loads(body)["error"]
    assert closed_within(s, 5)
    s.close()


def test_silent_connection_is_closed_after_the_header_timeout(gw):
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
    assert closed_within(s, 5)
    s.close()


def test_keep_alive_connection_between_requests_is_not_a_slowloris(gw):
    c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    c.request("GET", "/kv/a")
    assert c.getresponse().read() == b"1"
    sock = c.sock
    time.sleep(1.2)  # idle (not mid-request) for longer than the header timeout: the point of the test
    c.request("GET", "/kv/a")
    assert c.getresponse().read() == b"1"
    assert c.sock is sock
    c.close()


def test_connections_beyond_the_cap_are_closed_at_once(gw):
    held = []
    for _ in range(4):
        c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
        c.request("GET", "/kv/a")
        assert c.getresponse().read() == b"1"
        held.append(c)
    extra = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
    extra.sendall(b"GET /kv/a HTTP/1.1\r\nHost: x\r\n\r\n")
    assert closed_within(extra, 3)
    extra.close()
    held.pop().close()
    deadline = time.monotonic() + 5
    while True:  # the gateway notices the close, then a new connection is served again
        try:
            assert call(gw, "GET", "/kv/a") == (200, b"1")
            break
        except (ConnectionError, http.client.RemoteDisconnected):
            assert time.monotonic() < deadline
    for c in held:
        c.close()


# ------------------------------------------------------------------ query parameters


@pytest.mark.parametrize("method,path,word", [
    ("PUT", "/kv/k?ttl=5", "ttl"),
    ("GET", "/kv/k?index=100&wait=5s", "index"),
    ("DELETE", "/kv/k?prev_exist=false", "prev_exist is not supported on DELETE"),
    ("DELETE", "/kv/k?prev_value=%ff", "prev_value"),
    ("GET", "/kv/k?meta=yes", "meta"),
    ("DELETE", "/kv/k?recursive=true", "recursive"),
    ("GET", "/kv/?limit=1e23", "limit"),
    ("GET", "/kv/?limit=" + "9" * 23, "limit"),
    ("GET", "/kv/?limit=-1", "limit"),
    ("GET", "/kv/?limit=%C2%B2", "limit"),
    ("GET", "/kv/?sort=desc", "sort"),
    ("PUT", "/kv/k?prev_value=%ff", "prev_value"),
    ("GET", "/kv/?prefix=%ff", "prefix"),
    ("GET", "/kv/k?consistency=lease", "lease reads are off"),
    ("GET", "/kv/?consistency=lease", "lease reads are off"),
    ("GET", "/status?verbose=1", "verbose"),
    ("GET", "/kv/k?%ff=1", "name"),
])
def test_bad_query_parameters_are_400_naming_them(gw, fd, node, method, path, word):
    status, body = call(gw, method, path, b"x" if method == "PUT" else None)
    assert status == 400, body
    assert word in body["error"]
    assert writes(fd, node) == []
    assert fd.store["k"] == b"v"  # the DELETE ?prev_value=%ff did not delete


def test_delete_with_prev_value_deletes_only_that_value(gw, fd):
    assert call(gw, "DELETE", "/kv/k?prev_value=nope")[0] == 412  # compare failed, nothing deleted
    assert fd.store["k"] == b"v"
    assert call(gw, "DELETE", "/kv/k?prev_value=v")[0] == 204
    assert "k" not in fd.store


def test_valid_query_parameters_still_work(gw, fd):
    assert call(gw, "GET", "/kv/a?consistency=stale") == (200, b"1")
    assert call(gw, "GET", "/kv/a?consistency=") == (200, b"1")
    status, items = call(gw, "GET", "/kv/?prefix=a&limit=1&consistency=stale")
    assert status == 200 and [i["key"] for i in items] == ["a"]
    assert call(gw, "PUT", "/kv/a?prev_value=1", b"2")[0] == 204
    assert call(gw, "PUT", "/kv/a?prev_exist=false", b"3")[0] == 412
    assert call(gw, "PUT", "/kv/sp?prev_exist=false", b"a+b")[0] == 204
    assert call(gw, "PUT", "/kv/sp?prev_value=a%2Bb", b"c")[0] == 204  # %2B is "+", a bare + a space
    assert fd.store["sp"] == b"c"


def test_lease_reads_on_or_unknown_pass_consistency_lease_on(fd):
    for lease in (True, None):
        g = HttpGateway("127.0.0.1:0", [fd.address], timeout=2.0, lease_reads=lease)
        g.start()
        try:
            assert call(g, "GET", "/kv/a?consistency=lease") == (200, b"1")
        finally:
            g.stop()
    assert [r.consistency for r in fd.requests("get")] == ["lease", "lease"]
