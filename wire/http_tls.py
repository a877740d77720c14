"""The TLS context of a secure node's HTTPS gateway (issue 11).

``--tls-cert/--tls-key`` (config ``tls_cert``, ``tls_key``) when given; else the self-signed pair
in the node's directory, ``tls.crt`` and ``tls.key``: the bootstrap node's is made by the secure
bootstrap, a joined node's on its first start with an HTTP gateway (both print the path, for
``curl --cacert``). Anything that cannot be loaded is a :class:`TlsError` saying why.
"""
from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import Optional

from .address import parse_bind
from .security.loopback import is_wildcard
from .security.tls import CERT_FILE, KEY_FILE, TlsError, make_self_signed_cert, server_ssl_context

__all__ = ["gateway_ssl_context", "TlsError"]

log = logging.getLogger("raftkv.wire.http")


def gateway_ssl_context(node_id: str, node_dir: Path, http_bind: str, tls_cert: Optional[str] = None,
                        tls_key: Optional[str] = None) -> ssl.SSLContext:
    """The gateway's server SSL context (module docstring); TlsError if it cannot be made."""
    if tls_cert or tls_key:
        if not (tls_cert and tls_key):
            raise TlsError("--tls-cert and --tls-key go together")
        return server_ssl_context(tls_cert, tls_key)
    cert, key = Path(node_dir) / CERT_FILE, Path(node_dir) / KEY_FILE
    if not cert.exists() and not key.exists():
        host = parse_bind(http_bind)[0].strip("[]")
        make_self_signed_cert(node_dir, hosts=[] if is_wildcard(host) else [host])
        log.warning("%s: secure cluster: the HTTP gateway's self-signed certificate is %s (curl --cacert %s)",
                    node_id, cert, cert)
    elif not cert.exists() or not key.exists():
        missing = cert if not cert.exists() else key
        raise TlsError(f"{missing} is missing (its pair is there): restore it, remove both to make a new "
                       "self-signed pair, or give --tls-cert and --tls-key")
    return server_ssl_context(cert, key)
