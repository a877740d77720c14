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

The DEALER socket lives in a :class:`Link` that the owner keeps across calls (issue 15: a new
socket per call cost a TCP connection and, on a node's loopback door, a ZAP authentication per
call). It is dropped, as before, when the leader changes, goes silent or redirects, and when a
call fails. Every send gets a tag that is unique for the Link's life, and a call takes only
answers whose tags it has in flight: a late or duplicate answer to an earlier call is dropped.

This module does not know the Client: its owner hands a :class:`Pipeline` the few callables it
needs, so there is no import cycle.
"""
from __future__ import annotations

import collections
import struct
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import zmq

from .errors import ClientError, Timeout
from .messages import ClientReply, DecodeError, Op, decode_client, encode_client
from .session import OUTCOME_OF, Outcome, rejection

__all__ = ["Link", "Pipeline", "MAX_WINDOW"]

MAX_WINDOW = 512  # half the FSM's per-session result window (actors/fsm.py)
_TAG = struct.Struct(">Q")  # a Link-wide counter: never reused while the socket lives


class Link:
    """The pipelining DEALER socket of one owner (a Client), kept from call to call while the
    leader stays the same. Not thread-safe: the owner serialises its calls (Client's lock)."""

    def __init__(self) -> None:
        self.sock: Optional[zmq.Socket] = None
        self.address: Optional[str] = None  # the leader's client address it is connected to
        self._tag = 0  # the last tag sent; tags are never reused, so late answers are recognised

    def next_tag(self) -> bytes:
        """A tag no earlier send of this Link carried."""
        self._tag += 1
        return _TAG.pack(self._tag)

    def open(self, address: str, configure: Callable[[zmq.Socket], None]) -> zmq.Socket:
        """Connect a new socket to ``address`` (the current one, if any, is closed first)."""
        self.close()
        sock: zmq.Socket = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        # IMMEDIATE: no queueing for a connection that is not up, so POLLOUT means "connected"
        # and a send to a leader that died between two calls fails at once instead of waiting
        # out an attempt's silence.
        sock.setsockopt(zmq.IMMEDIATE, 1)
        configure(sock)
        sock.connect(f"tcp://{address}")
        self.sock, self.address = sock, address
        return sock

    def close(self) -> None:
        """Close the socket, if any; answers still on their way die with it."""
        if self.sock is not None:
            self.sock.close(linger=0)
        self.sock = self.address = None


@dataclass
class Pipeline:
    """Sends requests with many in flight, for an owner (a Client) that provides:

    ``settle(req, write)``: its synchronous path, which finds the leader (redirects, backoff,
    deadline) and returns the final reply of one request or raises; ``leader()``: the leader's
    client address it found, if any; ``forget_leader()``: drop that address (it went silent or
    redirected). ``timeout``: how long the pipeline may go without any answer; ``per_attempt``:
    how long it waits for the next answer before resending what is unanswered; ``connect_timeout``:
    how long a new socket may take to connect; ``link``: the socket kept between calls.
    """

    settle: Callable[..., ClientReply]
    leader: Callable[[], Optional[str]]
    forget_leader: Callable[[], None]
    timeout: float
    per_attempt: float
    # Set-up of each socket before it connects (a secure cluster's CURVE client keys, issue 11).
    configure: Callable[[zmq.Socket], None] = lambda sock: None
    link: Link = field(default_factory=Link)
    connect_timeout: float = 0.25

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
        inflight: dict = {}  # tag -> index into reqs
        link = self.link
        sock: Optional[zmq.Socket] = None
        if link.sock is not None:
            # The socket of an earlier call, if the leader is the same and it is still connected.
            if link.address == self.leader() and link.sock.poll(0, zmq.POLLOUT):
                sock = link.sock
            else:
                link.close()
        last_progress = time.monotonic()
        ok = False
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
                    sock = link.open(leader, self.configure)
                    if not sock.poll(max(1, int(self.connect_timeout * 1000)), zmq.POLLOUT):
                        link.close()  # not connected in time: the synchronous path again
                        sock = None
                        self.forget_leader()
                        continue
                sent = True
                while todo and len(inflight) < window:
                    i = todo[0]
                    tag = link.next_tag()
                    try:
                        sock.send_multipart([tag, b"", frames[i]], zmq.NOBLOCK)
                    except zmq.Again:  # the connection dropped (IMMEDIATE): as silence
                        sent = False
                        break
                    todo.popleft()
                    inflight[tag] = i
                if sent and sock.poll(max(1, int(self.per_attempt * 1000)), zmq.POLLIN):
                    answered, again = _collect(sock, inflight, replies)
                    if answered:
                        last_progress = time.monotonic()
                    if not again:
                        continue
                # A redirect, or silence (the leader died or was cut off): whatever is unanswered
                # goes again, in order, to the leader found anew; late answers die with the socket.
                todo.extendleft(sorted(inflight.values(), reverse=True))
                inflight.clear()
                link.close()
                sock = None
                self.forget_leader()
            ok = True
        finally:
            if not ok:
                # A failed call may leave answers on their way: they die with the socket (the
                # tags would tell them apart too, but a failure is rare and a new socket is cheap).
                link.close()
        return replies


def _collect(sock: zmq.Socket, inflight: dict, replies: list) -> tuple:
    """Read every answer waiting on ``sock``: (how many were final, whether one asks for a
    resend: a redirect, a leader without quorum, a server-side timeout). A resend's tag stays
    in ``inflight`` (tag -> index)."""
    answered = 0
    again = False
    while True:
        try:
            parts = sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return answered, again
        if len(parts) != 3:
            continue
        i = inflight.get(parts[0])
        if i is None:
            continue  # a duplicate answer, or a late one to an earlier send (unique tags)
        try:
            rep: ClientReply = decode_client(parts[2], ClientReply)
        except DecodeError as e:
            raise ClientError(f"malformed reply from the leader: {e}") from None
        oc = OUTCOME_OF.get(rep.status)
        if oc is Outcome.FINAL:
            del inflight[parts[0]]
            replies[i] = rep
            answered += 1
        elif oc is Outcome.RETRY:
            again = True
        elif oc is Outcome.REJECTED:
            raise rejection(rep.status, rep.error)
        else:  # NEW_SESSION: the session was forgotten while the write was in flight: unknown outcome
            raise ClientError(f"unexpected reply status {rep.status!r} to a pipelined request")
