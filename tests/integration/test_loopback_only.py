"""Loopback-only mode (issue 11, item 1): a cluster made without --secure talks to loopback only.

Against real kvnode processes: a specific non-loopback bind address is refused with exit 2 and a
message naming both ways out; binding every interface (the tutorial's ``--http :8001``) works, and
connections that arrive from a non-loopback address of this machine are refused at every door
(peer, client, HTTP) with one rate-limited log line; ``--insecure`` lifts it, with a WARNING.
"""
from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from raftkv.wire.client import Client, ClientError
from raftkv.wire.security.loopback import LoopbackGuard, is_loopback

from .harness import KVNODE, ROOT, free_port, wait_until

pytestmark = pytest.mark.integration

# An address that is not this machine's (TEST-NET-3): refused before anything binds.
FOREIGN = "203.0.113.7"


def own_non_loopback_ipv4() -> Optional[str]:
    """An IPv4 address of this machine that is not loopback (the source of a connection to it
    is then that address, not 127.0.0.1), or None. No packet is sent: a UDP connect only routes."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
            ip = s.getsockname()[0]
        except OSError:
            return None
    return None if is_loopback(ip) or ip == "0.0.0.0" else ip


def kvnode(tmp: Path, *args: str, log: str = "node.log") -> subprocess.Popen:
    f = open(tmp / log, "ab")
    try:
        return subprocess.Popen([sys.executable, str(KVNODE), "--data-dir", str(tmp / "data"), *args],
                                cwd=tmp, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
    finally:
        f.close()


def http_get(host: str, port: int, path: str, timeout: float = 3.0) -> tuple:
    c = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def peer_handshake(host: str, port: int, timeout: float = 5.0) -> str:
    """Connect a plain DEALER to a peer door and report how the handshake ended."""
    ctx = zmq.Context()
    d = ctx.socket(zmq.DEALER)
    d.linger = 0
    mon = d.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
    try:
        d.connect(f"tcp://{host}:{port}")
        if not mon.poll(int(timeout * 1000)):
            return "no answer"
        ev = recv_monitor_message(mon)["event"]
        return "ok" if ev == zmq.EVENT_HANDSHAKE_SUCCEEDED else "refused"
    finally:
        d.disable_monitor()
        mon.close(0)
        d.close(0)
        ctx.term()


def stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@pytest.mark.parametrize("flag", ["--addr", "--client", "--http"])
def test_a_specific_non_loopback_address_is_refused_with_exit_2(tmp_path, flag):
    peer = free_port()
    args = {"--addr": f"127.0.0.1:{peer}", "--client": f"127.0.0.1:{free_port()}", "--http": f"127.0.0.1:{free_port()}"}
    args[flag] = f"{FOREIGN}:{free_port()}"
    r = subprocess.run([sys.executable, str(KVNODE), "--id", "n1", "--bootstrap", "--data-dir", str(tmp_path / "data"),
                        *[x for kv in args.items() for x in kv]],
                       capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 2, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert f"refusing to listen on {FOREIGN}" in line
    assert "kvnode --bootstrap --secure" in line and "--insecure" in line
    assert not (tmp_path / "data" / "n1").exists(), "refused before anything was written"


def test_every_interface_serves_loopback_and_refuses_others_at_every_door(tmp_path):
    peer, client, web = free_port(), free_port(), free_port()
    p = kvnode(tmp_path, "--id", "n1", "--addr", f"0.0.0.0:{peer}", "--client", f"0.0.0.0:{client}",
               "--http", f":{web}", "--bootstrap")
    try:
        wait_until(lambda: http_get("127.0.0.1", web, "/health")[0] == 200, timeout=30, what="n1 healthy")
        with Client([f"127.0.0.1:{client}"], timeout=5) as kv:
            kv.put("k", b"v")
            assert kv.get("k") == b"v"
        assert peer_handshake("127.0.0.1", peer) == "ok"

        ip = own_non_loopback_ipv4()
        if ip is None:  # no other address here: the decision the doors use, on a real connection
            with socket.create_server(("127.0.0.1", 0)) as srv, socket.create_connection(srv.getsockname()):
                conn, (host, _) = srv.accept()
                conn.close()
            guard = LoopbackGuard(enabled=True)
            assert guard.admit(host) and not guard.admit(FOREIGN)
            return
        # Connections to our own non-loopback address come from it: refused at each door.
        assert peer_handshake(ip, peer) == "refused"
        with pytest.raises(ClientError):
            with Client([f"{ip}:{client}"], timeout=1.5) as kv:
                kv.get("k")
        with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
            http_get(ip, web, "/health")
        assert p.poll() is None, "the node keeps serving"
        assert http_get("127.0.0.1", web, "/kv/k") == (200, b"v")
        text = (tmp_path / "node.log").read_text()
        refusals = [ln for ln in text.splitlines() if f"refused a connection from {ip}" in ln]
        assert len(refusals) == 1, text  # rate-limited: one line for the three refusals
        assert "loopback connections only" in refusals[0] and "--insecure" in refusals[0]
    finally:
        stop(p)
    assert p.returncode == 0


def test_insecure_lifts_loopback_only_mode_with_a_warning_at_every_start(tmp_path):
    ip = own_non_loopback_ipv4() or "127.0.0.1"
    peer, client, web = free_port(), free_port(), free_port()
    args = ("--id", "n1", "--addr", f"{ip}:{peer}", "--client", f"{ip}:{client}", "--http", f"{ip}:{web}",
            "--bootstrap", "--insecure")
    for start in (1, 2):  # the second start is a restart over the same data
        p = kvnode(tmp_path, *args)
        try:
            wait_until(lambda: http_get(ip, web, "/health")[0] == 200, timeout=30, what="n1 healthy")
            assert peer_handshake(ip, peer) == "ok"
            with Client([f"{ip}:{client}"], timeout=5) as kv:
                kv.put(f"k{start}", b"v")
        finally:
            stop(p)
        assert p.returncode == 0
        warnings = [ln for ln in (tmp_path / "node.log").read_text().splitlines()
                    if "WARNING" in ln and "--insecure" in ln and "accepts connections from anyone" in ln]
        assert len(warnings) == start
