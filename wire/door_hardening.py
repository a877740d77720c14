"""The PING abort guard: a read buffer of at most 7 bytes on every socket that receives from the network.

libzmq 4.3.x aborts the whole process (``Assertion failed: !_io_error``,
stream_engine_base.cpp) when a ZMTP PING waits in a connection's read buffer behind a message
the socket's full receive queue refused, and the connection then resets: the PING is decoded
after the I/O error and its PONG goes through ``out_event``, which asserts there was none. Any
party that completes a handshake with a door can cause it on purpose (tests/unit/
test_peer_no_ping.py; docs/performance.md, "The PING abort"). With ``ZMQ_IN_BATCH_SIZE`` at most 7
bytes, the read that completes the refused message holds at least one byte of it, so at most
6 bytes stay behind: less than the smallest PING frame (flags, size, ``\\x04PING``), and the
connection ends on its I/O error without decoding one. The receive bound (RCVHWM) stays.

``ZMQ_IN_BATCH_SIZE`` is a draft option: only a pyzmq built with the draft API against a libzmq
built with drafts accepts it (contrib/hardened-zmq.sh makes one). pyzmq's wheels refuse it
(EINVAL); the sockets are then left as they are and :func:`available` says so.
"""
from __future__ import annotations

import functools

import zmq

# The largest read buffer that leaves no room for a whole PING frame behind a refused message.
IN_BATCH_SIZE = 7


@functools.lru_cache(maxsize=1)
def available() -> bool:
    """True when this pyzmq and libzmq accept ``ZMQ_IN_BATCH_SIZE`` (a draft-API build)."""
    opt = getattr(zmq, "IN_BATCH_SIZE", None)
    if opt is None or not zmq.has("draft"):
        return False
    ctx = zmq.Context()
    try:
        s = ctx.socket(zmq.ROUTER)
        try:
            s.setsockopt(opt, IN_BATCH_SIZE)
            return bool(s.getsockopt(opt) == IN_BATCH_SIZE)
        except zmq.ZMQError:
            return False
        finally:
            s.close(linger=0)
    finally:
        ctx.term()


def harden(sock: zmq.Socket) -> bool:
    """Give ``sock`` the small read buffer when this build allows it (before it binds or
    connects: libzmq reads the option when a connection starts). True when it did."""
    if not available():
        return False
    sock.setsockopt(zmq.IN_BATCH_SIZE, IN_BATCH_SIZE)
    return True


def describe() -> str:
    """One line for the node's start-up log: whether the doors are guarded, and why not."""
    if available():
        return (f"ZeroMQ doors hardened against the PING abort (libzmq {zmq.zmq_version()} with the "
                f"draft API: {IN_BATCH_SIZE}-byte read buffer)")
    return (f"ZeroMQ doors not hardened against the PING abort (pyzmq {zmq.__version__} without the "
            f"draft API; a party that completes a handshake can abort this node: see docs/operations.md)")
