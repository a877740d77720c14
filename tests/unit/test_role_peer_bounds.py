"""The role actor's handling of what peers choose (issue 11): a JoinRequest that does not name
the cluster is refused (answered with the cluster id, nothing changed), and the last-contact
table holds members only, however many senders there are."""
from raftkv.actors.core import LEADER
from raftkv.actors.messages import PeerBatch, Tick
from raftkv.wire.messages import JoinReply, JoinRequest, Member
from tests.unit.polling import wait_for
from tests.unit.test_role_actor import node  # noqa: F401 (a fixture)


def join_request(i: int) -> JoinRequest:
    return JoinRequest(Member(f"x{i}", f"127.0.0.1:{20000 + i}", "", "", False), "inc")


def test_join_request_without_cluster_id_is_refused_and_told_the_id(node):  # noqa: F811
    replies = []
    node.ctx.peer.reply_route = lambda route, msg: replies.append((route, msg))
    for _ in range(8):
        node.ref.tell(Tick())
    wait_for(lambda: node.ctx.role_view.role == LEADER, "leadership")
    node.ref.tell(PeerBatch([("x1", join_request(1), b"r1", "")]))
    wait_for(lambda: replies, "the reply")
    route, reply = replies[0]
    assert route == b"r1" and isinstance(reply, JoinReply)
    assert (reply.ok, reply.cluster_id) == (False, "c1") and "cluster id" in reply.error
    assert [m.id for m in node.core.members] == ["n1"]  # no learner added, no change proposed


def test_last_contact_holds_members_only(node):  # noqa: F811
    replies = []
    node.ctx.peer.reply_route = lambda route, msg: replies.append(msg)
    node.ctx.last_contact["gone"] = 1.0  # a member removed earlier
    node.ref.tell(PeerBatch([(f"x{i}", join_request(i), b"r", "") for i in range(5000)]))
    wait_for(lambda: len(replies) == 5000, "the replies")
    assert set(node.ctx.last_contact) <= {"n1"}
