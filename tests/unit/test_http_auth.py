"""The secure HTTP gateway: HTTPS, bearer tokens checked before the body, 401/403, open /health."""
import http.client
import json
import socket

import pytest

from raftkv.wire.http import HttpGateway
from raftkv.wire.http_auth import GatewayAuth, route_op
from raftkv.wire.security.auth import TokenTable
from raftkv.wire.security.keys import generate_keypair
from raftkv.wire.security.tls import client_ssl_context, make_self_signed_cert, server_ssl_context
from raftkv.wire.security.tokens import Role, new_client_token
from tests.unit.fake_frontdoor import FakeFrontDoor
from tests.unit.test_http import FakeNode

SERVER_KEY = generate_keypair().public


def token(name, role):
    return new_client_token(name, Role(role), "c1", SERVER_KEY)


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    return make_self_signed_cert(tmp_path_factory.mktemp("tls"), hosts=["127.0.0.1"])


@pytest.fixture
def tokens():
    toks = {role: token(f"{role}er", role) for role in ("read", "write", "admin")}
    table = TokenTable([t.stored() for t in toks.values()])
    return table, {role: t.encode() for role, t in toks.items()}


@pytest.fixture
def sgw(cert, tokens):
    """A secure gateway: HTTPS, tokens, the in-process path to a fake node."""
    with FakeFrontDoor() as fd:
        fd.store["a"] = b"1"
        node = FakeNode(fd.kv_handler)
        g = HttpGateway("127.0.0.1:0", [fd.address], timeout=2.0, submit=node.submit,
                        status_fn=lambda: {"id": "n1", "leader_id": "n1"}, metrics_fn=lambda: b"up 1\n",
                        ssl_context=server_ssl_context(*cert), tokens=tokens[0])
        g.start()
        g.fd, g.node = fd, node
        yield g
        g.stop()
        node.close()


def https(g, cert):
    return http.client.HTTPSConnection("127.0.0.1", g.port, timeout=10, context=client_ssl_context(cert[0]))


def call(conn, method, path, body=None, tok=None, headers=None):
    h = dict(headers or {})
    if tok is not None:
        h["Authorization"] = f"Bearer {tok}"
    conn.request(method, path, body=body, headers=h)
    r = conn.getresponse()
    return r, r.read()


def test_route_ops():
    assert route_op("GET", "/kv/a", False) == "get"
    assert route_op("HEAD", "/kv/a", False) == "get"
    assert route_op("GET", "/kv/", False) == "list"
    assert route_op("PUT", "/kv/a", False) == "put"
    assert route_op("DELETE", "/kv/a", False) == "delete"
    assert route_op("POST", "/kv/a", False) == "put"  # a write route: its 405 only for writers
    assert route_op("GET", "/health", False) == ""
    assert route_op("GET", "/metrics", False) == "status"
    assert route_op("GET", "/metrics", True) == ""
    assert route_op("GET", "/status", False) == "status"
    assert route_op("POST", "/txn", False) == "txn"
    assert route_op("GET", "/watch/p", False) == "watch"
    assert route_op("GET", "/nope", False) == "admin"  # closed unless listed


def test_roles_over_https(sgw, cert, tokens):
    toks = tokens[1]
    c = https(sgw, cert)
    assert call(c, "GET", "/kv/a", tok=toks["read"])[0].status == 200
    r, data = call(c, "PUT", "/kv/a", b"2", tok=toks["read"])
    assert r.status == 403
    assert json.loads(data)["error"].startswith("not authorized: token 'reader' has role read, put needs write")
    c = https(sgw, cert)  # a refused request closes its connection
    assert call(c, "PUT", "/kv/a", b"2", tok=toks["write"])[0].status == 204
    assert call(c, "GET", "/kv/a", tok=toks["admin"])[1] == b"2"
    assert call(c, "GET", "/status", tok=toks["read"])[0].status == 200
    assert call(c, "DELETE", "/kv/a", tok=toks["write"])[0].status == 204
    assert [r.op for r in sgw.node.requests()] == ["get", "put", "get", "delete"]


@pytest.mark.parametrize("auth", [None, "Bearer kvt1_AAAA", "Basic dXNlcjpwdw==", "Bearer", "unknown"])
def test_401_without_or_with_a_bad_token(sgw, cert, auth):
    if auth == "unknown":  # well-formed, never created in this cluster
        auth = "Bearer " + token("stranger", "admin").encode()
    headers = {"Authorization": auth} if auth else {}
    r, data = call(https(sgw, cert), "GET", "/kv/a", headers=headers)
    assert r.status == 401
    assert r.getheader("WWW-Authenticate") == 'Bearer realm="raftkv"'
    assert r.getheader("Content-Type") == "application/json"
    assert json.loads(data)["error"].startswith("not authorized: ")
    assert sgw.node.requests() == []


def test_revoked_token_is_refused_on_the_next_request(sgw, cert, tokens):
    table, toks = tokens
    c = https(sgw, cert)
    assert call(c, "GET", "/kv/a", tok=toks["read"])[0].status == 200  # cached as allowed
    table.replace([t for t in (table.get("writer"), table.get("adminer")) if t is not None])
    r, data = call(c, "GET", "/kv/a", tok=toks["read"])  # the same kept-alive connection
    assert r.status == 401 and "unknown or revoked" in json.loads(data)["error"]


def test_recreated_name_does_not_reuse_the_old_decision(sgw, cert, tokens):
    table, toks = tokens
    c = https(sgw, cert)
    assert call(c, "GET", "/kv/a", tok=toks["read"])[0].status == 200
    table.replace([token("reader", "read").stored()])  # same name, new secret
    assert call(c, "GET", "/kv/a", tok=toks["read"])[0].status == 401


def test_health_open_metrics_closed(sgw, cert, tokens):
    c = https(sgw, cert)
    assert call(c, "GET", "/health")[0].status == 200
    assert call(c, "GET", "/metrics")[0].status == 401
    assert call(https(sgw, cert), "GET", "/metrics", tok=tokens[1]["read"])[1] == b"up 1\n"


def test_metrics_open(cert, tokens):
    with FakeFrontDoor() as fd:
        g = HttpGateway("127.0.0.1:0", [fd.address], metrics_fn=lambda: b"up 1\n",
                        ssl_context=server_ssl_context(*cert), tokens=tokens[0], metrics_open=True)
        g.start()
        try:
            assert call(https(g, cert), "GET", "/metrics")[0].status == 200
            assert call(https(g, cert), "GET", "/status")[0].status == 401
        finally:
            g.stop()


def test_unauthenticated_body_is_never_read(sgw, cert):
    """A 401 comes back after the headers alone, though the body announced is never sent."""
    ctx = client_ssl_context(cert[0])
    with socket.create_connection(("127.0.0.1", sgw.port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            s.sendall(b"PUT /kv/a HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n")
            head = s.recv(4096)
    assert head.startswith(b"HTTP/1.1 401")
    assert sgw.node.requests() == []


def test_plain_http_to_an_https_gateway_gets_no_answer(sgw):
    with socket.create_connection(("127.0.0.1", sgw.port), timeout=10) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        data = s.recv(4096)
    assert not data.startswith(b"HTTP/1.1 200")


def test_decisions_cache_is_bounded(tokens):
    table, toks = tokens
    auth = GatewayAuth(table)
    for i in range(3000):
        t = token(f"t{i}", "read")
        table.replace([t.stored()])
        assert auth.decide(f"Bearer {t.encode()}", "get").ok
    assert len(auth._seen) <= 1024


# ---------------------------------------------------------------- the gateway's TLS context


def test_gateway_tls_made_once_then_reused(tmp_path):
    from raftkv.wire.http_tls import gateway_ssl_context

    gateway_ssl_context("n2", tmp_path, "127.0.0.1:8002")
    cert = (tmp_path / "tls.crt").read_bytes()
    assert oct((tmp_path / "tls.key").stat().st_mode & 0o777) == "0o600"
    gateway_ssl_context("n2", tmp_path, "127.0.0.1:8002")
    assert (tmp_path / "tls.crt").read_bytes() == cert  # not remade at a restart


def test_gateway_tls_errors_say_why(tmp_path, cert):
    from raftkv.wire.http_tls import TlsError, gateway_ssl_context

    gateway_ssl_context("n1", tmp_path / "x", ":8001", str(cert[0]), str(cert[1]))  # given files
    with pytest.raises(TlsError, match="cannot use TLS certificate"):
        gateway_ssl_context("n1", tmp_path, ":8001", str(cert[1]), str(cert[1]))
    (tmp_path / "y").mkdir()
    (tmp_path / "y" / "tls.key").write_text("k")
    (tmp_path / "y" / "tls.key").chmod(0o600)
    with pytest.raises(TlsError, match="tls.crt is missing"):
        gateway_ssl_context("n1", tmp_path / "y", ":8001")
