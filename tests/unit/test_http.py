"""The HTTP gateway against the fake front door, over keep-alive connections."""
import hashlib
import http.client
import json
import queue
import socket
import threading

import pytest

from tests.unit.fake_frontdoor import FakeFrontDoor
from raftkv.wire.http import HttpGateway, idempotency_session, parse_bind
from raftkv.wire.http_server import Mailbox
from raftkv.wire.messages import ClientReply


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


# ---------------------------------------------------------------- the in-process (submit=) path


class FakeNode:
    """The node's batched in-process entry point: ``submit(items)`` queues the batch; a thread
    answers each request with ``route.deliver(reply)``, as FrontDoor.reply_many does."""

    def __init__(self, handler):
        self.handler = handler
        self.batches = []  # the ClientRequests of each submit call
        self.reverse = False  # answer each batch last request first
        self.q = queue.SimpleQueue()
        self.routes = []
        threading.Thread(target=self._run, daemon=True).start()

    def submit(self, items):
        self.batches.append([req for _, req in items])
        self.q.put(list(items))

    def _run(self):
        while True:
            items = self.q.get()
            if items is None:
                return
            replies = [(route, self.handler(req)) for route, req in items]
            self.routes += [route for route, _ in items]
            for route, rep in (reversed(replies) if self.reverse else replies):
                if rep is not None:
                    route.deliver(rep)

    def requests(self, op=None):
        return [r for b in self.batches for r in b if op is None or r.op == op]

    def close(self):
        self.q.put(None)


@pytest.fixture
def node(fd):
    n = FakeNode(fd.kv_handler)  # the same store as the fake front door behind the Client path
    yield n
    n.close()


@pytest.fixture
def lgw(fd, node):
    g = make_gateway(fd, submit=node.submit)
    yield g
    g.stop()


def read_response(f):
    """(status, headers, body) of one response from a buffered socket file."""
    status = int(f.readline().split()[1])
    headers = {}
    while True:
        line = f.readline()
        if line in (b"\r\n", b""):
            break
        k, v = line.decode("latin-1").split(":", 1)
        headers[k.strip().lower()] = v.strip()
    body = f.read(int(headers.get("content-length", 0)))
    return status, headers, body


def test_submit_path_put_get_delete(lgw, node, fd):
    c = http.client.HTTPConnection("127.0.0.1", lgw.port, timeout=10)
    assert call(c, "PUT", "/kv/hello", b"distributed")[0].status == 204
    r, data = call(c, "GET", "/kv/hello")
    assert (r.status, data) == (200, b"distributed")
    assert call(c, "GET", "/kv/hello?consistency=stale")[1] == b"distributed"
    assert call(c, "DELETE", "/kv/hello")[0].status == 204
    r, data = call(c, "GET", "/kv/hello")
    assert r.status == 404 and json.loads(data)["error"] == "key not found"
    assert call(c, "DELETE", "/kv/hello")[0].status == 404
    assert call(c, "PUT", "/kv/a?prev_value=9", b"2")[0].status == 412
    assert call(c, "PUT", "/kv/a?prev_value=1", b"2")[0].status == 204
    assert call(c, "PUT", "/kv/new?prev_exist=false", b"3")[0].status == 204
    assert call(c, "PUT", "/kv/sp%20ace", b"\x00")[0].status == 204 and fd.store["sp ace"] == b"\x00"
    assert [r.op for r in node.requests()] == ["put", "get", "get", "delete", "get", "delete", "cas", "cas", "cas",
                                               "put"]
    assert node.requests("get")[1].consistency == "stale"
    assert fd.requests() == []  # everything went in-process
    c.close()


def test_submit_path_rejects_bad_input_before_the_node(lgw, node):
    c = http.client.HTTPConnection("127.0.0.1", lgw.port, timeout=10)
    assert call(c, "PUT", "/kv/%FF", b"x")[0].status == 400
    assert call(c, "GET", "/kv/a?consistency=bogus")[0].status == 400
    assert call(c, "PUT", "/kv/a?prev_exist=maybe", b"x")[0].status == 400
    assert call(c, "PUT", "/kv/a", b"x", {"Idempotency-Key": " "})[0].status == 400
    assert call(c, "PUT", "/kv/", b"x")[0].status == 400
    assert node.requests() == []
    c.close()


def test_pipelined_requests_go_in_one_submit_and_answer_in_order(lgw, node):
    node.reverse = True  # the node answers the batch backwards: the gateway must reorder
    reqs = b"".join(b"PUT /kv/p%d HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nv%d" % (i, i) for i in range(10))
    reqs += b"".join(b"GET /kv/p%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(10))
    with socket.create_connection(("127.0.0.1", lgw.port), timeout=10) as s:
        s.sendall(reqs)
        f = s.makefile("rb")
        answers = [read_response(f) for _ in range(20)]
    assert [a[0] for a in answers] == [204] * 10 + [200] * 10
    assert [a[2] for a in answers[10:]] == [b"v%d" % i for i in range(10)]
    assert len(node.requests()) == 20
    assert len(node.batches) <= 2  # parsed in one loop iteration, submitted as one call


def test_write_sessions_and_idempotency_key(lgw, node):
    c = http.client.HTTPConnection("127.0.0.1", lgw.port, timeout=10)
    for _ in range(3):
        assert call(c, "PUT", "/kv/k", b"v")[0].status == 204
    assert call(c, "PUT", "/kv/k", b"v", {"Idempotency-Key": "order-42"})[0].status == 204
    puts = node.requests("put")
    assert len({p.client_id for p in puts[:3]}) == 1 and [p.seq for p in puts[:3]] == [1, 2, 3]
    assert (puts[3].client_id, puts[3].seq) == idempotency_session("order-42")
    c.close()


def test_not_leader_is_forwarded_with_the_same_session(fd):
    n = FakeNode(lambda req: ClientReply("not_leader", leader_id="node1", leader_client=fd.address))
    g = make_gateway(fd, submit=n.submit)
    try:
        c = http.client.HTTPConnection("127.0.0.1", g.port, timeout=10)
        assert call(c, "PUT", "/kv/f", b"1")[0].status == 204
        assert call(c, "GET", "/kv/f")[1] == b"1"
        assert call(c, "PUT", "/kv/f", b"2", {"Idempotency-Key": "x"})[0].status == 204
        local, forwarded = n.requests("put"), fd.requests("put")
        assert (local[0].client_id, local[0].seq) == (forwarded[0].client_id, forwarded[0].seq)
        # Told who leads, the gateway goes there directly for a while (stale reads stay local).
        assert len(local) == 1 and len(forwarded) == 2 and len(n.requests("get")) == 0
        assert (forwarded[1].client_id, forwarded[1].seq) == idempotency_session("x")
        assert fd.store["f"] == b"2"
        call(c, "GET", "/kv/f?consistency=stale")
        assert n.requests("get")[0].consistency == "stale"
        c.close()
    finally:
        g.stop()
        n.close()


def test_silent_node_is_retried_through_the_client(fd):
    n = FakeNode(lambda req: None)  # never answers
    g = make_gateway(fd, submit=n.submit, timeout=0.9)  # one attempt: 0.3 s
    try:
        c = http.client.HTTPConnection("127.0.0.1", g.port, timeout=10)
        assert call(c, "PUT", "/kv/s", b"1")[0].status == 204
        assert fd.requests("put")[0].client_id == n.requests("put")[0].client_id
        n.routes[0].deliver(ClientReply("ok"))  # a late answer is ignored
        assert call(c, "GET", "/kv/s")[1] == b"1"
        c.close()
    finally:
        g.stop()
        n.close()
    n.routes[0].deliver(ClientReply("ok"))  # and so is one after the gateway stopped


def test_submit_path_expired_session(fd):
    # The node forgot the session of a write: the gateway's own fresh session is renewed (nothing
    # was applied), an Idempotency-Key's is not (the outcome is unknown: 503).
    n = FakeNode(lambda req: ClientReply("expired", leader_id="node1"))
    g = make_gateway(fd, submit=n.submit)
    try:
        c = http.client.HTTPConnection("127.0.0.1", g.port, timeout=10)
        assert call(c, "PUT", "/kv/e", b"1")[0].status == 204
        local, forwarded = n.requests("put")[0], fd.requests("put")[0]
        assert forwarded.client_id != local.client_id and fd.store["e"] == b"1"
        r, data = call(c, "PUT", "/kv/e", b"2", {"Idempotency-Key": "k"})
        body = json.loads(data)
        assert r.status == 503 and "may still be applied" in body["error"] and body["leader"] == "node1"
        assert len(fd.requests("put")) == 1 and fd.store["e"] == b"1"
        c.close()
    finally:
        g.stop()
        n.close()


def test_submit_path_invalid_is_400_or_413(fd):
    n = FakeNode(lambda req: ClientReply("invalid", error="value too large: 9 > 8 bytes" if req.op == "put"
                                         else "key too strange"))
    g = make_gateway(fd, submit=n.submit)
    try:
        c = http.client.HTTPConnection("127.0.0.1", g.port, timeout=10)
        r, data = call(c, "PUT", "/kv/a", b"123456789")
        assert r.status == 413 and json.loads(data)["error"].startswith("value too large")
        r, data = call(c, "DELETE", "/kv/a")
        assert r.status == 400 and json.loads(data)["error"] == "key too strange"
        assert fd.requests() == []  # refused: never retried elsewhere
        c.close()
    finally:
        g.stop()
        n.close()


def test_submit_path_unavailable_is_503(fd):
    n = FakeNode(lambda req: ClientReply("unavailable", error="no leader"))
    fd.handler = lambda req: ClientReply("unavailable", error="no leader")
    g = make_gateway(fd, submit=n.submit, timeout=0.5)
    try:
        c = http.client.HTTPConnection("127.0.0.1", g.port, timeout=10)
        r, data = call(c, "PUT", "/kv/a", b"1")
        assert r.status == 503 and "may still be applied" in json.loads(data)["error"]
        r, data = call(c, "GET", "/kv/a")
        assert r.status == 503 and json.loads(data)["error"] == "no leader or no quorum"
        c.close()
    finally:
        g.stop()
        n.close()


def test_submit_path_invalid_is_413_and_keeps_the_connection(fd, node):
    node.handler = lambda req: (ClientReply("invalid", error="value too large: 9 > 1 bytes") if req.op == "put"
                                else fd.kv_handler(req))
    g = make_gateway(fd, submit=node.submit)
    try:
        c = http.client.HTTPConnection("127.0.0.1", g.port, timeout=10)
        r, data = call(c, "PUT", "/kv/big", b"x" * 9)
        assert r.status == 413 and "too large" in json.loads(data)["error"]
        assert call(c, "GET", "/kv/a")[0].status == 200
        c.close()
    finally:
        g.stop()


def test_head_expect_continue_and_http10(lgw):
    with socket.create_connection(("127.0.0.1", lgw.port), timeout=10) as s:
        f = s.makefile("rb")
        s.sendall(b"HEAD /kv/a HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, _ = read_response_head(f)
        assert status == 200 and headers["content-length"] == "1"
        s.sendall(b"PUT /kv/e HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
        assert f.readline() == b"HTTP/1.1 100 Continue\r\n" and f.readline() == b"\r\n"
        s.sendall(b"abc")
        assert read_response(f)[0] == 204
        s.sendall(b"GET /kv/e HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(f)[2] == b"abc"
    with socket.create_connection(("127.0.0.1", lgw.port), timeout=10) as s:
        f = s.makefile("rb")
        s.sendall(b"GET /kv/a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        status, headers, body = read_response(f)
        assert (status, body, headers["connection"]) == (200, b"1", "keep-alive")
        s.sendall(b"GET /kv/a HTTP/1.0\r\n\r\n")
        status, headers, body = read_response(f)
        assert (status, body, headers["connection"]) == (200, b"1", "close")
        assert f.read() == b""  # closed


def read_response_head(f):
    status = int(f.readline().split()[1])
    headers = {}
    while (line := f.readline()) not in (b"\r\n", b""):
        k, v = line.decode("latin-1").split(":", 1)
        headers[k.strip().lower()] = v.strip()
    return status, headers, b""


def test_connection_close_and_garbage(lgw):
    with socket.create_connection(("127.0.0.1", lgw.port), timeout=10) as s:
        f = s.makefile("rb")
        s.sendall(b"GET /kv/a HTTP/1.1\r\nConnection: close\r\n\r\nGET /kv/a HTTP/1.1\r\n\r\n")
        status, headers, body = read_response(f)
        assert (status, body, headers["connection"]) == (200, b"1", "close")
        assert f.read() == b""  # the pipelined request after it is not answered
    with socket.create_connection(("127.0.0.1", lgw.port), timeout=10) as s:
        f = s.makefile("rb")
        s.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        status, headers, body = read_response(f)
        assert status == 400 and headers["connection"] == "close" and "error" in json.loads(body)
        assert f.read() == b""


def test_mailbox_wakes_the_loop_once_per_burst():
    class Loop:
        calls = 0

        def call_soon_threadsafe(self, fn):
            Loop.calls += 1

    drained = []
    box = Mailbox(Loop(), None)
    for i in range(100):
        box.put(i, "reply")
    assert Loop.calls == 1 and len(box.q) == 100
    box.armed = False  # what the loop's drain does first
    drained += box.q
    box.q.clear()
    box.put(100, "reply")
    assert Loop.calls == 2


def test_watches_beyond_the_cap_get_503_and_bad_ones_400_first(gw, conn):
    # The cap is wire/http_long_routes.py's, shared with GET /backup.
    gw.watches.max_active = 0
    r, data = call(conn, "GET", "/watch/a?rev=1")
    assert r.status == 503 and "0 watches are open" in json.loads(data)["error"]
    r, data = call(conn, "GET", "/watch/a?rev=x")  # a bad request is told so, cap or not
    assert r.status == 400 and "rev" in json.loads(data)["error"]
    assert gw.watches.active == 0
