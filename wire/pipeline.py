"""Pipelined requests: many in flight over one DEALER socket to the leader's front door.

A :class:`~raftkv.wire.client.Client` call waits for its answer before the next request leaves
(REQ, Lazy Pirate), so one client gets one request per round trip. ``Client.put_many`` and
``Client.get_many`` send up to ``window`` requests before reading answers instead; the leader
then group-commits them in large batches. Each request carries one tag frame before the REQ
delimiter (the front door returns it with the reply), so answers may come in any order.

Failures are handled as in the synchronous client, by the same rules (wire/session.py): a
redirect or "no leader" sends the unanswered requests again to the leader (found through the
owner's synchronous path), and so does silence for one attempt's time. Writes keep their
``(client_id, seq)`` across resends, so each is applied at most once; the window stays below the
server's per-session result window (1,024) so that a resend is always recognised.

This module does not know the Client: its owner hands a :class:`Pipeline` the few callables it
needs, so there is no import cycle.
"""
from __future__ import annotations

import collections
import struct
import time
from dataclasses import dataclass
from typing import Callable, Optional

import zmq

from .errors import ClientError, Timeout
from .messages import ClientReply, DecodeError, Op, decode_client, encode_client
from .session import OUTCOME_OF, Outcome, rejection

__all__ = ["Pipeline", "MAX_WINDOW"]

MAX_WINDOW = 512  # half the FSM's per-session result window (actors/fsm.py)
_TAG = struct.Struct(">I")


@dataclass
class Pipeline:
    """Sends requests with many in flight, for an owner (a Client) that provides:

    ``settle(req, write)``: its synchronous path, which finds the leader (redirects, backoff,
    deadline) and returns the final reply of one request or raises; ``leader()``: the leader's
    client address it found, if any; ``forget_leader()``: drop that address (it went silent or
    redirected). ``timeout``: how long the pipeline may go without any answer; ``per_attempt``:
    how long it waits for the next answer before resending what is unanswered.
    """

    settle: Callable[..., ClientReply]
    leader: Callable[[], Optional[str]]
    forget_leader: Callable[[], None]
    timeout: float
    per_attempt: float
    # Set-up of each socket before it connects (a secure cluster's CURVE client keys, issue 11).
    configure: Callable[[zmq.Socket], None] = lambda sock: None

    def run(self, reqs: list, window: int) -> list:
        """Send ``reqs`` (ClientRequests, writes already tagged with their session) with at most
        ``window`` unanswered; return their final ClientReplies in order. Raises what the
        synchronous path raises (InvalidRequest, Timeout, Unavailable)."""
        n = len(reqs)
        replies: list = [None] * n
        if n == 0:
            return replies
        window = max(1, min(window, MAX_WINDOW))
        frames = [encode_client(r) for r in reqs]
        todo = collections.deque(range(n))
        inflight: set = set()
        ctx: zmq.Context = zmq.Context.instance()
        sock: Optional[zmq.Socket] = None
        last_progress = time.monotonic()
        try:
            while todo or inflight:
                if time.monotonic() - last_progress > self.timeout:
                    what = "writes" if reqs[0].op != Op.GET else "reads"
                    raise Timeout(f"{len(todo) + len(inflight)} pipelined {what} without an answer for "
                                  f"{self.timeout:g}s" + ("; some may have been applied" if what == "writes" else ""))
                if sock is None:
                    # The synchronous path finds the leader (redirects, backoff, deadline) and
                    # settles the first request on the way.
                    i = todo.popleft()
                    replies[i] = self.settle(reqs[i], write=reqs[i].op != Op.GET)
                    last_progress = time.monotonic()
                    leader = self.leader()
                    if not todo or leader is None:
                        continue
                    sock = ctx.socket(zmq.DEALER)
                    sock.setsockopt(zmq.LINGER, 0)
                    sock.setsockopt(zmq.SNDHWM, 0)
                    sock.setsockopt(zmq.RCVHWM, 0)
                    self.configure(sock)
                    sock.connect(f"tcp://{leader}")
                while todo and len(inflight) < window:
                    i = todo.popleft()
                    sock.send_multipart([_TAG.pack(i), b"", frames[i]])
                    inflight.add(i)
                if sock.poll(max(1, int(self.per_attempt * 1000)), zmq.POLLIN):
                    answered, again = _collect(sock, inflight, replies)
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
                self.forget_leader()
        finally:
            if sock is not None:
                sock.close(linger=0)
        return replies


def _collect(sock: zmq.Socket, inflight: set, replies: list) -> tuple:
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
            raise ClientError(f"malformed reply from the leader: {e}") from None
        oc = OUTCOME_OF.get(rep.status)
        if oc is Outcome.FINAL:
            inflight.discard(i)
            replies[i] = rep
            answered += 1
        elif oc is Outcome.RETRY:
            again = True
        elif oc is Outcome.REJECTED:
            raise rejection(rep.status, rep.error)
        else:  # NEW_SESSION: the session was forgotten while the write was in flight: unknown outcome
            raise ClientError(f"unexpected reply status {rep.status!r} to a pipelined request")
