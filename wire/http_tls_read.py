"""Reading an HTTPS connection's decrypted bytes into a buffer of our own (issue 11, the HTTPS cost).

uvloop's TLS layer hands decrypted bytes to a plain :class:`asyncio.Protocol` by calling
``SSLObject.read(256 KiB)`` for every TLS record. CPython allocates the full 256 KiB for the
result and then shrinks it to the record's size: above glibc's mmap threshold (128 KiB) that is
an ``mmap``, an ``mremap`` and an ``munmap`` per record, with a page fault, and glibc never raises
its threshold because the block it finally frees is small. Measured in one process (TLS 1.3,
AES-256-GCM, a 200-byte GET and a 140-byte answer): 13-15 us per request that way, 1.6 us when
the record is read into a buffer that already exists; on a leader serving GET c=64 over HTTPS
this was most of the extra CPU per request compared with plain HTTP.

For a protocol that offers ``get_buffer``/``buffer_updated`` (an :class:`asyncio.BufferedProtocol`)
uvloop reads the records into that buffer instead. :class:`BufferedTls` is such a protocol in
front of the gateway's :class:`~raftkv.wire.http_server.Connection`: it owns one buffer per
connection and hands each filled part to ``data_received`` as a memoryview, which the HTTP parser
(httptools) reads without a copy and copies what it keeps (URL, headers, body pieces) before
returning, so the buffer is free again when ``data_received`` returns. Plain HTTP connections are
not wrapped (uvloop's TCP path already reads into its own buffer).
"""
from __future__ import annotations

import asyncio
from typing import Any, Optional

__all__ = ["BufferedTls", "READ_BUFFER"]

# Bytes of decrypted data per read: one full TLS record (16 KiB of plaintext) and some. A larger
# request body arrives in several reads (uvloop reads on at once while records are pending).
READ_BUFFER = 16 * 1024 + 256


class BufferedTls(asyncio.BufferedProtocol):
    """An :class:`asyncio.BufferedProtocol` that feeds ``conn`` (an ``asyncio.Protocol``) the bytes
    read into its own buffer; every other callback is passed through unchanged (module docstring)."""

    __slots__ = ("conn", "_buf")

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self._buf: Optional[memoryview] = None  # made on the first read: a refused connection never needs one

    def get_buffer(self, sizehint: int) -> memoryview:
        buf = self._buf
        if buf is None:
            buf = self._buf = memoryview(bytearray(READ_BUFFER))
        return buf

    def buffer_updated(self, nbytes: int) -> None:
        assert self._buf is not None
        self.conn.data_received(self._buf[:nbytes])

    def connection_made(self, transport: Any) -> None:
        self.conn.connection_made(transport)

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self._buf = None
        self.conn.connection_lost(exc)

    def pause_writing(self) -> None:
        self.conn.pause_writing()

    def resume_writing(self) -> None:
        self.conn.resume_writing()

    def eof_received(self) -> Optional[bool]:
        return self.conn.eof_received()
