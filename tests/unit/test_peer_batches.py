"""The peer I/O thread hands on every message that arrives, however they bunch up (wire/peer.py:
it reads its ROUTER while ZMQ_EVENTS shows another message after the one the poll reported)."""
from __future__ import annotations

import threading
import time

import zmq

from raftkv.wire.messages import Heartbeat
from raftkv.wire.peer import PeerTransport

WARM_UP = 999_999  # the round of the heartbeats sent until the connection is up


def test_every_message_of_a_burst_is_handed_on_in_order():
    ctx = zmq.Context()
    got: list = []
    lock = threading.Lock()

    def on_messages(batch: list) -> None:
        with lock:
            got.extend(batch)

    b = PeerTransport(ctx, "n2", "127.0.0.1:0", on_messages, "c1")
    port = b._router.getsockopt(zmq.LAST_ENDPOINT).decode().rsplit(":", 1)[1]
    a = PeerTransport(ctx, "n1", "127.0.0.1:0", lambda batch: None, "c1")
    a.start()
    b.start()
    try:
        a.set_peers({"n2": f"127.0.0.1:{port}"})
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # IMMEDIATE: nothing is queued until connected
            a.send("n2", Heartbeat(1, 0, WARM_UP))
            with lock:
                if got:
                    break
            time.sleep(0.01)
        with lock:
            got.clear()
        for burst in range(5):  # each burst within the DEALER's high-water mark (HWM, 1000)
            a.send_many([("n2", Heartbeat(1, 0, burst * 1000 + i)) for i in range(300)])
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                with lock:
                    if sum(1 for _, m, _, _ in got if m.round != WARM_UP) >= 300 * (burst + 1):
                        break
                time.sleep(0.01)
        with lock:
            rounds = [m.round for _, m, _, _ in got if m.round != WARM_UP]
        assert rounds == [b_ * 1000 + i for b_ in range(5) for i in range(300)]
    finally:
        a.stop()
        b.stop()
        ctx.destroy(linger=0)
