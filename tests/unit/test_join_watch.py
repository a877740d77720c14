"""kvnode's join loop keeps watching after the node is admitted: if the configuration goes back to
another incarnation of its id (the admitting entry was truncated and a snapshot of a leader that
never had it was installed), it asks to be admitted again (sim seed 987039). A removal (the id no
longer listed) never makes it ask."""
from __future__ import annotations

import queue
import threading
import time
import types

from raftkv.actors import node as node_mod
from raftkv.actors.node import Node
from raftkv.wire.messages import JoinRequest, Member


def _joiner(members: list) -> types.SimpleNamespace:
    """The parts of a Node its join loop uses: n4 as incarnation b4, joining through one address."""
    sent: list = []
    n = types.SimpleNamespace(
        cfg=types.SimpleNamespace(id="n4", spec=types.SimpleNamespace(addr="127.0.0.1:9004", client="", http=""),
                                  join_addrs=["127.0.0.1:9001"]),
        ctx=types.SimpleNamespace(role_view=types.SimpleNamespace(members=members)),
        peer=types.SimpleNamespace(send_to_addr=lambda addr, req: sent.append((addr, req))),
        _stop=threading.Event(), _join_hints=queue.SimpleQueue(), _incarnation="b4", node_key=None,
        cluster_id="c1", sent=sent)
    for name in ("_join_loop", "_ask_to_join", "_admitted", "_replaced_back"):
        setattr(n, name, types.MethodType(getattr(Node, name), n))
    return n


def _wait_for(cond, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


def test_replaced_back_means_listed_only_as_another_incarnation():
    n = _joiner([])
    assert not n._replaced_back([])  # not listed at all: a removal, or not admitted yet
    assert not n._replaced_back([Member("n4", "a", incarnation="b4")])  # admitted as itself
    assert not n._replaced_back([Member("n4", "a", incarnation="")])  # a legacy record counts as us
    assert not n._replaced_back([Member("n5", "a", incarnation="x")])
    assert n._replaced_back([Member("n4", "a", incarnation="a4")])


def test_the_join_loop_asks_again_when_the_configuration_goes_back_to_the_old_incarnation(monkeypatch):
    monkeypatch.setattr(node_mod, "JOIN_WATCH_S", 0.01)
    n = _joiner([Member("n4", "a", incarnation="a4")])  # a wiped node: the cluster lists the old one
    t = threading.Thread(target=n._join_loop, daemon=True)
    t.start()
    try:
        _wait_for(lambda: len(n.sent) >= 1)
        assert all(type(r) is JoinRequest and r.incarnation == "b4" for _, r in n.sent)
        n.ctx.role_view.members = [Member("n4", "a", incarnation="b4")]  # admitted
        asked = len(n.sent)
        n.ctx.role_view.members = [Member("n4", "a", incarnation="a4")]  # the admission was truncated
        _wait_for(lambda: len(n.sent) > asked + 1)
        n.ctx.role_view.members = [Member("n4", "a", incarnation="b4")]
    finally:
        n._stop.set()
        t.join(5)
    assert not t.is_alive()


def test_the_join_loop_ends_when_stopped_while_watching(monkeypatch):
    monkeypatch.setattr(node_mod, "JOIN_WATCH_S", 0.01)
    n = _joiner([Member("n4", "a", incarnation="b4")])  # admitted from the start
    t = threading.Thread(target=n._join_loop, daemon=True)
    t.start()
    n._stop.set()
    t.join(5)
    assert not t.is_alive() and n.sent == []
