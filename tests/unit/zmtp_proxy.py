"""A TCP proxy that makes libzmq's greeting race happen every time (issue 11's flake).

It connects each accepted connection to the door behind it only once the client's 10-byte ZMTP
signature is in, and forwards it then. The door reads that signature in its first read and answers
its own signature and version in one segment; the client answers with the rest of its greeting in
one piece; the door reads all of it in one read, and (a mechanism mismatch) hangs up before the
part of its greeting that names its mechanism is sent. What a loaded host does now and then,
here on every connection."""
from __future__ import annotations

import socket
import threading

SIGNATURE = 10


def splice(front: socket.socket, back: socket.socket) -> None:
    """Copy bytes both ways between two connected sockets, each way on its own thread."""
    for a, b in ((front, back), (back, front)):
        threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


def _pipe(a: socket.socket, b: socket.socket) -> None:
    try:
        while True:
            data = a.recv(65536)
            if not data:
                b.shutdown(socket.SHUT_WR)  # pass the close on, as a direct connection would
                return
            b.sendall(data)
    except OSError:
        return


class SignatureFirstProxy:
    """Listens on 127.0.0.1:``port``; forwards to 127.0.0.1:``backend`` (see the module docstring)."""

    def __init__(self, backend: int) -> None:
        self.backend = backend
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.port = self.lsock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.accepted = 0
        self._socks: list = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                front, _ = self.lsock.accept()
            except OSError:
                return  # closed
            self.accepted += 1
            self._socks.append(front)
            threading.Thread(target=self._connect, args=(front,), daemon=True).start()

    def _connect(self, front: socket.socket) -> None:
        try:
            first = b""
            while len(first) < SIGNATURE:
                data = front.recv(SIGNATURE - len(first))
                if not data:
                    front.close()
                    return
                first += data
            back = socket.create_connection(("127.0.0.1", self.backend))
            self._socks.append(back)
            back.sendall(first)
        except OSError:
            return
        splice(front, back)

    def close(self) -> None:
        for s in [self.lsock] + self._socks:
            s.close()
