"""The floor under the HTTP figures: the node's own HTTP server with no Raft behind it.

Serves the anchors' workload (``PUT /kv/{key}`` with the value as body, ``GET /kv/{key}``) from
a dict through raftkv.wire.http_server, the server a node's gateway runs, in one of three modes:

- ``loop``: every request is answered in the event loop itself (the HTTP layer alone);
- ``thread``: every request is handed to a second thread and its answer back to the loop, the
  one hand-off a node's reply takes;
- ``zmq``: as ``thread`` for writes, but a read is answered only after one round trip over
  ZeroMQ (PUSH/PULL on TCP loopback) to an echo process, a poll loop as the node's peer I/O
  thread is; reads arriving while a round is out share the next one, as a ReadIndex read's
  heartbeat rounds are shared. This is the least a linearizable read can cost in this
  architecture: no Raft state, no log, no state machine, only the gateway and one exchange
  between two Python processes.

Point wrk (or the anchors' harness lua scripts) at it, beside a real cluster and the Go original
in the same run, for instance::

    python -m tests.bench.http_floor --port 19001 --mode zmq &
    wrk -t1 -c1 -d8s --latency -s seed_get.lua http://127.0.0.1:19001

Runs until SIGINT or SIGTERM. A development tool: no figure here is asserted anywhere.
"""
from __future__ import annotations

import multiprocessing
import queue
import signal
import threading
from typing import Any

import click
import zmq

from raftkv.wire.http_server import OCTETS, AsyncRoute, HttpServer

MODES = ("loop", "thread", "zmq")


def _echo(pull_addr: str, push_addr: str) -> None:
    """The other process of ``zmq`` mode: sends back every message it receives."""
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.bind(pull_addr)
    push = ctx.socket(zmq.PUSH)
    push.bind(push_addr)
    poller = zmq.Poller()
    poller.register(pull, zmq.POLLIN)
    while True:
        poller.poll(1000)
        while pull.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            push.send(pull.recv())


class Floor:
    """The server, its dict, and (``zmq`` mode) the read round in flight."""

    def __init__(self, port: int, mode: str) -> None:
        self.mode = mode
        self.store: dict[bytes, bytes] = {}
        self.srv = HttpServer(f"127.0.0.1:{port}", max_body=1 << 20, dispatch=self.dispatch,
                              deliver=self.deliver, tick=lambda now: False)
        self.handoff: queue.SimpleQueue = queue.SimpleQueue()
        self.waiting: list[AsyncRoute] = []  # reads for the next round
        self.in_round: list[AsyncRoute] = []  # reads the round in flight confirms
        self.round_out = False
        self.echo: Any = None
        if mode == "zmq":
            ctx = zmq.Context()
            to_echo, from_echo = f"tcp://127.0.0.1:{port + 500}", f"tcp://127.0.0.1:{port + 501}"
            self.echo = multiprocessing.get_context("spawn").Process(target=_echo, args=(to_echo, from_echo),
                                                                      daemon=True)
            self.echo.start()
            self.out = ctx.socket(zmq.PUSH)
            self.out.connect(to_echo)  # used by the loop thread only
            self.back = ctx.socket(zmq.PULL)
            self.back.connect(from_echo)  # used by the receiving thread only

    def answer(self, r: AsyncRoute) -> tuple:
        if r.method == "GET":
            v = self.store.get(r.url)
            return (200, v, OCTETS, (), False) if v is not None else (404, b"", OCTETS, (), False)
        self.store[r.url] = r.body if isinstance(r.body, bytes) else b"".join(r.body)
        return (204, b"", OCTETS, (), False)

    def dispatch(self, r: AsyncRoute) -> None:
        if self.mode == "loop":
            self.srv.finish(r, self.answer(r))
            r.conn.flush()
        elif self.mode == "zmq" and r.method == "GET":
            self.waiting.append(r)
            if not self.round_out:
                self._start_round()
        else:
            self.handoff.put(r)

    def _start_round(self) -> None:
        self.in_round, self.waiting = self.waiting, []
        self.round_out = True
        self.out.send(b"hb")

    def deliver(self, r: Any, item: Any) -> bool:
        if item == "round":  # the echo came back: every read of that round is confirmed
            self.round_out = False
            for read in self.in_round:
                self.srv.finish(read, self.answer(read))
                read.conn.flush()
            if self.waiting:
                self._start_round()
            return False
        self.srv.finish(r, self.answer(r))
        return True

    def _handoff_loop(self) -> None:
        while True:
            self.srv.post(self.handoff.get(), None)

    def _receive_loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self.back, zmq.POLLIN)
        while True:
            poller.poll(1000)
            while self.back.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                self.back.recv()
                self.srv.post(None, "round")

    def run(self) -> None:
        self.srv.start()
        threading.Thread(target=self._handoff_loop, daemon=True).start()
        if self.mode == "zmq":
            threading.Thread(target=self._receive_loop, daemon=True).start()
        click.echo(f"http floor ({self.mode}) on 127.0.0.1:{self.srv.port}")
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
        self.srv.stop()
        if self.echo is not None:
            self.echo.terminate()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--port", type=int, default=19001, show_default=True)
@click.option("--mode", type=click.Choice(MODES), default="zmq", show_default=True)
def main(port: int, mode: str) -> None:
    """Serve the anchors' workload through the node's HTTP server with no Raft behind it."""
    floor = Floor(port, mode)  # (its echo process starts with the signals unblocked)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})  # for sigwait, in every thread
    floor.run()


if __name__ == "__main__":
    main()
