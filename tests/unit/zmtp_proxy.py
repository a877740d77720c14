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


class LocalListener:
    """A TCP listener on a free 127.0.0.1 port whose accept thread hands every connection to
    :meth:`handle`; :meth:`close` closes it and every socket put in ``socks``. Subclasses set
    their own attributes before calling ``__init__`` (the accept thread starts in it)."""

    def __init__(self) -> None:
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.port = self.lsock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.socks: list = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.lsock.accept()
            except OSError:
                return  # closed
            self.socks.append(conn)
            self.handle(conn)

    def handle(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        for s in [self.lsock] + self.socks:
            s.close()


class SignatureFirstProxy(LocalListener):
    """Listens on 127.0.0.1:``port``; forwards to 127.0.0.1:``backend`` (see the module docstring)."""

    def __init__(self, backend: int) -> None:
        self.backend = backend
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        threading.Thread(target=self._connect, args=(conn,), daemon=True).start()

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
            self.socks.append(back)
            back.sendall(first)
        except OSError:
            return
        splice(front, back)
