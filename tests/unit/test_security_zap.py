"""ZAP with real ZeroMQ sockets on 127.0.0.1: CURVE keys per door, runtime revocation, loopback-only."""
import logging

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from raftkv.wire.security.keys import generate_keypair
from raftkv.wire.security.loopback import LoopbackGuard
from raftkv.wire.security.tokens import Role, new_client_token, new_join_token
from raftkv.wire.security.zap import (
    JOINER_USER_ID, Door, DoorAuthenticator, configure_curve_client, configure_curve_server,
    configure_null_server, user_id_of,
)

WAIT_MS = 5000


@pytest.fixture
def ctx():
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


@pytest.fixture
def auth(ctx):
    a = DoorAuthenticator(ctx, LoopbackGuard(enabled=False))
    a.start()
    yield a
    a.stop()


@pytest.fixture
def cluster_key():
    return generate_keypair()


def curve_router(ctx, cluster_key, door=Door.PEER):
    r = ctx.socket(zmq.ROUTER)
    r.linger = 0
    configure_curve_server(r, cluster_key, door)
    port = r.bind_to_random_port("tcp://127.0.0.1")
    return r, f"tcp://127.0.0.1:{port}"


def curve_dealer(ctx, endpoint, server_public, own):
    d = ctx.socket(zmq.DEALER)
    d.linger = 0
    configure_curve_client(d, server_public, own)
    mon = d.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
                               | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
    d.connect(endpoint)
    return d, mon


def handshake_event(mon):
    """The first handshake outcome the client's monitor reports (within the deadline)."""
    assert mon.poll(WAIT_MS), "no handshake outcome"
    return recv_monitor_message(mon)["event"]


def exchange(router, dealer, payload=b"ping"):
    """Send from the dealer, receive at the router (returns the user id) and answer back."""
    dealer.send(payload)
    assert router.poll(WAIT_MS), "the router got nothing"
    frames = router.recv_multipart(copy=False)
    assert frames[1].bytes == payload
    router.send_multipart([frames[0].bytes, b"pong"])
    assert dealer.poll(WAIT_MS) and dealer.recv() == b"pong"
    return user_id_of(frames[1])


def test_allowed_member_key_connects_and_is_named_by_its_user_id(ctx, auth, cluster_key):
    node2 = generate_keypair()
    auth.ring(Door.PEER).replace({node2.public: "node2"})
    router, ep = curve_router(ctx, cluster_key)
    dealer, mon = curve_dealer(ctx, ep, cluster_key.public, node2)
    assert handshake_event(mon) == zmq.EVENT_HANDSHAKE_SUCCEEDED
    assert exchange(router, dealer) == "node2"


def test_unknown_key_gets_nothing_through(ctx, auth, cluster_key):
    auth.ring(Door.PEER).replace({generate_keypair().public: "node2"})
    router, ep = curve_router(ctx, cluster_key)
    dealer, mon = curve_dealer(ctx, ep, cluster_key.public, generate_keypair())
    dealer.send(b"forged")
    assert handshake_event(mon) == zmq.EVENT_HANDSHAKE_FAILED_AUTH
    assert router.poll(200) == 0


def test_removing_a_key_at_runtime_refuses_the_next_connection(ctx, auth, cluster_key):
    node3 = generate_keypair()
    ring = auth.ring(Door.PEER)
    ring.replace({node3.public: "node3"})
    router, ep = curve_router(ctx, cluster_key)
    first, mon1 = curve_dealer(ctx, ep, cluster_key.public, node3)
    assert exchange(router, first) == "node3"

    ring.replace({})  # node3 removed from the configuration
    second, mon2 = curve_dealer(ctx, ep, cluster_key.public, node3)
    second.send(b"after removal")
    assert handshake_event(mon2) == zmq.EVENT_HANDSHAKE_FAILED_AUTH
    # ZAP runs at the handshake only: the connection made before still carries messages, with
    # its user id, which is why the node must also check the user id against its configuration.
    assert exchange(router, first, b"old connection") == "node3"
    assert router.poll(200) == 0


def test_refused_client_must_reconnect_once_its_key_is_allowed(ctx, auth, cluster_key):
    joiner_peer = generate_keypair()
    ring = auth.ring(Door.PEER)
    router, ep = curve_router(ctx, cluster_key)
    dealer, mon = curve_dealer(ctx, ep, cluster_key.public, joiner_peer)
    assert handshake_event(mon) == zmq.EVENT_HANDSHAKE_FAILED_AUTH
    ring.add(joiner_peer.public, "node4")
    dealer.disconnect(ep)  # libzmq does not retry a refused handshake by itself
    dealer.connect(ep)
    assert handshake_event(mon) == zmq.EVENT_HANDSHAKE_SUCCEEDED
    assert exchange(router, dealer) == "node4"


def test_a_client_key_is_not_a_peer_key(ctx, auth, cluster_key):
    tok = new_client_token("app", Role.ADMIN, "c", cluster_key.public)
    auth.ring(Door.CLIENT).replace({tok.stored().curve_public: tok.name})
    auth.ring(Door.PEER).replace({})
    client_router, client_ep = curve_router(ctx, cluster_key, Door.CLIENT)
    peer_router, peer_ep = curve_router(ctx, cluster_key, Door.PEER)

    good, mon = curve_dealer(ctx, client_ep, tok.server_public_key, tok.keypair())
    assert handshake_event(mon) == zmq.EVENT_HANDSHAKE_SUCCEEDED
    assert exchange(client_router, good) == "app"

    wrong_door, mon2 = curve_dealer(ctx, peer_ep, tok.server_public_key, tok.keypair())
    assert handshake_event(mon2) == zmq.EVENT_HANDSHAKE_FAILED_AUTH


def test_joiner_proves_its_join_token_and_nothing_else_gets_in(ctx, auth, cluster_key):
    join = new_join_token("c", cluster_key.public)
    auth.ring(Door.PEER).replace({join.keypair().public: JOINER_USER_ID})
    router, ep = curve_router(ctx, cluster_key)

    holder, mon = curve_dealer(ctx, ep, join.server_public_key, join.keypair())
    assert exchange(router, holder) == JOINER_USER_ID

    wrong = new_join_token("c", cluster_key.public)  # right cluster key, wrong secret
    guesser, mon2 = curve_dealer(ctx, ep, wrong.server_public_key, wrong.keypair())
    assert handshake_event(mon2) == zmq.EVENT_HANDSHAKE_FAILED_AUTH


def test_joiner_does_not_talk_to_a_server_without_the_cluster_key(ctx, auth, cluster_key):
    join = new_join_token("c", cluster_key.public)
    impostor = generate_keypair()
    auth.ring(Door.PEER).replace({join.keypair().public: JOINER_USER_ID})
    router, ep = curve_router(ctx, impostor)  # an impostor listening where the joiner was sent
    dealer, mon = curve_dealer(ctx, ep, join.server_public_key, join.keypair())
    dealer.send(b"JoinRequest")
    # The client cannot tell "wrong server key" apart from other failures (NO_DETAIL), and
    # libzmq keeps retrying: a joiner reports the first one as "not the cluster of this token".
    assert handshake_event(mon) == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    assert router.poll(200) == 0


def test_a_client_without_a_token_fails_at_a_secure_door(ctx, auth, cluster_key):
    """A NULL client at a CURVE door gets a protocol failure at once: the library can say
    "this cluster needs a token" instead of timing out."""
    router, ep = curve_router(ctx, cluster_key, Door.CLIENT)
    d = ctx.socket(zmq.DEALER)
    d.linger = 0
    mon = d.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)
    d.connect(ep)
    d.send(b"get")
    assert handshake_event(mon) == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    assert router.poll(200) == 0


def null_pair(ctx, guard_enabled=True, guard=None):
    a = DoorAuthenticator(ctx, guard or LoopbackGuard(enabled=guard_enabled))
    a.start()
    r = ctx.socket(zmq.ROUTER)
    r.linger = 0
    configure_null_server(r, Door.CLIENT)
    ep = f"tcp://127.0.0.1:{r.bind_to_random_port('tcp://127.0.0.1')}"
    d = ctx.socket(zmq.DEALER)
    d.linger = 0
    mon = d.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
    d.connect(ep)
    return a, r, d, mon


def test_loopback_only_mode_accepts_a_real_loopback_connection(ctx):
    a, router, dealer, mon = null_pair(ctx)
    try:
        assert handshake_event(mon) == zmq.EVENT_HANDSHAKE_SUCCEEDED
        assert exchange(router, dealer) == "anonymous"
    finally:
        a.stop()


class _RefuseEveryone(LoopbackGuard):
    """A guard that sees every address as non-loopback (this machine cannot make a real one)."""

    def admit(self, address, door=""):
        self.seen = address
        return super().admit("192.0.2.7", door)


def test_a_guard_refusal_refuses_the_real_connection(ctx, caplog):
    guard = _RefuseEveryone(enabled=True)
    a, router, dealer, mon = null_pair(ctx, guard=guard)
    try:
        dealer.send(b"hello")
        with caplog.at_level(logging.WARNING, logger="raftkv.security"):
            assert handshake_event(mon) == zmq.EVENT_HANDSHAKE_FAILED_AUTH
        assert router.poll(200) == 0
        assert guard.seen == "127.0.0.1" and guard.refused == 1
        assert "loopback connections only" in caplog.text and "192.0.2.7" in caplog.text
    finally:
        a.stop()


def test_zap_decision_by_address_and_mechanism(ctx):
    a = DoorAuthenticator(ctx, LoopbackGuard(enabled=True))
    key = generate_keypair()
    a.ring(Door.PEER).replace({key.public: "node1"})
    from zmq.utils import z85
    raw = z85.decode(key.public)
    assert a.decide("client", "127.0.0.1", b"NULL", []).ok
    assert a.decide("client", "::1", b"NULL", []).ok
    assert a.decide("client", "::ffff:127.0.0.1", b"NULL", []).ok
    assert not a.decide("client", "10.1.2.3", b"NULL", []).ok
    assert not a.decide("client", "::ffff:10.1.2.3", b"NULL", []).ok
    assert not a.decide("peer", "192.168.0.9", b"CURVE", [raw]).ok  # loopback mode refuses before keys
    assert a.decide("peer", "127.0.0.1", b"CURVE", [raw]).user_id == "node1"
    assert not a.decide("client", "127.0.0.1", b"CURVE", [raw]).ok  # not a key of that door
    assert not a.decide("", "127.0.0.1", b"CURVE", [raw]).ok
    assert not a.decide("peer", "127.0.0.1", b"PLAIN", [b"u", b"p"]).ok
    assert not a.decide("peer", "127.0.0.1", b"CURVE", [b"short"]).ok


def test_zap_refusals_are_logged_at_most_once_per_interval(ctx, caplog):
    a = DoorAuthenticator(ctx, LoopbackGuard(enabled=False), log_interval=3600)
    raw = b"\x07" * 32
    with caplog.at_level(logging.WARNING, logger="raftkv.security"):
        for _ in range(50):
            assert not a.decide("peer", "127.0.0.1", b"CURVE", [raw]).ok
    assert len(caplog.records) == 1 and "unknown key" in caplog.text


def test_malformed_zap_requests_are_answered(ctx):
    """Every ZAP request gets a reply, or the peer's handshake would hang."""
    a = DoorAuthenticator(ctx, LoopbackGuard(enabled=False))
    replies = []
    a._send_zap_reply = lambda rid, code, text, uid="": replies.append((rid, code))
    import asyncio
    asyncio.run(a.handle_zap_message([b"1.0", b"r1"]))
    asyncio.run(a.handle_zap_message([b"9.9", b"r2", b"peer", b"127.0.0.1", b"", b"NULL"]))
    a.decide = lambda *args: 1 / 0
    asyncio.run(a.handle_zap_message([b"1.0", b"r3", b"peer", b"127.0.0.1", b"", b"NULL"]))
    assert replies == [(b"r1", b"400"), (b"r2", b"400"), (b"r3", b"500")]


def test_key_ring_swaps_are_seen_at_once():
    from raftkv.wire.security.zap import KeyRing
    k1, k2 = generate_keypair().public, generate_keypair().public
    ring = KeyRing({k1: "a"})
    assert ring.callback("peer", k1) and not ring.callback("peer", k2)
    ring.add(k2, "b")
    assert ring.user_id(k2) == "b" and len(ring) == 2
    ring.remove(k1)
    assert ring.user_id(k1) is None
    with pytest.raises(ValueError):
        ring.add(b"not a key", "x")



def test_user_id_of_a_connection_without_zap_is_none(ctx):
    r = ctx.socket(zmq.ROUTER)
    r.linger = 0
    ep = f"tcp://127.0.0.1:{r.bind_to_random_port('tcp://127.0.0.1')}"
    d = ctx.socket(zmq.DEALER)
    d.linger = 0
    d.connect(ep)
    d.send(b"x")
    assert r.poll(WAIT_MS)
    frames = r.recv_multipart(copy=False)
    assert user_id_of(frames[1]) is None
