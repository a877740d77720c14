"""Bounds of the ZeroMQ doors and rate-limited warnings (issue 11 item 6), without sockets where possible."""
import logging

import zmq

from raftkv.wire import frontdoor
from raftkv.wire.frontdoor import CONN_BUDGET, HWM, LARGE_REPLY, TOTAL_BUDGET, _Budget, max_request_bytes
from raftkv.wire.peer import MAX_ROUTES, PeerTransport, max_peer_message
from raftkv.wire.ratelog import RateLimitedLog


def test_rate_limited_log_says_how_many_it_held_back(caplog):
    rl = RateLimitedLog(logging.getLogger("t.ratelog"), interval=3600)
    with caplog.at_level(logging.WARNING, logger="t.ratelog"):
        assert rl.warn("a", "first %d", 1)
        assert not any(rl.warn("a", "again %d", i) for i in range(100))
        assert rl.warn("b", "other kind")
        rl._state["a"][0] -= 3601  # the interval has passed
        assert rl.warn("a", "later")
    assert [r.getMessage() for r in caplog.records] == [
        "first 1", "other kind", "later (100 more like this in the last 3600s)"]


def test_rate_limited_log_kinds_are_bounded():
    rl = RateLimitedLog(logging.getLogger("t.ratelog2"), interval=3600)
    logged = sum(rl.warn(f"kind-{i}", "x") for i in range(10_000))
    assert logged <= 257 and len(rl._state) <= 257


def test_message_limits_leave_room_for_the_largest_correct_message():
    assert max_request_bytes(4096, 1 << 20) >= 4096 + 2 * (1 << 20)
    assert max_peer_message(512, 4096, 1 << 20) >= 512 * (4096 + 2 * (1 << 20))
    assert max_peer_message(1, 1, 1) >= 512 * 1024  # a snapshot chunk always fits


def test_budget_refuses_large_replies_a_connection_does_not_read():
    b = _Budget()
    size = 4 * 1024 * 1024
    admitted = 0
    for _ in range(150):  # a DEALER that sends 150 large reads and never reads
        if b.admit(b"c1", size):
            b.sent(b"c1", size)
            admitted += 1
    assert admitted * size <= CONN_BUDGET + size
    assert b.admit(b"c2", size)  # another connection is not punished (the total is not reached)
    assert b.admit(b"c1", LARGE_REPLY) is False


def test_budget_forgets_what_left_the_queue_and_bounds_the_total(monkeypatch):
    b = _Budget()
    size = CONN_BUDGET // 2
    b.sent(b"c1", size)
    b.sent(b"c1", size)
    assert not b.admit(b"c1", size)
    for _ in range(HWM):  # HWM later accepted replies: the large ones are out of libzmq's queue
        b.sent(b"c1", 10)
    assert b.admit(b"c1", size) and b.total == 0
    monkeypatch.setattr(frontdoor, "MAX_ROUTES", 8)
    for i in range(100):
        b.admit(b"r%d" % i, LARGE_REPLY)
        b.sent(b"r%d" % i, LARGE_REPLY)
    assert len(b.routes) <= 8 and b.total <= 8 * LARGE_REPLY <= TOTAL_BUDGET


def test_peer_routes_table_is_an_lru_of_bounded_size():
    ctx = zmq.Context()
    got = []
    pt = PeerTransport(ctx, "n1", "127.0.0.1:0", got.extend, "c1")
    try:
        from raftkv.wire.messages import Heartbeat, encode_peer

        class FakeRouter:
            def __init__(self, frames):
                self.frames = frames

            def recv_multipart(self, flags=0):
                if not self.frames:
                    raise zmq.Again()
                return self.frames.pop(0)

            def getsockopt(self, opt):  # ZMQ_EVENTS: POLLIN while a message is queued
                return zmq.POLLIN if self.frames else 0

        frames = [[b"id%d" % i, encode_peer("c1", f"sender-{i}", Heartbeat(1, 0, 0))] for i in range(MAX_ROUTES * 3)]
        pt._router, real = FakeRouter(frames), pt._router
        batch: list = []
        while pt._router.frames:
            pt._read_router(batch)
        assert len(batch) == MAX_ROUTES * 3
        assert len(pt._routes) == MAX_ROUTES
        assert f"sender-{MAX_ROUTES * 3 - 1}" in pt._routes and "sender-0" not in pt._routes
        pt._router = real
    finally:
        pt._router.close(linger=0)
        pt._pull.close(linger=0)
        ctx.term()
