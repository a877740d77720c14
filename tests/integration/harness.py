"""Real kvnode processes on 127.0.0.1 for the integration tests: start, kill -9, pause, restart.

Every wait is a poll with a deadline (``wait_until``), never a bare sleep.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

from raftkv.wire.client import Client, ClientError

ROOT = Path(__file__).resolve().parents[2]
KVNODE = ROOT / "bin" / "kvnode"
KVCLIENT = ROOT / "bin" / "kvclient"

_used_ports: set = set()


def free_port() -> int:
    """A TCP port that is free now and not handed out before in this test run."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        if p not in _used_ports and p - 4000 > 1024:
            _used_ports.add(p)
            return p


def wait_until(cond: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05, what: str = "") -> Any:
    """Poll ``cond`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_exc: Optional[BaseException] = None
    while time.monotonic() < deadline:
        try:
            v = cond()
            if v:
                return v
        except Exception as e:  # a node may be down while we poll
            last_exc = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or cond}" +
                         (f" (last error: {last_exc!r})" if last_exc else ""))


class NodeProc:
    """One kvnode process of a Cluster."""

    def __init__(self, cluster: "Cluster", node_id: str, addr: str, client: str, http: Optional[str],
                 args: Optional[list] = None) -> None:
        self.cluster = cluster
        self.id = node_id
        self.addr = addr
        self.client = client
        self.http = http
        # kvnode's arguments when the node is not one of the cluster file's (a joiner started with
        # flags, see Cluster.add_joiner); None: ``--config <cluster file> --id <id>``.
        self.args = list(args) if args is not None else None
        self.proc: Optional[subprocess.Popen] = None
        self.log_path = cluster.dir / f"{node_id}.log"
        self._status_client: Optional[Client] = None  # see Cluster.reuse_status_clients

    def start(self, extra: tuple = ()) -> None:
        assert not self.alive(), f"{self.id} already running"
        kvnode = list(self.cluster.kvnode_cmd) or [sys.executable, str(KVNODE)]
        if self.args is not None:
            args = [*kvnode, *self.args, *extra]
        else:
            args = [*kvnode, "--config", str(self.cluster.config_path), "--id", self.id,
                    "--data-dir", str(self.cluster.data_dir), *self.cluster.extra_args, *extra]
        # Another installation's kvnode (kvnode_cmd) must not import this checkout's modules.
        env = {**os.environ, "PYTHONPATH": str(ROOT)} if not self.cluster.kvnode_cmd else dict(os.environ)
        logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     cwd=str(self.cluster.dir), env=env, start_new_session=self.cluster.new_session)
        logf.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive():
            self.proc.send_signal(sig)
            if sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
                self.proc.wait(timeout=20)

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def exit_status(self) -> Optional[int]:
        """The process's exit status once it has ended (negative: the signal), else None."""
        return self.proc.poll() if self.proc is not None else None

    def status(self, timeout: float = 1.0) -> dict:
        token = self.cluster.status_token()
        if not self.cluster.reuse_status_clients:
            with Client([self.client], timeout=timeout, token=token) as c:
                return c.status(self.client)
        c = self._status_client
        if c is None or c.timeout != timeout:
            self.close_status_client()
            c = self._status_client = Client([self.client], timeout=timeout, token=token)
        return c.status(self.client)

    def close_status_client(self) -> None:
        if self._status_client is not None:
            self._status_client.close()
            self._status_client = None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Cluster:
    """A whole-cluster YAML file with free ports, and one NodeProc per node."""

    def __init__(self, directory: Path, n: int = 3, http: bool = False, raft: Optional[dict] = None,
                 extra_args: tuple = ()) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.dir / "data"
        self.cluster_id = f"{self.id_prefix}-{uuid.uuid4().hex[:8]}"
        self.extra_args = tuple(extra_args)
        self.nodes: dict[str, NodeProc] = {}
        spec = []
        for i in range(1, n + 1):
            nid = f"node{i}"
            host = self.host_for(i)
            addr, client = f"{host}:{free_port()}", f"{host}:{free_port()}"
            h = f"{host}:{free_port()}" if http else None
            self.nodes[nid] = NodeProc(self, nid, addr, client, h)
            d = {"id": nid, "addr": addr, "client": client}
            if h:
                d["http"] = h
            spec.append(d)
        doc = {"cluster_id": self.cluster_id, "data_dir": str(self.data_dir), "nodes": spec}
        if raft:
            doc["raft"] = raft
        self.raft = dict(raft) if raft else None  # the file's raft: section, also given to joiners
        self.config_path = self.dir / "cluster.yaml"
        self.config_path.write_text(yaml.safe_dump(doc))

    id_prefix = "test"
    # Each node in a session of its own, so that a terminal's Ctrl-C reaches only the program that
    # started the cluster (kvbench), which then kills the nodes.
    new_session = False
    # One status Client per node, kept between polls (a benchmark polling every few ms), instead of a
    # new connection per call.
    reuse_status_clients = False
    # The command that runs kvnode; empty: this checkout's bin/kvnode. A benchmark sets another
    # installation's (tests/bench/secure_cost.py --baseline-kvnode) to compare two versions in one run.
    kvnode_cmd: tuple = ()

    def status_token(self) -> Optional[str]:
        """The client token status polls use (None: a cluster made without --secure)."""
        return None

    def host_for(self, i: int) -> str:
        """The address node ``i`` binds (subclasses give each node its own, see tests/jepsen)."""
        return "127.0.0.1"

    @property
    def servers(self) -> list:
        return [n.client for n in self.nodes.values()]

    def start(self) -> None:
        for n in self.nodes.values():
            n.start()

    def add_joiner(self, node_id: str, join: str) -> NodeProc:
        """A new node (not in the cluster file, not started) that joins through the member at peer
        address ``join``, with the tutorial's flags (``--id --addr --client --data-dir --join``) plus
        a per-node file holding only the cluster's ``raft:`` tuning, if any. ``start()`` starts it,
        and restarts it with the same command."""
        host = self.host_for(len(self.nodes) + 1)
        addr, client = f"{host}:{free_port()}", f"{host}:{free_port()}"
        args = []
        if self.raft:
            path = self.dir / f"{node_id}.yaml"
            path.write_text(yaml.safe_dump({"raft": self.raft}))
            args += ["--config", str(path)]
        args += ["--id", node_id, "--addr", addr, "--client", client, "--data-dir", str(self.data_dir),
                 "--join", join]
        node = self.nodes[node_id] = NodeProc(self, node_id, addr, client, None, args=args)
        return node

    def exited(self) -> dict:
        """{id: exit status} of the nodes whose process ended other than by kill -9 (a crash, a
        refusal to start)."""
        return {nid: rc for nid, n in self.nodes.items()
                if (rc := n.exit_status()) is not None and rc != -signal.SIGKILL}

    def stop(self) -> None:
        for n in self.nodes.values():
            if n.alive():
                try:
                    n.resume()
                except ProcessLookupError:
                    pass
                n.kill(signal.SIGKILL)
        for n in self.nodes.values():
            n.close_status_client()

    def client(self, timeout: float = 10.0) -> Client:
        return Client(self.servers, timeout=timeout)

    def statuses(self) -> dict:
        out = {}
        for nid, n in self.nodes.items():
            if n.alive():
                try:
                    out[nid] = n.status()
                except ClientError:
                    pass
        return out

    def leader(self, among: Optional[list] = None) -> Optional[str]:
        """The id of the single node that says it leads (in the highest term), or None."""
        top = self.leader_status(among)
        return top["id"] if top is not None else None

    def leader_status(self, among: Optional[list] = None, min_term: int = 0) -> Optional[dict]:
        """The status of the node that says it leads in the highest term (at least ``min_term``)."""
        st = {k: v for k, v in self.statuses().items() if among is None or k in among}
        leaders = [v for v in st.values() if v["state"] == "leader" and v["term"] >= min_term]
        if not leaders:
            return None
        return max(leaders, key=lambda s: s["term"])

    def wait_leader(self, timeout: float = 20.0, among: Optional[list] = None) -> str:
        return wait_until(lambda: self.leader(among), timeout, what="a leader")

    def wait_applied(self, index: int, nodes: Optional[list] = None, timeout: float = 30.0) -> None:
        ids = nodes or [k for k, n in self.nodes.items() if n.alive()]

        def done() -> bool:
            st = self.statuses()
            return all(i in st and st[i]["applied_index"] >= index for i in ids)

        wait_until(done, timeout, what=f"applied_index >= {index} on {ids}")

    def logs(self) -> str:
        return "\n".join(f"===== {nid} =====\n{n.log_text()[-6000:]}" for nid, n in self.nodes.items())


class SecureCluster(Cluster):
    """A secure cluster made the way an operator makes one (issue 11): node1 with
    ``--bootstrap --secure`` (flags, not the cluster file), the other nodes with
    ``--join <node1> --token <join.token>``. Status polls and ``client()`` use the bootstrap's
    admin token."""

    def __init__(self, directory: Path, n: int = 3, raft: Optional[dict] = None) -> None:
        super().__init__(directory, n=1, raft=raft)
        first = self.nodes["node1"]
        first.args = self._flag_args("node1", first.addr, first.client) + ["--bootstrap", "--secure"]
        for i in range(2, n + 1):
            self.add_secure_joiner(f"node{i}")

    def _flag_args(self, node_id: str, addr: str, client: str) -> list:
        args = []
        if self.raft:
            path = self.dir / f"{node_id}.yaml"
            path.write_text(yaml.safe_dump({"raft": self.raft}))
            args += ["--config", str(path)]
        return args + ["--id", node_id, "--addr", addr, "--client", client, "--data-dir", str(self.data_dir)]

    def add_secure_joiner(self, node_id: str, token: Optional[str] = None, join: Optional[str] = None) -> NodeProc:
        """A node (not started) that joins through node1 (or ``join``) with ``--token`` (the join
        token by default, read when it starts: the bootstrap writes it; "" for no --token)."""
        host = self.host_for(len(self.nodes) + 1)
        addr, client = f"{host}:{free_port()}", f"{host}:{free_port()}"
        node = self.nodes[node_id] = _SecureJoiner(self, node_id, addr, client, None,
                                                   args=self._flag_args(node_id, addr, client)
                                                   + ["--join", join or self.nodes["node1"].addr])
        node.token = token
        return node

    @property
    def node_dir(self) -> Path:
        return self.data_dir / "node1"

    def token_file(self, name: str) -> str:
        return (self.node_dir / name).read_text().strip()

    @property
    def admin_token(self) -> str:
        return self.token_file("admin.token")

    @property
    def join_token(self) -> str:
        return self.token_file("join.token")

    def status_token(self) -> Optional[str]:
        path = self.node_dir / "admin.token"
        return path.read_text().strip() if path.exists() else None

    def start(self) -> None:
        """node1 first (it writes the tokens), then each joiner once the one before is a member."""
        nodes = list(self.nodes.values())
        nodes[0].start()
        wait_until(lambda: (self.node_dir / "join.token").exists(), 30, what="join.token")
        self.wait_leader(30)
        for n in nodes[1:]:
            n.start()
            wait_until(lambda: any(m["id"] == n.id for m in self.leader_status()["members"]), 30,
                       what=f"{n.id} admitted")

    def client(self, timeout: float = 10.0, token: Optional[str] = None) -> Client:
        return Client(self.servers, timeout=timeout, token=token or self.admin_token)


class _SecureJoiner(NodeProc):
    """A joiner of a SecureCluster: ``--token`` is added when it starts (``token``: None for the
    cluster's join token, "" for none at all)."""

    token: Optional[str] = None

    def start(self, extra: tuple = ()) -> None:
        cluster = self.cluster
        assert isinstance(cluster, SecureCluster)
        if self.token == "":
            super().start(extra)
        else:
            super().start(("--token", self.token or cluster.join_token, *extra))
