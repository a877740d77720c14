"""TLS for the HTTP gateway: a self-signed certificate made at bootstrap, and SSL contexts.

Python's :mod:`ssl` can use certificates but cannot make them, and the ``cryptography`` package
is not a dependency of raftkv; so the certificate is made by the ``openssl`` command-line tool
(present wherever Python's ssl module is built against OpenSSL's tools, i.e. every Linux
distribution and macOS). Without it, :class:`TlsError` tells the user to pass
``--tls-cert/--tls-key``.

The key is an ECDSA P-256 key (fast handshakes, supported by every client); the certificate is
valid for ``localhost``, 127.0.0.1, ::1, this host's name and any hosts given, for 825 days (the
longest that Apple clients accept for a server certificate).
"""
from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
from pathlib import Path
from typing import Iterable, Optional

from .files import PathLike, PrivateFileError, check_private, write_private_file

CERT_FILE = "tls.crt"
KEY_FILE = "tls.key"
VALID_DAYS = 825
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"  # what the gateway offers TLS 1.2 clients


class TlsError(Exception):
    """A certificate that could not be made or loaded."""


def _subject_alt_names(hosts: Iterable[str]) -> str:
    names: list[str] = []
    for host in ["localhost", "127.0.0.1", "::1", socket.gethostname(), *hosts]:
        host = host.strip().strip("[]")
        if not host or host in ("*", "0.0.0.0", "::"):
            continue
        try:
            entry = f"IP:{ipaddress.ip_address(host)}"
        except ValueError:
            if not all(c.isalnum() or c in ".-" for c in host):
                continue  # not a DNS name openssl would accept
            entry = f"DNS:{host}"
        if entry not in names:
            names.append(entry)
    return ",".join(names)


def make_self_signed_cert(directory: PathLike, hosts: Iterable[str] = (), common_name: str = "raftkv",
                          openssl: Optional[str] = None) -> tuple[Path, Path]:
    """Make a self-signed certificate and its key in ``directory``; return (cert path, key path).

    The key is written into a fresh mode-0700 directory, then moved in with mode 0600: it is
    never readable by anyone else. Files already there are replaced.
    """
    exe = openssl or shutil.which("openssl")
    if not exe:
        raise TlsError("cannot make a TLS certificate: the 'openssl' command is not installed; "
                       "install it or give --tls-cert and --tls-key")
    directory = Path(directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".tls-") as tmp:  # mode 0700
        key_tmp, cert_tmp = Path(tmp) / KEY_FILE, Path(tmp) / CERT_FILE
        cmd = [exe, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
               "-keyout", str(key_tmp), "-out", str(cert_tmp), "-days", str(VALID_DAYS), "-sha256",
               "-subj", f"/CN={common_name}", "-addext", f"subjectAltName={_subject_alt_names(hosts)}",
               "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=digitalSignature,keyCertSign"]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise TlsError(f"cannot make a TLS certificate with {exe}: {e}; give --tls-cert and --tls-key") from None
        if done.returncode != 0 or not key_tmp.exists() or not cert_tmp.exists():
            raise TlsError(f"cannot make a TLS certificate: openssl said: {done.stderr.strip()[-500:]}")
        key_path = write_private_file(directory / KEY_FILE, key_tmp.read_bytes())
        cert_path = directory / CERT_FILE
        cert_path.write_bytes(cert_tmp.read_bytes())  # public: the file clients are given
    return cert_path, key_path


def server_ssl_context(cert_path: PathLike, key_path: PathLike) -> ssl.SSLContext:
    """An SSL context for the HTTPS gateway (TLS 1.2 or newer) from a certificate chain and its key.

    The key file must be private (mode 0600 or stricter); :class:`TlsError` says what is wrong.
    """
    try:
        check_private(key_path)
    except (PrivateFileError, FileNotFoundError) as e:
        raise TlsError(f"TLS key: {e}") from None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # TLS 1.2: forward-secret AEAD suites only (no CBC); TLS 1.3's suites are all AEAD already.
    ctx.set_ciphers(TLS12_CIPHERS)
    # A client-initiated TLS 1.2 renegotiation costs the server a handshake each time: refused.
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    try:
        ctx.load_cert_chain(os.fspath(cert_path), os.fspath(key_path))
    except (ssl.SSLError, OSError) as e:
        raise TlsError(f"cannot use TLS certificate {cert_path} with key {key_path}: {e}") from None
    return ctx


def client_ssl_context(cafile: Optional[PathLike] = None) -> ssl.SSLContext:
    """An SSL context for a client of the gateway that trusts ``cafile`` (or the system's CAs)."""
    ctx = ssl.create_default_context(cafile=os.fspath(cafile) if cafile else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx

