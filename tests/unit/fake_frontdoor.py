"""A scripted stand-in for a node's front door, for unit tests of the client side.

A ROUTER socket in a thread, speaking the real client protocol (``encode_client`` frames).
Each request is recorded with the routing identity of the REQ socket that sent it (a reopened
socket has a new identity). Replies come first from ``script`` (a queue of ClientReply, None =
stay silent, or a callable ``req -> ClientReply | None``), then from ``handler``, which by
default is a small in-memory key-value store.
"""
from __future__ import annotations

import collections
import socket
import threading
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import zmq

from raftkv.wire.messages import ClientReply, ClientRequest, decode_client, encode_client
from raftkv.actors import kv_apply
from raftkv.storage.kv_record import KeyRecord

Scripted = Union[ClientReply, None, Callable[[ClientRequest], Optional[ClientReply]]]


@dataclass
class Received:
    """One request as the fake saw it."""

    identity: bytes
    req: ClientRequest


def free_port() -> int:
    """A TCP port with nothing listening on it (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeFrontDoor:
    """A fake node's client endpoint on 127.0.0.1; use as a context manager."""

    def __init__(self, node_id: str = "node1", leader_id: Optional[str] = "") -> None:
        self.node_id = node_id
        self.leader_id = node_id if leader_id == "" else leader_id  # "" = this node leads
        self.store: dict[str, bytes] = {}
        self.script: collections.deque[Scripted] = collections.deque()
        self.handler: Callable[[ClientRequest], Optional[ClientReply]] = self.kv_handler
        self.received: list[Received] = []
        # Answer every pipelined (tagged) request twice, the second time late: just before answering
        # the next request of another op (the next call, for a client that pipelines one op per call).
        self.late_duplicates = False
        self._held: list = []  # (op, frames) of duplicates not sent yet
        self._lock = threading.Lock()
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self.port = self._sock.bind_to_random_port("tcp://127.0.0.1")
        self.address = f"127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"fake-{node_id}", daemon=True)

    def __enter__(self) -> "FakeFrontDoor":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop the thread and close the socket."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        if not self._sock.closed:
            self._sock.close(linger=0)
        self._ctx.term()

    def crash(self, req: ClientRequest) -> None:
        """A handler that dies on the request: the socket closes, its TCP connections drop."""
        self._stop.set()
        self._sock.close(linger=0)

    def push(self, *replies: Scripted) -> None:
        """Queue scripted answers for the next requests."""
        with self._lock:
            self.script.extend(replies)

    def requests(self, op: Optional[str] = None) -> list[ClientRequest]:
        """The requests received so far (of one op, if given)."""
        with self._lock:
            return [r.req for r in self.received if op is None or r.req.op == op]

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._sock.poll(20):
                continue
            frames = self._sock.recv_multipart()
            route, data = frames[:-2], frames[-1]  # REQ: [identity]; pipelined: [identity, tag]
            req = decode_client(data, ClientRequest)
            with self._lock:
                self.received.append(Received(route[0], req))
                step: Scripted = self.script.popleft() if self.script else self.handler
            reply = step(req) if callable(step) else step
            if self._held and self._held[0][0] != req.op and not self._sock.closed:
                for _, late in self._held:
                    self._sock.send_multipart(late)
                self._held.clear()
            if reply is not None and not self._sock.closed:
                self._sock.send_multipart([*route, b"", encode_client(reply)])
                if self.late_duplicates and len(route) == 2:
                    self._held.append((req.op, [*route, b"", encode_client(reply)]))

    # ------------------------------------------------------------ the default behaviour

    def status_info(self) -> dict:
        """A status document with the docs/architecture.md 6 fields."""
        return {
            "id": self.node_id,
            "state": "leader" if self.leader_id == self.node_id else "follower",
            "term": 3,
            "leader_id": self.leader_id,
            "commit_index": 10,
            "applied_index": 10,
            "last_log_index": 10,
            "snapshot_index": 0,
            "first_log_index": 1,
            "members": [{"id": self.node_id, "addr": "127.0.0.1:9001", "client": self.address,
                         "http": "", "voter": True}],
        }

    def kv_handler(self, req: ClientRequest) -> Optional[ClientReply]:
        """An in-memory key-value store answering like a healthy leader."""
        s = self.store
        op = req.op
        if op == "get":
            if req.key not in s:
                return ClientReply("not_found", leader_id=self.leader_id)
            return ClientReply("ok", value=s[req.key], leader_id=self.leader_id)
        if op == "put":
            s[req.key] = req.value or b""
            return ClientReply("ok", leader_id=self.leader_id)
        if op == "delete":
            if req.key not in s:
                return ClientReply("not_found", leader_id=self.leader_id)
            del s[req.key]
            return ClientReply("ok", leader_id=self.leader_id)
        if op == "cas":
            current = s.get(req.key)
            if (req.expect_absent and current is not None) or (not req.expect_absent and current != req.expected):
                return ClientReply("cas_failed", leader_id=self.leader_id)
            s[req.key] = req.value or b""
            return ClientReply("ok", leader_id=self.leader_id)
        if op == "txn" and req.txn is not None:  # the node's own rules, on this dict (revisions unknown: 0)
            ok, results = kv_apply.run_txn(_DictView(s), [], 0, req.txn)
            return ClientReply("ok", leader_id=self.leader_id, succeeded=ok, responses=results)
        if op == "list":
            items = sorted((k, v) for k, v in s.items() if k.startswith(req.key))
            if req.limit:
                items = items[: req.limit]
            return ClientReply("ok", items=items, leader_id=self.leader_id)
        if op == "status":
            return ClientReply("ok", info=self.status_info(), leader_id=self.leader_id)
        if op == "members":
            return ClientReply("ok", info=self.status_info()["members"], leader_id=self.leader_id)
        return ClientReply("ok", leader_id=self.leader_id)


class _DictView:
    """actors/kv_apply.py's RecordView over a plain dict of values."""

    def __init__(self, d: dict) -> None:
        self.d = d

    def record(self, key: str) -> Optional[KeyRecord]:
        v = self.d.get(key)
        return None if v is None else KeyRecord(v, 0, 0, 1)

    def put_record(self, key: str, rec: KeyRecord) -> None:
        self.d[key] = rec.value

    def delete_record(self, key: str) -> None:
        del self.d[key]
