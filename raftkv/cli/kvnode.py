#!/usr/bin/env python3
"""kvnode: run one node of the replicated key-value store (or, with --all, a whole local cluster).

    kvnode --config configs/cluster.yaml --id node1
    kvnode --id node1 --addr localhost:9001 --http :8001 --bootstrap
    kvnode --id node2 --addr localhost:9002 --http :8002 --join localhost:9001
    kvnode --config configs/cluster.yaml --all

Exit status: 0 after a clean shutdown (SIGTERM/SIGINT); 2 for a bad configuration; 1 when the
node cannot start (port in use, data directory of another node or cluster); 70 when an
internal actor failed (the node stops rather than run half-alive).
"""
from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import click

from raftkv.config import ConfigError, load_cluster, load_config

EXIT_CONFIG = 2
EXIT_START = 1


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pykka").setLevel(logging.WARNING)


def _fail(code: int, msg: str) -> None:
    click.echo(f"kvnode: error: {msg}", err=True)
    sys.exit(code)


def _wait_for_signal() -> int:
    done = threading.Event()
    got = []

    def handler(signum, _frame):  # noqa: ANN001
        got.append(signum)
        done.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    while not done.wait(1.0):
        pass
    return got[0]


def _run_one(cfg) -> None:  # noqa: ANN001
    from raftkv.actors.node import Node, NodeError

    node = Node(cfg)
    try:
        node.start()
    except NodeError as e:
        _fail(EXIT_START, str(e))
    signum = _wait_for_signal()
    logging.getLogger("kvnode").info("%s: %s received, stopping", cfg.id, signal.Signals(signum).name)
    node.stop()
    sys.exit(0)


def _run_all(config: str, overrides: dict) -> None:
    """Every node of a whole-cluster file as a supervised child process (development)."""
    log = logging.getLogger("kvnode")
    try:
        cfgs = load_cluster(config, overrides)
    except ConfigError as e:
        _fail(EXIT_CONFIG, str(e))
    children: dict[str, subprocess.Popen] = {}
    stopping = threading.Event()

    def launch(c) -> subprocess.Popen:  # noqa: ANN001
        args = [sys.executable, "-m", "raftkv.cli.kvnode", "--config", config, "--id", c.id,
                "--data-dir", c.data_dir]
        if overrides.get("log_level"):
            args += ["--log-level", overrides["log_level"]]
        return subprocess.Popen(args, start_new_session=True)

    for c in cfgs:
        children[c.id] = launch(c)
        log.info("started %s (pid %d)", c.id, children[c.id].pid)

    def handler(signum, _frame):  # noqa: ANN001
        stopping.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    restarts: dict[str, list] = {c.id: [] for c in cfgs}
    while not stopping.wait(0.5):
        for c in cfgs:
            p = children[c.id]
            rc = p.poll()
            if rc is None:
                continue
            if rc == EXIT_CONFIG or rc == EXIT_START:
                log.error("%s exited with status %d and cannot start; stopping the cluster", c.id, rc)
                stopping.set()
                break
            now = time.monotonic()
            recent = [t for t in restarts[c.id] if now - t < 60]
            if len(recent) >= 5:
                log.error("%s keeps exiting (status %d); stopping the cluster", c.id, rc)
                stopping.set()
                break
            restarts[c.id] = recent + [now]
            log.warning("%s exited with status %d; restarting it", c.id, rc)
            children[c.id] = launch(c)
    for p in children.values():
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    for p in children.values():
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
    sys.exit(0)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config", type=str, default=None, help="YAML file: one node's, or a whole cluster's.")
@click.option("--id", "node_id", default=None, help="Node id (picks the node of a whole-cluster file).")
@click.option("--addr", default=None, help="Peer (Raft) address HOST:PORT.")
@click.option("--client", default=None, help="Client (ZeroMQ) address HOST:PORT [default: peer port - 4000].")
@click.option("--http", default=None, help="HTTP gateway address, e.g. :8001 (all interfaces).")
@click.option("--data-dir", default=None, help="Root data directory; the node keeps its files in DATA_DIR/ID [./data].")
@click.option("--cluster-id", default=None, help="Cluster id (made up at bootstrap when not given).")
@click.option("--bootstrap", is_flag=True, default=False, help="Start a new cluster with this node (no-op if it has data).")
@click.option("--join", default=None, help="Join the cluster through the member at this peer address (no-op if already a member).")
@click.option("--all", "run_all", is_flag=True, default=False, help="Run every node of a whole-cluster file as child processes.")
@click.option("--log-level", default=None, help="DEBUG, INFO, WARNING or ERROR [INFO].")
def main(config, node_id, addr, client, http, data_dir, cluster_id, bootstrap, join, run_all, log_level):  # noqa: ANN001, ANN201
    """Run a node of the Raft-replicated key-value store."""
    overrides = {"addr": addr, "client": client, "http": http, "data_dir": data_dir, "cluster_id": cluster_id,
                 "bootstrap": bootstrap, "join": join, "log_level": log_level}
    _setup_logging(log_level or "INFO")
    if run_all:
        if not config:
            _fail(EXIT_CONFIG, "--all needs --config with a whole-cluster file")
        _run_all(config, {k: v for k, v in overrides.items() if v not in (None, False)})
        return
    try:
        cfg = load_config(config, node_id, overrides)
    except ConfigError as e:
        _fail(EXIT_CONFIG, str(e))
    if log_level is None:
        logging.getLogger().setLevel(getattr(logging, cfg.log_level.upper(), logging.INFO))
    _run_one(cfg)


if __name__ == "__main__":
    main()
