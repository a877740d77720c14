"""A secure node's request to be admitted again, carried over a join-token connection.

The core decides when to ask (actors/readmission.py: a leader of a later term addresses this node
as another incarnation of its id, the entry that admitted this one having been truncated) and
puts a JoinRequest for that leader in a field of its Ready of its own (``Ready.readmission``, not
among its other messages, so no shell looks at the type of each outgoing message to find it). On
a cluster made without --secure the role actor sends it over the peer connection like every
message. On a secure one it would not be heard there: the leader's door admits only the CURVE
keys its configuration lists, and it lists the old incarnation's key (the new one was only in the
truncated entry). So the role actor hands it to :class:`SecureReadmission`, which sends it as a
join is sent (wire/security/join_client.py): a one-shot connection with the key pair the join
token derives, which the leader's door admits for a JoinRequest as the sender itself and nothing
else (wire/peer.py ``_sender_ok``).

This gives the node no power it did not have: anyone holding the join token can send the same
join, and the leader decides it as any join (RaftCore.join, with the refusal of a live member in
actors/replacement_guard.py). The token is the one on the node's command line (``--token`` /
``join_token``): the same command line stays right. When it is missing, malformed or no longer
accepted (rotated or revoked), the node logs an ERROR naming the fix, at most every
``ERROR_EVERY_S`` seconds: restart it with the cluster's current join token.

The core asks at most once per minimum election timeout; one request is in flight at a time (a
request waits up to ``ATTEMPT_S`` for its answer, on a thread of its own, never the role actor's).
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Optional

from raftkv.wire.messages import JoinReply, JoinRequest
from raftkv.wire.ratelog import RateLimitedLog

log = logging.getLogger("raftkv.node")

ERROR_EVERY_S = 30.0

FIX = ("restart this node with --token set to the cluster's current join token (the join.token file of its "
       "bootstrap node, or the one `kvclient join-token rotate` printed), or stop it, wipe its data directory and "
       "start it again with --join and --token")

# (leader's peer address, request) -> its JoinReply or None (no answer); raises JoinRefused
SendOnce = Callable[[str, JoinRequest], Optional[JoinReply]]


class SecureReadmission:
    """Sends a secure node's re-admission requests (the core's ``Ready.readmission``, handed over
    by the role actor) over a join-token connection to the leader's peer address.

    ``token_text``: the node's join token (None: started without one); ``addr_of``: a member's
    peer address from the node's configuration (None: unknown); ``send_once`` and ``spawn``
    default to a real one-shot join connection on a new daemon thread (tests inject their own)."""

    def __init__(self, node_id: str, cluster_id: Optional[str], token_text: Optional[str],
                 addr_of: Callable[[str], Optional[str]], send_once: Optional[SendOnce] = None,
                 spawn: Optional[Callable[[Callable[[], None]], None]] = None) -> None:
        self.node_id = node_id
        self.addr_of = addr_of
        self._lock = threading.Lock()
        self._busy = False
        self.problem = ""  # why no request can be sent at all (no token, a token of no use here)
        self.send_once: Optional[SendOnce] = send_once
        if send_once is None:
            self.send_once, self.problem = _token_sender(node_id, cluster_id, token_text)
        self.spawn = spawn or _daemon_thread
        self._errors = RateLimitedLog(log, interval=ERROR_EVERY_S, level=logging.ERROR)
        self._refusals = RateLimitedLog(log, interval=10.0)

    def ask(self, to: str, req: JoinRequest) -> None:
        """Send ``req`` to member ``to`` unless a request is still in flight."""
        if self.send_once is None:
            self._errors.warn("no-token", "%s: leader %s lists another incarnation of this id and must be asked "
                              "to admit this one again; on a secure cluster that request goes with the join token, "
                              "but %s: %s", self.node_id, to, self.problem, FIX)
            return
        addr = self.addr_of(to)
        if not addr:
            log.info("%s: no address known for %s; not asking it to admit this node again", self.node_id, to)
            return
        with self._lock:
            if self._busy:
                return
            self._busy = True
        self.spawn(lambda: self._run(to, addr, req))

    def _run(self, to: str, addr: str, req: JoinRequest) -> None:
        from raftkv.wire.security.join_client import JoinRefused

        try:
            assert self.send_once is not None
            reply = self.send_once(addr, req)
        except JoinRefused as e:
            self._errors.warn("refused", "%s: could not ask %s (%s) to admit this node again: %s; %s",
                              self.node_id, to, addr, e, FIX)
            return
        except Exception:  # a thread of its own: say what broke, the core asks again later
            log.exception("%s: asking %s (%s) to admit this node again failed", self.node_id, to, addr)
            return
        finally:
            with self._lock:
                self._busy = False
        self._log_reply(to, reply)

    def _log_reply(self, to: str, reply: Optional[JoinReply]) -> None:
        node_id = self.node_id
        if reply is None:
            log.info("%s: no answer from %s to the request to admit this node again; asking again when it next "
                     "addresses the old incarnation", node_id, to)
        elif reply.ok:
            log.info("%s: %s took the request to admit this node again", node_id, to)
        elif reply.leader_addr:
            log.info("%s: %s no longer leads (leader at %s); the leader asks again", node_id, to, reply.leader_addr)
        else:
            self._refusals.warn("answer", "%s: %s did not admit this node again yet: %s", node_id, to,
                                reply.error or "refused")


def _token_sender(node_id: str, cluster_id: Optional[str], token_text: Optional[str]) -> tuple:
    """(send_once over a join-token connection, "") or (None, why not)."""
    from raftkv.wire.security.tokens import JoinToken, TokenError

    if not token_text:
        return None, "this node was started without --token"
    try:
        token = JoinToken.decode(token_text)
    except TokenError as e:
        return None, f"its --token is not a join token ({e})"
    if cluster_id and token.cluster_id != cluster_id:
        return None, f"its --token is for cluster {token.cluster_id!r}, not this node's {cluster_id!r}"

    def send_once(addr: str, req: JoinRequest) -> Optional[JoinReply]:
        import zmq

        from raftkv.wire.security.join_client import ask_once

        ctx = zmq.Context()
        try:
            return ask_once(ctx, token, addr, node_id, req)
        finally:
            ctx.destroy(linger=0)

    return send_once, ""


def _daemon_thread(fn: Callable[[], Any]) -> None:
    threading.Thread(target=fn, name="readmission", daemon=True).start()
