"""bin/kvclient run as a subprocess against the fake front door."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import raftkv
from raftkv.cli.render import member_line, show, status_text
from raftkv.wire.messages import ClientReply
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
    got = json.loads(r.stdout)
    assert got.items() >= {"key": "a", "value": "1"}.items()
    assert {"create_revision", "mod_revision", "version", "revision"} <= set(got)  # issue 14


def test_json_binary_value_is_base64_and_flagged(fd):
    r = kv("get", "bin", "--json", servers=fd.address)
    assert json.loads(r.stdout).items() >= {"key": "bin", "value": "/wA=", "value_b64": True}.items()


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
    assert r.returncode == 2  # the last line that failed: the unclosed quote, an input error
    first, second = r.stdout.split(b"\n", 1)
    assert first == b"two words" and json.loads(second).items() >= {"key": "b", "value": "two words"}.items()
    assert len(r.stderr.decode().splitlines()) == 3


def test_repl_help(fd):
    r = kv(stdin=b"help\n", servers=fd.address)
    assert r.returncode == 0 and b"transfer-leader" in r.stdout


# ------------------------------------------------------------------ the operator's toolkit


def test_version():
    r = kv("--version")
    assert (r.returncode, r.stdout) == (0, f"kvclient {raftkv.__version__}\n".encode())


def test_put_value_from_stdin_is_stored_byte_for_byte(fd):
    value = b"\xff\x00 binary\nwith a newline\n"
    r = kv("put", "k", "-", stdin=value, servers=fd.address)
    assert (r.returncode, r.stderr) == (0, b"")
    assert fd.store["k"] == value


def test_put_value_from_file(fd, tmp_path):
    big = bytes(range(256)) * 4400  # 1.1 MB: far beyond what fits in an argument list
    path = tmp_path / "value.bin"
    path.write_bytes(big)
    r = kv("put", "big", "--file", str(path), "--json", servers=fd.address)
    assert (r.returncode, json.loads(r.stdout)) == (0, {"ok": True})
    assert fd.store["big"] == big


@pytest.mark.parametrize("args", [("put", "k", "v", "--file", "x"), ("put", "k"),
                                  ("put", "k", "--file", "/nonexistent/v")])
def test_put_value_and_file_are_exclusive_and_checked(fd, args):
    r = kv(*args, servers=fd.address)
    assert r.returncode == 2 and r.stderr.decode().count("\n") == 1
    assert "k" not in fd.store
    if "/nonexistent/v" in args:
        assert "cannot read /nonexistent/v" in r.stderr.decode()


def test_repl_refuses_stdin_value(fd):
    r = kv(stdin=b"put k -\n", servers=fd.address)
    assert r.returncode == 2 and b"--file" in r.stderr
    assert "k" not in fd.store


@pytest.mark.parametrize("script, status", [
    (b"put a 1\nget a\n", 0),
    (b"get nope\nput a 1\nget a\n", 1),  # a later success does not hide a failure
    (b"get nope\nbogus\nget a\n", 2),  # the last failure counts
    (b"bogus\nget nope\nexit\nbogus\n", 1),  # nothing after exit runs
])
def test_piped_repl_exits_with_the_status_of_its_last_failed_command(fd, script, status):
    assert kv(stdin=script, servers=fd.address).returncode == status


def test_status_prints_null_not_none():
    with FakeFrontDoor(leader_id=None) as f:
        r = kv("status", servers=f.address)
    out = r.stdout.decode()
    assert r.returncode == 0
    assert "leader_id: null\n" in out and "http=null" in out
    assert "None" not in out and "True" not in out


def test_members_show_units_and_nulls(fd):
    fd.push(ClientReply("ok", info=[
        {"id": "node1", "addr": "127.0.0.1:9001", "client": "127.0.0.1:5001", "http": "127.0.0.1:8001",
         "voter": True, "match_index": 9, "last_contact": 0.0, "leader": True},
        {"id": "node2", "addr": "127.0.0.1:9002", "client": "127.0.0.1:5002", "http": "",
         "voter": True, "match_index": 7, "last_contact": 7.641, "leader": False},
        {"id": "node3", "addr": "127.0.0.1:9003", "client": "127.0.0.1:5003", "http": "",
         "voter": False, "match_index": 0, "last_contact": None, "leader": False},
    ]))
    r = kv("members", servers=fd.address)
    assert r.returncode == 0
    assert r.stdout.decode().splitlines() == [
        "node1 127.0.0.1:9001 client=127.0.0.1:5001 http=127.0.0.1:8001 voter match_index=9 last_contact=0.000s "
        "leader=true",
        "node2 127.0.0.1:9002 client=127.0.0.1:5002 http=null voter match_index=7 last_contact=7.641s leader=false",
        "node3 127.0.0.1:9003 client=127.0.0.1:5003 http=null learner match_index=0 last_contact=null leader=false",
    ]


def test_render_values():
    assert [show(None), show(True), show(False), show(3), show("x")] == ["null", "true", "false", "3", "x"]
    assert show(7.641, "last_contact") == "7.641s"
    assert show(12.5, "fsync_ms") == "12.5ms" and show(2048, "snapshot_bytes") == "2048 B"
    assert show({"a": None}) == '{"a": null}'
    learner = {"id": "n", "addr": "a:1", "client": "", "voter": False}
    assert member_line(learner) == "n a:1 client=null http=null learner"
    status = {"id": "n", "leader_id": None, "disk_error": "full"}
    assert status_text(status) == "id: n\nleader_id: null\ndisk_error: full\n"


def test_admin_commands_say_which_node_did_it(fd):
    r = kv("add-node", "n4", "127.0.0.1:9004", "--learner", servers=fd.address)
    assert (r.returncode, r.stdout) == (0, b"n4 added as a learner by node1\n")
    fd.push(ClientReply("ok", info={"index": 12}))
    r = kv("remove-node", "n4", servers=fd.address)
    assert r.stdout == b"n4 removed by node1 (configuration entry 12)\n"
    fd.push(ClientReply("ok", info={"target": "node2"}))
    r = kv("transfer-leader", servers=fd.address)
    assert r.stdout == b"node1 is handing leadership to node2\n"
    fd.push(ClientReply("ok", info={"index": 30, "term": 4}))
    r = kv("snapshot", servers=fd.address)
    assert r.stdout == b"node1 (the leader) took a snapshot at index 30 (term 4)\n"
    fd.push(ClientReply("ok", info={"index": 31, "term": 4}))
    r = kv("snapshot", "--json", servers=fd.address)
    assert json.loads(r.stdout) == {"ok": True, "info": {"index": 31, "term": 4}, "node": "node1",
                                    "node_state": "leader"}


def test_snapshot_by_a_follower_says_whose_copy():
    with FakeFrontDoor(node_id="node3", leader_id="node1") as f:
        f.push(ClientReply("ok", info={"index": 5, "term": 2}))
        r = kv("snapshot", servers=f.address)
    assert (r.returncode, r.stdout) == (0, b"node3 (a follower of node1) took a snapshot of its own copy at "
                                           b"index 5 (term 2)\n")


def test_snapshot_on_a_node_without_leader_is_not_reported_as_done():
    with FakeFrontDoor(node_id="node3", leader_id=None) as f:
        f.push(ClientReply("ok", info={"index": 5, "term": 2}))
        r = kv("snapshot", servers=f.address)
    assert r.returncode == 3 and r.stdout == b""
    assert "node3 knows no leader" in r.stderr.decode() and r.stderr.decode().count("\n") == 1
