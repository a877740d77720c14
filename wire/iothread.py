"""The plumbing shared by the peer transport and the front door: one I/O thread owns a socket
set, and any other thread hands it frames through an inproc PUSH socket of its own.

ZeroMQ sockets must not be shared between threads, so each sending thread gets its own PUSH
(thread-local, made on first use), all connected to the one PULL the I/O thread polls.
"""
from __future__ import annotations

import threading
from typing import Optional

import zmq


class IoThread:
    """Base of a component whose sockets one thread owns. Subclasses implement ``_run`` (poll
    ``self._pull`` among their own sockets) and call ``_push().send_multipart`` to hand over."""

    def __init__(self, ctx: zmq.Context, thread_name: str) -> None:
        self.ctx = ctx
        self._thread_name = thread_name
        self._inproc = f"inproc://{thread_name}-{id(self)}"
        self._local = threading.local()
        self._pushes: list = []
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._pull = ctx.socket(zmq.PULL)
        self._pull.setsockopt(zmq.LINGER, 0)
        self._pull.bind(self._inproc)

    def _push(self) -> zmq.Socket:
        """This thread's PUSH socket to the I/O thread."""
        s = getattr(self._local, "push", None)
        if s is None:
            s = self.ctx.socket(zmq.PUSH)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.SNDHWM, 0)  # never block a sender: the I/O thread drains fast
            s.connect(self._inproc)
            self._local.push = s
            self._pushes.append(s)
        return s

    def _run(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self._thread_name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        for s in self._pushes:
            try:
                s.close(linger=0)
            except zmq.ZMQError:
                pass
