"""The HTTP gateway against the fake front door, over keep-alive connections."""
import hashlib
import http.client
import json
import socket

import pytest

from tests.unit.fake_frontdoor import FakeFrontDoor
from wire.http import HttpGateway, idempotency_session, parse_bind
from wire.messages import ClientReply


@pytest.fixture
def fd():
    with FakeFrontDoor() as f:
        f.store.update({"a": b"1", "bin": b"\xff\x00", "dir/x": b"X", "dir/y": b"Y"})
        yield f


def make_gateway(fd, **kw):
    gw = HttpGateway("127.0.0.1:0", [fd.address], timeout=kw.pop("timeout", 2.0), **kw)
    gw.start()
    return gw


@pytest.fixture
def gw(fd):
    g = make_gateway(fd)
    yield g
    g.stop()


@pytest.fixture
def conn(gw):
    c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    yield c
    c.close()


def call(conn, method, path, body=None, headers=None):
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    return r, data


def test_keep_alive_put_get_delete(conn):
    r, data = call(conn, "PUT", "/kv/hello", b"distributed")
    assert (r.status, data) == (204, b"")
    sock = conn.sock
    r, data = call(conn, "GET", "/kv/hello")
    assert (r.status, data) == (200, b"distributed")
    assert r.getheader("Content-Type") == "application/octet-stream"
    assert r.getheader("Content-Length") == "11"
    r, _ = call(conn, "DELETE", "/kv/hello")
    assert r.status == 204
    r, data = call(conn, "GET", "/kv/hello")
    assert r.status == 404
    assert json.loads(data)["error"] == "key not found"
    assert conn.sock is sock  # every request went over the same connection


def test_errors_are_json_with_content_length(conn):
    r, data = call(conn, "GET", "/kv/missing")
    assert r.getheader("Content-Type") == "application/json"
    assert int(r.getheader("Content-Length")) == len(data)
    body = json.loads(data)
    assert set(body) >= {"error", "leader"}


def test_binary_values_and_encoded_keys(conn, fd):
    r, _ = call(conn, "PUT", "/kv/sp%20ace/%C3%A9", b"\x00\xff")
    assert r.status == 204
    assert fd.store["sp ace/é"] == b"\x00\xff"
    r, data = call(conn, "GET", "/kv/sp%20ace/%C3%A9")
    assert data == b"\x00\xff"


def test_consistency_param(conn, fd):
    r, data = call(conn, "GET", "/kv/a?consistency=stale")
    assert (r.status, data) == (200, b"1")
    assert fd.requests("get")[-1].consistency == "stale"
    r, _ = call(conn, "GET", "/kv/a?consistency=bogus")
    assert r.status == 400


def test_list(conn):
    r, data = call(conn, "GET", "/kv/?prefix=dir/")
    assert r.status == 200
    assert json.loads(data) == [{"key": "dir/x", "value": "X"}, {"key": "dir/y", "value": "Y"}]
    r, data = call(conn, "GET", "/kv/?prefix=b&limit=1")
    assert json.loads(data) == [{"key": "bin", "value": "/wA=", "value_b64": True}]
    r, _ = call(conn, "GET", "/kv/?limit=x")
    assert r.status == 400


def test_cas_and_create(conn, fd):
    r, data = call(conn, "PUT", "/kv/a?prev_value=9", b"2")
    assert r.status == 412 and json.loads(data)["error"] == "compare failed"
    r, _ = call(conn, "PUT", "/kv/a?prev_value=1", b"2")
    assert r.status == 204 and fd.store["a"] == b"2"
    r, _ = call(conn, "PUT", "/kv/a?prev_exist=false", b"3")
    assert r.status == 412
    r, _ = call(conn, "PUT", "/kv/new?prev_exist=false", b"3")
    assert r.status == 204 and fd.store["new"] == b"3"
    assert fd.requests("cas")[-1].expect_absent is True
    r, _ = call(conn, "PUT", "/kv/a?prev_exist=maybe", b"3")
    assert r.status == 400


def test_bad_input_400(conn, fd):
    assert call(conn, "PUT", "/kv/", b"x")[0].status == 400
    assert call(conn, "DELETE", "/kv/")[0].status == 400
    assert call(conn, "PUT", "/kv/%FF", b"x")[0].status == 400
    assert fd.requests("put") == []  # nothing was proposed


def test_value_too_large_413(conn, fd):
    fd.push(ClientReply("invalid", error="value too large: 2000000 > 1048576 bytes"))
    r, data = call(conn, "PUT", "/kv/big", b"x" * 1000)
    assert r.status == 413 and "too large" in json.loads(data)["error"]
    r, _ = call(conn, "GET", "/kv/a")  # the connection is still usable
    assert r.status == 200


def test_body_over_gateway_limit_413_and_close(fd):
    g = make_gateway(fd, max_body=10)
    try:
        c = http.client.HTTPConnection("127.0.0.1", g.port, timeout=10)
        r, _ = call(c, "PUT", "/kv/big", b"x" * 100)
        assert r.status == 413 and r.getheader("Connection") == "close"
        c.close()
    finally:
        g.stop()


def test_idempotency_key_maps_to_session(conn, fd):
    headers = {"Idempotency-Key": "order-42"}
    assert call(conn, "PUT", "/kv/k", b"v", headers)[0].status == 204
    assert call(conn, "PUT", "/kv/k", b"v", headers)[0].status == 204
    expected = "idem-" + hashlib.sha256(b"order-42").hexdigest()[:32]
    assert idempotency_session("order-42") == (expected, 1)
    puts = fd.requests("put")
    assert [(p.client_id, p.seq) for p in puts] == [(expected, 1), (expected, 1)]
    call(conn, "PUT", "/kv/k", b"v")  # without the header: the gateway's own session
    assert fd.requests("put")[-1].client_id != expected


def test_unavailable_is_503_never_404(fd):
    fd.handler = lambda req: ClientReply("unavailable", error="no leader")
    g = make_gateway(fd, timeout=0.5)
    try:
        c = http.client.HTTPConnection("127.0.0.1", g.port, timeout=10)
        r, data = call(c, "GET", "/kv/a")
        assert r.status == 503
        body = json.loads(data)
        assert body["error"] and "leader" in body
        r, data = call(c, "PUT", "/kv/a", b"1")
        assert r.status == 503
        assert "may still be applied" in json.loads(data)["error"]
        r, _ = call(c, "GET", "/health")
        assert r.status == 503
        c.close()
    finally:
        g.stop()


def test_timed_out_write_says_may_be_applied(fd):
    fd.handler = lambda req: None if req.op == "put" else fd.kv_handler(req)
    g = make_gateway(fd, timeout=0.6)
    try:
        c = http.client.HTTPConnection("127.0.0.1", g.port, timeout=10)
        r, data = call(c, "PUT", "/kv/a", b"1")
        assert r.status == 503
        assert json.loads(data)["error"] == "timed out; the write may still be applied"
        c.close()
    finally:
        g.stop()


def test_status_and_health_from_local_node(conn, fd):
    r, data = call(conn, "GET", "/status")
    assert r.status == 200 and json.loads(data)["id"] == "node1"
    r, data = call(conn, "GET", "/health")
    assert r.status == 200 and json.loads(data) == {"leader": "node1"}
    fd.leader_id = None
    r, _ = call(conn, "GET", "/health")
    assert r.status == 503


def test_status_fn_and_metrics_fn(fd):
    g = HttpGateway("127.0.0.1:0", [fd.address], status_fn=lambda: {"id": "n9", "leader_id": None},
                    metrics_fn=lambda: b"kv_up 1\n")
    g.start()
    try:
        c = http.client.HTTPConnection("127.0.0.1", g.port, timeout=10)
        r, data = call(c, "GET", "/status")
        assert json.loads(data)["id"] == "n9"
        assert call(c, "GET", "/health")[0].status == 503
        r, data = call(c, "GET", "/metrics")
        assert (r.status, data) == (200, b"kv_up 1\n")
        assert r.getheader("Content-Type").startswith("text/plain; version=0.0.4")
        c.close()
    finally:
        g.stop()
    assert fd.requests() == []


def test_metrics_404_without_fn(conn):
    assert call(conn, "GET", "/metrics")[0].status == 404


def test_unknown_path_and_method(conn):
    assert call(conn, "GET", "/nope")[0].status == 404
    r, _ = call(conn, "POST", "/kv/a", b"x")
    assert r.status == 405 and "PUT" in r.getheader("Allow")


def test_chunked_body(gw, fd):
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        s.sendall(b"PUT /kv/c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        assert s.recv(1000).startswith(b"HTTP/1.1 204")
    assert fd.store["c"] == b"abcde"


def test_stop_ends_open_connections(fd):
    g = make_gateway(fd)
    c = http.client.HTTPConnection("127.0.0.1", g.port, timeout=10)
    assert call(c, "GET", "/kv/a")[0].status == 200
    g.stop()
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        call(c, "GET", "/kv/a")
    c.close()


def test_parse_bind():
    assert parse_bind(":8001") == ("0.0.0.0", 8001)
    assert parse_bind("127.0.0.1:8002") == ("127.0.0.1", 8002)
    with pytest.raises(ValueError):
        parse_bind("8001")
