"""The role actor's door (actors/role_door.py): a read-path input that finds the role actor idle
is handled in its sender's thread, anything else (or anything behind a queued input) by the
actor, in the order given."""
from __future__ import annotations

import random
import threading
import time
from types import SimpleNamespace

import pytest

from raftkv.actors.core import LEADER, CoreConfig, RaftCore
from raftkv.actors.fsm import AppliedView, KVState
from raftkv.actors.messages import ClientBatch, PeerBatch, StatusQuery, Tick
from raftkv.actors.metrics import NodeMetrics
from raftkv.actors.node import NodeContext
from raftkv.actors.role import RoleActor
from raftkv.actors.role_door import RoleDoor, inline_client_batch, inline_peer_batch
from raftkv.config import RaftTuning
from raftkv.wire.messages import (AppendEntries, ClientRequest, Heartbeat, HeartbeatReply, Member, ReadIndexReply,
                                  ReadIndexRequest)

from tests.unit.polling import wait_for



class Replies:
    """A fake front door: records each reply with the name of the thread that gave it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: list = []

    def reply_many(self, replies: list) -> None:
        with self.lock:
            self.items.extend((route, rep, threading.current_thread().name) for route, rep in replies)

    def snapshot(self) -> list:
        with self.lock:
            return list(self.items)


@pytest.fixture
def leader():
    """A one-voter node that leads, with a state holding k=v, behind a RoleDoor."""
    cfg = CoreConfig(election_ticks_min=3, election_ticks_max=4, heartbeat_ticks=1, pre_vote=False, check_quorum=False)
    core = RaftCore("n1", cfg, members=[Member("n1", "127.0.0.1:9001", "127.0.0.1:9101")], rng=random.Random(1))
    frontdoor = Replies()
    nothing = SimpleNamespace(tell=lambda m: None)
    peer = SimpleNamespace(set_peers=lambda peers: None, send_many=lambda msgs: None, cluster_id=None)
    door = RoleDoor()
    fake = SimpleNamespace(cfg=SimpleNamespace(id="n1", raft=RaftTuning()), core=core, cluster_id="c1", peer=peer,
                           frontdoor=frontdoor, fsm_ref=nothing, log_ref=nothing,
                           log_writer=SimpleNamespace(try_persist=lambda req: True),
                           core_started=time.monotonic(), snap_ref=nothing, snapshots=None, snapshot_index=0,
                           metrics=NodeMetrics("n1"), role_door=door)
    ctx = NodeContext(fake)
    ref = RoleActor.start(ctx)

    def tell(msg) -> None:  # as Node._tell_role does
        door.counted()
        ref.tell(msg)

    for _ in range(10):
        tell(Tick())
    wait_for(lambda: ctx.role_view.role == LEADER, "leadership")
    for _ in range(3):
        tell(Tick())  # the no-op commits: reads are served from now on
    wait_for(lambda: core.commit >= 1 and door.told == door.started, "the no-op committed")
    kv = KVState()
    kv.data["k"] = b"v"
    ctx.applied_view = AppliedView(core.commit, kv)
    yield SimpleNamespace(ctx=ctx, ref=ref, door=door, frontdoor=frontdoor, tell=tell)
    ref.stop()


def get(key: str) -> ClientRequest:
    return ClientRequest("get", key=key, consistency="linearizable")


def test_a_read_finding_the_actor_idle_is_served_in_the_callers_thread(leader):
    assert leader.door.try_run(ClientBatch([("r1", get("k"))]))
    # Confirmed (one voter: its own round) and served before try_run returned, by this thread.
    (route, rep, thread), = leader.frontdoor.snapshot()
    assert route == "r1" and rep.status == "ok" and rep.value == b"v"
    assert thread == threading.current_thread().name
    assert leader.door.inline == 1


def test_an_input_queued_before_goes_first(leader):
    leader.door.counted()  # told, not yet begun by the actor: the door must not overtake it
    assert not leader.door.try_run(ClientBatch([("r1", get("k"))]))
    assert leader.frontdoor.snapshot() == [] and leader.door.inline == 0
    leader.ref.tell(ClientBatch([("r0", get("k"))]))  # the input counted above arrives
    wait_for(lambda: leader.frontdoor.snapshot(), "the actor's answer")
    wait_for(lambda: leader.door.told == leader.door.started, "the actor idle again")
    assert leader.door.try_run(ClientBatch([("r1", get("k"))]))
    assert [r for r, _, _ in leader.frontdoor.snapshot()] == ["r0", "r1"]


def test_a_busy_actor_is_never_overtaken(leader):
    with leader.door.lock:  # as while the actor handles an input
        assert not leader.door.try_run(ClientBatch([("r1", get("k"))]))
    assert leader.frontdoor.snapshot() == []
    st = leader.ref.ask(StatusQuery(), timeout=2)  # the actor still runs and owns the core
    assert st["state"] == "leader"


def test_only_read_path_inputs_qualify():
    hb = Heartbeat(1, 0, 1)
    assert inline_peer_batch(PeerBatch([("n2", hb, None, None), ("n3", HeartbeatReply(1, 1, 0), None, None)]))
    assert inline_peer_batch(PeerBatch([("n2", ReadIndexRequest(1, 1), None, None),
                                        ("n2", ReadIndexReply(1, 1, 5, True), None, None)]))
    append = AppendEntries(1, 0, 0, [], 0)
    assert not inline_peer_batch(PeerBatch([("n2", hb, None, None), ("n2", append, None, None)]))
    assert inline_client_batch(ClientBatch([("r", get("a")), ("s", get("b"))]))
    assert not inline_client_batch(ClientBatch([("r", get("a")), ("s", ClientRequest("put", "b", b"v"))]))
    assert not inline_client_batch(PeerBatch([("n2", hb, None, None)]))
