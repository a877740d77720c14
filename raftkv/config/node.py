"""One node's configuration (:class:`NodeConfig`, :class:`NodeSpec`), loaded from a YAML file and flags.

Three ways to describe a node (README, "Configuration"; docs/architecture.md 6):

- a per-node file: one node's keys plus ``bootstrap: true`` or ``join: HOST:PORT``;
- a whole-cluster file: ``cluster_id``, ``data_dir`` and ``nodes`` (each ``id``, ``addr``,
  ``client``, optional ``http``); ``--id`` picks the node, and the listed nodes form the
  initial cluster (every one of them bootstraps with the same member list);
- no file at all: flags only, as in the tutorial
  (``kvnode --id node1 --addr localhost:9001 --http :8001 --bootstrap``).

Flags (``overrides``) win over the file. Every problem is one :class:`ConfigError` whose
message is a single line naming the file and the key, because kvnode prints it as is and
exits non-zero: the user must be able to fix the file from that line alone.

Nothing here opens a socket or touches the data directory. The ``raft:`` section is
:mod:`raftkv.config.tuning`'s; reading the file is :mod:`raftkv.config.yaml_file`'s.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from .errors import ConfigError
from .errors import show_value as _show
from .tuning import TUNING_KEYS, RaftTuning
from .yaml_file import read_yaml

from raftkv.storage.kv_db import DEFAULT_CACHE_MB
from raftkv.wire.address import advertise, normalize_address, split_address

__all__ = [
    "ConfigError", "RaftTuning", "NodeSpec", "NodeConfig",
    "load_config", "load_cluster", "cluster_client_addresses",
    "normalize_address", "split_address", "advertise",
    "DEFAULT_DATA_DIR", "DEFAULT_CLUSTER_FILE", "LOG_LEVELS",
]

DEFAULT_WATCH_HISTORY = 10_000  # watch.history_revisions (actors/watch_hub.py)

DEFAULT_DATA_DIR = "./data"
# kvclient's fallback for --servers (after KV_SERVERS): the repository's local cluster.
DEFAULT_CLUSTER_FILE = Path("configs") / "cluster.yaml"  # relative to the working directory (a checkout)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


# --------------------------------------------------------------------------- dataclasses

@dataclass(frozen=True)
class NodeSpec:
    """One member of the initial cluster, as other nodes reach it.

    Addresses are advertised ones (see :func:`advertise`): ``addr`` is the peer (Raft)
    address, ``client`` the client (ZeroMQ) address, ``http`` the gateway or None.
    """

    id: str
    addr: str
    client: str
    http: Optional[str] = None


@dataclass
class NodeConfig:
    """Everything one node needs to start.

    ``addr``, ``client`` and ``http`` are the addresses this node binds (normalised
    ``HOST:PORT``; ``0.0.0.0`` means all interfaces); :attr:`spec` gives them as other
    nodes should use them. ``data_dir`` is the root shared by nodes; this node's files
    live in :attr:`node_dir` (``data_dir/id``). ``cluster_id`` is None when not
    configured: a bootstrapping node then makes one up, a joining node learns it.

    ``bootstrap`` and ``join`` (advertised peer addresses of members, comma-separated) are exclusive; both may be
    unset (a restart, or a node added with ``kvclient add-node`` that waits to be
    contacted). ``peers`` is the initial cluster this node seeds when it bootstraps a
    brand-new data directory (it includes this node): every node of a whole-cluster file,
    or just this node for ``bootstrap: true`` / ``--bootstrap``; empty when not
    bootstrapping. Once the node has data its stored configuration wins over ``peers``.
    """

    id: str
    addr: str
    client: str
    http: Optional[str] = None
    data_dir: str = DEFAULT_DATA_DIR
    cluster_id: Optional[str] = None
    bootstrap: bool = False
    join: Optional[str] = None
    peers: list[NodeSpec] = field(default_factory=list)
    raft: RaftTuning = field(default_factory=RaftTuning)
    log_level: str = "INFO"
    # Whether the user asked for bootstrap (--bootstrap, ``bootstrap: true``), rather than it
    # following from a whole-cluster file: only then is "--bootstrap ignored" worth a line.
    bootstrap_asked: bool = field(default=False, compare=False)
    # ``storage.cache_mb``: RocksDB block cache of the key-value state (index and filter blocks
    # included), which with the memtables bounds a node's memory whatever the data size.
    storage_cache_mb: int = DEFAULT_CACHE_MB
    # Lift loopback-only mode (a cluster made without --secure): every door open to anyone.
    insecure: bool = False
    # ``watch.history_revisions``: how many revisions back a node keeps watch events (issue 14).
    watch_history_revisions: int = DEFAULT_WATCH_HISTORY
    # Issue 11: ``secure: true`` / --secure makes a secure cluster at bootstrap; ``join_token``
    # (--token, $KV_JOIN_TOKEN) is the join token a node joining a secure cluster proves.
    secure: bool = False
    join_token: Optional[str] = None
    # The HTTPS gateway of a secure node: certificate and key files (PEM); None = the
    # self-signed pair made at bootstrap in node_dir (tls.crt, tls.key).
    tls_cert: Optional[str] = None
    tls_key: Optional[str] = None
    # /metrics without a token on a secure node (a scraper inside a trusted network).
    metrics_open: bool = False

    @property
    def node_dir(self) -> Path:
        """This node's own directory: ``<data_dir>/<id>`` (as the tutorial's ``data/<id>/``)."""
        return Path(self.data_dir) / self.id

    @property
    def join_addrs(self) -> tuple[str, ...]:
        """The members' peer addresses ``join`` names, in the order given (empty: no join)."""
        return tuple(self.join.split(",")) if self.join else ()

    @property
    def spec(self) -> NodeSpec:
        """This node as others reach it (advertised addresses): what a join request sends."""
        return NodeSpec(self.id, advertise(self.addr), advertise(self.client),
                        advertise(self.http) if self.http else None)


# --------------------------------------------------------------------------- addresses

# normalize_address, split_address and advertise come from wire/address.py, the one address
# parser of the project; they stay importable from here.


def _default_client(addr: str) -> str:
    """The client address when none is given: the tutorial's layout, peer 9001 -> client 5001."""
    host, port = split_address(addr)
    # 4000 below keeps 900x/500x/800x apart; below port 4001 that is not a port, so go up.
    return f"{host}:{port - 4000 if port - 4000 >= 1 else port + 1000}"


# --------------------------------------------------------------------------- value checks

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_NODE_FILE_KEYS = ("id", "addr", "client", "http", "data_dir", "cluster_id", "bootstrap",
                   "join", "raft", "log_level", "storage", "insecure", "watch", "secure", "join_token")
_CLUSTER_FILE_KEYS = ("cluster_id", "data_dir", "nodes", "raft", "log_level", "storage", "insecure", "watch")
_WATCH_KEYS = ("history_revisions",)
_STORAGE_KEYS = ("cache_mb",)
# The HTTPS gateway's keys (issue 11), in both kinds of file; the two paths are also flags.
_GATEWAY_KEYS = ("tls_cert", "tls_key", "metrics_open")
_NODE_FILE_KEYS_ALL: tuple[str, ...] = _NODE_FILE_KEYS + _GATEWAY_KEYS
_CLUSTER_FILE_KEYS_ALL: tuple[str, ...] = _CLUSTER_FILE_KEYS + _GATEWAY_KEYS
_NODE_ENTRY_KEYS = ("id", "addr", "client", "http")
_RAFT_KEYS = TUNING_KEYS
# Override key -> the flag that sets it, so errors name what the user typed.
_FLAGS = {"id": "--id", "addr": "--addr", "client": "--client", "http": "--http",
          "data_dir": "--data-dir", "bootstrap": "--bootstrap", "join": "--join",
          "cluster_id": "--cluster-id", "log_level": "--log-level", "insecure": "--insecure",
          "secure": "--secure", "join_token": "--token"}
_FLAGS.update({"tls_cert": "--tls-cert", "tls_key": "--tls-key"})


def _err(where: Optional[str], msg: str) -> ConfigError:
    return ConfigError(f"{where}: {msg}" if where else msg)


def _check_keys(data: Mapping, known: tuple, prefix: str, where: str, extra: str = "") -> None:
    for key in data:
        if key not in known:
            raise _err(where, f"unknown key '{prefix}{key}'{extra} (known: {', '.join(known)})")


def _as_str(v: Any, name: str, where: Optional[str], optional: bool = False) -> Optional[str]:
    if v is None and optional:
        return None
    if not isinstance(v, str) or not v.strip():
        raise _err(where, f"{name} must be a non-empty string (got {_show(v)})")
    return v.strip()


def _as_bool(v: Any, name: str, where: Optional[str]) -> bool:
    if not isinstance(v, bool):
        raise _err(where, f"{name} must be true or false (got {_show(v)})")
    return v


def _as_id(v: Any, name: str, where: Optional[str]) -> str:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        # YAML reads `id: 1` as a number; `01` would even lose its zero. Ask for a string.
        raise _err(where, f"{name} must be a string (got {_show(v)}; quote it: \"{v}\")")
    s = _as_str(v, name, where)
    if not _ID_RE.match(s):
        # The id names the node's directory under data_dir: keep it a safe file name.
        raise _err(where, f"{name} {s!r} must be 1-64 letters, digits, '.', '_' or '-', "
                          f"starting with a letter or digit")
    return s


def _as_addr(v: Any, name: str, where: Optional[str], optional: bool = False) -> Optional[str]:
    if v is None and optional:
        return None
    if not isinstance(v, str):
        raise _err(where, f"{name} must be a HOST:PORT string (got {_show(v)}; quote it)")
    try:
        return normalize_address(v)
    except ValueError as e:
        raise _err(where, f"{name}: {e}") from None


def _as_join(v: Any, name: str, where: Optional[str]) -> Optional[str]:
    """``join``: one member's peer address, or several (comma-separated, or a YAML list) that the
    joiner tries in turn, so that one member being down does not keep a wiped node out for ever.
    Returned normalised and comma-joined (:attr:`NodeConfig.join_addrs` splits it)."""
    if v is None:
        return None
    parts = v.split(",") if isinstance(v, str) else v
    if not isinstance(parts, list) or not parts:
        raise _err(where, f"{name} must be a HOST:PORT string, several comma-separated, or a list of them "
                          f"(got {_show(v)})")
    addrs: list[str] = []
    for part in parts:
        a = _as_addr(part.strip() if isinstance(part, str) else part, name, where)
        if a is not None and a not in addrs:
            addrs.append(a)
    return ",".join(addrs)


def _as_data_dir(v: Any, name: str, where: Optional[str]) -> str:
    return os.path.expanduser(_as_str(v, name, where))


def _as_path(v: Any, name: str, where: Optional[str]) -> str:
    return os.path.expanduser(_as_str(v, name, where))


def _parse_gateway(data: dict, where: str, v: dict[str, Any]) -> None:
    """The gateway's keys of a file (tls_cert, tls_key, metrics_open) into ``v``."""
    for key in ("tls_cert", "tls_key"):
        if key in data:
            v[key] = _as_path(data[key], key, where)
    if "metrics_open" in data:
        v["metrics_open"] = _as_bool(data["metrics_open"], "metrics_open", where)


def _as_log_level(v: Any, name: str, where: Optional[str]) -> str:
    s = _as_str(v, name, where).upper()
    s = {"WARN": "WARNING", "FATAL": "CRITICAL"}.get(s, s)
    if s not in LOG_LEVELS:
        raise _err(where, f"{name} must be one of {', '.join(LOG_LEVELS)} (got {_show(v)})")
    return s


def _parse_raft(data: Any, where: str) -> RaftTuning:
    """The ``raft:`` section: unknown keys and bad values named as ``raft.<key>``
    (the values are checked once, by RaftTuning itself)."""
    if data is None:
        return RaftTuning()
    if not isinstance(data, dict):
        raise _err(where, f"raft must be a mapping of tuning keys (got {_show(data)})")
    _check_keys(data, _RAFT_KEYS, "raft.", where)
    try:
        return RaftTuning(**data)
    except ValueError as e:
        raise _err(where, f"raft.{e}") from None


def _parse_storage(data: Any, where: str) -> int:
    """The ``storage:`` section: ``cache_mb``, a whole number of MB, at least 1."""
    return _whole_number_section(data, where, "storage", _STORAGE_KEYS, "cache_mb", DEFAULT_CACHE_MB,
                                 None, "a whole number of MB, at least 1")


def _parse_watch(data: Any, where: str) -> int:
    """The ``watch:`` section: ``history_revisions``, a whole number of revisions, at least 1."""
    return _whole_number_section(data, where, "watch", _WATCH_KEYS, "history_revisions", DEFAULT_WATCH_HISTORY,
                                 100_000_000, "a whole number in [1, 100000000]")


def _whole_number_section(data: Any, where: str, section: str, keys: tuple, key: str, default: int,
                          most: Optional[int], must_be: str) -> int:
    """A section holding one setting ``key``, a whole number from 1 to ``most`` (None: no upper
    bound), ``default`` when the section or the key is absent; ``must_be`` words the rule."""
    if data is None:
        return default
    if not isinstance(data, dict):
        raise _err(where, f"{section} must be a mapping (got {_show(data)})")
    _check_keys(data, keys, f"{section}.", where)
    v = data.get(key, default)
    if not isinstance(v, int) or isinstance(v, bool) or v < 1 or (most is not None and v > most):
        raise _err(where, f"{section}.{key} must be {must_be} (got {_show(v)})")
    return v


def _clean_overrides(overrides: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """Validate flag values. None (and False for --bootstrap) means "flag not given":
    that is what click passes for an absent option, so it must not override the file."""
    out: dict[str, Any] = {}
    for key, v in (overrides or {}).items():
        key = key.replace("-", "_")
        if key not in _FLAGS:
            raise ConfigError(f"unknown override {key!r} (known: {', '.join(_FLAGS)})")
        if v is None or (key in ("bootstrap", "insecure", "secure") and v is False):
            continue
        flag = _FLAGS[key]
        if key == "id":
            v = _as_id(v, flag, None)
        elif key in ("addr", "client", "http"):
            v = _as_addr(v, flag, None)
        elif key == "join":
            v = _as_join(v, flag, None)
        elif key == "data_dir":
            v = _as_data_dir(v, flag, None)
        elif key == "cluster_id":
            v = _as_str(v, flag, None)
        elif key == "log_level":
            v = _as_log_level(v, flag, None)
        elif key in ("bootstrap", "insecure", "secure"):
            v = _as_bool(v, flag, None)
        elif key in ("tls_cert", "tls_key"):
            v = _as_path(v, flag, None)
        elif key == "join_token":
            v = _as_str(v, flag, None)
        out[key] = v
    if out.get("bootstrap") and out.get("join"):
        raise ConfigError("--bootstrap and --join are mutually exclusive "
                          "(--bootstrap starts a new cluster, --join joins an existing one)")
    return out


# --------------------------------------------------------------------------- loading

def _parse_nodes(path: str, data: dict) -> list[dict]:
    """The ``nodes:`` list of a whole-cluster file, checked: each a dict with id, addr,
    client (derived from addr when absent) and http (None when absent)."""
    raw = data.get("nodes")
    if not isinstance(raw, list) or not raw:
        raise _err(path, "nodes must be a non-empty list of {id, addr, client, http} "
                         f"(got {_show(raw)})")
    nodes: list[dict] = []
    first_index: dict[str, int] = {}
    for i, n in enumerate(raw):
        p = f"nodes[{i}]"
        if not isinstance(n, dict):
            raise _err(path, f"{p} must be a mapping with id, addr, client, http (got {_show(n)})")
        _check_keys(n, _NODE_ENTRY_KEYS, f"{p}.", path)
        for key in ("id", "addr"):
            if key not in n:
                raise _err(path, f"{p}: missing key '{key}'")
        node = {"id": _as_id(n["id"], f"{p}.id", path),
                "addr": _as_addr(n["addr"], f"{p}.addr", path),
                "client": _as_addr(n["client"], f"{p}.client", path) if "client" in n else None,
                "http": _as_addr(n.get("http"), f"{p}.http", path, optional=True)}
        if node["id"] in first_index:
            raise _err(path, f"{p}.id {node['id']!r} is listed twice "
                             f"(also nodes[{first_index[node['id']]}])")
        first_index[node["id"]] = i
        nodes.append(node)
    return nodes


def _spec(node: Mapping[str, Any]) -> NodeSpec:
    """A checked node dict as a NodeSpec with advertised addresses (client derived if absent)."""
    client = node.get("client") or _default_client(node["addr"])
    return NodeSpec(node["id"], advertise(node["addr"]), advertise(client),
                    advertise(node["http"]) if node.get("http") else None)


def _check_distinct(where: Optional[str], members: list[NodeSpec]) -> None:
    """No two addresses of the cluster may coincide: two sockets cannot bind one port,
    and a copy-paste slip here otherwise shows up later as a confusing 'port in use'."""
    seen: dict[str, str] = {}
    for m in members:
        for kind in ("addr", "client", "http"):
            a = getattr(m, kind)
            if a is None:
                continue
            label = f"{m.id} {kind}"
            if a in seen:
                raise _err(where, f"address {a} is used twice: {seen[a]} and {label}")
            seen[a] = label


def _finish(where: Optional[str], v: dict[str, Any], group: Optional[list[dict]],
            raft: RaftTuning) -> NodeConfig:
    """Fill defaults, derive peers and check the combination. ``v`` holds this node's
    values (file, then flags on top); ``group`` the nodes of a whole-cluster file."""
    if not v.get("client"):
        v["client"] = _default_client(v["addr"])
    bootstrap, join = bool(v.get("bootstrap")), v.get("join")
    me = NodeConfig(id=v["id"], addr=v["addr"], client=v["client"], http=v.get("http"),
                    data_dir=v.get("data_dir") or DEFAULT_DATA_DIR,
                    cluster_id=v.get("cluster_id"), bootstrap=bootstrap,
                    join=",".join(dict.fromkeys(advertise(a) for a in join.split(","))) if join else None,
                    raft=raft,
                    log_level=v.get("log_level") or "INFO",
                    bootstrap_asked=bootstrap and bool(v.get("bootstrap_asked", True)),
                    storage_cache_mb=v.get("storage_cache_mb", DEFAULT_CACHE_MB),
                    insecure=bool(v.get("insecure")), secure=bool(v.get("secure")),
                    join_token=v.get("join_token") or None,
                    watch_history_revisions=v.get("watch_history_revisions", DEFAULT_WATCH_HISTORY))
    me.tls_cert, me.tls_key = v.get("tls_cert"), v.get("tls_key")
    me.metrics_open = bool(v.get("metrics_open"))
    if (me.tls_cert is None) != (me.tls_key is None):
        raise _err(where, "tls_cert and tls_key go together (--tls-cert and --tls-key): give both or neither")
    if group is not None:
        # This node's entry carries the flags' addresses, so that every address it seeds
        # the cluster with is the one it really binds.
        members = [me.spec if n["id"] == me.id else _spec(n) for n in group]
    else:
        members = [me.spec]
    _check_distinct(where, members)
    if me.spec.addr in me.join_addrs:
        raise _err(where, f"join {me.spec.addr} is this node's own addr: "
                          "give the peer address of another member")
    me.peers = members if me.bootstrap else []
    return me


def _from_flags(ov: dict[str, Any]) -> NodeConfig:
    missing = [_FLAGS[k] for k in ("id", "addr") if k not in ov]
    if missing:
        raise ConfigError(f"no --config file: {' and '.join(missing)} "
                          f"{'is' if len(missing) == 1 else 'are'} required")
    return _finish(None, dict(ov), None, RaftTuning())


def _apply_overrides(v: dict[str, Any], ov: dict[str, Any]) -> None:
    """Flags win over the file; a --join replaces the file's bootstrap and vice versa
    (the flag is the more specific, more recent intent)."""
    v.update(ov)
    if "join" in ov:
        v["bootstrap"] = False
    if ov.get("bootstrap"):
        v["join"] = None


def _from_node_file(path: str, data: dict, ov: dict[str, Any]) -> NodeConfig:
    _check_keys(data, _NODE_FILE_KEYS_ALL, "", path)
    v: dict[str, Any] = {}
    if "id" in data:
        v["id"] = _as_id(data["id"], "id", path)
    for key in ("addr", "client"):
        if key in data:
            v[key] = _as_addr(data[key], key, path)
    v["http"] = _as_addr(data.get("http"), "http", path, optional=True)
    v["join"] = _as_join(data.get("join"), "join", path)
    if "data_dir" in data:
        v["data_dir"] = _as_data_dir(data["data_dir"], "data_dir", path)
    v["cluster_id"] = _as_str(data.get("cluster_id"), "cluster_id", path, optional=True)
    v["bootstrap"] = _as_bool(data["bootstrap"], "bootstrap", path) if "bootstrap" in data else False
    if "log_level" in data:
        v["log_level"] = _as_log_level(data["log_level"], "log_level", path)
    if "insecure" in data:
        v["insecure"] = _as_bool(data["insecure"], "insecure", path)
    if "secure" in data:
        v["secure"] = _as_bool(data["secure"], "secure", path)
    v["join_token"] = _as_str(data.get("join_token"), "join_token", path, optional=True)
    if v["bootstrap"] and v["join"]:
        raise _err(path, "bootstrap and join are mutually exclusive "
                         "(bootstrap: true starts a new cluster, join: HOST:PORT joins one)")
    _parse_gateway(data, path, v)
    raft = _parse_raft(data.get("raft"), path)
    v["storage_cache_mb"] = _parse_storage(data.get("storage"), path)
    v["watch_history_revisions"] = _parse_watch(data.get("watch"), path)
    _apply_overrides(v, ov)
    for key in ("id", "addr"):
        if not v.get(key):
            raise _err(path, f"missing key '{key}' (or give {_FLAGS[key]})")
    return _finish(path, v, None, raft)


def _from_cluster_file(path: str, data: dict, ov: dict[str, Any]) -> NodeConfig:
    _check_keys(data, _CLUSTER_FILE_KEYS_ALL, "", path, " in a whole-cluster file")
    nodes = _parse_nodes(path, data)
    ids = ", ".join(n["id"] for n in nodes)
    if "id" not in ov:
        raise _err(path, f"a whole-cluster file needs --id to pick the node (one of: {ids})")
    mine = [n for n in nodes if n["id"] == ov["id"]]
    if not mine:
        raise _err(path, f"no node with id {ov['id']!r} (ids: {ids})")
    v: dict[str, Any] = dict(mine[0])
    if "cluster_id" in data:
        v["cluster_id"] = _as_str(data["cluster_id"], "cluster_id", path)
    elif "cluster_id" not in ov:
        # Every node bootstraps on its own from this file: a made-up id would differ.
        raise _err(path, "missing key 'cluster_id' (all nodes of a whole-cluster file must share it)")
    if "data_dir" in data:
        v["data_dir"] = _as_data_dir(data["data_dir"], "data_dir", path)
    if "log_level" in data:
        v["log_level"] = _as_log_level(data["log_level"], "log_level", path)
    if "insecure" in data:
        v["insecure"] = _as_bool(data["insecure"], "insecure", path)
    _parse_gateway(data, path, v)
    raft = _parse_raft(data.get("raft"), path)
    v["storage_cache_mb"] = _parse_storage(data.get("storage"), path)
    v["watch_history_revisions"] = _parse_watch(data.get("watch"), path)
    # The listed nodes are the initial cluster: each of them bootstraps with the whole
    # list (bootstrap as a group), unless a --join flag says otherwise.
    v["bootstrap"] = True
    _apply_overrides(v, ov)
    v["bootstrap_asked"] = bool(ov.get("bootstrap"))
    return _finish(path, v, nodes, raft)


def load_config(path: Optional[str] = None, node_id: Optional[str] = None,
                overrides: Optional[Mapping[str, Any]] = None) -> NodeConfig:
    """Load one node's configuration from a YAML file and/or flags.

    ``path``: a per-node or a whole-cluster file (told apart by a ``nodes:`` key), or
    None for flags only. ``node_id``: the ``--id`` flag (required with a whole-cluster
    file, where it picks the node; same as ``overrides["id"]``). ``overrides``: flag
    values keyed id, addr, client, http, data_dir, bootstrap, join, cluster_id,
    log_level; None (or False for bootstrap) means "not given"; given values win over
    the file. Raises :class:`ConfigError` (one line, naming file and key).
    """
    ov = _clean_overrides(overrides)
    if node_id is not None:
        node_id = _as_id(node_id, "--id", None)
        if ov.get("id", node_id) != node_id:
            raise ConfigError(f"conflicting node ids: {node_id!r} and {ov['id']!r}")
        ov["id"] = node_id
    if path is None:
        return _from_flags(ov)
    path = str(path)
    data = read_yaml(path)
    if "nodes" in data:
        return _from_cluster_file(path, data, ov)
    return _from_node_file(path, data, ov)


def load_cluster(path: str, overrides: Optional[Mapping[str, Any]] = None) -> list[NodeConfig]:
    """Every node of a whole-cluster file, in file order (``kvnode --all``).

    Only cluster-wide flags make sense here (data_dir, cluster_id, log_level); per-node
    ones are an error rather than silently applied to every node.
    """
    path = str(path)
    ov = _clean_overrides(overrides)
    for key in ("id", "addr", "client", "http", "join"):
        if key in ov:
            raise ConfigError(f"{_FLAGS[key]} cannot be combined with --all")
    data = read_yaml(path)
    if "nodes" not in data:
        raise _err(path, "--all needs a whole-cluster file (one with a 'nodes:' list)")
    ids = [n["id"] for n in _parse_nodes(path, data)]
    return [load_config(path, i, ov) for i in ids]


def cluster_client_addresses(path: Optional[str] = None) -> list[str]:
    """The advertised client addresses of a config file's nodes: kvclient's default
    ``--servers`` (``configs/cluster.yaml`` when ``path`` is None).

    A per-node file gives its one node's client address.
    """
    path = str(path if path is not None else DEFAULT_CLUSTER_FILE)
    data = read_yaml(path)
    if "nodes" in data:
        return [_spec(n).client for n in _parse_nodes(path, data)]
    return [load_config(path).spec.client]
