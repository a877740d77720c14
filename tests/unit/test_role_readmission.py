"""The role actor carries the core's re-admission request (``Ready.readmission``,
actors/readmission.py) out the way the node's kind needs: over the peer connection on a node
without --secure, with the join token on a secure one (actors/secure_readmission.py: the
leader's door would not hear this incarnation's key). Real RoleActor and RaftCore; the peer
transport and the one-shot join connection are recorders."""
from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from raftkv.actors.messages import PeerBatch, StatusQuery
from raftkv.actors.metrics import NodeMetrics
from raftkv.actors.node import NodeContext
from raftkv.actors.role import RoleActor
from raftkv.config import RaftTuning
from raftkv.wire.messages import Heartbeat, HeartbeatReply, JoinReply, JoinRequest
from raftkv.wire.security.keys import generate_keypair
from raftkv.wire.security.tokens import new_join_token

from tests.unit.test_core_readmission import readmitted_node
from tests.unit.test_role_actor import Recorder

CID = "c1"


class Peer:
    """The peer transport: records every (to, msg) it is asked to send, by any method."""

    cluster_id = CID

    def __init__(self) -> None:
        self.sent: list = []

    def set_peers(self, peers: dict) -> None:
        pass

    def send_many(self, msgs: list) -> None:
        self.sent.extend(msgs)

    def send(self, to: str, msg) -> None:
        self.sent.append((to, msg))


def start(secure: bool):
    """n2 (incarnation b2, admitted by an entry not known committed) in a role actor; on a secure
    node the join-token connection is a recorder run inline."""
    core = readmitted_node()
    peer = Peer()
    token = new_join_token(CID, generate_keypair().public).encode() if secure else None
    fake = SimpleNamespace(cfg=SimpleNamespace(id="n2", raft=RaftTuning(), join_token=token), core=core,
                           cluster_id=CID, peer=peer, frontdoor=Recorder(), fsm_ref=Recorder(), log_ref=Recorder(),
                           log_writer=SimpleNamespace(try_persist=lambda req: True), core_started=time.monotonic(),
                           snap_ref=Recorder(), snapshots=None, snapshot_index=0, metrics=NodeMetrics("n2"),
                           secure=secure)
    ctx = NodeContext(fake)
    joins: list = []
    if secure:
        assert ctx.readmit is not None and not ctx.readmit.problem
        ctx.readmit.send_once = lambda addr, req: joins.append((addr, req)) or JoinReply(True, CID)
        ctx.readmit.spawn = lambda fn: fn()
    else:
        assert ctx.readmit is None
    ref = RoleActor.start(ctx)
    return SimpleNamespace(ref=ref, peer=peer, joins=joins, core=core)


def handle(node, *msgs) -> None:
    """Hand ``msgs`` from n1 to the role actor and wait until it has carried out their Ready (a
    StatusQuery behind them: the actor runs a deferred Ready when nothing else is queued)."""
    node.ref.tell(PeerBatch([("n1", m, b"route", CID) for m in msgs]))
    node.ref.ask(StatusQuery())


@pytest.fixture(params=[False, True], ids=["insecure", "secure"])
def node(request):
    n = start(request.param)
    n.secure = request.param
    yield n
    n.ref.stop()


def test_the_request_goes_as_a_peer_message_or_with_the_join_token(node):
    # A leader of term 2 addresses n2 as its old incarnation a2: the core asks it to admit b2.
    handle(node, Heartbeat(2, 0, 1, to_incarnation="a2"))
    joins_at_peer = [(to, m) for to, m in node.peer.sent if type(m) is JoinRequest]
    if node.secure:
        # Never over the peer connection: the leader's door lists only a2's key.
        assert joins_at_peer == []
        assert len(node.joins) == 1
        addr, req = node.joins[0]
        assert addr == "127.0.0.1:9001", "the leader's peer address, from n2's configuration"
    else:
        assert node.joins == [] and len(joins_at_peer) == 1
        to, req = joins_at_peer[0]
        assert to == "n1"
    assert req.member.id == "n2" and req.incarnation == "b2" and req.member.incarnation == "b2"


def test_other_messages_still_go_over_the_peer_connection(node):
    # Addressed as itself, n2 is the leader's follower: its reply goes to the peer transport on
    # either kind of node, and nothing asks to be admitted.
    handle(node, Heartbeat(2, 0, 1, to_incarnation="b2"))
    assert [(to, type(m)) for to, m in node.peer.sent] == [("n1", HeartbeatReply)]
    assert node.joins == []
