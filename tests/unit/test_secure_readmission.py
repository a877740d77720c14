"""A secure node's request to be admitted again goes with the join token (actors/secure_readmission.py):
the leader's door admits only the CURVE keys of its configuration, which lists the old
incarnation's key, so the node's own key is not heard; the join token's key is, for a JoinRequest.
Real CURVE sockets and a real ZAP handler stand for the leader's peer door."""
from __future__ import annotations

import logging
import threading

import pytest
import zmq

from raftkv.actors.secure_readmission import SecureReadmission
from raftkv.wire.codec import decode_peer, encode_peer
from raftkv.wire.messages import JoinReply, JoinRequest, Member
from raftkv.wire.security.join_client import JoinRefused
from raftkv.wire.security.keys import generate_keypair
from raftkv.wire.security.loopback import LoopbackGuard
from raftkv.wire.security.tokens import new_join_token
from raftkv.wire.security.zap import (JOINER_USER_ID, Door, DoorAuthenticator, configure_curve_client,
                                      configure_curve_server, user_id_of)

from tests.unit.polling import wait_for

CID = "c1"


class LeaderDoor:
    """A CURVE ROUTER in the peer door's ZAP domain admitting ``keys`` ({public key: user id});
    it records (user id, sender, message) of what it receives and answers a JoinRequest with an
    accepting JoinReply."""

    def __init__(self, server, keys: dict) -> None:
        self.ctx = zmq.Context()
        self.auth = DoorAuthenticator(self.ctx, LoopbackGuard(False))
        self.auth.start()
        self.auth.ring(Door.PEER).replace(keys)
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        configure_curve_server(self.sock, server, Door.PEER)
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.addr = f"127.0.0.1:{port}"
        self.got: list = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            if not self.sock.poll(50):
                continue
            route, frame = self.sock.recv_multipart(copy=False)
            f = decode_peer(frame.bytes)
            self.got.append((user_id_of(frame), f.sender, f.msg))
            if isinstance(f.msg, JoinRequest):
                self.sock.send_multipart([route.bytes, encode_peer(CID, "node2", JoinReply(True, CID))])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close(linger=0)
        self.auth.stop()
        self.ctx.destroy(linger=0)


@pytest.fixture
def keys():
    server = generate_keypair()
    token = new_join_token(CID, server.public)
    return server, token


def _request(key) -> JoinRequest:
    return JoinRequest(Member("node5", "127.0.0.1:1", "127.0.0.1:2", "", True, "inc-new",
                              curve_key=key.public.decode()), "inc-new")



def test_the_new_key_is_not_heard_but_the_join_token_carries_the_request(keys, caplog):
    server, token = keys
    old_key, new_key = generate_keypair(), generate_keypair()
    door = LeaderDoor(server, {old_key.public: "node5", token.keypair().public: JOINER_USER_ID})
    try:
        # The peer connection with the new key (the truncated entry's) is refused at the door.
        ctx = zmq.Context()
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        configure_curve_client(s, server.public, new_key)
        s.connect(f"tcp://{door.addr}")
        s.send(encode_peer(CID, "node5", _request(new_key)))
        assert not s.poll(1000)
        s.close(linger=0)
        ctx.destroy(linger=0)
        assert door.got == []

        caplog.set_level(logging.INFO, logger="raftkv.node")
        r = SecureReadmission("node5", CID, token.encode(), {"node2": door.addr}.get)
        r.ask("node2", _request(new_key))
        wait_for(lambda: door.got, "the request at the leader's door", timeout=10.0)
        uid, sender, msg = door.got[0]
        assert (uid, sender, msg) == (JOINER_USER_ID, "node5", _request(new_key))
        wait_for(lambda: "took the request to admit this node again" in caplog.text, "the accepting reply logged",
                 timeout=10.0)
    finally:
        door.close()


def test_a_rotated_join_token_is_an_error_naming_the_fix(keys, caplog):
    server, token = keys
    rotated = new_join_token(CID, server.public)  # the door admits only the current token's key
    door = LeaderDoor(server, {rotated.keypair().public: JOINER_USER_ID})
    try:
        caplog.set_level(logging.INFO, logger="raftkv.node")
        r = SecureReadmission("node5", CID, token.encode(), {"node2": door.addr}.get)
        r.ask("node2", _request(generate_keypair()))
        line = wait_for(lambda: next((x for x in caplog.records if x.levelno == logging.ERROR), None),
                        "an ERROR line", timeout=10.0)
        text = line.getMessage()
        assert "refused this join token" in text and "--token" in text and "current join token" in text
        assert door.got == []
    finally:
        door.close()


@pytest.mark.parametrize("token_text, why", [
    (None, "started without --token"),
    ("kvj1_notatoken", "is not a join token"),
])
def test_without_a_usable_token_nothing_is_sent_and_the_error_names_the_fix(token_text, why, caplog):
    sent = []
    r = SecureReadmission("node5", CID, token_text, {"node2": "127.0.0.1:9"}.get,
                          spawn=lambda fn: sent.append(fn))
    caplog.set_level(logging.INFO, logger="raftkv.node")
    r.ask("node2", _request(generate_keypair()))
    assert sent == []
    errors = [x.getMessage() for x in caplog.records if x.levelno == logging.ERROR]
    assert len(errors) == 1 and why in errors[0] and "--token" in errors[0] and "wipe its data directory" in errors[0]


def test_a_token_of_another_cluster_is_named(keys, caplog):
    _, token = keys
    r = SecureReadmission("node5", "other", token.encode(), {"node2": "127.0.0.1:9"}.get, spawn=lambda fn: None)
    caplog.set_level(logging.INFO, logger="raftkv.node")
    r.ask("node2", _request(generate_keypair()))
    assert "for cluster 'c1', not this node's 'other'" in caplog.text


def test_one_request_in_flight_at_a_time():
    calls, pending = [], []
    r = SecureReadmission("node5", CID, None, {"node2": "a:1"}.get,
                          send_once=lambda addr, req: calls.append(addr) or JoinReply(True, CID),
                          spawn=pending.append)
    req = _request(generate_keypair())
    r.ask("node2", req)
    r.ask("node2", req)  # the first still in flight: dropped (the core asks again later)
    assert len(pending) == 1
    pending.pop()()
    assert calls == ["a:1"]
    r.ask("node2", req)
    assert len(pending) == 1


def test_a_failed_attempt_frees_the_slot():
    pending: list = []

    def refuse(addr, req):
        raise JoinRefused("no")

    r = SecureReadmission("node5", CID, None, {"node2": "a:1"}.get, send_once=refuse, spawn=pending.append)
    r.ask("node2", _request(generate_keypair()))
    pending.pop()()
    r.ask("node2", _request(generate_keypair()))
    assert len(pending) == 1
