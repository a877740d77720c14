"""Peer connections carry no ZMTP PING, because libzmq 4.3.5 (bundled by pyzmq 27) aborts the
whole process when a PING waits behind a stalled input on a connection that then resets.

The abort (``Assertion failed: !_io_error (src/stream_engine_base.cpp:310)``) took a node of
the 5-node Jepsen mix in CI. The path in libzmq: a connection delivers more messages than the
receiving socket's RCVHWM while the application does not read (a paused node resuming, a busy
reader), so the engine stops its input and keeps the rest of its read buffer; the connection
resets, so the engine marks an I/O error; the application then reads, the engine restarts its
input and decodes the buffered PING, whose PONG is sent through ``out_event``, which asserts that
no I/O error happened. One thread and one socket suffice (the second test), so no use of a socket
from two threads is involved. Our peer DEALERs' ZeroMQ heartbeats were the only PINGs any node
sent; the DEALERs now rely on TCP keepalive and the TCP user timeout instead (wire/peer.py).
Anyone else who completes a handshake can still send one; where pyzmq has the draft API, the
doors' 7-byte read buffer closes that (wire/door_hardening.py; the last two tests).
"""
from __future__ import annotations

import signal
import socket
import struct
import subprocess
import sys
import time

import pytest
import zmq

from raftkv.wire import door_hardening
from raftkv.wire.peer import PeerTransport

# The 64-byte ZMTP 3.1 greeting (NULL mechanism, not as-server) and a READY command.
GREETING = b"\xff" + b"\x00" * 8 + b"\x7f\x03\x01" + b"NULL".ljust(20, b"\x00") + b"\x00" * 32


def ready(socket_type: bytes) -> bytes:
    body = b"\x05READY" + bytes([11]) + b"Socket-Type" + struct.pack(">I", len(socket_type)) + socket_type
    return bytes([0x04, len(body)]) + body


def read_handshake(s: socket.socket, who: str) -> None:
    """Read the server's greeting and READY (a real peer sends messages only once they are in);
    exit the child process if ``who`` closes the connection first."""
    s.settimeout(10)
    got = b""
    while len(got) < 66 or len(got) < 66 + got[65]:
        chunk = s.recv(4096)
        if not chunk:
            sys.exit(f"{who} closed the connection during the handshake")
        got += chunk


def frames(data: bytes) -> list[tuple[bool, bytes]]:
    """(is_command, body) of each complete ZMTP 3 frame in ``data`` (after the greeting)."""
    out, i = [], 0
    while i < len(data):
        flags = data[i]
        if flags & 0x02:  # long frame: 8-byte size
            if i + 9 > len(data):
                break
            size, start = struct.unpack(">Q", data[i + 1:i + 9])[0], i + 9
        else:
            if i + 2 > len(data):
                break
            size, start = data[i + 1], i + 2
        if start + size > len(data):
            break
        out.append((bool(flags & 0x04), data[start:start + size]))
        i = start + size
    return out


def test_a_peer_dealer_sends_no_zmtp_ping_on_an_idle_connection():
    """Listen where a peer would, complete the handshake as a ROUTER, and watch the connection
    stay idle for well past the old heartbeat interval (1 s): only the READY command comes."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    ctx = zmq.Context()
    pt = PeerTransport(ctx, "n1", "127.0.0.1:0", lambda batch: None, "c1")
    pt.start()
    try:
        pt.set_peers({"n2": f"127.0.0.1:{srv.getsockname()[1]}"})
        srv.settimeout(5)
        conn, _ = srv.accept()
        conn.sendall(GREETING + ready(b"ROUTER"))
        data = b""
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            conn.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = conn.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            data += chunk
        assert data[:1] == b"\xff" and len(data) >= 64, data
        commands = [body for is_command, body in frames(data[64:]) if is_command]
        assert commands and commands[0].startswith(b"\x05READY")
        assert not [c for c in commands if c[1:5] in (b"PING", b"PONG")], commands
        conn.close()
    finally:
        pt.stop()
        srv.close()
        ctx.term()


_CHILD = r"""
import socket, struct, sys, time
import zmq
sys.path.insert(0, sys.argv[1])
from test_peer_no_ping import GREETING, read_handshake, ready
HWM = 1000  # wire/peer.py's HWM
ping = sys.argv[2] == "ping"
ctx = zmq.Context()
router = ctx.socket(zmq.ROUTER)
router.setsockopt(zmq.RCVHWM, int(sys.argv[3]) if len(sys.argv) > 3 else HWM)
router.setsockopt(zmq.LINGER, 0)
body = int(sys.argv[4]) if len(sys.argv) > 4 else 5  # message size: moves the PING against read edges
if len(sys.argv) > 5 and sys.argv[5] == "guard":  # the doors' guard, where the build has it
    from raftkv.wire.door_hardening import harden
    print("guarded", harden(router))
port = router.bind_to_random_port("tcp://127.0.0.1")
s = socket.create_connection(("127.0.0.1", port))
s.sendall(GREETING + ready(b"DEALER"))
# A real peer sends messages only once the ROUTER's greeting and READY are in: read them.
read_handshake(s, "the ROUTER")
burst = b""
for i in range(HWM + 20):
    burst += bytes([0, body]) + (b"m%04d" % i).ljust(body, b"x")
    if ping and i == HWM + 5:
        burst += bytes([0x04, 7]) + b"\x04PING\x00\x00"
    if sys.argv[2] == "pings" and i >= HWM - 2:  # the smallest PING frame behind each message
        burst += bytes([0x04, 5]) + b"\x04PING"
s.sendall(burst)  # one read of the ROUTER's engine: the pipe fills, the input stops
# The next two waits are for libzmq's I/O thread to act (stop its input; record the reset):
# neither state is visible from outside the engine, so there is nothing to poll.
time.sleep(0.3)
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
s.close()  # reset: the engine records an I/O error
time.sleep(0.3)
got = 0
deadline = time.monotonic() + 1.0
while time.monotonic() < deadline:  # the application catches up: the engine restarts its input
    try:
        router.recv_multipart(zmq.NOBLOCK)
        got += 1
    except zmq.Again:
        time.sleep(0.01)
print("read", got)
"""


def _recipe(*args: str) -> subprocess.CompletedProcess:
    here = str(__import__("pathlib").Path(__file__).parent)
    return subprocess.run([sys.executable, "-c", _CHILD, here, *args], capture_output=True, text=True, timeout=60)


def _read(r: subprocess.CompletedProcess) -> int:
    return int(r.stdout.split("read")[1].split()[0])


def test_libzmq_aborts_on_a_ping_behind_a_stalled_input_and_a_reset():
    """Why peer connections carry no PING: the same burst, stall and reset with one PING in it
    aborts the process (one thread, one ROUTER); without the PING the process lives on. If a
    future pyzmq bundles a libzmq where this passes, ZeroMQ heartbeats could come back."""
    here = str(__import__("pathlib").Path(__file__).parent)
    runs = {}
    for kind in ("ping", "none"):
        r = subprocess.run([sys.executable, "-c", _CHILD, here, kind], capture_output=True, text=True, timeout=60)
        runs[kind] = r
    assert runs["none"].returncode == 0 and int(runs["none"].stdout.split()[1]) >= 1000, runs["none"]
    assert runs["ping"].returncode == -signal.SIGABRT, runs["ping"]
    assert "!_io_error" in runs["ping"].stderr and "stream_engine_base.cpp" in runs["ping"].stderr


def test_the_abort_needs_a_bounded_receive_queue():
    """The same burst, PING and reset against a ROUTER without a receive bound (``RCVHWM`` 0)
    does not abort: its input never stops, so no PING is left buffered behind it. It is the only
    option of the released libzmq that closes the path, and the doors keep their bound instead:
    the guard below needs a draft-API build (docs/performance.md, "The PING abort")."""
    r = _recipe("ping", "0")
    assert r.returncode == 0 and _read(r) == 1020, r


def test_a_seven_byte_read_buffer_closes_the_abort_and_keeps_the_bound():
    """The doors' guard (wire/door_hardening.py): with ``ZMQ_IN_BATCH_SIZE`` 7 the same attack,
    with the smallest PING frame behind every message around the stall and the messages' sizes
    moving those PINGs against the 7-byte reads, ends the connection instead of the process, and
    the receive bound held (HWM messages queued, one more pushed when the reader caught up, the
    rest never read). A pyzmq wheel has no draft API: the option is refused (EINVAL), the guard
    does nothing, and the same run aborts; this pins that, so a wheel that starts accepting
    the option fails here."""
    runs = [_recipe("pings", "1000", str(body), "guard") for body in (5, 6, 7, 8)]
    if door_hardening.available():
        for r in runs:
            assert "guarded True" in r.stdout and r.returncode == 0 and _read(r) == 1001, r
        return
    with zmq.Context() as ctx, ctx.socket(zmq.ROUTER) as s:
        with pytest.raises(zmq.ZMQError) as e:
            s.setsockopt(zmq.IN_BATCH_SIZE, door_hardening.IN_BATCH_SIZE)
        assert e.value.errno == zmq.EINVAL
        assert door_hardening.harden(s) is False
    for r in runs:
        assert "guarded False" in r.stdout and r.returncode == -signal.SIGABRT, r
        assert "!_io_error" in r.stderr


_DOOR_CHILD = r"""
import socket, struct, sys, threading, time
import zmq
sys.path.insert(0, sys.argv[1])
from test_peer_no_ping import GREETING, read_handshake, ready
from raftkv.wire.frontdoor import HWM, FrontDoor
from raftkv.wire.messages import ClientRequest, encode_client
busy = threading.Event()
resume = threading.Event()
def on_requests(batch):  # a node too busy to read its door: the door's queue fills
    busy.set()
    resume.wait()
ctx = zmq.Context()
door = FrontDoor(ctx, "127.0.0.1:0", on_requests, "n1", max_request_bytes=4096)
door.start()
port = int(door._router.getsockopt(zmq.LAST_ENDPOINT).decode().rsplit(":", 1)[1])
s = socket.create_connection(("127.0.0.1", port))
s.sendall(GREETING + ready(b"DEALER"))
read_handshake(s, "the door")
body = encode_client(ClientRequest(op="get", key="k"))
request = bytes([1, 0, 0, len(body)]) + body  # a REQ envelope: the empty delimiter, the request
# More requests than the door's first batch and its queue together, the smallest PING behind each.
s.sendall((request + bytes([0x04, 5]) + b"PING") * (3 * HWM))
busy.wait(10)
# As in _CHILD: libzmq's I/O thread must stop its input, then see the reset; nothing to poll.
time.sleep(0.3)
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
s.close()
time.sleep(0.3)
resume.set()  # the node reads again: the door's engine restarts its input
time.sleep(0.5)
door.stop()
print("alive")
"""


def test_the_client_door_is_guarded_where_the_build_allows_it():
    """The node's own client door (FrontDoor, its I/O thread and callback) under the attack, its
    node too busy to read: a draft-API build survives every try; a wheel's door aborts (pinned:
    at least one of three tries, since where the door's queue fills against libzmq's reads
    depends on its threads, and in one case in ~40 no PING is left behind the stall)."""
    here = str(__import__("pathlib").Path(__file__).parent)
    runs = []
    for _ in range(3):
        r = subprocess.run([sys.executable, "-c", _DOOR_CHILD, here], capture_output=True, text=True, timeout=60)
        runs.append(r)
        if r.returncode != 0 and not door_hardening.available():
            break
    if door_hardening.available():
        assert all(r.returncode == 0 and "alive" in r.stdout for r in runs), runs
    else:
        assert runs[-1].returncode == -signal.SIGABRT and "!_io_error" in runs[-1].stderr, runs
