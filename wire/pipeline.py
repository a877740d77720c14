"""Pipelined requests: many in flight over one DEALER socket to the leader's front door.

A :class:`wire.client.Client` call waits for its answer before the next request leaves (REQ,
Lazy Pirate), so one client gets one request per round trip. ``Client.put_many`` and
``Client.get_many`` send up to ``window`` requests before reading answers instead; the leader
then group-commits them in large batches. Each request carries one tag frame before the REQ
delimiter (the front door returns it with the reply), so answers may come in any order.

Failures are handled as in the synchronous client: a redirect or "no leader" sends the
unanswered requests again to the leader (found through the Client's own call), and so does
silence for ``attempt_timeout``. Writes keep their ``(client_id, seq)`` across resends, so each
is applied at most once; the window stays below the server's per-session result window (1,024)
so that a resend is always recognised.
"""
from __future__ import annotations

import collections
import struct
import time
from typing import Optional

import zmq

from .messages import ClientReply, ClientRequest, DecodeError, decode_client, encode_client

MAX_WINDOW = 512  # half the FSM's per-session result window (actors/fsm.py)
_TAG = struct.Struct(">I")
_DONE = ("ok", "not_found", "cas_failed")
_AGAIN = ("not_leader", "unavailable", "timeout")


def pipelined(client, reqs: list, window: int) -> list:  # noqa: ANN001 (Client: circular import)
    """Send ``reqs`` (ClientRequests, writes already tagged with their session) with at most
    ``window`` unanswered; return their final ClientReplies in order. Raises what
    ``Client._call`` raises (InvalidRequest, Timeout, Unavailable)."""
    from .client import ClientError, InvalidRequest, Timeout

    n = len(reqs)
    replies: list = [None] * n
    if n == 0:
        return replies
    window = max(1, min(window, MAX_WINDOW))
    frames = [encode_client(r) for r in reqs]
    todo = collections.deque(range(n))
    inflight: set = set()
    per_attempt = client.attempt_timeout or min(2.0, max(0.1, client.timeout / 3))
    ctx = zmq.Context.instance()
    sock: Optional[zmq.Socket] = None
    last_progress = time.monotonic()
    try:
        while todo or inflight:
            if time.monotonic() - last_progress > client.timeout:
                what = "writes" if reqs[0].op != "get" else "reads"
                raise Timeout(f"{len(todo) + len(inflight)} pipelined {what} without an answer for "
                              f"{client.timeout:g}s" + ("; some may have been applied" if what == "writes" else ""))
            if sock is None:
                # The synchronous path finds the leader (redirects, backoff, deadline) and
                # settles the first request on the way.
                i = todo.popleft()
                replies[i] = client._call(reqs[i], write=reqs[i].op != "get")  # noqa: SLF001
                last_progress = time.monotonic()
                if not todo or client.leader is None:
                    continue
                sock = ctx.socket(zmq.DEALER)
                sock.setsockopt(zmq.LINGER, 0)
                sock.setsockopt(zmq.SNDHWM, 0)
                sock.setsockopt(zmq.RCVHWM, 0)
                sock.connect(f"tcp://{client.leader}")
            while todo and len(inflight) < window:
                i = todo.popleft()
                sock.send_multipart([_TAG.pack(i), b"", frames[i]])
                inflight.add(i)
            if sock.poll(max(1, int(per_attempt * 1000)), zmq.POLLIN):
                answered, again = _collect(sock, inflight, replies, InvalidRequest, ClientError)
                if answered:
                    last_progress = time.monotonic()
                if not again:
                    continue
            # A redirect, or silence (the leader died or was cut off): whatever is unanswered
            # goes again, in order, to the leader found anew; late answers die with the socket.
            todo.extendleft(sorted(inflight, reverse=True))
            inflight.clear()
            sock.close(linger=0)
            sock = None
            client.leader = None
    finally:
        if sock is not None:
            sock.close(linger=0)
    return replies


def _collect(sock: zmq.Socket, inflight: set, replies: list, invalid: type, error: type) -> tuple:
    """Read every answer waiting on ``sock``: (how many were final, whether one asks for a
    resend: a redirect, a leader without quorum, a server-side timeout). A resend's index stays
    in ``inflight``."""
    answered = 0
    again = False
    while True:
        try:
            parts = sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return answered, again
        if len(parts) != 3 or len(parts[0]) != _TAG.size:
            continue
        (i,) = _TAG.unpack(parts[0])
        if i not in inflight:
            continue  # a duplicate answer
        try:
            rep: ClientReply = decode_client(parts[2], ClientReply)
        except DecodeError as e:
            raise error(f"malformed reply from the leader: {e}") from None
        st = rep.status
        if st in _DONE:
            inflight.discard(i)
            replies[i] = rep
            answered += 1
        elif st in _AGAIN:
            again = True
        elif st == "invalid":
            raise invalid(rep.error or "invalid request")
        else:  # "expired": the session was forgotten while the write was in flight
            raise error(f"unexpected reply status {st!r} to a pipelined request")


def tagged_write(client, op: str, key: str, value: Optional[bytes]) -> ClientRequest:  # noqa: ANN001
    """A write of the Client's session, numbered now (resends keep the number)."""
    req = ClientRequest(op, key=key, value=value)
    req.client_id, req.seq = client.client_id, client.next_seq()
    return req
