#!/usr/bin/env python3
"""kvnode: run one node of the replicated key-value store (or, with --all, a whole local cluster).

    kvnode --config configs/cluster.yaml --id node1
    kvnode --id node1 --addr localhost:9001 --http :8001 --bootstrap
    kvnode --id node2 --addr localhost:9002 --http :8002 --join localhost:9001
    kvnode --config configs/cluster.yaml --all
    kvnode --id node1 --addr 10.0.0.1:9001 --bootstrap --secure        (a secure cluster: issue 11)
    kvnode --id node2 --addr 10.0.0.2:9001 --join 10.0.0.1:9001 --token "$(cat data/node1/join.token)"
    kvnode --version

Logs go to stderr, one record a line naming its node (``--log-format json``: one JSON object
a line). SIGHUP re-reads ``log_level`` from the configuration file and applies it (a
``--log-level`` flag still wins); with ``--all`` it is passed on to every node.

Exit status: 0 after a clean shutdown (SIGTERM/SIGINT); 2 for a bad configuration (also a node
with no data started with neither --bootstrap nor --join); 1 when the node cannot start (port
in use, data directory of another node or cluster); 70 when an internal actor failed (the node
stops rather than run half-alive).
"""
from __future__ import annotations

import logging
import queue
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import click

from raftkv import __version__
from raftkv.cli.kvnode_admin import KvnodeCommand
from raftkv.cli.node_logging import SUPERVISOR, UNKNOWN_NODE, LogFormat, level_number, setup_logging
from raftkv.config import ConfigError, load_cluster, load_config

EXIT_CONFIG = 2
EXIT_START = 1
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

log = logging.getLogger("kvnode")


@dataclass
class ErrorOutput:
    """How a fatal error is printed: one line that, once the node is known, names it (so
    ``--all``'s merged output says which node could not start), and with ``--log-format
    json`` a JSON record like every other line."""

    fmt: LogFormat = LogFormat.TEXT
    node: Optional[str] = None


_errors = ErrorOutput()


def _fail(code: int, msg: str) -> None:
    if _errors.fmt is LogFormat.JSON:
        log.error("%s", msg)
    else:
        click.echo(f"kvnode: error: {_errors.node + ': ' if _errors.node else ''}{msg}", err=True)
    sys.exit(code)


class SignalInbox:
    """Signals turned into a queue the main thread reads: a handler only records the signal,
    the work (stopping, re-reading the config) happens outside the handler."""

    def __init__(self) -> None:
        # SimpleQueue.put is reentrant: safe in a handler that interrupts a get() of the same queue.
        self._got: "queue.SimpleQueue[int]" = queue.SimpleQueue()

    def catch(self, *signums: int) -> None:
        for s in signums:
            signal.signal(s, self._handler)

    def _handler(self, signum: int, _frame: Any) -> None:
        self._got.put(signum)

    def next(self, timeout: float) -> Optional[int]:
        """The next signal received, or None after ``timeout`` seconds."""
        try:
            return self._got.get(timeout=timeout)
        except queue.Empty:
            return None


@dataclass
class LogLevelSource:
    """Where the log level comes from, so SIGHUP can read it again: a ``--log-level`` flag
    wins over the file, as at start-up; with no file there is nothing to re-read."""

    config: Optional[str]
    flag: Optional[str]
    read_file: Callable[[], str]  # the file's log_level (loads and validates the whole file)

    def reread(self) -> None:
        """Apply the file's current log_level; a bad file is a WARNING, never a stop."""
        root = logging.getLogger()
        current = logging.getLevelName(root.level)
        if self.flag:
            log.info("SIGHUP: log level stays %s (set by --log-level, which wins over the file)", current)
            return
        if not self.config:
            log.info("SIGHUP: no configuration file to re-read; log level stays %s", current)
            return
        try:
            level = self.read_file()
        except ConfigError as e:
            log.warning("SIGHUP: cannot re-read the configuration (%s); log level stays %s", e, current)
            return
        level = level.upper()
        if level == current:
            log.info("SIGHUP: re-read %s: log level stays %s", self.config, level)
            return
        root.setLevel(level_number(level))
        # WARNING, so that the change shows even when the new level hides INFO.
        log.warning("SIGHUP: re-read %s: log level %s (was %s)", self.config, level, current)


def bind_refusal_of(cfg) -> Optional[str]:
    """Why loopback-only mode forbids this node's addresses (kvnode exits 2 with it), or None.

    A cluster made without --secure binds loopback or every interface (non-loopback peers are
    then refused at accept); a specific non-loopback address needs --insecure.
    """
    from raftkv.wire.address import split_address
    from raftkv.wire.security.loopback import bind_refusal

    if cfg.secure or cfg.join_token or (cfg.node_dir / "cluster.key").exists():
        return None  # a secure node (the node checks its meta agrees): CURVE on every door
    for addr in (cfg.addr, cfg.client, cfg.http):
        if addr:
            why = bind_refusal(split_address(addr)[0], secure=False, insecure=cfg.insecure)
            if why:
                return why
    return None


def _run_one(cfg, levels: LogLevelSource) -> None:
    from raftkv.actors.node import Node, NodeError, no_way_in

    why = bind_refusal_of(cfg)
    if why:
        _fail(EXIT_CONFIG, why)
    if cfg.secure and not cfg.bootstrap and not cfg.join_token and not (cfg.node_dir / "raft").exists():
        _fail(EXIT_CONFIG, "--secure makes a new cluster with --bootstrap; a node joins a secure cluster with "
                           "--join ADDR --token JOIN_TOKEN")
    if cfg.join_token and not cfg.join and not (cfg.node_dir / "raft").exists():
        _fail(EXIT_CONFIG, "--token is the join token of --join ADDR: give both")
    if not cfg.bootstrap and not cfg.join and not (cfg.node_dir / "raft").exists():
        _fail(EXIT_CONFIG, no_way_in(cfg.node_dir))  # before anything is written: a --join start then works

    inbox = SignalInbox()
    inbox.catch(signal.SIGHUP)  # before start: a HUP while starting must not kill the node
    node = Node(cfg)
    try:
        node.start()
    except NodeError as e:
        _fail(getattr(e, "exit_status", EXIT_START), str(e))
    inbox.catch(*STOP_SIGNALS)
    while True:
        signum = inbox.next(1.0)
        if signum == signal.SIGHUP:
            levels.reread()
        elif signum is not None:
            break
    log.info("%s: %s received, stopping", cfg.id, signal.Signals(signum).name)
    node.stop()
    sys.exit(0)


def _restart_exited(cfgs: list, children: dict, restarts: dict,
                    launch: Callable[[Any], subprocess.Popen]) -> bool:
    """Restart the children that exited; False when the cluster should stop instead (a
    child that cannot start, or one that keeps exiting: 5 times within a minute)."""
    for c in cfgs:
        rc = children[c.id].poll()
        if rc is None:
            continue
        if rc == EXIT_CONFIG or rc == EXIT_START:
            log.error("%s exited with status %d and cannot start; stopping the cluster", c.id, rc)
            return False
        now = time.monotonic()
        recent = [t for t in restarts[c.id] if now - t < 60]
        if len(recent) >= 5:
            log.error("%s keeps exiting (status %d); stopping the cluster", c.id, rc)
            return False
        restarts[c.id] = recent + [now]
        log.warning("%s exited with status %d; restarting it", c.id, rc)
        children[c.id] = launch(c)
    return True


def _run_all(config: str, overrides: dict, log_format: LogFormat) -> None:
    """Every node of a whole-cluster file as a supervised child process (development)."""
    try:
        cfgs = load_cluster(config, overrides)
    except ConfigError as e:
        _fail(EXIT_CONFIG, str(e))
    levels = LogLevelSource(config, overrides.get("log_level"), lambda: load_cluster(config, overrides)[0].log_level)
    if not levels.flag:
        logging.getLogger().setLevel(level_number(cfgs[0].log_level))
    children: dict[str, subprocess.Popen] = {}
    inbox = SignalInbox()
    inbox.catch(signal.SIGHUP, *STOP_SIGNALS)

    def launch(c) -> subprocess.Popen:
        args = [sys.executable, "-m", "raftkv.cli.kvnode", "--config", config, "--id", c.id,
                "--data-dir", c.data_dir, "--log-format", log_format.value]
        if overrides.get("log_level"):
            args += ["--log-level", overrides["log_level"]]
        if overrides.get("insecure"):
            args.append("--insecure")
        for flag in ("tls_cert", "tls_key"):
            if overrides.get(flag):
                args += ["--" + flag.replace("_", "-"), overrides[flag]]
        return subprocess.Popen(args, start_new_session=True)

    for c in cfgs:
        children[c.id] = launch(c)
        log.info("started %s (pid %d)", c.id, children[c.id].pid)

    restarts: dict[str, list] = {c.id: [] for c in cfgs}
    while True:
        signum = inbox.next(0.5)
        if signum == signal.SIGHUP:
            levels.reread()
            for p in children.values():
                if p.poll() is None:
                    p.send_signal(signal.SIGHUP)  # each node re-reads its own level
        elif signum is not None:
            break
        elif not _restart_exited(cfgs, children, restarts, launch):
            break
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


@click.command(cls=KvnodeCommand, context_settings={"help_option_names": ["-h", "--help"]})  # + restore, recover
@click.version_option(__version__, "--version", prog_name="kvnode", message="%(prog)s %(version)s")
@click.option("--config", "config", type=str, default=None, help="YAML file: one node's, or a whole cluster's.")
@click.option("--id", "node_id", default=None, help="Node id (picks the node of a whole-cluster file).")
@click.option("--addr", default=None, help="Peer (Raft) address HOST:PORT.")
@click.option("--client", default=None, help="Client (ZeroMQ) address HOST:PORT [default: peer port - 4000].")
@click.option("--http", default=None, help="HTTP gateway address, e.g. :8001 (all interfaces).")
@click.option("--data-dir", default=None, help="Root data directory; the node keeps its files in DATA_DIR/ID [./data].")
@click.option("--cluster-id", default=None, help="Cluster id (made up at bootstrap when not given).")
@click.option("--bootstrap", is_flag=True, default=False,
              help="Start a new cluster with this node (no-op if it has data).")
@click.option("--join", default=None,
              help="Join the cluster through the member at this peer address; several comma-separated are "
                   "tried in turn (no-op if already a member).")
@click.option("--insecure", is_flag=True, default=False,
              help="Lift loopback-only mode of a cluster made without --secure: every door accepts anyone "
                   "(logs a WARNING at every start).")
@click.option("--secure", is_flag=True, default=False,
              help="With --bootstrap: make a secure cluster (CURVE on the ZeroMQ doors, tokens, HTTPS); "
                   "writes join.token and admin.token in the node's data directory.")
@click.option("--token", "join_token", default=None, envvar="KV_JOIN_TOKEN", show_envvar=True,
              help="With --join: the join token of the secure cluster (join.token of its bootstrap node).")
@click.option("--tls-cert", default=None, metavar="PATH",
              help="Certificate (PEM) of the HTTPS gateway of a secure node [default: DATA_DIR/ID/tls.crt, "
                   "self-signed at bootstrap].")
@click.option("--tls-key", default=None, metavar="PATH", help="Private key (PEM) of --tls-cert.")
@click.option("--all", "run_all", is_flag=True, default=False,
              help="Run every node of a whole-cluster file as child processes.")
@click.option("--log-level", default=None, help="DEBUG, INFO, WARNING or ERROR [INFO].")
@click.option("--log-format", type=click.Choice([f.value for f in LogFormat]), default=LogFormat.TEXT.value,
              help="text: one line a record; json: one JSON object a line (time, level, node, logger, "
                   "message) [text].")
def main(config, node_id, addr, client, http, data_dir, cluster_id, bootstrap, join, insecure, secure, join_token,
         tls_cert, tls_key, run_all, log_level, log_format):
    """Run a node of the Raft-replicated key-value store."""
    overrides = {"addr": addr, "client": client, "http": http, "data_dir": data_dir, "cluster_id": cluster_id,
                 "bootstrap": bootstrap, "join": join, "log_level": log_level, "insecure": insecure,
                 "secure": secure, "join_token": join_token}
    overrides.update(tls_cert=tls_cert, tls_key=tls_key)
    fmt = LogFormat(log_format)
    node_field = setup_logging(log_level or "INFO", fmt, node_id or UNKNOWN_NODE)
    _errors.fmt = fmt
    if run_all:
        if not config:
            _fail(EXIT_CONFIG, "--all needs --config with a whole-cluster file")
        node_field.node = SUPERVISOR
        _run_all(config, {k: v for k, v in overrides.items() if v not in (None, False)}, fmt)
        return
    try:
        cfg = load_config(config, node_id, overrides)
    except ConfigError as e:
        _fail(EXIT_CONFIG, str(e))
    node_field.node = _errors.node = cfg.id
    if log_level is None:
        logging.getLogger().setLevel(level_number(cfg.log_level))
    _run_one(cfg, LogLevelSource(config, log_level, lambda: load_config(config, node_id, overrides).log_level))


if __name__ == "__main__":
    main()
