"""The node's one RoleActor: role objects swapped inside it, every input delivered to the current
role in order (none forwarded, reordered or dropped across a role change), the old role never
acting again, status answered by the actor that owns the core, and inputs refused only while
the node stops."""
from __future__ import annotations

import random
import threading
import time
from types import SimpleNamespace

import pykka
import pytest

from raftkv.actors.core import LEADER, CoreConfig, RaftCore
from raftkv.actors.fsm import AppliedView, KVState
from raftkv.actors.metrics import NodeMetrics
from raftkv.actors.messages import (Apply, ClientBatch, DiskState, Persisted, PersistRequest, StatusQuery,
                                    Tick)
from raftkv.actors.node import Node, NodeContext
from raftkv.actors.role import RoleActor
from raftkv.actors.role_door import RoleDoor
from raftkv.config import RaftTuning
from raftkv.wire.messages import ClientRequest, Member

from tests.unit.polling import wait_for



class Recorder:
    """A fake actor ref / transport: records what it is given."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: list = []
        self.on_tell = None

    def tell(self, msg) -> None:
        with self.lock:
            self.items.append(msg)
        if self.on_tell is not None:
            self.on_tell(msg)

    def reply_many(self, replies: list) -> None:
        with self.lock:
            self.items.extend(replies)

    def snapshot(self) -> list:
        with self.lock:
            return list(self.items)


@pytest.fixture
def node():
    """A one-voter node's context around a real core, with recording fakes for the other actors;
    the log manager acknowledges each write at once."""
    cfg = CoreConfig(election_ticks_min=3, election_ticks_max=4, heartbeat_ticks=1, pre_vote=False, check_quorum=False)
    core = RaftCore("n1", cfg, members=[Member("n1", "127.0.0.1:9001", "127.0.0.1:9101")], rng=random.Random(1))
    fsm, log_manager, frontdoor, snapshotter = Recorder(), Recorder(), Recorder(), Recorder()
    peer = SimpleNamespace(set_peers=lambda peers: None, send_many=lambda msgs: None, cluster_id=None)
    metrics = NodeMetrics("n1")  # the real one: the role actor drives its hooks too
    fake = SimpleNamespace(cfg=SimpleNamespace(id="n1", raft=RaftTuning()), core=core, cluster_id="c1", peer=peer,
                           frontdoor=frontdoor, fsm_ref=fsm, log_ref=log_manager,
                           log_writer=SimpleNamespace(try_persist=lambda req: True),
                           core_started=time.monotonic(), snap_ref=snapshotter, snapshots=None, snapshot_index=0,
                           metrics=metrics)
    ctx = NodeContext(fake)
    ref = RoleActor.start(ctx)
    log_manager.on_tell = lambda m: ref.tell(Persisted(m.last)) if type(m) is PersistRequest else None
    yield SimpleNamespace(ctx=ctx, ref=ref, core=core, fsm=fsm, frontdoor=frontdoor)
    ref.stop()


def put(key: str) -> ClientRequest:
    return ClientRequest("put", key, b"v", client_id="c", seq=int(key[1:]))


def committed_keys(fsm: Recorder) -> list:
    from raftkv.wire.messages import Command, EntryKind, decode_record

    return [decode_record(e.data, Command).key for m in fsm.snapshot() if type(m) is Apply
            for _, e in m.entries if e.kind == EntryKind.COMMAND]


def test_inputs_queued_across_a_role_change_reach_the_new_role_in_order(node):
    # Everything is queued before the actor can handle any of it: the role changes (follower,
    # candidate, leader) while writes wait behind the ticks, and then more ticks and writes.
    for _ in range(6):
        node.ref.tell(Tick())
    writes = [put(f"k{i}") for i in range(1, 41)]
    for i, w in enumerate(writes):
        node.ref.tell(ClientBatch([(f"route{i}", w)]))
        if i % 10 == 0:
            node.ref.tell(Tick())
    wait_for(lambda: node.ctx.role_view.role == LEADER, "leadership")
    # Writes that arrived before the node led were answered (no leader known), the rest proposed
    # and applied in arrival order: none lost, none reordered, none answered twice.
    wait_for(lambda: len(committed_keys(node.fsm)) + len(node.frontdoor.snapshot()) >= len(writes),
             "every write handled")
    answered = [r for r, _ in node.frontdoor.snapshot()]
    keys = committed_keys(node.fsm)
    assert len(answered) == len(set(answered))
    n_refused = len(answered)
    assert answered == [f"route{i}" for i in range(n_refused)]
    assert keys == [w.key for w in writes[n_refused:]]


def test_a_retired_role_never_acts_again(node):
    first = node.ref.ask(StatusQuery())  # the actor is running
    assert first["state"] == "follower"
    follower = node.ref.proxy().role.get()
    seen_after_retiring: list = []
    real = follower.on_receive

    def spy(msg):
        if follower.retired:
            seen_after_retiring.append(msg)
        real(msg)

    follower.on_receive = spy
    for _ in range(10):
        node.ref.tell(Tick())
    wait_for(lambda: node.ctx.role_view.role == LEADER, "leadership")
    for _ in range(10):
        node.ref.tell(Tick())
    node.ref.tell(ClientBatch([("r", put("k1"))]))
    wait_for(lambda: committed_keys(node.fsm) == ["k1"], "the write applied")
    leader = node.ref.proxy().role.get()
    assert follower.retired and follower.successor is not None and type(leader).__name__ == "Leader"
    assert seen_after_retiring == []


def test_status_is_built_by_the_role_actor_from_what_each_owner_published(node):
    node.ctx.applied_view = AppliedView(7, KVState())  # as the FSM publishes it
    node.ref.tell(DiskState("disk failure: no space left"))  # as the log writer reports it
    st = node.ref.ask(StatusQuery(), timeout=2)
    assert st["applied_index"] == 7 and st["disk_error"] == "disk failure: no space left"
    assert st["cluster_id"] == "c1" and [m["id"] for m in st["members"]] == ["n1"]
    node.ref.tell(DiskState(""))
    assert "disk_error" not in node.ref.ask(StatusQuery(), timeout=2)


def test_a_leader_refuses_writes_while_its_disk_is_reported_failing(node):
    for _ in range(10):
        node.ref.tell(Tick())
    wait_for(lambda: node.ctx.role_view.role == LEADER, "leadership")
    node.ref.tell(DiskState("disk failure: read-only file system"))
    node.ref.tell(ClientBatch([("r1", put("k1"))]))
    route, reply = wait_for(lambda: node.frontdoor.snapshot(), "an answer")[0]
    assert route == "r1" and reply.status == "unavailable" and "read-only" in reply.error


def test_inputs_are_refused_only_while_the_node_stops():
    ref = RoleActor.start(SimpleNamespace(role_classes={"follower": lambda ctx: None},
                                          core=SimpleNamespace(role="follower"), node_id="n1", tuning=RaftTuning(),
                                          node=SimpleNamespace(metrics=NodeMetrics("n1")), frontdoor=None,
                                          log_writer=None))
    ref.stop()
    fake = SimpleNamespace(role_ref=ref, stopping=False, cfg=SimpleNamespace(id="n1"), role_door=RoleDoor())
    with pytest.raises(pykka.ActorDeadError):
        Node._tell_role(fake, Tick())  # a dead role actor is a failure, never a silent drop
    fake.stopping = True
    Node._tell_role(fake, Tick())  # shutting down: the actors are being stopped on purpose
