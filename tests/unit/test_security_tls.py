"""The gateway's TLS: a self-signed certificate that a client trusting it accepts, and others refuse."""
import os
import socket
import ssl
import stat
import threading
import warnings

import pytest

from raftkv.wire.security.tls import TlsError, client_ssl_context, make_self_signed_cert, server_ssl_context


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    return make_self_signed_cert(tmp_path_factory.mktemp("tls"), hosts=["node1.example", "10.9.8.7"])


class TinyHttpsServer:
    """One-request-at-a-time HTTPS server on 127.0.0.1 answering 200 with a fixed body."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(10)
        self.port = self.sock.getsockname()[1]
        self.errors = []
        self.stopping = False
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.stopping:
                conn.close()
                return
            try:
                with self.ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(4096)
                    tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            except (ssl.SSLError, OSError) as e:
                self.errors.append(e)
                conn.close()

    def get(self, client_ctx, server_hostname="localhost"):
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as raw:
            with client_ctx.wrap_socket(raw, server_hostname=server_hostname) as tls:
                tls.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
                data = b""
                while chunk := tls.recv(4096):
                    data += chunk
                return data

    def close(self):
        self.stopping = True
        socket.create_connection(("127.0.0.1", self.port), timeout=10).close()  # wakes accept()
        self.thread.join(timeout=10)
        self.sock.close()


def test_certificate_and_private_key_files(cert):
    cert_path, key_path = cert
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    assert cert_path.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    assert not [p for p in cert_path.parent.iterdir() if p.name.startswith(".")]  # no temp dir left


def test_client_trusting_the_certificate_is_served(cert):
    server = TinyHttpsServer(server_ssl_context(*cert))
    try:
        for name in ["localhost", "127.0.0.1", "node1.example", "10.9.8.7"]:
            assert server.get(client_ssl_context(cert[0]), server_hostname=name).endswith(b"ok")
    finally:
        server.close()


def test_client_not_trusting_the_certificate_refuses_it(cert):
    server = TinyHttpsServer(server_ssl_context(*cert))
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            server.get(client_ssl_context())  # system CAs only
        with pytest.raises(ssl.SSLCertVerificationError):
            server.get(client_ssl_context(cert[0]), server_hostname="other.example")  # not a name it holds
    finally:
        server.close()


def test_a_certificate_made_elsewhere_is_not_trusted(cert, tmp_path):
    other_cert, _ = make_self_signed_cert(tmp_path)
    server = TinyHttpsServer(server_ssl_context(*cert))
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            server.get(client_ssl_context(other_cert))
    finally:
        server.close()


def test_server_context_refuses_a_readable_key_or_a_mismatched_pair(cert, tmp_path):
    cert_path, key_path = cert
    loose = tmp_path / "loose.key"
    loose.write_bytes(key_path.read_bytes())
    os.chmod(loose, 0o644)
    with pytest.raises(TlsError, match="chmod 600"):
        server_ssl_context(cert_path, loose)
    _, other_key = make_self_signed_cert(tmp_path / "other")
    with pytest.raises(TlsError, match="cannot use"):
        server_ssl_context(cert_path, other_key)
    with pytest.raises(TlsError):
        server_ssl_context(cert_path, tmp_path / "missing.key")


def test_missing_openssl_is_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(TlsError, match="--tls-cert"):
        make_self_signed_cert(tmp_path, openssl=str(tmp_path / "no-openssl"))
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(TlsError, match="not installed.*--tls-cert"):
        make_self_signed_cert(tmp_path)


def _negotiated(server, client_ctx):
    """(version, cipher name) the server's handshake with ``client_ctx`` settled on."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        with client_ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            got = tls.version(), tls.cipher()[0]
            tls.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
            while tls.recv(4096):
                pass
            return got


def test_tls13_or_tls12_with_forward_secret_aead_suites_only(cert):
    server = TinyHttpsServer(server_ssl_context(*cert))
    try:
        assert _negotiated(server, client_ssl_context(cert[0]))[0] == "TLSv1.3"
        tls12 = client_ssl_context(cert[0])
        tls12.maximum_version = ssl.TLSVersion.TLSv1_2
        version, cipher = _negotiated(server, tls12)
        assert version == "TLSv1.2" and cipher.startswith("ECDHE-") and ("GCM" in cipher or "CHACHA20" in cipher)
        cbc = client_ssl_context(cert[0])
        cbc.maximum_version = ssl.TLSVersion.TLSv1_2
        cbc.set_ciphers("ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA384")  # CBC suites only
        with pytest.raises(ssl.SSLError):
            _negotiated(server, cbc)
        old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        old.load_verify_locations(cert[0])
        with warnings.catch_warnings():  # the client side's old versions are deprecated: that is the point
            warnings.simplefilter("ignore", DeprecationWarning)
            old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
            old.maximum_version = ssl.TLSVersion.TLSv1_1
        old.set_ciphers("ALL:@SECLEVEL=0")
        with pytest.raises(ssl.SSLError):
            _negotiated(server, old)
    finally:
        server.close()
    assert server_ssl_context(*cert).options & ssl.OP_NO_RENEGOTIATION
