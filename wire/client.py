"""The client library: leader discovery, retries and exactly-once write sessions.

::

    from raftkv.wire.client import Client
    with Client(["127.0.0.1:5001", "127.0.0.1:5002", "127.0.0.1:5003"], timeout=5.0) as kv:
        kv.put("hello", b"distributed"); kv.get("hello"); kv.delete("hello")
        kv.cas("n", expected=b"1", new=b"2")

Reliability follows the ZeroMQ guide's **Lazy Pirate** pattern (chapter 4): one REQ socket per
server, each request polled with a per-attempt timeout; a REQ socket that missed its reply is
stuck in its send/receive lock-step, so it is closed (LINGER 0) and reopened, and the request
goes to the next server, with exponential backoff and jitter between rounds, until the overall
deadline of the call. Two additions to the pattern: ZMQ_IMMEDIATE plus a POLLOUT wait skips a
node that refuses connections after ``connect_timeout``, and a socket monitor notices a node
whose connection drops mid-request (it died), so neither costs a whole attempt. Writes carry
``(client_id, seq)`` and a retry reuses them, so the server's session table (Raft thesis 6.3)
applies a retried write at most once. What each reply status means, the sessions, the backoff
and the errors at the deadline are the session engine's (wire/session.py), shared with the
pipeline (``put_many``/``get_many``, wire/pipeline.py) and the HTTP gateway.

Thread safety: a :class:`Client` may be shared between threads, but its calls are serialised
by an internal lock (ZeroMQ sockets must not be used by two threads at once). For concurrency,
use one Client per thread.
"""
from __future__ import annotations

import base64
import os
import threading
import time
import builtins
from typing import TYPE_CHECKING, Any, Iterable, NoReturn, Optional, Union

import zmq

from .address import AddressError, parse_address
from .errors import ClientError, Compacted, InvalidRequest, NotAuthorized, NotFound, Refused, Timeout, Unavailable
from .messages import ClientReply, ClientRequest, DecodeError, Member, Op, Status, decode_client, encode_client
from .lease_client import Lease, lease_id_of
from .pipeline import Link, Pipeline
from .session import Attempts, Outcome, RetryPolicy, Session, attempt_time, may_renew, outcome, rejection
from raftkv.txn import KeyMeta, TxnResult, build as build_txn, delete as txn_delete, value as txn_value

if TYPE_CHECKING:
    from .recipes import Election, Lock
    from .watch_client import Watch

__all__ = [
    "Client",
    "ClientError",
    "NotFound",
    "Unavailable",
    "Timeout",
    "InvalidRequest",
    "Refused",
    "NotAuthorized",
    "Compacted",
    "KeyMeta",
    "TxnResult",
    "CONSISTENCY_LEVELS",
    "json_item",
    "parse_servers",
]

CONSISTENCY_LEVELS = ("linearizable", "lease", "stale")
_WRITE_OPS = (Op.PUT.value, Op.DELETE.value, Op.CAS.value)  # write(); transactions go through txn()
_READ_OPS = (Op.GET.value, Op.LIST.value)

Value = Union[bytes, bytearray, memoryview, str]


# The exceptions (ClientError, NotFound, Unavailable, Timeout, InvalidRequest) are defined in
# wire/errors.py, so that the pipeline and the session engine raise them without importing
# this module; this module is their public home.


def json_item(key: str, value: bytes) -> dict:
    """A key/value pair as a JSON-ready dict: ``{"key", "value"}``, where a value that is not
    valid UTF-8 is base64-encoded and flagged with ``"value_b64": true`` (the flag is present
    only then). Shared by ``kvclient --json`` and the HTTP gateway so both speak alike."""
    try:
        return {"key": key, "value": value.decode("utf-8")}
    except UnicodeDecodeError:
        return {"key": key, "value": base64.b64encode(value).decode("ascii"), "value_b64": True}


# ------------------------------------------------------------------ input checks


def parse_servers(servers: Union[str, Iterable[str]]) -> list[str]:
    """Normalise a server list (a list, or a comma-separated string) to ``HOST:PORT`` strings
    (wire/address.py's rules, with a host required; a ``tcp://`` prefix is dropped)."""
    items = servers.split(",") if isinstance(servers, str) else list(servers)
    out: list[str] = []
    for s in items:
        if not isinstance(s, str):
            raise InvalidRequest(f"server address must be a string, got {type(s).__name__}")
        s = s.strip()
        if s.startswith("tcp://"):
            s = s[len("tcp://"):]
        if not s:
            continue
        s = _check_addr(s)
        if s not in out:
            out.append(s)
    if not out:
        raise InvalidRequest("no servers given")
    return out


def _check_addr(addr: str) -> str:
    """A server address to connect to, checked and normalised; InvalidRequest says what is wrong."""
    try:
        return str(parse_address(addr, wildcard=False, what="server address"))
    except AddressError as e:
        raise InvalidRequest(str(e)) from None


def _check_key(key: Any, what: str = "key") -> str:
    if not isinstance(key, str) or not key:
        raise InvalidRequest(f"{what} must be a non-empty string")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(f"{what} is not valid UTF-8") from None
    return key


def _lease_id(lease: Any, allow_none: bool = False) -> int:
    if type(lease) is not int or lease < 0 or (lease == 0 and not allow_none) or lease >= 1 << 63:
        raise InvalidRequest("a lease id is a positive integer")
    return lease


def _to_bytes(value: Any, what: str = "value") -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidRequest(f"{what} is not valid UTF-8") from None
    raise InvalidRequest(f"{what} must be bytes or str, got {type(value).__name__}")


# ------------------------------------------------------------------ the client


class Client:
    """A connection to a cluster through the nodes' client (front door) addresses.

    ``servers``: ``HOST:PORT`` client addresses, as a list or a comma-separated string; any
    subset of the cluster will do, the leader is found (and cached) by following redirects.
    ``timeout``: the overall deadline of one call in seconds, retries included.
    ``client_id``: the session id tagging writes (random when None); two live Clients must
    never share one. ``attempt_timeout``: how long one attempt waits for a reply before the
    server is given up on for that attempt (default: a third of ``timeout``, at most 2 s).
    ``connect_timeout``: how long an attempt waits for a TCP connection to be up before
    trying the next server, so a dead node costs this, not a whole attempt.

    Calls are serialised by a lock; see the module docstring about threads.
    """

    BACKOFF_BASE = 0.05  # first backoff (s); doubles per failed round
    BACKOFF_MAX = 1.0  # cap of one backoff sleep (s)
    UNREACHABLE_FOR = 1.0  # redirects to a server that just failed us are ignored this long (s)
    AUTH_GRACE = 1.0  # how long refusals of a token's key may be a server not caught up yet (s)

    def __init__(
        self,
        servers: Union[str, Iterable[str]],
        timeout: float = 5.0,
        client_id: Optional[str] = None,
        *,
        attempt_timeout: Optional[float] = None,
        connect_timeout: float = 0.25,
        local: Optional[tuple] = None,
        token: Optional[str] = None,
    ) -> None:
        """``token``: a client token of a secure cluster (``kvclient --token``, ``$KV_TOKEN``):
        every socket is a CURVE client with the key pair derived from it, and the server must
        hold the cluster key it names. A malformed token raises NotAuthorized here; one the
        cluster does not know (or revoked) raises NotAuthorized at the first request."""
        self._curve: Optional[tuple] = None
        self._token: Any = None
        self._auth_refused_at: Optional[float] = None  # first ZAP refusal of our token (AUTH_GRACE)
        self._has_token = token is not None
        if token is not None:
            from .security.tokens import ClientToken, TokenError

            try:
                t = ClientToken.decode(token.strip())
            except TokenError as e:
                raise NotAuthorized(f"not authorized: {e}") from None
            self._curve = (t.server_public_key, t.keypair())
            self._token = t
        self.servers: tuple[str, ...] = tuple(parse_servers(servers))
        if not timeout or timeout <= 0:
            raise InvalidRequest("timeout must be positive")
        self.timeout = float(timeout)
        self._session = Session(client_id)
        self.attempt_timeout = attempt_timeout
        self.connect_timeout = connect_timeout
        self.leader: Optional[str] = None  # cached client address of the leader
        self.leader_id: Optional[str] = None  # its node id, when a server told us
        self._next = 0  # rotation index into self.servers when no leader is cached
        self._ctx: zmq.Context = zmq.Context.instance()
        self._sockets: dict[str, _Conn] = {}
        self._lock = threading.RLock()
        self._closed = False
        # (address, call): requests for that address are handed to ``call(req, wait)`` in-process
        # (a node's own HTTP gateway talking to the node it runs in) instead of over a socket.
        self._local = local
        self._unreachable: dict[str, float] = {}  # address -> when it last failed to answer
        self._link = Link()  # put_many/get_many's socket to the leader, kept between calls

    @property
    def client_id(self) -> str:
        """The id of this Client's write session (it changes if the cluster forgets the session)."""
        return self._session.client_id

    # ------------------------------------------------------------ context manager / close

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close every socket. Idempotent; the Client cannot be used afterwards."""
        with self._lock:
            self._closed = True
            for addr in list(self._sockets):
                self._drop_socket(addr)
            self._link.close()

    # ------------------------------------------------------------ key/value API

    def get(self, key: str, consistency: str = "linearizable", *, meta: bool = False) -> Any:
        """The value of ``key``; raises :class:`NotFound` if absent. ``consistency`` is
        "linearizable" (default), "lease" (leader's lease, no heartbeat round) or "stale"
        (any node's local copy, may be behind). ``meta=True``: a :class:`raftkv.txn.KeyMeta`
        (value, create/mod revision, version, and the revision the read reflects) instead."""
        if meta:
            return self.get_meta(key, consistency)
        reply = self._get_reply(key, consistency)
        return reply.value if reply.value is not None else b""

    def _get_reply(self, key: str, consistency: str) -> ClientReply:
        """A get's ``ok`` reply (NotFound for an absent key)."""
        _check_key(key)
        if consistency not in CONSISTENCY_LEVELS:
            raise InvalidRequest(f"consistency must be one of {', '.join(CONSISTENCY_LEVELS)}")
        reply = self._call(ClientRequest(Op.GET.value, key=key, consistency=consistency))
        if reply.status == Status.NOT_FOUND:
            raise NotFound(f"key not found: {key}")
        self._expect_ok(reply, "get")
        return reply

    def put(self, key: str, value: Value, *, lease: int = 0) -> None:
        """Set ``key`` to ``value`` (bytes, or str encoded as UTF-8); ``lease``: attach the key to
        that lease (it is deleted when the lease ends; see :meth:`lease`)."""
        reply = self.write(Op.PUT.value, key, value, lease=lease)
        self._expect_ok(reply, "put")

    def delete(self, key: str, expected: Optional[Value] = None) -> bool:
        """Delete ``key``; raises :class:`NotFound` if the server reports it absent.
        ``expected`` given: compare-and-delete, only if the current value is ``expected``
        (one transaction); returns False (nothing deleted) if it is not, or the key is absent."""
        if expected is not None:
            return self._delete_if(key, expected)
        reply = self.write(Op.DELETE.value, key)
        if reply.status == Status.NOT_FOUND:
            raise NotFound(f"key not found: {key}")
        self._expect_ok(reply, "delete")
        return True

    def cas(self, key: str, expected: Optional[Value] = None, new: Optional[Value] = None) -> bool:
        """Compare-and-set: write ``new`` only if the current value is ``expected`` (or, when
        ``expected`` is None, only if the key is absent). True if it was written."""
        if new is None:
            raise InvalidRequest("cas needs a new value")
        reply = self.write(Op.CAS.value, key, new, expected=expected, expect_absent=expected is None)
        if reply.status == Status.CAS_FAILED:
            return False
        self._expect_ok(reply, "cas")
        return True

    def create(self, key: str, value: Value) -> bool:
        """Write ``key`` only if it is absent. True if it was written."""
        return self.cas(key, None, value)

    def list(self, prefix: str = "", limit: int = 0,
             consistency: str = "linearizable") -> builtins.list[tuple[str, bytes]]:
        """Keys starting with ``prefix`` and their values, in key order; ``limit`` 0 = all."""
        if not isinstance(prefix, str):
            raise InvalidRequest("prefix must be a string")
        if type(limit) is not int or limit < 0:
            raise InvalidRequest("limit must be a non-negative integer")
        if consistency not in CONSISTENCY_LEVELS:
            raise InvalidRequest(f"consistency must be one of {', '.join(CONSISTENCY_LEVELS)}")
        reply = self._call(ClientRequest(Op.LIST.value, key=prefix, limit=limit, consistency=consistency))
        self._expect_ok(reply, "list")
        return list(reply.items)

    def put_many(self, items: Iterable[tuple[str, Value]], window: int = 256) -> None:
        """Set many keys with up to ``window`` writes in flight at once (pipelined over one
        socket, see wire/pipeline.py; at most 512): many times the throughput of ``put`` in a
        loop. Each write is applied at most once; they may be applied in any order. On a
        Timeout some may have been applied."""
        with self._lock:
            reqs = []
            for k, v in items:
                req = ClientRequest(Op.PUT.value, key=_check_key(k), value=_to_bytes(v))
                req.client_id, req.seq = self._session.next()  # resends keep the pair
                reqs.append(req)
            for rep in self._pipeline().run(reqs, window):
                self._expect_ok(rep, "put")

    def get_many(self, keys: Iterable[str], consistency: str = "linearizable",
                 window: int = 256) -> builtins.list[Optional[bytes]]:
        """The values of many keys (None where absent), with up to ``window`` reads in flight."""
        if consistency not in CONSISTENCY_LEVELS:
            raise InvalidRequest(f"consistency must be one of {', '.join(CONSISTENCY_LEVELS)}")
        with self._lock:
            reqs = [ClientRequest(Op.GET.value, key=_check_key(k), consistency=consistency) for k in keys]
            out: builtins.list[Optional[bytes]] = []
            for rep in self._pipeline().run(reqs, window):
                if rep.status == Status.NOT_FOUND:
                    out.append(None)
                else:
                    self._expect_ok(rep, "get")
                    out.append(rep.value if rep.value is not None else b"")
            return out

    def _pipeline(self) -> Pipeline:
        """This Client's pipelining capability: many requests in flight over one socket to the
        leader (kept between calls in ``self._link``), found and re-found through this Client's
        own synchronous path."""
        return Pipeline(settle=self._call, leader=lambda: self.leader, forget_leader=self._forget_leader,
                        timeout=self.timeout, per_attempt=attempt_time(self.timeout, self.attempt_timeout),
                        configure=self._configure_socket, link=self._link, connect_timeout=self.connect_timeout)

    def _configure_socket(self, sock: zmq.Socket) -> None:
        """Make ``sock`` a CURVE client of the cluster when this Client has a token."""
        if self._curve is not None:
            from .security.zap import configure_curve_client

            configure_curve_client(sock, self._curve[0], self._curve[1])

    def _handshake_refusal(self, conn: "_Conn", addr: str, wait: float) -> bool:
        """Read the connection's monitor; raise NotAuthorized if the server refused the CURVE
        handshake (libzmq would otherwise leave the request waiting until the timeout). True
        when the server refused our token within AUTH_GRACE (the socket is closed: try again).
        ``wait``: how long reading the door's greeting may take (see _dropped_handshake)."""
        from zmq.utils.monitor import parse_monitor_message

        probed = False
        while conn.monitor.poll(0):
            ev = parse_monitor_message(conn.monitor.recv_multipart())["event"]
            if ev == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                self._drop_socket(addr)
                # A token made a moment ago may not be applied on this server yet: other
                # servers (or this one again) get AUTH_GRACE seconds before the answer is final.
                now = time.monotonic()
                first = self._auth_refused_at = self._auth_refused_at or now
                if now - first >= self.AUTH_GRACE:
                    raise NotAuthorized("not authorized: unknown or revoked token")
                return True
            if ev == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
                self._mechanism_mismatch(addr)
            if ev == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL and not probed:
                probed = True  # one look at the door per batch of events
                self._dropped_handshake(addr, wait)
        return False

    def _mechanism_mismatch(self, addr: str) -> NoReturn:
        """The door at ``addr`` speaks another security mechanism than this Client: raise."""
        self._drop_socket(addr)
        if self._has_token:
            raise NotAuthorized(f"not authorized: {addr} did not accept a CURVE handshake: this cluster is "
                                "not secure (no token needed)")
        raise NotAuthorized("not authorized: this cluster needs a token (--token or $KV_TOKEN)")

    def _dropped_handshake(self, addr: str, wait: float) -> None:
        """The connection to ``addr`` dropped during the handshake, with no reason given: raise
        NotAuthorized if the door's own greeting says why, else return (a drop: not reachable).

        A CURVE door drops a plain client (or a plain door a CURVE client) without the mismatch
        reaching the client when it has read the client's whole greeting before sending the
        part of its own that names its mechanism (wire/greeting_probe.py: issue 11's flake, a
        token-less client that timed out under load). A CURVE client is also dropped by a door
        that does not hold the server key of its token. A node that dies mid-handshake sends no
        greeting to the probe, and stays "not reachable"."""
        from .greeting_probe import door_mechanism

        mechanism = door_mechanism(addr, max(wait, self.connect_timeout))
        if mechanism is None or (mechanism == "NULL" and not self._has_token):
            return  # nothing learnt, or a plain door that dropped a plain client: a drop
        if mechanism == "CURVE" and self._has_token:  # the server could not read our CURVE hello
            self._drop_socket(addr)
            raise NotAuthorized(f"not authorized: {addr} does not hold the cluster key this token names "
                                "(wrong address, or another cluster)")
        self._mechanism_mismatch(addr)

    def _forget_leader(self) -> None:
        self.leader = None

    # ------------------------------------------------------------ sessions (low level)

    def next_seq(self) -> int:
        """Allocate the sequence number of a new write of this Client's session."""
        with self._lock:
            return self._session.next()[1]

    def write(
        self,
        op: str,
        key: str,
        value: Optional[Value] = None,
        *,
        expected: Optional[Value] = None,
        expect_absent: bool = False,
        client_id: Optional[str] = None,
        seq: Optional[int] = None,
        lease: int = 0,
    ) -> ClientReply:
        """Send one write (``op`` is "put", "delete" or "cas") and return the server's final
        reply, whose status is "ok", "not_found" or "cas_failed".

        Every retry inside the call reuses the same ``(client_id, seq)``, so the write is
        applied at most once. By default the session is this Client's and ``seq`` a new
        number; pass both explicitly to retry a write across calls or processes (the HTTP
        gateway maps an ``Idempotency-Key`` to such a pair). Raises :class:`InvalidRequest`,
        or :class:`Timeout` at the deadline (the write may then still have been applied).
        """
        if op not in _WRITE_OPS:
            raise InvalidRequest(f"not a write operation: {op!r}")
        _check_key(key)
        if (client_id is None) != (seq is None):
            raise InvalidRequest("client_id and seq go together")
        if client_id is not None and (not isinstance(client_id, str) or not client_id):
            raise InvalidRequest("client_id must be a non-empty string")
        if seq is not None and (type(seq) is not int or seq <= 0):
            raise InvalidRequest("seq must be a positive integer")
        req = ClientRequest(
            op,
            key=key,
            value=None if op == Op.DELETE else _to_bytes(value),
            expected=None if expected is None else _to_bytes(expected, "expected value"),
            expect_absent=bool(expect_absent),
            lease=_lease_id(lease, allow_none=True),
        )
        self._stamp(req, client_id, seq)
        return self._call(req, write=True)

    # ------------------------------------------------------------ admin API

    def status(self, server: Optional[str] = None) -> dict:
        """The status document of one node (docs/architecture.md 6: id, state, term, leader_id, ...): of
        ``server`` if given, else of the first server of the list that answers. Redirects are
        not followed: this inspects a node, not the cluster."""
        targets = parse_servers([server]) if server else list(self.servers)
        reply = self._call(ClientRequest(Op.STATUS.value), targets=targets)
        self._expect_ok(reply, "status")
        return reply.info if isinstance(reply.info, dict) else {}

    def members(self) -> builtins.list[dict]:
        """The leader's view of the members: dicts with at least id, addr, client, http, voter."""
        reply = self._call(ClientRequest(Op.MEMBERS.value))
        self._expect_ok(reply, "members")
        return list(reply.info or [])

    def add_node(self, id: str, addr: str, client: str = "", http: str = "", voter: bool = True) -> Any:
        """Add a member (``voter=False``: a learner). Returns the server's info, if any."""
        _check_key(id, "node id")
        addr = _check_addr(addr)
        client, http = (_check_addr(extra) if extra else "" for extra in (client, http))
        member = Member(id, addr, client, http, bool(voter))
        return self._admin(ClientRequest(Op.ADD_NODE.value, member=member))

    def remove_node(self, id: str) -> Any:
        """Remove a member by id. Returns the server's info, if any."""
        _check_key(id, "node id")
        return self._admin(ClientRequest(Op.REMOVE_NODE.value, key=id))

    def transfer_leader(self, id: Optional[str] = None) -> Any:
        """Hand leadership to node ``id`` (or to the best-placed follower when None)."""
        if id is not None:
            _check_key(id, "node id")
        return self._admin(ClientRequest(Op.TRANSFER_LEADER.value, key=id or ""))

    def snapshot(self) -> Any:
        """Ask for a snapshot now. Returns the server's info, if any."""
        return self._admin(ClientRequest(Op.SNAPSHOT.value))

    def _admin(self, req: ClientRequest) -> Any:
        reply = self._call(req)
        if reply.status == Status.NOT_FOUND:
            raise NotFound(reply.error or f"{req.op}: not found: {req.key}")
        if reply.status == Status.CAS_FAILED:  # a precondition of the change failed (last voter)
            raise Refused(reply.error or f"{req.op}: refused")
        self._expect_ok(reply, req.op)
        return reply.info

    @staticmethod
    def _expect_ok(reply: ClientReply, op: str) -> None:
        if reply.status != Status.OK:
            raise ClientError(f"{op}: unexpected reply {reply.status!r}: {reply.error or ''}".rstrip(": "))

    # ------------------------------------------------------------ the Lazy Pirate loop

    def _call(self, req: ClientRequest, *, write: bool = False,
              targets: Optional[builtins.list[str]] = None) -> ClientReply:
        """Send ``req`` until a definite answer or the deadline (the session engine's rules,
        wire/session.py: what each reply status means, backoff, the error at the deadline).

        ``targets`` set: ask those servers in order, never follow redirects (status).
        Returns a reply whose status is ok / not_found / cas_failed; raises otherwise.
        """
        frame = encode_client(req)
        with self._lock:
            if self._closed:
                raise ClientError("client is closed")
            policy = RetryPolicy(self.timeout, self.attempt_timeout, self.BACKOFF_BASE, self.BACKOFF_MAX)
            tries = Attempts(policy, f"{req.op} {req.key!r}" if req.key else req.op, write)
            per_attempt = policy.per_attempt()
            fixed_i = 0
            while True:
                remaining = tries.remaining()
                if remaining <= 0:
                    raise tries.deadline_error()
                if targets is not None:
                    addr = targets[fixed_i % len(targets)]
                else:
                    addr = self._target(req)
                if self._local is not None and addr == self._local[0]:
                    reply = self._local[1](req, min(per_attempt, remaining))
                    why = f"{addr} did not answer"
                else:
                    reply, why = self._exchange(addr, frame, min(per_attempt, remaining))
                if reply is None:
                    # Lazy Pirate: no reply (a socket that sent was reset, see _exchange); the
                    # next attempt goes elsewhere at once, since this one already waited.
                    tries.unanswered(why)
                    fixed_i += 1
                    self._failed(addr)
                    self._unreachable[addr] = time.monotonic()
                    continue
                status = reply.status
                self._unreachable.pop(addr, None)
                oc = outcome(status)
                if oc is Outcome.FINAL:
                    if targets is None:
                        self._answered(addr, req, reply)
                    return reply
                if oc is Outcome.REJECTED:
                    raise rejection(reply.status, reply.error)
                if oc is Outcome.NEW_SESSION:
                    # The cluster forgot this session (expiry is by log position, thesis 6.3).
                    if may_renew(write=write, unanswered_before=tries.silent,
                                 own_session=req.client_id == self.client_id):
                        self._session.renew()
                        req.client_id, req.seq = self._session.next()
                        frame = encode_client(req)
                        continue
                    raise Timeout(f"{req.op} {req.key!r}: session expired before an answer arrived; "
                                  "the write may have been applied")
                if oc is not Outcome.RETRY:
                    raise ClientError(f"{req.op}: unexpected reply status {status!r} from {addr}")
                silent = False
                if status == Status.NOT_LEADER and targets is None and reply.leader_client != addr:
                    hint = reply.leader_client
                    if hint and self._recently_unreachable(hint):
                        # A follower that has not yet noticed the leader's death points us back at
                        # the node that just failed us: treat it as "no leader known" instead.
                        hint = None
                    if hint:
                        tries.redirects += 1
                        try:
                            hint = _check_addr(hint)
                        except InvalidRequest:
                            why = f"{addr} redirected to a bad address {hint!r}"
                            self._failed(addr)
                        else:
                            why = f"{addr} redirected to {hint}"
                            self.leader, self.leader_id = hint, reply.leader_id
                            # Follow at once, unless the redirects go round in circles (a stale
                            # hint during an election): then back off like any failure.
                            if tries.redirects <= len(self.servers) + 1:
                                tries.last = why
                                continue
                    else:
                        self._failed(addr)
                        # An election is on and takes a few heartbeats: ask again soon, without the
                        # growing backoff (answering "no leader" costs a node next to nothing).
                        fixed_i += 1
                        tries.soon(f"{addr} knows no leader")
                        continue
                elif status == Status.NOT_LEADER:
                    # Asked a fixed target, or it names itself: no leader known there.
                    why = f"{addr} knows no leader"
                    self._failed(addr)
                    fixed_i += 1
                    tries.soon(why)
                    continue
                elif status == Status.UNAVAILABLE:
                    why = f"{addr} unavailable" + (f": {reply.error}" if reply.error else "")
                    self._failed(addr)
                else:
                    # Status.TIMEOUT: the leader could not commit in time; it may still. Keep it,
                    # back off, and resend with the same session so the write applies at most once.
                    silent = True
                    why = f"{addr} timed out" + (f": {reply.error}" if reply.error else "")
                fixed_i += 1
                tries.failed(why, silent=silent)

    def _target(self, req: ClientRequest) -> str:
        # A stale read is for the nearest node: the first server (the gateway's own node)
        # rather than the leader.
        stale = req.consistency == "stale" and req.op in _READ_OPS
        if self.leader is not None and not stale:
            return self.leader
        # Round robin, passing over a server that just failed us (it died, most likely: asking
        # it again costs a whole connect_timeout) while another may answer.
        n = len(self.servers)
        for k in range(n):
            addr = self.servers[(self._next + k) % n]
            if not self._recently_unreachable(addr):
                self._next += k
                return addr
        return self.servers[self._next % n]

    def _recently_unreachable(self, addr: str) -> bool:
        t = self._unreachable.get(addr)
        return t is not None and time.monotonic() - t < self.UNREACHABLE_FOR

    def _failed(self, addr: str) -> None:
        if addr == self.leader:
            self.leader = self.leader_id = None
        if self.servers[self._next % len(self.servers)] == addr:
            self._next += 1

    def _answered(self, addr: str, req: ClientRequest, reply: ClientReply) -> None:
        # A stale read may come from any follower: only a leader-only answer proves leadership.
        if req.op in _READ_OPS and req.consistency == "stale":
            return
        if addr != self.leader:
            self.leader = addr
            self.leader_id = reply.leader_id
        elif reply.leader_id:
            self.leader_id = reply.leader_id

    def _exchange(self, addr: str, frame: bytes, wait: float) -> tuple[Optional[ClientReply], str]:
        """One attempt: (reply, "") or (None, why). A socket that missed its reply is closed."""
        conn = self._conn(addr)
        sock = conn.sock
        start = time.monotonic()
        try:
            # IMMEDIATE makes POLLOUT mean "connected": a dead node is skipped after
            # connect_timeout rather than a whole attempt.
            if not sock.poll(max(1, int(min(wait, self.connect_timeout) * 1000)), zmq.POLLOUT):
                # Nothing was sent, so the socket is not stuck: keep it, so that a slow
                # connection can still complete in the background for a later attempt.
                if self._handshake_refusal(conn, addr, wait - (time.monotonic() - start)):
                    return None, f"{addr} refused this token"
                return None, f"{addr} not reachable"
            # A drop before this send is no news: forget it (a refused handshake is).
            if self._handshake_refusal(conn, addr, wait - (time.monotonic() - start)):
                return None, f"{addr} refused this token"
            sock.send(frame, zmq.NOBLOCK)
            while True:
                left = wait - (time.monotonic() - start)
                events = dict(conn.poller.poll(max(1, int(left * 1000)))) if left > 0 else {}
                if sock in events:
                    data = sock.recv()
                    break
                if conn.monitor in events:
                    # The TCP connection dropped (the node died): the reply will never come,
                    # so give up now rather than at the end of the attempt.
                    self._drop_socket(addr)
                    return None, f"{addr} closed the connection"
                if not events:
                    self._drop_socket(addr)
                    return None, f"{addr} did not answer"
        except zmq.Again:
            self._drop_socket(addr)
            return None, f"{addr} not reachable"
        except BaseException:
            # Interrupted mid-request (KeyboardInterrupt, ...): the REQ socket is stuck.
            self._drop_socket(addr)
            raise
        self._auth_refused_at = None
        try:
            return decode_client(data, ClientReply), ""
        except DecodeError as e:
            return None, f"{addr} sent a malformed reply ({e})"

    def _conn(self, addr: str) -> "_Conn":
        conn = self._sockets.get(addr)
        if conn is None:
            conn = self._sockets[addr] = _Conn(self._ctx, addr, self._configure_socket)
        return conn

    def _drop_socket(self, addr: str) -> None:
        conn = self._sockets.pop(addr, None)
        if conn is not None:
            conn.close()

    # ------------------------------------------------------------ backup (issue 13)

    BACKUP_CHUNK = 1024 * 1024  # bytes asked for per request: one chunk in flight, bounded memory

    def backup(self, path_or_file: Any, *, start_timeout: float = 120.0,
               progress: Optional[Any] = None) -> dict:
        """Save a consistent copy of the whole state, at one applied index, to ``path_or_file``
        (a path: written to PATH.tmp, renamed once complete; or a binary file object).

        The leader confirms its leadership (every write acknowledged before this call is in the
        copy), checkpoints its state without stopping writes, and the copy is streamed from
        it in chunks, one at a time, into a verifiable backup file (storage/backup_file.py).
        ``start_timeout``: how long taking the checkpoint may take (it reads the state's files
        once to checksum them). ``progress(done, total)`` is called after every chunk.
        Returns ``{"path", "cluster_id", "index", "term", "bytes", "members", "node"}``.
        Raises ClientError (and leaves no file) if the backup cannot be completed."""
        # Imported here: the file format lives with storage, and ``import raftkv`` must not load it.
        from raftkv.storage.backup_file import BackupError, BackupWriter, new_header

        if isinstance(path_or_file, (str, os.PathLike)):
            # Checked before the leader takes a checkpoint for nothing.
            where = os.path.dirname(os.path.abspath(path_or_file))
            if not os.path.isdir(where) or not os.access(where, os.W_OK):
                raise InvalidRequest(f"backup: cannot write {path_or_file}: {where} is not a writable directory")
        with self._lock:
            saved = self.timeout, self.attempt_timeout
            self.timeout = max(self.timeout, float(start_timeout))
            self.attempt_timeout = self.timeout  # a second attempt would take a second checkpoint
            try:
                info = self._admin(ClientRequest(Op.BACKUP.value))
            finally:
                self.timeout, self.attempt_timeout = saved
            node_addr = self.leader
        try:
            bid, index, term, size = info["backup"], info["index"], info["term"], info["size"]
            members = [Member(*m) for m in info["members"]]
            if not (isinstance(bid, str) and all(type(v) is int and v >= 0 for v in (index, term, size))):
                raise TypeError("bad field types")
        except (KeyError, TypeError, ValueError) as e:
            raise ClientError(f"backup: the server's answer is malformed ({e})") from None
        if node_addr is None:
            raise ClientError("backup: the node that took the checkpoint is unknown")
        cluster_id = str(self.status(node_addr).get("cluster_id") or "")
        try:
            writer = BackupWriter(path_or_file, new_header(cluster_id, index, term, members, size,
                                                           str(info.get("node") or "")))
        except BackupError as e:
            raise ClientError(f"backup: {e}") from None
        except OSError as e:
            raise ClientError(f"backup: cannot write {path_or_file}: {e.strerror or e}") from None
        try:
            offset = 0
            while offset < size:
                try:
                    rep = self._call(ClientRequest(Op.BACKUP.value, key=bid, seq=offset, limit=self.BACKUP_CHUNK),
                                     targets=[node_addr])
                except InvalidRequest as e:
                    raise ClientError(f"backup interrupted at byte {offset} of {size}: {e}") from None
                data = rep.value or b""
                if not data or len(data) > size - offset:
                    raise ClientError(f"backup: {node_addr} sent {len(data)} bytes at offset {offset} of {size}")
                writer.write(data)
                offset += len(data)
                if progress is not None:
                    progress(offset, size)
            total = writer.finish()
        except BaseException as e:
            writer.abort()
            try:  # let the node delete its checkpoint now rather than once idle
                self._call(ClientRequest(Op.BACKUP.value, key=bid, seq=size), targets=[node_addr])
            except ClientError:
                pass
            if isinstance(e, OSError):
                raise ClientError(f"backup: cannot write {path_or_file}: {e.strerror or e}") from None
            raise
        try:  # done: the node may delete its checkpoint now (else it does so once idle)
            self._call(ClientRequest(Op.BACKUP.value, key=bid, seq=size), targets=[node_addr])
        except ClientError:
            pass
        return {"path": writer.path or getattr(path_or_file, "name", None), "cluster_id": cluster_id,
                "index": index, "term": term, "bytes": total, "members": len(members),
                "node": str(info.get("node") or node_addr)}

    # ------------------------------------------------------------ leases (wire/lease_client.py)

    def lease_grant(self, ttl: int) -> int:
        """Grant a lease of ``ttl`` seconds; returns its id. Nothing renews it: see :meth:`lease`."""
        if type(ttl) is not int or ttl <= 0:
            raise InvalidRequest("a lease TTL is a positive number of seconds")
        req = ClientRequest(Op.LEASE_GRANT.value, lease=ttl)
        self._stamp(req)  # a retried grant returns the same id
        reply = self._call(req, write=True)
        self._expect_ok(reply, "lease_grant")
        return lease_id_of(reply.value)

    def lease_keepalive(self, lease_id: int) -> int:
        """Renew a lease for its full TTL from now; returns the TTL. NotFound if it is gone."""
        reply = self._call(ClientRequest(Op.LEASE_KEEPALIVE.value, lease=_lease_id(lease_id)))
        self._lease_found(reply, lease_id)
        return int((reply.info or {}).get("ttl", 0))

    def lease_revoke(self, lease_id: int) -> None:
        """End a lease now: its keys are deleted (one entry). NotFound if it is already gone."""
        req = ClientRequest(Op.LEASE_REVOKE.value, lease=_lease_id(lease_id))
        self._stamp(req)
        self._lease_found(self._call(req, write=True), lease_id)

    def lease_ttl(self, lease_id: int) -> dict:
        """``{"id", "ttl", "remaining", "keys"}`` of a lease (remaining seconds as the leader sees it)."""
        reply = self._call(ClientRequest(Op.LEASE_TTL.value, lease=_lease_id(lease_id)))
        self._lease_found(reply, lease_id)
        return dict(reply.info or {})

    def lease_list(self) -> builtins.list[dict]:
        """Every lease: ``{"id", "ttl", "remaining"}`` dicts in id order."""
        reply = self._call(ClientRequest(Op.LEASE_LIST.value))
        self._expect_ok(reply, "lease_list")
        return list((reply.info or {}).get("leases", []))

    def lease(self, ttl: int) -> Lease:
        """Grant a lease and keep it alive from a background thread until the returned
        :class:`Lease` is closed (``with kv.lease(ttl=10) as lease: kv.put(k, v, lease=lease.id)``);
        closing it revokes it."""
        lease_id = self.lease_grant(ttl)
        kc = Client(self.servers, timeout=max(1.0, ttl / 3.0), connect_timeout=self.connect_timeout,
                    token=self._token.encode() if self._token is not None else None)
        return Lease(self, lease_id, ttl, kc)

    def _lease_found(self, reply: ClientReply, lease_id: int) -> None:
        if reply.status == Status.NOT_FOUND:
            raise NotFound(reply.error or f"lease {lease_id} not found")
        self._expect_ok(reply, "lease")


    # ------------------------------------------------------------ revisions and transactions (issue 14)

    def get_meta(self, key: str, consistency: str = "linearizable") -> "KeyMeta":
        """``key``'s value, create/mod revision and version, and the revision the read
        reflects, as a :class:`raftkv.txn.KeyMeta`; raises :class:`NotFound` if absent."""
        reply = self._get_reply(key, consistency)
        return KeyMeta(key, reply.value if reply.value is not None else b"", reply.create_revision,
                       reply.mod_revision, reply.version, reply.revision)

    def txn(self, compare: Iterable[Any] = (), success: Iterable[Any] = (), failure: Iterable[Any] = (), *,
            client_id: Optional[str] = None, seq: Optional[int] = None) -> "TxnResult":
        """Apply a transaction atomically (one log entry, exactly once): if every compare
        holds, run ``success``, else ``failure`` (see :mod:`raftkv.txn` for the builders).
        Returns a :class:`raftkv.txn.TxnResult`. Raises :class:`InvalidRequest` for a
        transaction the node refuses (too large, a bad key), :class:`Timeout` at the deadline
        (it may then have been applied). ``client_id``/``seq``: an explicit session, as for
        :meth:`write` (the HTTP gateway's Idempotency-Key)."""
        try:
            t = build_txn(compare, success, failure)
        except TypeError as e:
            raise InvalidRequest(str(e)) from None
        if (client_id is None) != (seq is None):
            raise InvalidRequest("client_id and seq go together")
        req = ClientRequest(Op.TXN.value, txn=t)
        self._stamp(req, client_id, seq)
        reply = self._call(req, write=True)
        self._expect_ok(reply, "txn")
        return TxnResult(reply.succeeded, list(reply.responses), reply.revision)

    def _delete_if(self, key: str, expected: Value) -> bool:
        _check_key(key)
        exp = _to_bytes(expected, "expected value")
        res = self.txn([txn_value(key) == exp], [txn_delete(key)])
        return res.succeeded

    # ------------------------------------------------------------ watches (issue 14)

    def watch(self, prefix_or_key: str, start_revision: Optional[int] = None, *, wait: float = 2.0,
              consistency: str = "linearizable") -> "Watch":
        """The events of every key starting with ``prefix_or_key`` ("" for all keys): an iterator
        of :class:`raftkv.records.Event` (``type`` "put" or "delete", ``key``, ``value``,
        ``revision`` = ``mod_revision``, ``prev_value`` when known), in revision order, from
        ``start_revision`` (inclusive) or, when None, from now (a start confirmed as
        ``consistency`` says: linearizable by default, so every write acknowledged before the
        call is before the start). No gap and no duplicate across reconnects and leader changes:
        it resumes from the revision after the last one it saw, on any node (wire/watch_client.py).

        ``close()`` (or leaving a ``with`` block) cancels it. Raises :class:`Compacted` (with the
        revision to restart from) when no node keeps history back to ``start_revision``, and
        :class:`Unavailable` when no node answers for ``timeout`` seconds. ``wait``: how long a
        node may hold one long poll. Uses sockets of its own, not this Client's."""
        from .watch_client import Watch

        if consistency not in CONSISTENCY_LEVELS:
            raise InvalidRequest(f"consistency must be one of {', '.join(CONSISTENCY_LEVELS)}")
        if prefix_or_key:
            _check_key(prefix_or_key, "prefix")
        w = Watch(self._fork(), prefix_or_key, start_revision, wait=wait, consistency=consistency)
        try:
            w.begin()
        except BaseException:
            w.close()
            raise
        return w

    def _fork(self) -> "Client":
        """A new Client to the same servers with the same settings and sockets of its own."""
        if self._closed:
            raise ClientError("client is closed")
        return Client(self.servers, self.timeout, attempt_timeout=self.attempt_timeout,
                      connect_timeout=self.connect_timeout, local=self._local,
                      token=self._token.encode() if self._token is not None else None)

    # ------------------------------------------------------------ tokens (secure clusters, admin)

    def token_create(self, name: str, role: str) -> str:
        """Make a client token ``name`` with ``role`` (read, write, admin) and return it (the one
        time it exists in full: the cluster keeps only its hash). The secret is made here, from
        this Client's own token (which names the cluster and its key), and never sent."""
        import msgpack

        from .security.tokens import Role, TokenError, new_client_token

        own = self._token
        if own is None:
            raise InvalidRequest("token_create needs a Client made with an admin token (token=...)")
        try:
            t = new_client_token(name, Role(role), own.cluster_id, own.server_public_key)
        except (TokenError, ValueError) as e:
            raise InvalidRequest(f"token_create: {e}") from None
        self._admin(ClientRequest(Op.TOKEN_CREATE.value, key=name,
                                  value=msgpack.packb(t.stored().to_wire(), use_bin_type=True)))
        return t.encode()

    def token_list(self) -> builtins.list[dict]:
        """The cluster's tokens: ``[{"name": ..., "role": ...}]`` sorted by name (never their
        secrets or hashes)."""
        info = self._admin(ClientRequest(Op.TOKEN_LIST.value))
        out = [{"name": str(t["name"]), "role": str(t.get("role", ""))}
               for t in info or [] if isinstance(t, dict) and "name" in t]
        return sorted(out, key=lambda t: t["name"])

    def token_revoke(self, name: str) -> None:
        """Revoke token ``name`` (NotFound if there is none; Refused for the last admin token)."""
        _check_key(name, "token name")
        self._admin(ClientRequest(Op.TOKEN_REVOKE.value, key=name))

    # ------------------------------------------------------------ locks and elections (wire/recipes.py)

    def lock(self, name: str, ttl: int = 10, *, timeout: Optional[float] = None) -> "Lock":
        """Acquire the lock ``name``, waiting (fairly: in the order of arrival, by revision) while
        another process holds it; returns the held :class:`~raftkv.wire.recipes.Lock`, a context
        manager (``with kv.lock("jobs", ttl=10) as lock: ...``) whose end releases it. Its lease
        (``ttl`` seconds) is kept alive in the background, so a holder that dies loses the lock
        within the TTL. ``lock.fencing_token`` (its key's create revision) and
        ``lock.is_owner()`` let a txn refuse a stale holder's writes; ``lock.lost`` says the lease
        ended. Raises Timeout after ``timeout`` seconds of waiting (None: no limit)."""
        from .recipes import Lock

        return Lock(self, name, ttl, timeout)

    def election(self, name: str, ttl: int = 10) -> "Election":
        """A leader election on ``name``: ``.campaign(value)`` blocks until this process leads,
        ``.leader()`` is the leader's value (or None), ``.proclaim(value)``, ``.resign()``. See
        :class:`~raftkv.wire.recipes.Election`."""
        from .recipes import Election

        return Election(self, name, ttl)

    def join_token_rotate(self) -> str:
        """Make a new join token for the cluster and return it (``kvclient join-token rotate``,
        admin): once committed the old one is refused for joins; members already in are not
        affected. Like token_create, the secret is made here from this Client's own token (which
        names the cluster and its key) and only its hash and derived public key are sent."""
        import msgpack

        from .security.tokens import hash_secret, new_join_token
        from .security.zap import JOINER_USER_ID

        own = self._token
        if own is None:
            raise InvalidRequest("join_token_rotate needs a Client made with an admin token (token=...)")
        t = new_join_token(own.cluster_id, own.server_public_key)
        stored = [hash_secret(t.secret), t.keypair().public]
        self._admin(ClientRequest(Op.TOKEN_CREATE.value, key=JOINER_USER_ID,
                                  value=msgpack.packb(stored, use_bin_type=True)))
        return t.encode()

    def _stamp(self, req: ClientRequest, client_id: Optional[str] = None, seq: Optional[int] = None) -> None:
        """Give the write ``req`` its session pair: the caller's ``(client_id, seq)`` when it names
        one (a resend of a write it numbered itself), else the next of this Client's session."""
        if client_id is None:
            with self._lock:
                req.client_id, req.seq = self._session.next()
        else:
            req.client_id, req.seq = client_id, seq


class _Conn:
    """One REQ socket to one server, and a monitor that reports when its TCP connection drops."""

    __slots__ = ("sock", "monitor", "poller")

    def __init__(self, ctx: zmq.Context, addr: str, configure: Any = None) -> None:
        self.sock = ctx.socket(zmq.REQ)
        if configure is not None:
            configure(self.sock)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.IMMEDIATE, 1)
        if addr.startswith("["):
            self.sock.setsockopt(zmq.IPV6, 1)
        # The monitor must exist before connect() to see the connection's events.
        self.monitor = self.sock.get_monitor_socket(
            zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
            | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
        self.sock.connect(f"tcp://{addr}")
        self.poller = zmq.Poller()
        self.poller.register(self.sock, zmq.POLLIN)
        self.poller.register(self.monitor, zmq.POLLIN)

    def close(self) -> None:
        try:
            self.sock.disable_monitor()
        except zmq.ZMQError:
            pass  # already gone
        self.monitor.close(linger=0)
        self.sock.close(linger=0)
