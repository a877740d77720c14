"""kvclient on a secure cluster, against the fake front door: exit status 4, the token commands."""
import json

import pytest

from raftkv.wire.messages import ClientReply
from tests.unit.fake_frontdoor import FakeFrontDoor
from tests.unit.test_kvclient_cli import kv

DENIED = ClientReply("not_authorized", error="not authorized: token 'r' has role read, put needs write")


@pytest.fixture
def fd():
    with FakeFrontDoor() as f:
        f.store["a"] = b"1"
        yield f


def test_not_authorized_is_exit_4_with_one_line(fd):
    fd.push(DENIED)
    r = kv("put", "a", "2", servers=fd.address)
    assert r.returncode == 4
    assert r.stderr.decode() == "kvclient: not authorized: token 'r' has role read, put needs write\n"
    assert fd.store["a"] == b"1"


def test_not_authorized_json(fd):
    fd.push(ClientReply("not_authorized", error="unknown or revoked token"))
    r = kv("--json", "get", "a", servers=fd.address)
    assert r.returncode == 4
    assert json.loads(r.stderr) == {"error": "not authorized: unknown or revoked token", "code": 4}


def test_piped_repl_exits_4_when_its_last_failure_was_not_authorized(fd):
    fd.push(ClientReply("ok", value=b"1"), DENIED)
    r = kv(stdin=b"get a\nput a 2\nget a\n", servers=fd.address)
    assert r.returncode == 4
    assert r.stdout == b"1\n1\n"


def test_repl_token_is_set_when_it_starts(fd):
    r = kv(stdin=b"--token kvt1_x get a\n", servers=fd.address)
    assert r.returncode == 2 and b"set when the REPL starts" in r.stderr


def token_list_handler(fd):
    def handler(req):
        if req.op == "token_list":
            return ClientReply("ok", info=[{"name": "ops", "role": "admin"}, {"name": "app", "role": "write"}])
        if req.op == "token_revoke":
            if req.key == "ghost":
                return ClientReply("not_found", error="no token named 'ghost'")
            if req.key == "admin":
                return ClientReply("cas_failed", error="refused: 'admin' is the last admin token")
            return ClientReply("ok")
        return fd.kv_handler(req)
    return handler


def test_token_list_sorted_one_line_each(fd):
    fd.handler = token_list_handler(fd)
    r = kv("token", "list", servers=fd.address)
    assert (r.returncode, r.stdout) == (0, b"app\twrite\nops\tadmin\n")
    r = kv("token", "list", "--json", servers=fd.address)
    assert json.loads(r.stdout) == [{"name": "app", "role": "write"}, {"name": "ops", "role": "admin"}]


def test_token_revoke(fd):
    fd.handler = token_list_handler(fd)
    r = kv("token", "revoke", "app", servers=fd.address)
    assert (r.returncode, r.stdout) == (0, b"revoked token 'app'\n")
    assert [q.key for q in fd.requests("token_revoke")] == ["app"]
    r = kv("token", "revoke", "ghost", servers=fd.address)
    assert r.returncode == 1 and b"ghost" in r.stderr
    r = kv("token", "revoke", "admin", servers=fd.address)
    assert r.returncode == 1 and b"last admin token" in r.stderr


def test_token_create_needs_the_callers_admin_token(fd):
    r = kv("token", "create", "--role", "read", "--name", "r1", servers=fd.address)
    assert r.returncode == 2 and b"needs your admin token" in r.stderr
    assert fd.requests("token_create") == []


@pytest.mark.parametrize("args", [("token", "create", "--role", "root", "--name", "x"),
                                  ("token", "create", "--role", "read"), ("token", "revoke")])
def test_token_usage_errors_exit_2(fd, args):
    r = kv(*args, servers=fd.address)
    assert r.returncode == 2 and r.stderr.decode().count("\n") == 1


def test_join_token_rotate_needs_the_callers_admin_token(fd):
    r = kv("join-token", "rotate", servers=fd.address)
    assert r.returncode == 2 and b"needs your admin token" in r.stderr
    assert fd.requests("token_create") == []
