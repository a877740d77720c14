"""Memory and protocol bounds of a real node under attack (issue 11 item 6, issue 13 item 6).

Each attack comes from outside, as anyone who can reach the node's ports: an oversized HTTP body,
URL or header, a slowloris connection, bad query parameters, a ZeroMQ client that sends `list`
requests and never reads the answers, a 100 MB client frame, and peer frames naming 30k distinct
senders. After each one the node's memory (``/proc/PID/status``) has not grown past a generous
bound that the unbounded code clearly passed, and the cluster still serves reads and writes.
"""
from __future__ import annotations

import http.client
import json
import socket
import threading
import time

import pytest
import zmq

from raftkv.wire.messages import ClientRequest, Heartbeat, encode_client, encode_peer

from .harness import Cluster, wait_until

pytestmark = pytest.mark.integration

MB = 1024 * 1024
GROWTH = 100 * MB  # generous: the unbounded code grew by 240 MB to 1.3 GB in these attacks


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("limits"), n=3, http=True)
    c.start()
    try:
        c.wait_leader(timeout=30)
        with c.client() as kv:
            kv.put("warm", b"up")
        yield c
    finally:
        c.stop()


def mem(node, field: str = "VmRSS") -> int:
    """The node process's resident memory (``VmRSS``) or its peak so far (``VmHWM``), in bytes."""
    with open(f"/proc/{node.proc.pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for {node.id}")


def http_host(node) -> tuple:
    host, port = node.http.rsplit(":", 1)
    return host, int(port)


def call(node, method, path, body=None, timeout=10.0):
    c = http.client.HTTPConnection(*http_host(node), timeout=timeout)
    try:
        c.request(method, path, body=body)
        r = c.getresponse()
        data = r.read()
        return r.status, data
    finally:
        c.close()


def still_serving(cluster, tag: str) -> None:
    """Reads and writes work, through the library and over HTTP on every node."""
    with cluster.client() as kv:
        kv.put(f"after-{tag}", tag.encode())
        assert kv.get(f"after-{tag}") == tag.encode()
    for n in cluster.nodes.values():
        assert n.alive(), f"{n.id} exited"
        assert call(n, "PUT", f"/kv/http-{tag}", n.id.encode())[0] == 204
        assert call(n, "GET", f"/kv/http-{tag}") == (200, n.id.encode())


def leader_node(cluster):
    return cluster.nodes[cluster.wait_leader()]


def read_status(sock: socket.socket, timeout: float) -> int:
    """The status code of the first answer on ``sock``."""
    sock.settimeout(timeout)
    buf = b""
    while b"\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            raise AssertionError(f"connection closed before an answer ({buf!r})")
        buf += chunk
    return int(buf.split(b" ", 2)[1])


def send_quietly(sock: socket.socket, data: bytes, chunk: int = 256 * 1024) -> None:
    """Send ``data`` until the server stops taking it (it answered and closed)."""
    try:
        for i in range(0, len(data), chunk):
            sock.sendall(data[i:i + chunk])
    except OSError:
        pass


def closed_within(sock: socket.socket, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            if sock.recv(65536) == b"":
                return True
        except socket.timeout:
            return False
        except ConnectionError:
            return True
    return False


# ------------------------------------------------------------------ HTTP


def test_oversized_bodies_get_413_at_once_and_are_not_buffered(cluster):
    node = leader_node(cluster)
    peak = mem(node, "VmHWM")
    body = b"x" * (60 * MB)  # under the old 64 MiB buffer limit, far over max_value_bytes (1 MiB)
    socks, senders = [], []
    t0 = time.monotonic()
    for i in range(4):
        s = socket.create_connection(http_host(node), timeout=10)
        s.sendall(b"PUT /kv/huge%d HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (i, len(body)))
        t = threading.Thread(target=send_quietly, args=(s, body), daemon=True)
        t.start()
        socks.append(s)
        senders.append(t)
    codes = [read_status(s, 10) for s in socks]
    elapsed = time.monotonic() - t0
    assert codes == [413] * 4
    assert elapsed < 5, f"413s took {elapsed:.1f}s"
    for t in senders:
        t.join(30)
    for s in socks:
        assert closed_within(s, 10)
        s.close()
    grown = mem(node, "VmHWM") - peak
    assert grown < GROWTH, f"peak memory grew by {grown / MB:.0f} MB"
    assert call(node, "GET", "/kv/huge0")[0] == 404  # nothing was proposed
    still_serving(cluster, "body")


def test_huge_url_gets_414_and_huge_header_431_without_stalling(cluster):
    node = leader_node(cluster)
    before = mem(node)
    for head, code in ((b"GET /kv/" + b"u" * (48 * MB), 414),
                       (b"GET /kv/a HTTP/1.1\r\nHost: x\r\nX-Big: " + b"h" * (48 * MB), 431)):
        s = socket.create_connection(http_host(node), timeout=10)
        t = threading.Thread(target=send_quietly, args=(s, head), daemon=True)
        t0 = time.monotonic()
        t.start()
        assert read_status(s, 10) == code
        assert time.monotonic() - t0 < 5
        # The loop was not stalled: another connection is answered at once meanwhile.
        t1 = time.monotonic()
        assert call(node, "GET", "/health", timeout=5)[0] == 200
        assert time.monotonic() - t1 < 2
        t.join(30)
        s.close()
    assert mem(node) - before < GROWTH
    still_serving(cluster, "head")


def test_slowloris_connection_is_closed_after_the_header_timeout(cluster):
    node = leader_node(cluster)
    s = socket.create_connection(http_host(node), timeout=10)
    s.sendall(b"GET /kv/warm HTTP/1.1\r\nHost: x\r\n")
    t0 = time.monotonic()
    for _ in range(3):  # one more header now and then, never the blank line
        s.sendall(b"X-Slow: 1\r\n")
        assert call(node, "GET", "/kv/warm")[0] == 200  # others are served meanwhile
    assert read_status(s, 30) == 408
    assert closed_within(s, 10)
    assert time.monotonic() - t0 < 30
    s.close()
    still_serving(cluster, "slow")


@pytest.mark.parametrize("method,path,word", [
    ("PUT", "/kv/q?ttl=5", "ttl"),
    ("GET", "/kv/warm?index=100&wait=5s", "index"),
    ("DELETE", "/kv/warm?prev_exist=false", "prev_exist is not supported on DELETE"),
    ("GET", "/kv/?limit=1e23", "limit"),
    ("GET", "/kv/?limit=" + "1" * 30, "limit"),
    ("PUT", "/kv/warm?prev_value=%ff", "prev_value"),
    ("GET", "/kv/warm?consistency=lease", "lease reads are off"),
])
def test_bad_query_parameters_are_400_and_propose_nothing(cluster, method, path, word):
    node = leader_node(cluster)
    status, data = call(node, method, path, b"v" if method == "PUT" else None)
    assert status == 400, data
    assert word in json.loads(data)["error"]
    assert call(node, "GET", "/kv/warm") == (200, b"up")  # not deleted, not replaced
    assert call(node, "GET", "/kv/q")[0] == 404  # not written
    assert "Traceback" not in node.log_text()


# ------------------------------------------------------------------ ZeroMQ doors


def test_client_that_never_reads_its_list_answers_does_not_grow_the_node(cluster):
    node = leader_node(cluster)
    with cluster.client() as kv:
        kv.put_many([(f"big/{i:04d}", b"v" * 10_000) for i in range(200)])
    before = mem(node)
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVHWM, 1)  # it never reads: the node's queue is what fills
    s.setsockopt(zmq.RCVBUF, 4096)
    s.setsockopt(zmq.SNDHWM, 0)
    s.connect(f"tcp://{node.client}")
    req = encode_client(ClientRequest("list", key="big/", consistency="stale"))
    try:
        for _ in range(300):  # each answer is ~2 MB: 600 MB if all were kept
            s.send_multipart([b"", req])
        # All of them handled: a later request on another connection is answered after them.
        with cluster.client(timeout=30) as kv:
            wait_until(lambda: kv.list("big/", consistency="stale"), timeout=60, what="a list answered")
        wait_until(lambda: "not reading its replies" in node.log_text() or "reply queue is full" in node.log_text(),
                   timeout=60, what="the node noticing the client does not read")
        grown = mem(node) - before
        # Queued answers are bounded at 32 MB for the connection; the 300 lists built and freed
        # meanwhile leave some of the allocator's memory behind. The unbounded code: +1.7 GB.
        assert grown < 2.5 * GROWTH, f"grew by {grown / MB:.0f} MB"
        still_serving(cluster, "dealer")
    finally:
        s.close()
        ctx.term()


def test_a_100mb_client_frame_is_refused_unread(cluster):
    node = leader_node(cluster)
    peak = mem(node, "VmHWM")
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 2000)
    s.connect(f"tcp://{node.client}")
    s.send_multipart([b"", b"\x00" * (100 * MB)])
    s.close()
    ctx.term()
    still_serving(cluster, "frame")
    grown = mem(node, "VmHWM") - peak
    assert grown < 50 * MB, f"peak memory grew by {grown / MB:.0f} MB"


def test_frames_from_30k_distinct_senders_do_not_grow_a_follower(cluster):
    leader = cluster.wait_leader()
    node = next(n for nid, n in cluster.nodes.items() if nid != leader)
    before = mem(node)
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 10_000)
    s.setsockopt(zmq.SNDHWM, 0)
    s.connect(f"tcp://{node.addr}")
    pad = "s" * 10_000
    for i in range(30_000):  # 10 KB ids (refused), then ids of the longest allowed size (remembered, LRU)
        s.send(encode_peer(cluster.cluster_id, f"{pad}{i}", Heartbeat(0, 0, 0)))
    for i in range(30_000):
        s.send(encode_peer(cluster.cluster_id, f"{i:064d}", Heartbeat(0, 0, 0)))
    s.close()
    ctx.term()
    still_serving(cluster, "senders")
    wait_until(lambda: node.status()["state"] == "follower", what="the follower still following")
    grown = mem(node) - before
    assert grown < GROWTH, f"grew by {grown / MB:.0f} MB"
