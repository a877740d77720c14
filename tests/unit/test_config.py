"""raftkv.config: the shipped YAML files, the three ways to configure a node, and one
specific, one-line error per kind of mistake."""
from __future__ import annotations

import dataclasses
import re
import textwrap
from pathlib import Path

import pytest
import yaml

from raftkv.config import (DEFAULT_CLUSTER_FILE, ConfigError, NodeConfig, NodeSpec, RaftTuning,
                           advertise, cluster_client_addresses, core_config, load_cluster, load_config,
                           normalize_address)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def write(tmp_path: Path, text: str, name: str = "x.yaml") -> str:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return str(p)


def error_of(*args, **kwargs) -> str:
    with pytest.raises(ConfigError) as e:
        load_config(*args, **kwargs)
    msg = str(e.value)
    assert "\n" not in msg, "errors are one line"
    return msg


CLUSTER = """\
cluster_id: c1
data_dir: /tmp/kv
nodes:
  - {id: a, addr: "127.0.0.1:9001", client: "127.0.0.1:5001", http: "127.0.0.1:8001"}
  - {id: b, addr: "127.0.0.1:9002", client: "127.0.0.1:5002"}
  - {id: c, addr: "127.0.0.1:9003", client: "127.0.0.1:5003", http: "127.0.0.1:8003"}
"""

NODE = """\
id: n1
addr: 127.0.0.1:9001
client: 127.0.0.1:5001
http: 127.0.0.1:8001
data_dir: /tmp/kv
cluster_id: c1
bootstrap: true
"""


# --------------------------------------------------------------------------- shipped files

@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    data = yaml.safe_load(path.read_text())
    if "nodes" in data:
        configs = load_cluster(str(path))
        assert [c.id for c in configs] == [n["id"] for n in data["nodes"]]
        for c in configs:
            assert c.bootstrap and c.join is None and len(c.peers) == len(configs)
    else:
        cfg = load_config(str(path))
        assert cfg.id == data["id"]


def test_shipped_files_are_the_expected_set():
    names = {p.name for p in CONFIGS.glob("*.yaml")}
    assert {"cluster.yaml", "cluster-5.yaml", "node1.yaml", "node2.yaml", "node3.yaml"} <= names


def test_cluster_yaml_contents():
    path = str(CONFIGS / "cluster.yaml")
    for i in (1, 2, 3):
        cfg = load_config(path, f"node{i}", {})
        assert (cfg.id, cfg.addr, cfg.client, cfg.http) == (
            f"node{i}", f"127.0.0.1:900{i}", f"127.0.0.1:500{i}", f"127.0.0.1:800{i}")
        assert cfg.cluster_id == "local-dev"
        assert cfg.data_dir == "./data"
        assert cfg.node_dir == Path("./data") / f"node{i}"
        assert cfg.bootstrap and cfg.join is None
        assert [p.id for p in cfg.peers] == ["node1", "node2", "node3"]
    # The raft section shows every tuning key, each at its default.
    raw = yaml.safe_load((CONFIGS / "cluster.yaml").read_text())
    assert set(raw["raft"]) == {f.name for f in dataclasses.fields(RaftTuning)}
    assert cfg.raft == RaftTuning()


def test_cluster5_yaml_contents():
    path = str(CONFIGS / "cluster-5.yaml")
    cfg = load_config(path, "node5", {})
    assert (cfg.addr, cfg.client, cfg.http) == ("127.0.0.1:9005", "127.0.0.1:5005", "127.0.0.1:8005")
    assert cfg.cluster_id == "local-dev-5" and cfg.data_dir == "./data5"
    assert [p.addr for p in cfg.peers] == [f"127.0.0.1:900{i}" for i in range(1, 6)]
    assert cluster_client_addresses(path) == [f"127.0.0.1:500{i}" for i in range(1, 6)]


def test_node_yamls():
    n1 = load_config(str(CONFIGS / "node1.yaml"))
    assert n1.bootstrap and n1.join is None
    assert n1.peers == [NodeSpec("node1", "127.0.0.1:9001", "127.0.0.1:5001", "127.0.0.1:8001")]
    for i in (2, 3):
        n = load_config(str(CONFIGS / f"node{i}.yaml"))
        assert n.id == f"node{i}" and n.addr == f"127.0.0.1:900{i}"
        assert not n.bootstrap and n.join == "127.0.0.1:9001" and n.peers == []


def test_default_servers_come_from_cluster_yaml(monkeypatch):
    monkeypatch.chdir(CONFIGS.parent)  # the default file is the checkout's, relative to the working directory
    assert DEFAULT_CLUSTER_FILE == Path("configs") / "cluster.yaml"
    assert cluster_client_addresses() == ["127.0.0.1:5001", "127.0.0.1:5002", "127.0.0.1:5003"]
    assert cluster_client_addresses(str(CONFIGS / "node2.yaml")) == ["127.0.0.1:5002"]


# --------------------------------------------------------------------------- whole-cluster file

def test_cluster_file_with_id(tmp_path):
    path = write(tmp_path, CLUSTER)
    cfg = load_config(path, "b", {})
    assert cfg == NodeConfig(
        id="b", addr="127.0.0.1:9002", client="127.0.0.1:5002", http=None, data_dir="/tmp/kv",
        cluster_id="c1", bootstrap=True, join=None,
        peers=[NodeSpec("a", "127.0.0.1:9001", "127.0.0.1:5001", "127.0.0.1:8001"),
               NodeSpec("b", "127.0.0.1:9002", "127.0.0.1:5002", None),
               NodeSpec("c", "127.0.0.1:9003", "127.0.0.1:5003", "127.0.0.1:8003")],
        raft=RaftTuning(), log_level="INFO")
    assert cfg.node_dir == Path("/tmp/kv/b")
    # The id may come as node_id or as the --id override.
    assert load_config(path, None, {"id": "b"}) == cfg


def test_cluster_file_defaults_client_and_data_dir(tmp_path):
    path = write(tmp_path, """\
        cluster_id: c1
        nodes:
          - {id: a, addr: "127.0.0.1:9001"}
          - {id: b, addr: "127.0.0.1:9002"}
        """)
    cfg = load_config(path, "a")
    assert cfg.client == "127.0.0.1:5001" and cfg.data_dir == "./data" and cfg.http is None
    assert [p.client for p in cfg.peers] == ["127.0.0.1:5001", "127.0.0.1:5002"]


def test_cluster_file_raft_section_and_log_level(tmp_path):
    path = write(tmp_path, CLUSTER + "log_level: debug\nraft:\n  heartbeat_ms: 20\n"
                                     "  election_timeout_ms: [100, 200]\n  lease_reads: true\n")
    cfg = load_config(path, "a")
    assert cfg.raft == RaftTuning(heartbeat_ms=20, election_timeout_ms=(100, 200), lease_reads=True)
    assert cfg.log_level == "DEBUG"


def test_load_cluster_gives_every_node(tmp_path):
    path = write(tmp_path, CLUSTER)
    configs = load_cluster(path, {"data_dir": "/srv/kv"})
    assert [c.id for c in configs] == ["a", "b", "c"]
    assert all(c.data_dir == "/srv/kv" for c in configs)
    with pytest.raises(ConfigError, match="--addr cannot be combined with --all"):
        load_cluster(path, {"addr": "127.0.0.1:9999"})
    with pytest.raises(ConfigError, match="needs a whole-cluster file"):
        load_cluster(write(tmp_path, NODE, "n.yaml"))


# --------------------------------------------------------------------------- per-node file

def test_per_node_file(tmp_path):
    cfg = load_config(write(tmp_path, NODE), None, {})
    assert cfg == NodeConfig(
        id="n1", addr="127.0.0.1:9001", client="127.0.0.1:5001", http="127.0.0.1:8001",
        data_dir="/tmp/kv", cluster_id="c1", bootstrap=True, join=None,
        peers=[NodeSpec("n1", "127.0.0.1:9001", "127.0.0.1:5001", "127.0.0.1:8001")])


def test_per_node_file_join(tmp_path):
    path = write(tmp_path, """\
        id: n2
        addr: 127.0.0.1:9002
        join: localhost:9001
        raft: {max_batch: 64}
        """)
    cfg = load_config(path)
    assert cfg.join == "127.0.0.1:9001"  # advertised: a peer address to connect to
    assert not cfg.bootstrap and cfg.peers == [] and cfg.cluster_id is None
    assert cfg.client == "127.0.0.1:5002" and cfg.http is None and cfg.data_dir == "./data"
    assert cfg.raft.max_batch == 64 and cfg.raft.heartbeat_ms == 50


def test_per_node_file_neither_bootstrap_nor_join(tmp_path):
    cfg = load_config(write(tmp_path, "id: n4\naddr: 127.0.0.1:9004\n"))
    assert not cfg.bootstrap and cfg.join is None and cfg.peers == []


# --------------------------------------------------------------------------- flags only

def test_tutorial_bootstrap_line():
    # kvnode --id node1 --addr localhost:9001 --http :8001 --bootstrap
    cfg = load_config(None, None, {"id": "node1", "addr": "localhost:9001", "http": ":8001",
                                   "bootstrap": True, "client": None, "join": None,
                                   "data_dir": None, "cluster_id": None})
    assert cfg.id == "node1"
    assert cfg.addr == "localhost:9001"
    assert cfg.client == "localhost:5001"  # addr port - 4000
    assert cfg.http == "0.0.0.0:8001"  # ":8001" = all interfaces
    assert cfg.data_dir == "./data" and cfg.node_dir == Path("data/node1")
    assert cfg.bootstrap and cfg.join is None and cfg.cluster_id is None
    assert cfg.peers == [NodeSpec("node1", "127.0.0.1:9001", "127.0.0.1:5001", "127.0.0.1:8001")]
    assert cfg.spec == cfg.peers[0]
    assert cfg.raft == RaftTuning()


def test_tutorial_join_line():
    # kvnode --id node2 --addr localhost:9002 --http :8002 --join localhost:9001
    cfg = load_config(None, "node2", {"addr": "localhost:9002", "http": ":8002",
                                      "join": "localhost:9001", "bootstrap": False})
    assert cfg.join == "127.0.0.1:9001" and not cfg.bootstrap and cfg.peers == []
    assert cfg.client == "localhost:5002"


def test_design_flag_lines():
    cfg = load_config(None, None, {"id": "node2", "addr": "127.0.0.1:9002",
                                   "client": "127.0.0.1:5002", "http": "127.0.0.1:8002",
                                   "data-dir": "/d", "join": "127.0.0.1:9001"})
    assert (cfg.client, cfg.http, cfg.data_dir, cfg.join) == (
        "127.0.0.1:5002", "127.0.0.1:8002", "/d", "127.0.0.1:9001")


def test_client_port_default_when_below_4001():
    cfg = load_config(None, "n", {"addr": "127.0.0.1:3000"})
    assert cfg.client == "127.0.0.1:4000"  # 3000 - 4000 is no port: + 1000 instead


def test_flags_only_need_id_and_addr():
    assert "--id and --addr are required" in error_of(None, None, {})
    assert "--addr is required" in error_of(None, "n1", {})


# --------------------------------------------------------------------------- overrides

def test_overrides_win_over_per_node_file(tmp_path):
    path = write(tmp_path, NODE)
    cfg = load_config(path, None, {"addr": "127.0.0.1:9101", "client": "127.0.0.1:5101",
                                   "http": ":8101", "data_dir": "/other", "cluster_id": "c2"})
    assert (cfg.addr, cfg.client, cfg.http, cfg.data_dir, cfg.cluster_id) == (
        "127.0.0.1:9101", "127.0.0.1:5101", "0.0.0.0:8101", "/other", "c2")
    assert cfg.peers == [NodeSpec("n1", "127.0.0.1:9101", "127.0.0.1:5101", "127.0.0.1:8101")]
    # --join replaces the file's bootstrap: true
    cfg = load_config(path, None, {"join": "127.0.0.1:9002"})
    assert not cfg.bootstrap and cfg.join == "127.0.0.1:9002" and cfg.peers == []


def test_overrides_win_over_cluster_file(tmp_path):
    path = write(tmp_path, CLUSTER)
    cfg = load_config(path, "a", {"addr": "0.0.0.0:9101", "data_dir": "/x", "cluster_id": "z"})
    assert cfg.addr == "0.0.0.0:9101" and cfg.data_dir == "/x" and cfg.cluster_id == "z"
    assert cfg.client == "127.0.0.1:5001"  # from the file
    # The node seeds the cluster with the address it really binds (advertised).
    assert cfg.peers[0] == NodeSpec("a", "127.0.0.1:9101", "127.0.0.1:5001", "127.0.0.1:8001")


def test_bootstrap_flag_replaces_file_join(tmp_path):
    path = write(tmp_path, "id: n2\naddr: 127.0.0.1:9002\njoin: 127.0.0.1:9001\n")
    cfg = load_config(path, None, {"bootstrap": True})
    assert cfg.bootstrap and cfg.join is None and [p.id for p in cfg.peers] == ["n2"]


# --------------------------------------------------------------------------- errors

def test_unknown_top_level_key(tmp_path):
    path = write(tmp_path, NODE + "adress: 127.0.0.1:1\n")
    msg = error_of(path)
    assert msg.startswith(f"{path}: unknown key 'adress' (known: id, addr, client")


def test_unknown_top_level_key_in_cluster_file(tmp_path):
    path = write(tmp_path, CLUSTER + "bootstrap: true\n")
    assert f"{path}: unknown key 'bootstrap' in a whole-cluster file (known: cluster_id" in error_of(path, "a")


def test_unknown_raft_key(tmp_path):
    path = write(tmp_path, NODE + "raft:\n  heartbeat: 50\n")
    assert error_of(path) == (f"{path}: unknown key 'raft.heartbeat' (known: heartbeat_ms, "
                              "election_timeout_ms, snapshot_threshold, trailing_logs, snapshots_kept, "
                              "max_batch, max_key_bytes, max_value_bytes, pre_vote, check_quorum, "
                              "lease_reads)")


def test_unknown_node_key(tmp_path):
    path = write(tmp_path, CLUSTER.replace('client: "127.0.0.1:5002"', 'clinet: "127.0.0.1:5002"'))
    assert error_of(path, "a") == (f"{path}: unknown key 'nodes[1].clinet' "
                                   "(known: id, addr, client, http)")


@pytest.mark.parametrize("snippet, expected", [
    ("raft:\n  heartbeat_ms: fast\n", "raft.heartbeat_ms must be an integer (got 'fast')"),
    ("raft:\n  heartbeat_ms: true\n", "raft.heartbeat_ms must be an integer (got True)"),
    ("raft:\n  pre_vote: 1\n", "raft.pre_vote must be true or false (got 1)"),
    ("raft:\n  election_timeout_ms: 300\n",
     "raft.election_timeout_ms must be a [min, max] list of two integers (got 300)"),
    ("raft: 5\n", "raft must be a mapping of tuning keys (got 5)"),
    ("log_level: LOUD\n", "log_level must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
    ("raft:\n  max_batch: 0\n", "raft.max_batch must be at least 1 (got 0)"),
    ("raft:\n  lease_reads: true\n  check_quorum: false\n", "raft.lease_reads requires check_quorum"),
])
def test_wrong_types_and_values(tmp_path, snippet, expected):
    path = write(tmp_path, NODE + snippet)
    assert error_of(path).startswith(f"{path}: {expected}")


def test_wrong_type_of_top_level_keys(tmp_path):
    path = write(tmp_path, NODE.replace("bootstrap: true", "bootstrap: maybe"))
    assert error_of(path) == f"{path}: bootstrap must be true or false (got 'maybe')"
    path = write(tmp_path, NODE.replace("id: n1", "id: 1"))
    assert error_of(path).startswith(f"{path}: id must be a string (got 1; quote it")
    path = write(tmp_path, NODE.replace("id: n1", "id: ../etc"))
    assert error_of(path).startswith(f"{path}: id '../etc' must be 1-64 letters")
    path = write(tmp_path, NODE.replace("cluster_id: c1", "cluster_id: [1]"))
    assert error_of(path) == f"{path}: cluster_id must be a non-empty string (got a list)"


def test_top_level_must_be_a_mapping(tmp_path):
    path = write(tmp_path, "- a\n- b\n")
    assert error_of(path) == f"{path}: the top level must be a mapping of keys (got a list)"


@pytest.mark.parametrize("addr, expected", [
    ("127.0.0.1", "addr: bad address '127.0.0.1': expected HOST:PORT"),
    ("127.0.0.1:0", "addr: bad address '127.0.0.1:0': port 0 is not in 1..65535"),
    ("127.0.0.1:70000", "addr: bad address '127.0.0.1:70000': port 70000 is not in 1..65535"),
    ("127.0.0.1:http", "addr: bad address '127.0.0.1:http': port 'http' is not a number"),
    ("tcp://127.0.0.1:9001", "without a scheme"),
    ("bad host:9001", "bad host 'bad host'"),
    ("::1:9001", "put an IPv6 host in brackets"),
])
def test_bad_address_in_file(tmp_path, addr, expected):
    path = write(tmp_path, NODE.replace("addr: 127.0.0.1:9001", f'addr: "{addr}"'))
    msg = error_of(path)
    assert msg.startswith(f"{path}: ") and expected in msg


def test_bad_address_in_cluster_file_and_flag(tmp_path):
    path = write(tmp_path, CLUSTER.replace('"127.0.0.1:5003"', '"127.0.0.1:99999"'))
    assert error_of(path, "a").startswith(f"{path}: nodes[2].client: bad address '127.0.0.1:99999'")
    assert error_of(None, "n1", {"addr": "localhost"}).startswith("--addr: bad address 'localhost'")
    assert error_of(None, "n1", {"addr": "localhost:9001", "http": "8001"}).startswith(
        "--http: bad address '8001'")


def test_address_that_yaml_reads_as_a_number(tmp_path):
    path = write(tmp_path, NODE.replace("http: 127.0.0.1:8001", "http: 8001"))
    assert error_of(path) == f"{path}: http must be a HOST:PORT string (got 8001; quote it)"


def test_duplicate_addresses(tmp_path):
    path = write(tmp_path, CLUSTER.replace('"127.0.0.1:5003"', '"127.0.0.1:5002"'))
    assert error_of(path, "a") == f"{path}: address 127.0.0.1:5002 is used twice: b client and c client"
    msg = error_of(None, "n1", {"addr": "127.0.0.1:9001", "http": "0.0.0.0:9001"})
    assert msg == "address 127.0.0.1:9001 is used twice: n1 addr and n1 http"


def test_duplicate_yaml_key(tmp_path):
    path = write(tmp_path, NODE + "addr: 127.0.0.1:9999\n")
    msg = error_of(path)
    assert msg.startswith(f"{path}: line 8, column 1: invalid YAML: duplicate key 'addr'")


def test_missing_id_in_cluster_file(tmp_path):
    path = write(tmp_path, CLUSTER)
    assert error_of(path, None, {}) == (f"{path}: a whole-cluster file needs --id to pick the node "
                                        "(one of: a, b, c)")
    path = write(tmp_path, CLUSTER.replace('id: b, ', ''))
    assert error_of(path, "a") == f"{path}: nodes[1]: missing key 'id'"


def test_unknown_id_in_cluster_file(tmp_path):
    path = write(tmp_path, CLUSTER)
    assert error_of(path, "zz") == f"{path}: no node with id 'zz' (ids: a, b, c)"


def test_cluster_file_structure_errors(tmp_path):
    path = write(tmp_path, CLUSTER.replace("cluster_id: c1\n", ""))
    assert "missing key 'cluster_id'" in error_of(path, "a")
    path = write(tmp_path, "cluster_id: c\nnodes: []\n")
    assert error_of(path, "a").startswith(f"{path}: nodes must be a non-empty list")
    path = write(tmp_path, CLUSTER.replace("id: c,", "id: a,"))
    assert error_of(path, "a") == f"{path}: nodes[2].id 'a' is listed twice (also nodes[0])"


def test_missing_id_or_addr_in_node_file(tmp_path):
    path = write(tmp_path, "addr: 127.0.0.1:9001\n")
    assert error_of(path) == f"{path}: missing key 'id' (or give --id)"
    path = write(tmp_path, "id: n1\n")
    assert error_of(path) == f"{path}: missing key 'addr' (or give --addr)"
    assert load_config(path, None, {"addr": "127.0.0.1:9001"}).addr == "127.0.0.1:9001"


def test_bootstrap_and_join(tmp_path):
    path = write(tmp_path, NODE + "join: 127.0.0.1:9002\n")
    assert error_of(path).startswith(f"{path}: bootstrap and join are mutually exclusive")
    msg = error_of(None, "n1", {"addr": "127.0.0.1:9001", "bootstrap": True, "join": "127.0.0.1:9002"})
    assert msg.startswith("--bootstrap and --join are mutually exclusive")


def test_join_self(tmp_path):
    msg = error_of(None, "n1", {"addr": ":9001", "join": "localhost:9001"})
    assert msg.startswith("join 127.0.0.1:9001 is this node's own addr")


def test_join_several_members(tmp_path):
    # A comma-separated --join, or a YAML list: the joiner tries them in turn (one member being
    # down does not keep a wiped node out); normalised, advertised, duplicates dropped, order kept.
    cfg = load_config(None, "n4", {"addr": "127.0.0.1:9004", "join": "localhost:9002, 127.0.0.1:9001,:9002"})
    assert cfg.join_addrs == ("127.0.0.1:9002", "127.0.0.1:9001")
    assert cfg.join == "127.0.0.1:9002,127.0.0.1:9001" and not cfg.bootstrap
    path = write(tmp_path, 'id: n4\naddr: 127.0.0.1:9004\njoin: ["127.0.0.1:9001", "localhost:9003"]\n')
    assert load_config(path).join_addrs == ("127.0.0.1:9001", "127.0.0.1:9003")
    assert load_config(None, "n4", {"addr": "127.0.0.1:9004"}).join_addrs == ()


def test_join_list_errors(tmp_path):
    msg = error_of(None, "n4", {"addr": "127.0.0.1:9004", "join": "127.0.0.1:9001,nope"})
    assert msg.startswith("--join: ") and "nope" in msg
    assert error_of(None, "n4", {"addr": "127.0.0.1:9004", "join": "127.0.0.1:9001,"}).startswith("--join: ")
    msg = error_of(None, "n1", {"addr": ":9001", "join": "127.0.0.1:9002,localhost:9001"})
    assert msg.startswith("join 127.0.0.1:9001 is this node's own addr")
    path = write(tmp_path, "id: n4\naddr: 127.0.0.1:9004\njoin: []\n")
    assert error_of(path).startswith(f"{path}: join must be a HOST:PORT string, several comma-separated")
    path = write(tmp_path, "id: n4\naddr: 127.0.0.1:9004\njoin: [9001]\n")
    assert error_of(path).startswith(f"{path}: join must be a HOST:PORT string")


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.yaml")
    assert error_of(path) == f"{path}: config file not found"
    assert error_of(str(tmp_path)).startswith(f"{tmp_path}: cannot read config file")


def test_malformed_yaml_names_the_line(tmp_path):
    path = write(tmp_path, "id: n1\naddr: 127.0.0.1:9001\nraft:\n  heartbeat_ms: [50\n")
    msg = error_of(path)
    assert msg.startswith(f"{path}: line ") and "invalid YAML" in msg
    path = write(tmp_path, "id: n1\naddr: 127.0.0.1:9001\n  client: x: y\n")
    msg = error_of(path)
    assert re.match(re.escape(path) + r": line 3, column \d+: invalid YAML: ", msg), msg


@pytest.mark.parametrize("timeout, expected", [
    ("[600, 300]", "raft.election_timeout_ms: min (600) must be less than max (300)"),
    ("[300, 300]", "raft.election_timeout_ms: min (300) must be less than max (300)"),
    ("[100, 600]", "raft.election_timeout_ms: min (100) must be more than twice heartbeat_ms (50)"),
    ("[300]", "raft.election_timeout_ms must be a [min, max] list of two integers (got a list)"),
    ("[300, 600.5]", "raft.election_timeout_ms must be a [min, max] list of two integers"),
])
def test_election_timeout_range(tmp_path, timeout, expected):
    path = write(tmp_path, NODE + f"raft:\n  election_timeout_ms: {timeout}\n")
    assert error_of(path).startswith(f"{path}: {expected}")


def test_unknown_override():
    with pytest.raises(ConfigError, match="unknown override 'port'"):
        load_config(None, "n1", {"addr": "127.0.0.1:9001", "port": 1})


def test_conflicting_ids():
    assert error_of(None, "a", {"id": "b", "addr": "127.0.0.1:9001"}).startswith("conflicting node ids")


# --------------------------------------------------------------------------- pieces

def test_raft_tuning_defaults_and_direct_validation():
    t = RaftTuning()
    assert (t.heartbeat_ms, t.election_timeout_ms, t.snapshot_threshold, t.trailing_logs,
            t.snapshots_kept, t.max_batch, t.max_key_bytes, t.max_value_bytes) == (
        50, (300, 600), 10000, 5000, 3, 512, 4096, 1 << 20)
    assert t.pre_vote and t.check_quorum and not t.lease_reads
    assert RaftTuning(election_timeout_ms=[150, 300]).election_timeout_ms == (150, 300)
    with pytest.raises(ValueError, match="min .* must be less than max"):
        RaftTuning(election_timeout_ms=(600, 300))
    with pytest.raises(ValueError, match=r"^max_batch must be an integer \(got '8'\)$"):
        RaftTuning(max_batch="8")
    with pytest.raises(ValueError, match=r"^election_timeout_ms must be a \[min, max\] list of two integers"):
        RaftTuning(election_timeout_ms=(300, 400, 500))


def test_core_config_converts_milliseconds_to_ticks_once():
    # The shipped defaults at kvnode's 10 ms tick: elections after 30-60 ticks, heartbeats every 5.
    cc = core_config(RaftTuning(), 10)
    assert (cc.election_ticks_min, cc.election_ticks_max, cc.heartbeat_ticks) == (30, 60, 5)
    assert (cc.max_batch, cc.pre_vote, cc.check_quorum, cc.lease_reads) == (512, True, True, False)
    tuned = core_config(RaftTuning(heartbeat_ms=20, election_timeout_ms=(100, 200), max_batch=64,
                                   pre_vote=False, lease_reads=True), 10)
    assert (tuned.election_ticks_min, tuned.election_ticks_max, tuned.heartbeat_ticks) == (10, 20, 2)
    assert (tuned.max_batch, tuned.pre_vote, tuned.lease_reads) == (64, False, True)


@pytest.mark.parametrize("heartbeat, timeout", [(1, (3, 4)), (10, (301, 305)), (45, (91, 99))])
def test_core_config_keeps_the_tick_order_for_timings_near_a_tick(heartbeat, timeout):
    # Valid in milliseconds, but rounding to 10 ms ticks alone would make min == max (an empty
    # random range) or a heartbeat as long as the election timeout.
    cc = core_config(RaftTuning(heartbeat_ms=heartbeat, election_timeout_ms=timeout), 10)
    assert 1 <= cc.heartbeat_ticks < cc.election_ticks_min < cc.election_ticks_max


def test_addresses():
    assert normalize_address(":8001") == "0.0.0.0:8001"
    assert normalize_address("*:8001") == "0.0.0.0:8001"
    assert normalize_address(" host-1.example.com:9001 ") == "host-1.example.com:9001"
    assert normalize_address("[::1]:9001") == "[::1]:9001"
    assert advertise("0.0.0.0:9001") == "127.0.0.1:9001"
    assert advertise(":9001") == "127.0.0.1:9001"
    assert advertise("localhost:9001") == "127.0.0.1:9001"
    assert advertise("10.0.0.5:9001") == "10.0.0.5:9001"
    with pytest.raises(ValueError):
        normalize_address("9001")


def test_storage_cache_mb_defaults_and_is_checked(tmp_path):
    assert load_config(write(tmp_path, NODE)).storage_cache_mb == 128
    assert load_config(write(tmp_path, NODE + "storage: {cache_mb: 512}\n")).storage_cache_mb == 512
    assert "storage.cache_mb must be a whole number of MB, at least 1 (got 0)" in error_of(
        write(tmp_path, NODE + "storage: {cache_mb: 0}\n"))
    assert "unknown key 'storage.cache'" in error_of(write(tmp_path, NODE + "storage: {cache: 1}\n"))
    assert load_config(write(tmp_path, CLUSTER + "storage:\n  cache_mb: 64\n"), "a").storage_cache_mb == 64


# --------------------------------------------------------------------------- loopback-only mode (issue 11)

def test_insecure_defaults_to_false_and_comes_from_flag_or_files(tmp_path):
    assert load_config(write(tmp_path, NODE), None, {}).insecure is False
    assert load_config(write(tmp_path, NODE), None, {"insecure": False}).insecure is False  # click's "not given"
    assert load_config(write(tmp_path, NODE), None, {"insecure": True}).insecure is True
    assert load_config(write(tmp_path, NODE + "insecure: true\n"), None, {}).insecure is True
    assert load_config(write(tmp_path, "insecure: true\n" + CLUSTER), "b", {}).insecure is True
    assert load_config(None, None, {"id": "n", "addr": "127.0.0.1:9001", "insecure": True}).insecure is True


def test_insecure_must_be_a_boolean(tmp_path):
    msg = error_of(write(tmp_path, NODE + "insecure: yes please\n"), None, {})
    assert "insecure must be true or false" in msg


# --------------------------------------------------------------------------- watches (issue 14)

def test_watch_history_revisions_defaults_and_is_checked(tmp_path):
    assert load_config(write(tmp_path, NODE)).watch_history_revisions == 10_000
    assert load_config(write(tmp_path, NODE + "watch: {history_revisions: 50}\n")).watch_history_revisions == 50
    assert load_config(write(tmp_path, CLUSTER + "watch:\n  history_revisions: 7\n"), "a").watch_history_revisions == 7
    assert "watch.history_revisions must be a whole number in [1, 100000000] (got 0)" in error_of(
        write(tmp_path, NODE + "watch: {history_revisions: 0}\n"))
    assert "unknown key 'watch.history'" in error_of(write(tmp_path, NODE + "watch: {history: 1}\n"))
