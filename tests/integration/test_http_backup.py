"""``GET /backup`` on the HTTP gateway (issue 13): ``curl -o f.bak http://NODE/backup`` then
``kvnode restore f.bak`` gives a node holding the state at the backup's index, taken while writes
go on; on a secure cluster the route wants an admin bearer token."""
from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import socket
import threading
from pathlib import Path

import pytest

from raftkv.storage.backup_file import verify
from raftkv.wire.client import Client
from raftkv.wire.messages import Op

from .harness import KVNODE, ROOT, Cluster, NodeProc, SecureCluster, free_port, wait_until
from .secure_http import with_http

pytestmark = pytest.mark.integration


def _curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", *args], capture_output=True, text=True, timeout=180)


def _headers(path: Path) -> dict:
    lines = path.read_text(errors="replace").splitlines()
    return {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ":" in ln)}


def _restore_and_start(target: Cluster, backup: Path) -> NodeProc:
    addr, client = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    r = subprocess.run([sys.executable, str(KVNODE), "restore", str(backup), "--id", "r1", "--data-dir",
                        str(target.data_dir), "--addr", addr, "--client", client],
                       capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    node = target.nodes["r1"] = NodeProc(target, "r1", addr, client, None,
                                         args=["--id", "r1", "--addr", addr, "--client", client,
                                               "--data-dir", str(target.data_dir)])
    node.start()
    wait_until(lambda: node.status()["state"] == "leader", timeout=60, what="the restored node leads")
    return node


def _http(addr: str, method: str, path: str) -> tuple:
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def test_curl_backup_under_writes_then_restore_holds_every_acknowledged_key(make_cluster, tmp_path):
    cluster = make_cluster(3, http=True)
    leader = cluster.wait_leader()
    first = [(f"key{i:04d}", f"value-{i}".encode()) for i in range(400)]
    with cluster.client(timeout=30) as kv:
        kv.put_many(first)
    follower = next(n for n in cluster.nodes.values() if n.id != leader)  # the gateway forwards

    acked: list = []  # (key, revision) of every write acknowledged while the backup runs
    stop = threading.Event()

    def writer() -> None:
        with cluster.client(timeout=20) as kv:
            i = 0
            while not stop.is_set():
                key = f"during{i:05d}"
                rep = kv.write(Op.PUT.value, key, b"d")
                acked.append((key, rep.revision))
                i += 1

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    wait_until(lambda: len(acked) >= 20, timeout=30, what="writes going on")
    before = list(acked)  # acknowledged before the backup was asked for
    backup, head = tmp_path / "f.bak", tmp_path / "headers.txt"
    r = _curl("-f", "-D", str(head), "-o", str(backup), f"http://{follower.http}/backup")
    wait_until(lambda: len(acked) >= len(before) + 20, timeout=30, what="writes going on after the backup")
    stop.set()
    t.join(30)
    assert r.returncode == 0, r.stderr
    headers = _headers(head)
    index = int(headers["x-raft-revision"])
    assert int(headers["content-length"]) == backup.stat().st_size
    assert verify(str(backup)).index == index  # the file kvclient backup writes, checksum and all
    assert all(rev <= index for _, rev in before), "a write acknowledged before the request is in the backup"

    restored = _restore_and_start(make_cluster(0, start=False), backup)
    with Client([restored.client], timeout=30) as kv:
        assert kv.list("key") == first
        got = {k for k, _ in kv.list("during")}
    # The state at exactly the backup's index (a write whose answer was lost may be there too).
    assert {k for k, rev in acked if rev <= index} <= got
    assert not got & {k for k, rev in acked if rev > index}

    # Like every route: an unknown query parameter is a 400, another method a 405.
    status, body = _http(follower.http, "GET", "/backup?compress=1")
    assert status == 400 and "compress" in json.loads(body)["error"]
    assert _http(follower.http, "PUT", "/backup")[0] == 405


def test_backup_route_of_a_secure_cluster_wants_an_admin_token(make_cluster, tmp_path):
    sc = with_http(SecureCluster(tmp_path / "secure", n=1))
    try:
        sc.start()
        with sc.client(timeout=20) as kv:
            kv.put_many([(f"s{i:03d}", b"v") for i in range(200)])
            reader = kv.token_create("reader", "read")
        node = sc.nodes["node1"]
        url = f"https://{node.http}/backup"
        cert = str(sc.data_dir / "node1" / "tls.crt")
        out = tmp_path / "s.bak"

        def curl(*args: str) -> str:
            r = _curl("--cacert", cert, "-o", str(out), "-w", "%{http_code}", *args, url)
            return r.stdout

        assert curl() == "401"
        assert curl("-H", f"Authorization: Bearer {reader}") == "403"
        assert curl("-H", f"Authorization: Bearer {sc.admin_token}") == "200"
        assert verify(str(out)).index > 200
    except BaseException:
        print(sc.logs())
        raise
    finally:
        sc.stop()


def _read_head(s: socket.socket) -> tuple:
    """The answer's status line and headers (lower-case names) and the body bytes read with them."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        got = s.recv(65536)
        assert got, f"the connection ended inside the answer's head: {buf!r}"
        buf += got
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    return lines[0], {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}, body


def test_a_backup_cut_short_by_the_serving_node_dying_is_refused_by_restore(make_cluster, tmp_path):
    # The serving node (the leader: its gateway streams, its state is checkpointed) is SIGKILLed
    # mid-stream. The client is left with fewer bytes than Content-Length, `kvnode restore`
    # refuses the file and writes nothing, and the cluster keeps its data and members.
    cluster = make_cluster(3, http=True)
    leader = cluster.nodes[cluster.wait_leader()]
    # Random values (RocksDB cannot compress them): a backup far larger than what the gateway
    # and both kernels' socket buffers can hold ahead of a client that stops reading (about 5 MiB).
    items = [(f"k{i:04d}", os.urandom(32 * 1024)) for i in range(768)]
    with cluster.client(timeout=60) as kv:
        for lo in range(0, len(items), 64):
            kv.put_many(items[lo:lo + 64])
        members = sorted(m["id"] for m in kv.members())

    host, port = leader.http.rsplit(":", 1)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # before connect: a small window
    s.settimeout(60)
    try:
        s.connect((host, int(port)))
        s.sendall(b"GET /backup HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = _read_head(s)
        assert status.startswith("HTTP/1.1 200 "), status
        size = int(headers["content-length"])
        assert size > 20 * 1024 * 1024
        while len(body) < 256 * 1024:  # the stream is under way
            got = s.recv(65536)
            assert got, "the backup ended early before the node was killed"
            body += got
        leader.kill()  # SIGKILL, mid-stream
        while True:
            try:
                got = s.recv(1 << 20)
            except ConnectionResetError:
                break
            if not got:
                break
            body += got
    finally:
        s.close()
    assert len(body) < size, "the whole backup arrived although its node died half-way"
    short = tmp_path / "short.bak"
    short.write_bytes(body)

    target = tmp_path / "restored"
    r = subprocess.run([sys.executable, str(KVNODE), "restore", str(short), "--id", "r1", "--data-dir",
                        str(target), "--addr", f"127.0.0.1:{free_port()}", "--client", f"127.0.0.1:{free_port()}"],
                       capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "truncated" in r.stderr, r.stderr
    assert not target.exists() or not any(target.iterdir()), "restore wrote something from a short backup"

    # The survivors elect a leader and hold exactly what was written; the membership is unchanged.
    survivors = [n for n in cluster.nodes if n != leader.id]
    cluster.wait_leader(timeout=30, among=survivors)
    with Client([cluster.nodes[n].client for n in survivors], timeout=30) as kv:
        assert kv.list("k", 1000) == items
        assert sorted(m["id"] for m in kv.members()) == members
        kv.put("after", b"ok")  # and it takes writes
    # The killed node comes back with its data and catches up.
    leader.start()
    with Client([leader.client], timeout=30) as kv:
        wait_until(lambda: kv.get("after", consistency="stale") == b"ok", timeout=60,
                   what="the killed node rejoined and caught up")
