"""HTTPS connections read through BufferedTls (wire/http_tls_read.py): bodies larger than its
buffer, pipelined requests and a client that closes arrive intact; the buffer is reused."""
import socket

from raftkv.wire.http_tls_read import READ_BUFFER, BufferedTls
from raftkv.wire.security.tls import client_ssl_context

from tests.unit.test_http_auth import call, cert, https, sgw, tokens  # noqa: F401 (fixtures)


class _Conn:
    """An asyncio.Protocol stand-in that records what reaches it."""

    def __init__(self):
        self.got, self.events = [], []

    def data_received(self, data):
        self.got.append(bytes(data))

    def connection_made(self, t):
        self.events.append(("made", t))

    def connection_lost(self, exc):
        self.events.append(("lost", exc))

    def pause_writing(self):
        self.events.append("pause")

    def resume_writing(self):
        self.events.append("resume")

    def eof_received(self):
        self.events.append("eof")
        return True


def test_buffer_is_reused_and_every_callback_reaches_the_connection():
    conn = _Conn()
    p = BufferedTls(conn)
    p.connection_made("t")
    b1 = p.get_buffer(-1)
    assert len(b1) == READ_BUFFER
    b1[:5] = b"hello"
    p.buffer_updated(5)
    b2 = p.get_buffer(100_000)
    assert b2 is b1  # one buffer per connection, whatever size is hinted
    b2[:3] = b"abc"
    p.buffer_updated(3)
    p.pause_writing()
    p.resume_writing()
    assert p.eof_received() is True
    p.connection_lost(None)
    assert conn.got == [b"hello", b"abc"]
    assert conn.events == [("made", "t"), "pause", "resume", "eof", ("lost", None)]


def test_a_body_larger_than_the_buffer_arrives_intact_over_https(sgw, cert, tokens):  # noqa: F811
    value = bytes(range(256)) * (5 * READ_BUFFER // 256)  # five buffers' worth, no repeating record
    c = https(sgw, cert)
    r, _ = call(c, "PUT", "/kv/big", body=value, tok=tokens[1]["write"])
    assert r.status in (200, 204)
    r, got = call(c, "GET", "/kv/big", tok=tokens[1]["read"])
    assert r.status == 200 and got == value


def test_pipelined_requests_in_one_record_are_answered_in_order(sgw, cert, tokens):  # noqa: F811
    tok = tokens[1]["write"]
    reqs = b"".join(f"PUT /kv/p{i} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n"
                    f"Content-Length: 2\r\n\r\nv{i}".encode() for i in range(5))
    reqs += f"GET /kv/p3 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\nConnection: close\r\n\r\n".encode()
    ctx = client_ssl_context(cert[0])
    with socket.create_connection(("127.0.0.1", sgw.port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            s.sendall(reqs)  # one write: the requests share TLS records
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    answers = data.split(b"HTTP/1.1 ")[1:]
    assert len(answers) == 6
    assert all(a.startswith((b"200", b"204")) for a in answers)
    assert answers[-1].endswith(b"v3")
