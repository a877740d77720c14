"""Issue 11, clients of a secure cluster end to end: kvclient, the library and HTTPS (http.client
and curl), each with no token, a wrong one, a damaged one, a revoked one, and each role.

One secure 3-node cluster (node1 ``--bootstrap --secure``, two ``--join --token``) with HTTP
gateways serves the whole module: tokens are made with ``kvclient token create`` as a user would.
"""
from __future__ import annotations

import http.client
import json
import os
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from raftkv import txn
from raftkv.wire.client import Client, NotAuthorized
from raftkv.wire.security.tls import client_ssl_context
from raftkv.wire.security.tokens import ClientToken, Role, new_client_token

from .harness import KVCLIENT, SecureCluster, wait_until
from .secure_http import with_http

pytestmark = pytest.mark.integration

EXIT_NOT_AUTHORIZED = 4


@pytest.fixture(scope="module")
def sc(tmp_path_factory):
    c = with_http(SecureCluster(tmp_path_factory.mktemp("secure"), n=3))
    try:
        c.start()
        c.tokens = {}  # role -> token, made once through kvclient
        for role in ("read", "write", "admin"):
            r = kvclient(c, "token", "create", "--role", role, "--name", f"t-{role}", token=c.admin_token)
            assert r.returncode == 0, r.stderr
            c.tokens[role] = r.stdout.split()[-1]
        yield c
    except BaseException:
        print(c.logs())
        raise
    finally:
        c.stop()


def kvclient(cluster, *args, token=None, env_token=None, stdin=None):
    env = {k: v for k, v in os.environ.items() if k not in ("KV_TOKEN", "KV_SERVERS")}
    if env_token is not None:
        env["KV_TOKEN"] = env_token
    argv = [sys.executable, str(KVCLIENT), "--servers", ",".join(cluster.servers), "--timeout", "5"]
    if token is not None:
        argv += ["--token", token]
    return subprocess.run(argv + list(args), capture_output=True, text=True, env=env, input=stdin, timeout=60)


def stranger(cluster) -> str:
    """A well-formed token of this cluster (its id and key) that the cluster never stored."""
    admin = ClientToken.decode(cluster.admin_token)
    return new_client_token("stranger", Role.ADMIN, admin.cluster_id, admin.server_public_key).encode()


def damaged(token: str) -> str:
    return token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")


def revoked_token(cluster, name: str) -> str:
    with cluster.client() as kv:
        t = kv.token_create(name, "admin")
        kv.token_revoke(name)
    return t


# ------------------------------------------------------------------ kvclient


def test_kvclient_without_a_token_exits_4(sc):
    r = kvclient(sc, "get", "a")
    assert r.returncode == EXIT_NOT_AUTHORIZED
    assert r.stderr.startswith("kvclient: not authorized: ") and "token" in r.stderr
    assert r.stderr.count("\n") == 1


@pytest.mark.parametrize("which", ["wrong", "damaged", "revoked"])
def test_kvclient_bad_tokens_exit_4(sc, which):
    tok = {"wrong": lambda: stranger(sc), "damaged": lambda: damaged(sc.tokens["write"]),
           "revoked": lambda: revoked_token(sc, "gone-cli")}[which]()
    r = kvclient(sc, "put", "a", "1", token=tok)
    assert r.returncode == EXIT_NOT_AUTHORIZED, r.stderr
    assert r.stderr.startswith("kvclient: not authorized: ")


def test_kvclient_roles(sc):
    assert kvclient(sc, "put", "k", "v1", token=sc.tokens["write"]).returncode == 0
    r = kvclient(sc, "get", "k", env_token=sc.tokens["read"])  # $KV_TOKEN
    assert (r.returncode, r.stdout) == (0, "v1\n")
    assert kvclient(sc, "members", token=sc.tokens["read"]).returncode == 0
    r = kvclient(sc, "put", "k", "v2", token=sc.tokens["read"])
    assert r.returncode == EXIT_NOT_AUTHORIZED and "put needs write" in r.stderr
    for args in (("token", "list"), ("remove-node", "node3"), ("snapshot",)):
        r = kvclient(sc, *args, token=sc.tokens["write"])
        assert r.returncode == EXIT_NOT_AUTHORIZED, (args, r.stderr)
        assert "needs admin" in r.stderr
    r = kvclient(sc, "token", "list", token=sc.tokens["admin"])
    lines = dict(line.split("\t") for line in r.stdout.splitlines())
    assert {lines["t-read"], lines["t-write"], lines["t-admin"]} == {"read", "write", "admin"}
    assert kvclient(sc, "get", "k", token=sc.tokens["read"]).stdout == "v1\n"  # nothing changed


def test_kvclient_token_lifecycle(sc):
    r = kvclient(sc, "token", "create", "--role", "read", "--name", "life", token=sc.admin_token)
    assert r.returncode == 0 and "life" in r.stdout
    tok = r.stdout.split()[-1]
    assert tok.startswith("kvt1_")
    r = kvclient(sc, "token", "create", "--role", "read", "--name", "life", token=sc.admin_token)
    assert r.returncode != 0 and "life" in r.stderr  # the name is taken
    assert kvclient(sc, "status", token=tok).returncode == 0
    assert kvclient(sc, "token", "revoke", "life", token=sc.admin_token).returncode == 0
    assert "life\t" not in kvclient(sc, "token", "list", token=sc.admin_token).stdout
    r = kvclient(sc, "status", token=tok)
    assert r.returncode == EXIT_NOT_AUTHORIZED and "unknown or revoked" in r.stderr


def test_piped_repl_keeps_its_token_and_exits_4(sc):
    r = kvclient(sc, stdin="put rk 1\nget rk\nget rk --json\n", token=sc.tokens["write"])
    assert (r.returncode, r.stdout.splitlines()[0]) == (0, "1"), r.stderr
    r = kvclient(sc, stdin="get rk\nput rk 2\nget rk\n", token=sc.tokens["read"])
    assert r.returncode == EXIT_NOT_AUTHORIZED  # the status of its last failed line
    assert r.stdout == "1\n1\n"


# ------------------------------------------------------------------ the library


def test_library_no_token_wrong_damaged(sc):
    with Client(sc.servers, timeout=5) as kv:
        with pytest.raises(NotAuthorized, match="needs a token"):
            kv.get("k")
    with Client(sc.servers, timeout=5, token=stranger(sc)) as kv:
        with pytest.raises(NotAuthorized, match="unknown or revoked"):
            kv.get("k")
    with pytest.raises(NotAuthorized, match="damaged"):
        Client(sc.servers, timeout=5, token=damaged(sc.tokens["read"]))


def test_library_revocation_applies_to_an_open_client(sc):
    with sc.client() as admin:
        tok = admin.token_create("lib-rev", "write")
        with Client(sc.servers, timeout=5, token=tok) as kv:
            kv.put("lr", b"1")  # connected, and allowed
            admin.token_revoke("lib-rev")
            # Every node refuses it once the revocation is applied there, on the same connection.
            wait_until(lambda: _refused(lambda: kv.put("lr", b"2")), 10, what="the revocation applied")
            for addr in sc.servers:  # each node once it has applied the revocation
                wait_until(lambda: _refused(lambda: kv.status(addr)), 10, what=f"{addr} refuses the token")
        assert admin.get("lr") == b"1"


def _refused(fn) -> bool:
    try:
        fn()
    except NotAuthorized:
        return True
    return False


def test_library_roles(sc):
    with Client(sc.servers, timeout=5, token=sc.tokens["read"]) as kv:
        kv.get("k")
        assert kv.members()
        with pytest.raises(NotAuthorized, match="put needs write"):
            kv.put("k", b"x")
    with Client(sc.servers, timeout=5, token=sc.tokens["write"]) as kv:
        kv.put("lib", b"w")
        assert kv.cas("lib", b"w", b"w2")
        with pytest.raises(NotAuthorized, match="needs admin"):
            kv.token_list()
        with pytest.raises(NotAuthorized):
            kv.transfer_leader()
    with Client(sc.servers, timeout=5, token=sc.tokens["admin"]) as kv:
        assert {t["name"] for t in kv.token_list()} >= {"t-read", "t-write", "t-admin"}
        assert kv.get("lib") == b"w2"



def test_coordination_calls_carry_the_token(sc):
    """A watch, a kept-alive lease and a transaction open Clients and sockets of their own: each
    connects with the caller's token, and a read token may watch but not take a lease."""
    with Client(sc.servers, timeout=5, token=sc.tokens["write"]) as kv:
        with kv.watch("co/") as w:
            with kv.lease(ttl=5) as lease:
                kv.put("co/a", b"1", lease=lease.id)
            got = []
            deadline = time.monotonic() + 10
            while len(got) < 2 and time.monotonic() < deadline:
                got += w.poll()
        assert [(e.type, e.key) for e in got[:2]] == [("put", "co/a"), ("delete", "co/a")]
        r = kv.txn(compare=[txn.version("co/b") == 0], success=[txn.put("co/b", b"x")], failure=[])
        assert r.succeeded
    with Client(sc.servers, timeout=5, token=sc.tokens["read"]) as kv:
        with kv.watch("co/") as w:
            assert w.poll() == []  # a read token may watch
        with pytest.raises(NotAuthorized):
            kv.lease_grant(5)


# ------------------------------------------------------------------ HTTPS


def cert_of(sc, nid: str) -> Path:
    return sc.data_dir / nid / "tls.crt"


def https(sc, nid: str, method: str, path: str, token=None, body=None, auth=None):
    host, port = sc.nodes[nid].http.rsplit(":", 1)
    conn = http.client.HTTPSConnection(host, int(port), timeout=10, context=client_ssl_context(cert_of(sc, nid)))
    headers = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if auth is not None:
        headers["Authorization"] = auth
    try:
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()
    finally:
        conn.close()


def test_https_no_wrong_damaged_revoked_token_is_401(sc):
    leader = sc.wait_leader()
    cases = [None, stranger(sc), damaged(sc.tokens["admin"]), revoked_token(sc, "gone-http")]
    for tok in cases:
        status, headers, body = https(sc, leader, "GET", "/kv/k", token=tok)
        assert status == 401, (tok, body)
        assert headers["www-authenticate"] == 'Bearer realm="raftkv"'
        assert json.loads(body)["error"].startswith("not authorized: ")
    assert https(sc, leader, "GET", "/kv/k", auth="Basic dXNlcjpwYXNz")[0] == 401


def test_https_roles_on_leader_and_follower(sc):
    leader = sc.wait_leader()
    follower = next(n for n in sc.nodes if n != leader)
    for nid in (leader, follower):  # a follower forwards as the bearer token
        assert https(sc, nid, "PUT", f"/kv/h-{nid}", token=sc.tokens["write"], body=b"v")[0] == 204
        status, _, body = https(sc, nid, "GET", f"/kv/h-{nid}", token=sc.tokens["read"])
        assert (status, body) == (200, b"v")
        status, _, body = https(sc, nid, "PUT", f"/kv/h-{nid}", token=sc.tokens["read"], body=b"x")
        assert status == 403 and "put needs write" in json.loads(body)["error"]
        status, _, body = https(sc, nid, "GET", "/kv/?prefix=h-", token=sc.tokens["read"])
        assert status == 200 and any(i["key"] == f"h-{nid}" for i in json.loads(body))
    assert https(sc, leader, "GET", f"/kv/h-{leader}", token=sc.tokens["admin"])[2] == b"v"


def test_https_health_open_metrics_and_status_need_a_token(sc):
    leader = sc.wait_leader()
    assert https(sc, leader, "GET", "/health")[0] == 200
    assert https(sc, leader, "GET", "/metrics")[0] == 401
    assert https(sc, leader, "GET", "/status")[0] == 401
    status, _, body = https(sc, leader, "GET", "/metrics", token=sc.tokens["read"])
    assert status == 200 and b"raftkv_" in body


def test_plain_http_and_an_untrusted_certificate_are_refused(sc):
    leader = sc.wait_leader()
    host, port = sc.nodes[leader].http.rsplit(":", 1)
    plain = http.client.HTTPConnection(host, int(port), timeout=10)
    with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
        plain.request("GET", "/health")
        plain.getresponse().read()
    other = next(n for n in sc.nodes if n != leader)  # another node's self-signed certificate
    conn = http.client.HTTPSConnection(host, int(port), timeout=10, context=client_ssl_context(cert_of(sc, other)))
    with pytest.raises(ssl.SSLCertVerificationError):
        conn.request("GET", "/health")


def test_curl_as_the_readme_shows(sc):
    leader = sc.wait_leader()
    url = f"https://{sc.nodes[leader].http}/kv/curl"
    cert = str(cert_of(sc, leader))

    def curl(*args):
        r = subprocess.run(["curl", "-sS", "--cacert", cert, "-o", "/dev/stderr", "-w", "%{http_code}", *args],
                           capture_output=True, text=True, timeout=30)
        return r.stdout, r.stderr

    assert curl("-X", "PUT", "-d", "hi", "-H", f"Authorization: Bearer {sc.tokens['write']}", url)[0] == "204"
    assert curl("-H", f"Authorization: Bearer {sc.tokens['read']}", url) == ("200", "hi")
    assert curl(url)[0] == "401"
    assert curl("-X", "DELETE", "-H", f"Authorization: Bearer {sc.tokens['read']}", url)[0] == "403"


# ------------------------------------------------------------------ --tls-cert / --tls-key


def _bootstrap_one(tmp_path, *extra):
    from .harness import KVNODE, free_port

    http_addr = f"127.0.0.1:{free_port()}"
    args = [sys.executable, str(KVNODE), "--id", "solo", "--addr", f"127.0.0.1:{free_port()}",
            "--client", f"127.0.0.1:{free_port()}", "--http", http_addr, "--data-dir", str(tmp_path / "data"),
            "--bootstrap", "--secure", *extra]
    log = open(tmp_path / "solo.log", "wb")
    return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT), http_addr


def test_given_certificate_is_served_and_a_bad_one_stops_the_node(tmp_path):
    from raftkv.wire.security.tls import make_self_signed_cert

    crt, key = make_self_signed_cert(tmp_path / "pki", hosts=["127.0.0.1"], common_name="ops-ca")
    proc, http_addr = _bootstrap_one(tmp_path, "--tls-cert", str(crt), "--tls-key", str(key))
    try:
        host, port = http_addr.rsplit(":", 1)

        def health() -> bool:
            conn = http.client.HTTPSConnection(host, int(port), timeout=2, context=client_ssl_context(crt))
            try:
                conn.request("GET", "/health")
                return conn.getresponse().status == 200
            except OSError:
                return False
            finally:
                conn.close()

        wait_until(health, 30, what="HTTPS with the given certificate")
        assert not (tmp_path / "data" / "solo" / "tls.crt").exists()  # none made: one was given
    finally:
        proc.kill()
        proc.wait(timeout=20)
    (tmp_path / "x").mkdir()
    bad, _ = _bootstrap_one(tmp_path / "x", "--tls-cert", str(tmp_path / "missing.crt"), "--tls-key", str(key))
    assert bad.wait(timeout=60) == 1
    text = (tmp_path / "x" / "solo.log").read_text()
    assert "missing.crt" in text and "HTTPS gateway" in text
