"""bin/kvclient run as a subprocess against the fake front door."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.fake_frontdoor import FakeFrontDoor, free_port

KVCLIENT = str(Path(__file__).resolve().parents[2] / "bin" / "kvclient")


@pytest.fixture
def fd():
    with FakeFrontDoor() as f:
        f.store.update({"a": b"1", "bin": b"\xff\x00", "dir/x": b"X", "dir/y": b"Y"})
        yield f


def kv(*args, servers=None, stdin=b"", cwd=None, env_servers=None, timeout=20):
    env = {k: v for k, v in os.environ.items() if k != "KV_SERVERS"}
    if env_servers:
        env["KV_SERVERS"] = env_servers
    argv = [sys.executable, KVCLIENT] + (["--servers", servers] if servers else []) + list(args)
    return subprocess.run(argv, input=stdin, capture_output=True, env=env, cwd=cwd, timeout=timeout)


def test_get_prints_bare_value(fd):
    r = kv("get", "a", servers=fd.address)
    assert (r.returncode, r.stdout, r.stderr) == (0, b"1\n", b"")


def test_get_prints_raw_bytes(fd):
    assert kv("get", "bin", servers=fd.address).stdout == b"\xff\x00\n"


@pytest.mark.parametrize("args", [("--json", "get", "a"), ("get", "a", "--json"), ("get", "--json", "a")])
def test_json_before_or_after_command(fd, args):
    r = kv(*args, servers=fd.address)
    assert r.returncode == 0
    assert json.loads(r.stdout) == {"key": "a", "value": "1"}


def test_json_binary_value_is_base64_and_flagged(fd):
    r = kv("get", "bin", "--json", servers=fd.address)
    assert json.loads(r.stdout) == {"key": "bin", "value": "/wA=", "value_b64": True}


def test_missing_key_exit_1(fd):
    r = kv("get", "nope", servers=fd.address)
    assert r.returncode == 1
    assert r.stdout == b""
    assert r.stderr.decode().count("\n") == 1 and "not found" in r.stderr.decode()


def test_cas_mismatch_and_create_existing_exit_1(fd):
    assert kv("cas", "a", "9", "2", servers=fd.address).returncode == 1
    assert kv("create", "a", "2", servers=fd.address).returncode == 1
    assert kv("cas", "a", "1", "2", servers=fd.address).returncode == 0
    assert kv("create", "new", "v", servers=fd.address).returncode == 0
    assert fd.store["a"] == b"2" and fd.store["new"] == b"v"


@pytest.mark.parametrize("args", [("get",), ("bogus",), ("put", "k"), ("list", "--limit", "x"), ("get", "")])
def test_usage_or_input_error_exit_2(fd, args):
    r = kv(*args, servers=fd.address)
    assert r.returncode == 2
    assert r.stderr.decode().count("\n") == 1


def test_bad_servers_exit_2():
    assert kv("get", "a", servers="no-port").returncode == 2


def test_no_reachable_server_exit_3():
    r = kv("--timeout", "0.5", "get", "a", servers=f"127.0.0.1:{free_port()}")
    assert r.returncode == 3
    assert r.stderr.decode().count("\n") == 1


def test_write_then_read_and_list(fd):
    assert kv("put", "k", "hello world", servers=fd.address).stdout == b""
    assert fd.store["k"] == b"hello world"
    r = kv("list", "dir/", servers=fd.address)
    assert r.stdout == b"dir/x\tX\ndir/y\tY\n"
    r = kv("list", "dir/", "--limit", "1", "--json", servers=fd.address)
    assert json.loads(r.stdout) == [{"key": "dir/x", "value": "X"}]
    assert kv("delete", "k", servers=fd.address).returncode == 0
    assert "k" not in fd.store


def test_status_json_fields(fd):
    r = kv("status", "--json", servers=fd.address)
    st = json.loads(r.stdout)
    for field in ("id", "state", "term", "leader_id", "commit_index", "applied_index",
                  "last_log_index", "snapshot_index", "first_log_index", "members"):
        assert field in st


def test_admin_commands(fd):
    assert kv("add-node", "n4", "127.0.0.1:9004", "--client", "127.0.0.1:5004", "--learner",
              servers=fd.address).returncode == 0
    (req,) = fd.requests("add_node")
    assert (req.member.id, req.member.client, req.member.voter) == ("n4", "127.0.0.1:5004", False)
    assert kv("remove-node", "n4", servers=fd.address).returncode == 0
    assert kv("transfer-leader", "node2", servers=fd.address).returncode == 0
    assert fd.requests("transfer_leader")[0].key == "node2"
    assert kv("members", "--json", servers=fd.address).returncode == 0


def test_servers_from_env(fd):
    assert kv("get", "a", env_servers=fd.address).stdout == b"1\n"


def test_servers_from_cluster_yaml_in_cwd(fd, tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "cluster.yaml").write_text(
        "cluster_id: test\nnodes:\n"
        f"  - {{id: node1, addr: '127.0.0.1:9001', client: '{fd.address}', http: '127.0.0.1:8001'}}\n"
    )
    assert kv("get", "a", cwd=tmp_path).stdout == b"1\n"


def test_repl_via_pipe(fd):
    r = kv(stdin=b"put a 1\nget a\n", servers=fd.address)
    assert (r.returncode, r.stdout, r.stderr) == (0, b"1\n", b"")


def test_repl_error_line_continues(fd):
    script = b"get nope\nbogus\nput 'unclosed\nput b 'two words'\nget b\n--json get b\nexit\nget a\n"
    r = kv(stdin=script, servers=fd.address)
    assert r.returncode == 0
    assert r.stdout == b'two words\n{"key": "b", "value": "two words"}\n'
    assert len(r.stderr.decode().splitlines()) == 3


def test_repl_help(fd):
    r = kv(stdin=b"help\n", servers=fd.address)
    assert r.returncode == 0 and b"transfer-leader" in r.stdout
