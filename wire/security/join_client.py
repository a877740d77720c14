"""The one-shot join of a node to a secure cluster (``kvnode --join ADDR --token T``, issue 11).

Before its own doors can be built (their CURVE server needs the cluster's secret key, which a
new node does not have yet), the joiner proves its join token once: a DEALER, CURVE client of
the server key the token carries, with the key pair derived from the token's secret. The
member's ZAP handler admits that key with user id ``JOINER_USER_ID``; the leader answers an
accepting JoinReply with the cluster key and the configuration.

What the monitor tells (libzmq 4.3.5, SECURITY-PLAN section 0):

* ``EVENT_HANDSHAKE_FAILED_AUTH``: the member's ZAP handler refused our key: the token is wrong
  or revoked;
* ``EVENT_HANDSHAKE_FAILED_NO_DETAIL``: the server does not hold the private half of the key in
  the token: the wrong address, or another cluster (no trust on first use: an impostor never
  sees the JoinRequest);
* ``EVENT_HANDSHAKE_FAILED_PROTOCOL``: the door does not speak CURVE: not a secure cluster.
"""
from __future__ import annotations

import logging
import time
from typing import Optional, Sequence

import zmq
from zmq.utils.monitor import recv_monitor_message

from ..address import zmq_endpoint
from ..door_hardening import harden
from ..greeting_probe import door_mechanism
from raftkv.records import JOIN_REFUSED_LIVE_MEMBER

from ..messages import DecodeError, JoinReply, JoinRequest, decode_peer, encode_peer
from .tokens import JoinToken
from .zap import configure_curve_client

log = logging.getLogger("raftkv.security")

ATTEMPT_S = 3.0  # wait for an answer to one request before asking again
RETRY_S = 0.5  # between attempts when the member has no leader yet (growing by half up to MAX_RETRY_S)
MAX_RETRY_S = 5.0
_EVENTS = (zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
           | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)


class JoinRefused(Exception):
    """The join cannot succeed: the message says why, for the operator (kvnode exits 1)."""


def join_secure(ctx: zmq.Context, token: JoinToken, addrs: Sequence[str], node_id: str, req: JoinRequest,
                timeout: float = 60.0) -> JoinReply:
    """Send ``req`` to the members at ``addrs`` (following leader hints; a member that does not
    answer is passed over for the next) until the leader accepts it; returns the accepting
    JoinReply, which carries the cluster key. Raises :class:`JoinRefused`."""
    deadline = time.monotonic() + timeout
    turn = 0
    target = addrs[0]
    last = f"no answer from {target}"
    delay = RETRY_S
    while time.monotonic() < deadline:
        reply = _attempt(ctx, token, target, node_id, req, min(ATTEMPT_S, max(0.1, deadline - time.monotonic())))
        if reply is None:
            last = f"no answer from {target}"
            turn += 1
            target = addrs[turn % len(addrs)]
            continue
        if reply.ok:
            if reply.cluster_key is None:
                raise JoinRefused(f"{target} accepted the join but sent no cluster key (a member of a "
                                  "cluster made without --secure?)")
            return reply
        if reply.leader_addr:
            log.info("%s: join: %s points at the leader %s", node_id, target, reply.leader_addr)
            target = reply.leader_addr
            continue
        last = reply.error or "refused"
        if last.startswith(JOIN_REFUSED_LIVE_MEMBER):
            # Someone runs as this id already (actors/replacement_guard.py): the operator must know,
            # and a wiped node whose old process is really dead gets in on a later attempt.
            log.warning("%s: join through %s: %s; retrying in %.1fs", node_id, target, last, delay)
        else:
            log.info("%s: join through %s: %s; retrying", node_id, target, last)
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 1.5, MAX_RETRY_S)
        target = addrs[turn % len(addrs)]
    raise JoinRefused(f"could not join through {', '.join(addrs)} within {timeout:.0f}s ({last})")


def _attempt(ctx: zmq.Context, token: JoinToken, target: str, node_id: str, req: JoinRequest,
             wait: float) -> Optional[JoinReply]:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, 16 * 1024 * 1024)
    harden(sock)  # the member it asks could abort it otherwise (wire/door_hardening.py)
    configure_curve_client(sock, token.server_public_key, token.keypair())
    mon = sock.get_monitor_socket(_EVENTS)
    try:
        sock.connect(zmq_endpoint(target))
        sock.send(encode_peer(token.cluster_id, node_id, req), zmq.NOBLOCK)
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(mon, zmq.POLLIN)
        end = time.monotonic() + wait
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return None
            events = dict(poller.poll(int(left * 1000) + 1))
            if mon in events:
                _check_handshake(recv_monitor_message(mon)["event"], token, target)
            if sock in events:
                try:
                    f = decode_peer(sock.recv())
                except DecodeError as e:
                    log.warning("%s: join: a malformed answer from %s: %s", node_id, target, str(e)[:200])
                    continue
                if isinstance(f.msg, JoinReply):
                    return f.msg
    except zmq.Again:
        return None
    finally:
        sock.disable_monitor()
        mon.close(linger=0)
        sock.close(linger=0)


def _check_handshake(event: int, token: JoinToken, target: str) -> None:
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        raise JoinRefused(f"the cluster at {target} refused this join token (wrong, revoked or rotated): ask its "
                          "operator for the current one (join.token in the bootstrap node's data directory, or the "
                          "one kvclient join-token rotate printed)")
    if event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
        raise JoinRefused(f"{target} does not hold the key of cluster {token.cluster_id} from this token: "
                          "wrong address, or not that cluster")
    if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
        raise JoinRefused(f"{target} does not speak CURVE: not a member of a secure cluster (this token is "
                          f"for cluster {token.cluster_id})")


def door_is_secure(ctx: zmq.Context, addr: str, wait: float = 1.0, handshake_wait: float = 10.0) -> bool:
    """Whether the peer door at ``addr`` refuses a plain (NULL) handshake, as a member of a secure
    cluster does: a node started with --join but no --token is then told so at once instead of
    retrying for ever. False when no TCP connection is made within ``wait`` seconds (the member
    may not be up yet: the join loop retries as before). Once connected, the handshake's outcome
    is awaited up to ``handshake_wait`` seconds: on a loaded host a member may take more than a
    second to answer, and a False then would leave the joiner retrying for ever."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    mon = sock.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                                  | zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
                                  | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
    try:
        sock.connect(zmq_endpoint(addr))
        start = time.monotonic()
        deadline = start + wait
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not mon.poll(max(1, int(left * 1000))):
                return False
            event = recv_monitor_message(mon)["event"]
            if event == zmq.EVENT_CONNECTED:
                deadline = start + max(wait, handshake_wait)
                continue
            if event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
                # A CURVE door that reads our whole NULL greeting before it has sent its own
                # hangs up without naming the mechanism (a loaded host, a slow link: possibly on
                # every redial): its greeting, read on its own, says (wire/greeting_probe.py).
                if door_mechanism(addr, max(0.1, deadline - time.monotonic())) == "CURVE":
                    return True
                continue
            return event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    finally:
        sock.disable_monitor()
        mon.close(linger=0)
        sock.close(linger=0)


def ask_once(ctx: zmq.Context, token: JoinToken, addr: str, node_id: str, req: JoinRequest,
             wait: float = ATTEMPT_S) -> Optional[JoinReply]:
    """One JoinRequest to the member at ``addr`` over a join-token connection, without following
    hints or retrying (a member's re-admission request: actors/secure_readmission.py): its
    JoinReply, or None without one within ``wait`` seconds. Raises :class:`JoinRefused` when the
    handshake says the token (or the address) is wrong."""
    return _attempt(ctx, token, addr, node_id, req, wait)
