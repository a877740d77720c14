"""door_is_secure: a plain join aimed at a secure cluster is told so (kvnode exits 1), even when
the member is slow to answer the handshake, and a door that is not up reads as "not secure"."""
import socket
import threading

import pytest
import zmq

from raftkv.wire.security.join_client import door_is_secure
from raftkv.wire.security.keys import generate_keypair

from .zmtp_proxy import LocalListener, splice


@pytest.fixture
def ctx():
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


def _router(ctx, curve: bool) -> tuple:
    s = ctx.socket(zmq.ROUTER)
    s.setsockopt(zmq.LINGER, 0)
    if curve:
        kp = generate_keypair()
        s.curve_server = True
        s.curve_publickey = kp.public
        s.curve_secretkey = kp.secret
    port = s.bind_to_random_port("tcp://127.0.0.1")
    return s, port


class _SlowProxy(LocalListener):
    """Accepts a TCP connection at once but forwards it to ``port`` only after ``release`` is
    set: a member whose handshake answer comes late (a loaded host)."""

    def __init__(self, port: int):
        self.backend = port
        self.release = threading.Event()
        super().__init__()

    def handle(self, front: socket.socket) -> None:
        self.release.wait(30)
        back = socket.create_connection(("127.0.0.1", self.backend))
        self.socks.append(back)
        splice(front, back)

    def close(self) -> None:
        self.release.set()
        super().close()


def test_a_curve_door_is_secure_and_a_plain_one_is_not(ctx):
    secure, sp = _router(ctx, curve=True)
    plain, pp = _router(ctx, curve=False)
    try:
        assert door_is_secure(ctx, f"127.0.0.1:{sp}") is True
        assert door_is_secure(ctx, f"127.0.0.1:{pp}") is False
    finally:
        secure.close()
        plain.close()


def test_nothing_listening_reads_as_not_secure(ctx):
    s = socket.create_server(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # a port nobody listens on: the member may not be up yet
    assert door_is_secure(ctx, f"127.0.0.1:{port}", wait=0.3) is False


def test_a_secure_door_slow_to_answer_the_handshake_is_still_recognised(ctx):
    secure, sp = _router(ctx, curve=True)
    proxy = _SlowProxy(sp)
    timer = threading.Timer(0.6, proxy.release.set)  # the answer comes after `wait` has passed
    timer.start()
    try:
        assert door_is_secure(ctx, f"127.0.0.1:{proxy.port}", wait=0.3, handshake_wait=10.0) is True
    finally:
        timer.cancel()
        proxy.close()
        secure.close()


def test_a_secure_door_that_hides_its_mechanism_on_every_connection_is_recognised(ctx):
    """libzmq's greeting race on every connection (tests/unit/zmtp_proxy.py): the plain handshake
    only ever ends in NO_DETAIL, and the door's greeting says CURVE."""
    from tests.unit.zmtp_proxy import SignatureFirstProxy

    secure, sp = _router(ctx, curve=True)
    proxy = SignatureFirstProxy(sp)
    try:
        assert door_is_secure(ctx, proxy.address, wait=5.0, handshake_wait=5.0) is True
    finally:
        proxy.close()
        secure.close()
