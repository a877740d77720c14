"""Peer (Raft) traffic: one ROUTER bound per node, one DEALER per peer, one I/O thread.

ZeroMQ sockets are not thread-safe, so a single I/O thread owns every peer socket. Other
threads (the actors) hand it frames through an inproc PUSH socket of their own (one per
thread), and it hands decoded messages back in batches through a callback, so one actor
message carries many Raft messages.

Sends never block: a DEALER to a dead or cut-off peer fills up to its high-water mark and a
blocking send there would freeze the I/O thread (DESIGN.md 8), so frames are sent with
NOBLOCK and dropped on EAGAIN; Raft retransmits.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Optional

import zmq

from .iothread import IoThread
from .messages import DecodeError, JoinReply, JoinRequest, decode_peer, encode_peer

log = logging.getLogger("wire.peer")

_MAX_BATCH = 2000  # messages handed to the node per callback: bounds one actor message's work


def tcp(addr: str) -> str:
    """'HOST:PORT' -> a ZeroMQ tcp endpoint."""
    host, _, port = addr.rpartition(":")
    return f"tcp://{host or '0.0.0.0'}:{port}"


class PeerTransport(IoThread):
    """Sends and receives Raft messages for one node.

    ``on_messages(batch)`` is called from the I/O thread with a list of ``(sender, msg, route)``;
    ``route`` lets the node answer a non-member (a joining node) through the ROUTER.
    """

    def __init__(self, ctx: zmq.Context, node_id: str, bind_addr: str,
                 on_messages: Callable[[list], None], cluster_id: Optional[str] = None) -> None:
        self.node_id = node_id
        self.cluster_id = cluster_id  # None until a joining node learns it from the leader
        self.on_messages = on_messages
        self.bind_addr = bind_addr
        self._warned: set = set()
        self._router = ctx.socket(zmq.ROUTER)
        self._router.setsockopt(zmq.LINGER, 0)
        self._router.setsockopt(zmq.RCVHWM, 100_000)
        self._router.setsockopt(zmq.ROUTER_MANDATORY, 0)
        self._router.bind(tcp(bind_addr))  # raises ZMQError(EADDRINUSE) before anything starts
        super().__init__(ctx, f"peer-io-{node_id}")
        self._dealers: dict[str, tuple[str, zmq.Socket]] = {}
        self._routes: dict[str, bytes] = {}  # sender id -> ROUTER identity of its last frame
        self._poller = zmq.Poller()

    # ------------------------------------------------------------ called from any thread

    def send_many(self, items: list) -> None:
        """Send ``(to, msg)`` pairs; encoding happens here, in the caller's thread."""
        if not items or self._stop.is_set():
            return
        cid = self.cluster_id or ""
        frames: list = [b"S"]
        for to, msg in items:
            frames.append(to.encode())
            frames.append(encode_peer(cid, self.node_id, msg))
        self._push().send_multipart(frames, copy=False)

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
        if self._stop.is_set():
            return
        flat = [b"P"]
        for pid, addr in peers.items():
            if pid != self.node_id:
                flat += [pid.encode(), addr.encode()]
        self._push().send_multipart(flat)

    # ------------------------------------------------------------ the I/O thread

    def _dealer(self, pid: str, addr: str) -> zmq.Socket:
        cur = self._dealers.get(pid)
        if cur is not None and cur[0] == addr:
            return cur[1]
        if cur is not None:
            self._poller.unregister(cur[1])
            cur[1].close(linger=0)
        s = self.ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, 10_000)
        s.setsockopt(zmq.IMMEDIATE, 1)  # queue nothing for a peer that is not connected
        s.setsockopt(zmq.RECONNECT_IVL, 50)
        s.setsockopt(zmq.RECONNECT_IVL_MAX, 500)
        # ZeroMQ heartbeats notice a dead TCP peer (a kill -9'd host never sends FIN).
        s.setsockopt(zmq.HEARTBEAT_IVL, 1000)
        s.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
        s.connect(self._connect_endpoint(addr))
        # A peer that does not know our address yet answers through our DEALER: read it too.
        self._poller.register(s, zmq.POLLIN)
        self._dealers[pid] = (addr, s)
        return s

    def _connect_endpoint(self, addr: str) -> str:
        """Connect from our own address when we bind a specific one, so that the source of our
        peer traffic is this node's host (multi-homed hosts; per-link firewall rules in tests)."""
        host = self.bind_addr.rpartition(":")[0]
        if host and host not in ("0.0.0.0", "*", "localhost", "[::]"):
            return f"tcp://{host}:0;{tcp(addr)[6:]}"
        return tcp(addr)

    def _send_frame(self, sock: zmq.Socket, frames: Any) -> None:
        try:
            if isinstance(frames, list):
                sock.send_multipart(frames, zmq.NOBLOCK)
            else:
                sock.send(frames, zmq.NOBLOCK)
        except zmq.Again:
            pass  # peer down or slow: drop, Raft will retry

    def _handle_out(self, frames: list) -> None:
        kind = frames[0]
        if kind == b"S":
            for i in range(1, len(frames), 2):
                pid = frames[i].decode()
                d = self._dealers.get(pid)
                if d is not None:
                    self._send_frame(d[1], frames[i + 1])
                else:
                    # Not a configured peer yet (e.g. we are joining and do not know the leader's
                    # address): answer through the connection its messages arrived on.
                    route = self._routes.get(pid)
                    if route is not None:
                        self._send_frame(self._router, [route, frames[i + 1]])
        elif kind == b"R":
            self._send_frame(self._router, [frames[1], frames[2]])
        elif kind == b"A":
            addr = frames[1].decode()
            self._send_frame(self._dealer("addr:" + addr, addr), frames[2])
        elif kind == b"P":
            want = {frames[i].decode(): frames[i + 1].decode() for i in range(1, len(frames), 2)}
            for pid in list(self._dealers):
                if pid not in want and not pid.startswith("addr:"):
                    sock = self._dealers.pop(pid)[1]
                    self._poller.unregister(sock)
                    sock.close(linger=0)
            for pid, addr in want.items():
                self._dealer(pid, addr)

    def _decode(self, route: bytes, data: bytes) -> Optional[tuple]:
        try:
            f = decode_peer(data)
        except DecodeError as e:
            self._warn_once(("bad", route, str(e)[:80]), f"dropped a malformed peer frame: {e}")
            return None
        if f.cluster_id != (self.cluster_id or ""):
            if self.cluster_id is None and f.cluster_id:
                # A joining node learns the cluster id from the leader (DESIGN.md 6); the node
                # decides whether to adopt it.
                return f.sender, f.msg, route, f.cluster_id
            if isinstance(f.msg, JoinRequest) and f.cluster_id == "":
                return f.sender, f.msg, route, None
            if isinstance(f.msg, JoinReply):
                return f.sender, f.msg, route, f.cluster_id
            self._warn_once(("cluster", f.sender, f.cluster_id),
                            f"dropped messages from {f.sender!r} of cluster {f.cluster_id!r} "
                            f"(this is {self.cluster_id!r})")
            return None
        return f.sender, f.msg, route, None

    def _read_router(self, batch: list) -> None:
        router = self._router
        for _ in range(_MAX_BATCH):
            try:
                frames = router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 2:
                self._warn_once(("frames", frames[0]), f"dropped a peer message of {len(frames)} frames")
                continue
            item = self._decode(frames[0], frames[1])
            if item is not None:
                self._routes[item[0]] = frames[0]
                batch.append(item)

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

    def _warn_once(self, key: Any, text: str) -> None:
        if key not in self._warned:
            if len(self._warned) > 1000:
                self._warned.clear()
            self._warned.add(key)
            log.warning("%s: %s", self.node_id, text)

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
                    else:
                        self._read_dealer(sock, batch)
                if batch:
                    self.on_messages(batch)
        except zmq.ContextTerminated:
            pass
        finally:
            for _, s in self._dealers.values():
                s.close(linger=0)
            self._router.close(linger=0)
            self._pull.close(linger=0)
