"""Peer (Raft) traffic: one ROUTER bound per node, one DEALER per peer, one I/O thread.

ZeroMQ sockets are not thread-safe. The I/O thread owns the ROUTER (everything we receive) and
hands decoded messages to the node in batches through a callback, so one actor message carries
many Raft messages. The DEALERs to configured peers are shared under a lock instead, so that
the actor that produced a message (the leader's AppendEntries, a follower's acknowledgement
right after its sync) sends it itself: a hand-off to another Python thread costs a wake-up and
a GIL transfer (~30-60 us here), and a write crosses this path twice. libzmq allows a socket to
move between threads behind a full memory barrier, which the lock provides. The I/O thread
does not poll those DEALERs (a poll is a use); it drains them under the lock now and then,
since a peer only answers through them when it does not know our address (rare: see
``_drain_dealers``). Messages for non-members and the joining node's own socket still go
through the I/O thread.

Sends never block: a DEALER to a dead or cut-off peer fills up to its high-water mark and a
blocking send there would freeze the I/O thread (docs/architecture.md 8), so frames are sent with
NOBLOCK and dropped on EAGAIN; Raft retransmits.

Bounds, so that no peer (or anyone who can reach the port) can grow the node without limit:
every socket refuses frames longer than ``max_message`` (libzmq's ``MAXMSGSIZE``, see
:func:`max_peer_message`: the largest AppendEntries or InstallSnapshot a correct member sends),
queues at most ``HWM`` messages per connection each way, and the table of reply routes keyed
by sender id is an LRU of at most ``MAX_ROUTES`` entries. Warnings a peer can trigger are
rate-limited (wire/ratelog.py).
"""
from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any, Callable, Optional

import zmq
from zmq.utils.monitor import recv_monitor_message

from .address import parse_address, zmq_endpoint
from .door_hardening import harden
from .iothread import IoThread
from .messages import DecodeError, JoinReply, JoinRequest, decode_peer, encode_peer
from .ratelog import RateLimitedLog
from .security.keys import KeyPair
from .security.zap import (JOINER_USER_ID, Door, configure_curve_client, configure_curve_server,
                           configure_null_server, user_id_of)

log = logging.getLogger("wire.peer")
_ratelog = RateLimitedLog(log)
_FAULT_KIND = re.compile(r"[0-9'\"(]")

_MAX_BATCH = 2000  # messages handed to the node per callback: bounds one actor message's work
HWM = 1000  # messages queued per connection each way (the leader's in-flight window is far smaller)
MAX_ROUTES = 1024  # reply routes remembered by sender id (LRU); members use their DEALERs
MAX_SENDER = 64  # characters of a sender id (node ids are at most 64 bytes); longer frames are dropped
MAX_ADDR_DEALERS = 16  # a joining node's sockets to addresses it was pointed at (a JoinReply's hint)
_ENTRY_ENVELOPE = 64 * 1024  # one log entry beyond its key, value and expected value (or a CONFIG entry)
_SNAPSHOT_CHUNK = 16 * 1024 * 1024  # the largest snapshot chunk a sender may use (leaders send 512 KiB)
_ENVELOPE = 1024 * 1024  # a message beyond its entries or chunk (ids, members list, msgpack)


def max_peer_message(max_batch: int, max_key: int, max_value: int) -> int:
    """The largest peer frame a correct member sends (the peer door's ``MAXMSGSIZE``): an
    AppendEntries of ``max_batch`` entries, each a CAS with the largest key, value and expected
    value, or an InstallSnapshot chunk; plus the envelope. Correct rather than tight."""
    entry = max_key + 2 * max_value + _ENTRY_ENVELOPE
    return max(max_batch * entry, _SNAPSHOT_CHUNK) + _ENVELOPE
_DRAIN_EVERY = 0.05  # seconds between reads of the configured DEALERs (see _drain_dealers)
_REDIAL_MIN_S = 0.5  # first wait before redialling a peer whose door refused our key
_REDIAL_MAX_S = 5.0  # the wait doubles up to this


# The old name of wire.address.zmq_endpoint, kept for importers.
tcp = zmq_endpoint


class PeerTransport(IoThread):
    """Sends and receives Raft messages for one node.

    ``on_messages(batch)`` is called from the I/O thread with a list of 4-tuples
    ``(sender, msg, route, cluster_id)``: ``route`` lets the node answer a non-member (a joining
    node) through the ROUTER; ``cluster_id`` is None, or the sender's cluster id when it differs
    from ours in a way the node must decide on (a joining node learning the id from the leader,
    a JoinReply).
    """

    def __init__(self, ctx: zmq.Context, node_id: str, bind_addr: str,
                 on_messages: Callable[[list], None], cluster_id: Optional[str] = None,
                 on_lost: Callable[[str], None] = lambda peer: None, max_message: int = -1,
                 zap_door: Optional[Door] = None, curve: Optional[tuple[KeyPair, KeyPair]] = None) -> None:
        """``max_message``: the longest frame read on any peer socket (:func:`max_peer_message`);
        -1: no limit. ``zap_door``: ask the node's ZAP handler about every connection
        (loopback-only mode). ``curve``: ``(cluster key, node key)`` on a secure cluster (issue
        11): the ROUTER is a CURVE server with the cluster key (the node's ZAP handler admits the
        configuration's member keys), every DEALER a CURVE client with this node's key, and each
        received message must come from the member its connection's key belongs to
        (``allowed_senders``, set by the node from the latest configuration)."""
        self.node_id = node_id
        self.cluster_id = cluster_id  # None until a joining node learns it from the leader
        self.on_messages = on_messages
        self.on_lost = on_lost  # called (I/O thread) with a peer id whose connection dropped
        self.bind_addr = bind_addr
        self.max_message = max_message
        self._router = ctx.socket(zmq.ROUTER)
        self._router.setsockopt(zmq.LINGER, 0)
        self._router.setsockopt(zmq.RCVHWM, HWM)
        self._router.setsockopt(zmq.SNDHWM, HWM)
        self._router.setsockopt(zmq.MAXMSGSIZE, max_message)
        self._router.setsockopt(zmq.ROUTER_MANDATORY, 0)
        harden(self._router)  # a draft-API build only: the PING abort guard (wire/door_hardening.py)
        self.curve = curve
        # Secure clusters: the member ids a message may come from (None: no check, insecure).
        self.allowed_senders: Optional[frozenset] = None
        if curve is not None:
            configure_curve_server(self._router, curve[0], Door.PEER)
        elif zap_door is not None:  # loopback-only mode: the node's ZAP handler vets every connection
            configure_null_server(self._router, zap_door)
        self._router.bind(zmq_endpoint(bind_addr))  # raises ZMQError(EADDRINUSE) before anything starts
        super().__init__(ctx, f"peer-io-{node_id}")
        # Configured peers: id -> (addr, DEALER, its monitor). Any thread, under _lock (module doc).
        self._lock = threading.Lock()
        self._dealers: dict[str, tuple[str, zmq.Socket, zmq.Socket]] = {}
        # Sockets of a joining node to a member's address: the I/O thread's alone.
        self._addr_dealers: dict[str, zmq.Socket] = {}
        # sender id -> ROUTER identity of its last frame; insertion order is the LRU order
        self._routes: dict[str, bytes] = {}
        self._poller = zmq.Poller()
        self._drained = 0.0
        # Monitors of the configured DEALERs (the I/O thread polls them): made under _lock by
        # set_peers, registered (or closed) by the I/O thread when it sees a b"M" notice.
        self._monitors: dict = {}  # monitor socket -> peer id
        self._monitors_new: list = []  # (monitor socket, peer id)
        self._monitors_old: list = []  # monitor sockets of closed DEALERs
        # Secure clusters: peers whose door refused our key (its configuration is behind ours):
        # libzmq never retries such a connection, so the I/O thread redials them (pid -> due, wait).
        self._redial: dict[str, tuple[float, float]] = {}
        self._monitor_events = zmq.EVENT_DISCONNECTED
        if curve is not None:
            self._monitor_events |= zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_SUCCEEDED

    # ------------------------------------------------------------ called from any thread

    def send_many(self, items: list) -> None:
        """Send ``(to, msg)`` pairs from the caller's thread (encoding included); a message for a
        node that is not a configured peer goes through the I/O thread (see ``_handle_out``)."""
        if not items or self._stop.is_set():
            return
        cid = self.cluster_id or ""
        node_id = self.node_id
        frames = [(to, encode_peer(cid, node_id, msg)) for to, msg in items]
        rest: list = []
        with self._lock:
            if self._stop.is_set():
                return
            dealers = self._dealers
            for to, data in frames:
                d = dealers.get(to)
                if d is not None:
                    _send_frame(d[1], data)
                else:
                    rest += (to.encode(), data)
        if rest:
            self._push().send_multipart([b"S"] + rest, copy=False)

    def send(self, to: str, msg: Any) -> None:
        self.send_many([(to, msg)])

    def reply_route(self, route: bytes, msg: Any) -> None:
        """Answer a peer that reached us without being one of our peers (a joining node)."""
        self._push().send_multipart([b"R", route, encode_peer(self.cluster_id or "", self.node_id, msg)])

    def send_to_addr(self, addr: str, msg: Any) -> None:
        """Send to an address that is not (yet) a known peer: used by a joining node."""
        self._push().send_multipart([b"A", addr.encode(), encode_peer(self.cluster_id or "", self.node_id, msg)])

    def set_peers(self, peers: dict) -> None:
        """Replace the peer set ``{id: 'HOST:PORT'}`` (this node excluded)."""
        want = {pid: addr for pid, addr in peers.items() if pid != self.node_id}
        changed = False
        with self._lock:
            if self._stop.is_set():
                return
            for pid in list(self._dealers):
                addr, sock, mon = self._dealers[pid]
                if want.get(pid) != addr:
                    del self._dealers[pid]
                    sock.close(linger=0)
                    self._monitors_old.append(mon)
                    changed = True
            for pid, addr in want.items():
                if pid not in self._dealers:
                    sock = self._new_dealer(addr)
                    # A crashed peer's kernel closes its connections at once: the node may take
                    # that as a hint (RaftCore.peer_unreachable) instead of waiting for silence.
                    mon = sock.get_monitor_socket(self._monitor_events)
                    self._dealers[pid] = (addr, sock, mon)
                    self._monitors_new.append((mon, pid))
                    changed = True
        if changed:
            self._push().send_multipart([b"M"])

    # ------------------------------------------------------------ sockets

    def _new_dealer(self, addr: str) -> zmq.Socket:
        s = self.ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, HWM)
        s.setsockopt(zmq.RCVHWM, HWM)
        s.setsockopt(zmq.MAXMSGSIZE, self.max_message)
        harden(s)  # a peer answers through it too: the same guard as the door's
        s.setsockopt(zmq.IMMEDIATE, 1)  # queue nothing for a peer that is not connected
        s.setsockopt(zmq.RECONNECT_IVL, 50)
        # Redial a lost peer at least every 100 ms: with 500 ms of backoff, a follower restarted
        # after a kill -9 waited up to 0.5 s for its leader's first message (and meanwhile hit its
        # election timeout), most of issue 12's restart-to-serving time. A refused localhost/LAN
        # connect every 100 ms costs nothing worth saving.
        s.setsockopt(zmq.RECONNECT_IVL_MAX, 100)
        # A dead TCP peer (a host that died never sends FIN) is noticed by the kernel, not by
        # ZeroMQ heartbeats: a ZMTP PING queued behind a peer's stalled input on a connection
        # that then resets aborts libzmq 4.3.5 (``!_io_error``, stream_engine_base.cpp:310;
        # docs/architecture.md 8), and our DEALERs were the only senders of PINGs. Keepalive
        # probes check an idle connection after 1 s, and data unacknowledged for 3 s (TCP
        # user timeout) drops a busy one: about what HEARTBEAT_IVL 1000 / TIMEOUT 3000 did.
        s.setsockopt(zmq.TCP_KEEPALIVE, 1)
        s.setsockopt(zmq.TCP_KEEPALIVE_IDLE, 1)
        s.setsockopt(zmq.TCP_KEEPALIVE_INTVL, 1)
        s.setsockopt(zmq.TCP_KEEPALIVE_CNT, 2)
        s.setsockopt(zmq.TCP_MAXRT, 3000)
        if self.curve is not None:
            configure_curve_client(s, self.curve[0].public, self.curve[1])
        s.connect(self._connect_endpoint(addr))
        return s

    def _connect_endpoint(self, addr: str) -> str:
        """Connect from our own address when we bind a specific one, so that the source of our
        peer traffic is this node's host (multi-homed hosts; per-link firewall rules in tests)."""
        host = parse_address(self.bind_addr, port_zero=True).host
        if host not in ("0.0.0.0", "localhost", "[::]"):
            return f"tcp://{host}:0;{zmq_endpoint(addr)[6:]}"
        return zmq_endpoint(addr)

    # ------------------------------------------------------------ the I/O thread

    def _addr_dealer(self, addr: str) -> zmq.Socket:
        s = self._addr_dealers.get(addr)
        if s is not None and self.curve is not None:
            # A member whose configuration does not list us yet refuses our key, for good on that
            # socket (libzmq does not retry): each join attempt dials anew.
            self._poller.unregister(s)
            s.close(linger=0)
            del self._addr_dealers[addr]
            s = None
        if s is None:
            if len(self._addr_dealers) >= MAX_ADDR_DEALERS:  # the addresses come from peers' hints
                old = self._addr_dealers.pop(next(iter(self._addr_dealers)))
                self._poller.unregister(old)
                old.close(linger=0)
            s = self._addr_dealers[addr] = self._new_dealer(addr)
            # The member we asked answers through this socket: it does not know our address.
            self._poller.register(s, zmq.POLLIN)
        return s

    def _handle_out(self, frames: list) -> None:
        kind = frames[0]
        if kind == b"S":
            for i in range(1, len(frames), 2):
                # Not a configured peer (e.g. we are joining and do not know the leader's
                # address yet): answer through the connection its messages arrived on.
                route = self._routes.get(frames[i].decode())
                if route is not None:
                    _send_frame(self._router, [route, frames[i + 1]])
        elif kind == b"R":
            _send_frame(self._router, [frames[1], frames[2]])
        elif kind == b"A":
            _send_frame(self._addr_dealer(frames[1].decode()), frames[2])
        elif kind == b"M":
            with self._lock:
                new, self._monitors_new = self._monitors_new, []
                old, self._monitors_old = self._monitors_old, []
            for mon, pid in new:
                self._monitors[mon] = pid
                self._poller.register(mon, zmq.POLLIN)
            for mon in old:
                if self._monitors.pop(mon, None) is not None:
                    self._poller.unregister(mon)
                mon.close(linger=0)

    def _read_monitor(self, mon: zmq.Socket) -> None:
        pid = self._monitors.get(mon)
        while True:
            try:
                ev = recv_monitor_message(mon, zmq.NOBLOCK)
            except zmq.Again:
                return
            if pid is None:
                continue
            if ev["event"] == zmq.EVENT_DISCONNECTED:
                log.debug("%s: connection to %s dropped", self.node_id, pid)
                self.on_lost(pid)
            elif ev["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                wait = min(self._redial.get(pid, (0.0, _REDIAL_MIN_S / 2))[1] * 2, _REDIAL_MAX_S)
                self._redial[pid] = (time.monotonic() + wait, wait)
                _ratelog.warn("peer-auth:" + pid, "%s: %s refused our key (its configuration may not list us "
                              "yet); redialling in %.1fs", self.node_id, pid, wait)
            elif ev["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                if self._redial.pop(pid, None) is not None:  # the operator saw the refusal: say it is over
                    log.info("%s: %s accepted our key after a redial", self.node_id, pid)

    def _redial_refused(self) -> None:
        """Replace the DEALER of each peer whose door refused our key once its wait is over
        (libzmq never retries a handshake refused by ZAP); I/O thread."""
        now = time.monotonic()
        for pid, (due, wait) in list(self._redial.items()):
            if due > now:
                continue
            self._redial[pid] = (float("inf"), wait)  # until this socket's own outcome is known
            with self._lock:
                d = self._dealers.get(pid)
                if d is None or self._stop.is_set():
                    self._redial.pop(pid, None)
                    continue
                addr, sock, mon = d
                # (its monitor may not be registered yet: then it must never be)
                self._monitors_new = [(m, p) for m, p in self._monitors_new if m is not mon]
                sock.close(linger=0)
                new = self._new_dealer(addr)
                new_mon = new.get_monitor_socket(self._monitor_events)
                self._dealers[pid] = (addr, new, new_mon)
            if self._monitors.pop(mon, None) is not None:
                self._poller.unregister(mon)
            mon.close(linger=0)
            self._monitors[new_mon] = pid
            self._poller.register(new_mon, zmq.POLLIN)

    def _drain_dealers(self, batch: list) -> None:
        """Read what arrived on the configured DEALERs: a peer answers through them only while it
        does not know our address (a lagging member, just after we joined), and such an answer
        is worth no more than a retry of ours, so being read within _DRAIN_EVERY is enough."""
        with self._lock:
            for _, sock, _ in self._dealers.values():
                self._read_dealer(sock, batch)

    def _decode(self, route: bytes, data: bytes) -> Optional[tuple]:
        try:
            f = decode_peer(data)
        except DecodeError as e:
            text = str(e)[:200]
            # One limit per kind of fault (the text up to its first number or quoted value).
            _ratelog.warn("peer-bad:" + _FAULT_KIND.split(text, 1)[0][:40], "%s: dropped a malformed peer frame: %s",
                          self.node_id, text)
            return None
        if len(f.sender) > MAX_SENDER:  # a huge id would be kept (routes, contact times) by every layer
            _ratelog.warn("peer-sender", "%s: dropped a peer frame whose sender id is %d characters long",
                          self.node_id, len(f.sender))
            return None
        if f.cluster_id != (self.cluster_id or ""):
            if self.cluster_id is None and f.cluster_id:
                # A joining node learns the cluster id from the leader's messages; the node decides
                # whether to adopt it.
                return f.sender, f.msg, route, f.cluster_id
            if isinstance(f.msg, JoinRequest) and f.cluster_id == "":
                # A joiner that does not know the cluster id yet: the node refuses the request and
                # answers with the id (offered "" marks it), so only a request naming us can join.
                return f.sender, f.msg, route, ""
            if isinstance(f.msg, JoinReply):
                return f.sender, f.msg, route, f.cluster_id
            _ratelog.warn("peer-cluster", "%s: dropped messages from %r of cluster %r (this is %r)", self.node_id,
                          f.sender[:64], f.cluster_id[:64], self.cluster_id)
            return None
        return f.sender, f.msg, route, None

    def _read_router(self, batch: list) -> None:
        router = self._router
        routes = self._routes
        secure = self.curve is not None
        events = router.getsockopt
        for i in range(_MAX_BATCH):
            # The poll said a message is there; after it, ask libzmq whether another is queued
            # rather than reading until zmq.Again: raising and catching Again costs ~9 us of CPU
            # per wake-up here, paid on both hops of every read's heartbeat round
            # (docs/performance.md, "Linearizable reads, round 5").
            if i and not events(zmq.EVENTS) & zmq.POLLIN:
                return
            try:
                if secure:
                    raw = router.recv_multipart(zmq.NOBLOCK, copy=False)
                else:
                    frames = router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if secure:
                if len(raw) != 2:
                    _ratelog.warn("peer-frames", "%s: dropped a peer message of %d frames", self.node_id, len(raw))
                    continue
                uid = user_id_of(raw[1])
                frames = [raw[0].bytes, raw[1].bytes]
            elif len(frames) != 2:
                _ratelog.warn("peer-frames", "%s: dropped a peer message of %d frames", self.node_id, len(frames))
                continue
            item = self._decode(frames[0], frames[1])
            if item is not None and secure:
                if not self._sender_ok(uid, item):
                    continue
                if uid == JOINER_USER_ID:  # answered on its route directly; never a member's route
                    batch.append(item)
                    continue
            if item is not None:
                sender = item[0]
                if routes.pop(sender, None) is None and len(routes) >= MAX_ROUTES:
                    del routes[next(iter(routes))]
                    _ratelog.warn("peer-routes", "%s: messages from more than %d distinct senders; "
                                  "forgetting the least recently heard", self.node_id, MAX_ROUTES)
                routes[sender] = frames[0]
                batch.append(item)

    def _sender_ok(self, uid: Optional[str], item: tuple) -> bool:
        """Secure clusters: whether a message received on the ROUTER may be handed on. ZAP only
        vets a connection when it is made, so each message is checked against the current
        configuration too (a member removed since keeps its open connection)."""
        sender, msg = item[0], item[1]
        if uid == JOINER_USER_ID:
            if isinstance(msg, JoinRequest) and msg.member.id == sender:  # it may only ask to join, as itself
                return True
            _ratelog.warn("peer-joiner", "%s: dropped a %s from a join-token connection (only JoinRequest "
                          "is accepted there)", self.node_id, type(msg).__name__)
            return False
        allowed = self.allowed_senders
        if uid is not None and uid == sender and allowed is not None and sender in allowed:
            return True
        _ratelog.warn("peer-forged", "%s: dropped a %s claiming to come from %r on the connection of %r "
                      "(not that member, or no longer a member)", self.node_id, type(msg).__name__,
                      sender[:64], (uid or "")[:64])
        return False

    def _read_dealer(self, sock: zmq.Socket, batch: list) -> None:
        for _ in range(_MAX_BATCH):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) == 1:
                item = self._decode(b"", frames[0])
                if item is not None:
                    batch.append(item)

    def _run(self) -> None:
        poller = self._poller
        poller.register(self._router, zmq.POLLIN)
        poller.register(self._pull, zmq.POLLIN)
        router, pull = self._router, self._pull
        try:
            while not self._stop.is_set():
                events = poller.poll(100)
                batch: list = []
                for sock, _ in events:
                    if sock is pull:
                        for _ in range(10_000):
                            try:
                                self._handle_out(pull.recv_multipart(zmq.NOBLOCK))
                            except zmq.Again:
                                break
                    elif sock is router:
                        self._read_router(batch)
                    elif sock in self._monitors:
                        self._read_monitor(sock)
                    else:
                        self._read_dealer(sock, batch)
                if self._redial:
                    self._redial_refused()
                now = time.monotonic()
                if now - self._drained >= _DRAIN_EVERY:
                    self._drained = now
                    self._drain_dealers(batch)
                if batch:
                    self.on_messages(batch)
        except zmq.ContextTerminated:
            pass
        finally:
            with self._lock:
                for _, s, _ in self._dealers.values():
                    s.close(linger=0)
                self._dealers.clear()
                for mon in list(self._monitors) + [m for m, _ in self._monitors_new] + self._monitors_old:
                    mon.close(linger=0)
            for s in self._addr_dealers.values():
                s.close(linger=0)
            self._router.close(linger=0)
            self._pull.close(linger=0)


def _send_frame(sock: zmq.Socket, frames: Any) -> None:
    try:
        if type(frames) is list:
            sock.send_multipart(frames, zmq.NOBLOCK)
        else:
            sock.send(frames, zmq.NOBLOCK)
    except zmq.Again:
        pass  # peer down or slow: drop, Raft will retry
