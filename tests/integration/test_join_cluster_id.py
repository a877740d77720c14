"""Issue 11: a JoinRequest that does not name this cluster changes nothing; a real joiner still
joins (it learns the id from the refusal and asks again)."""
from __future__ import annotations

import pytest
import zmq

from raftkv.wire.messages import JoinReply, JoinRequest, Member, decode_peer, encode_peer

from .harness import free_port, wait_until

pytestmark = pytest.mark.integration


def _ask(addr: str, cluster_id: str, sender: str) -> object:
    """Send one forged JoinRequest to ``addr``'s peer door; the reply, or None within 3 s."""
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(f"tcp://{addr}")
    try:
        member = Member(sender, f"127.0.0.1:{free_port()}", "", "", True)
        s.send(encode_peer(cluster_id, sender, JoinRequest(member, "forged")))
        if not s.poll(3000):
            return None
        return decode_peer(s.recv()).msg
    finally:
        s.close()
        ctx.term()


def test_join_requests_without_our_cluster_id_are_refused(cluster):
    leader = cluster.wait_leader()
    target = cluster.nodes[leader]
    before = [m["id"] for m in target.status()["members"]]
    reply = _ask(target.addr, "", "node3")  # the issue's attack: node3's slot to our address
    assert isinstance(reply, JoinReply)
    assert (reply.ok, reply.cluster_id) == (False, cluster.cluster_id)
    assert _ask(target.addr, "another-cluster", "intruder") is None  # dropped, not answered
    with cluster.client() as kv:
        kv.put("k", b"v")  # a committed entry after the forged joins: any change would be in by now
    st = target.status()
    assert [m["id"] for m in st["members"]] == before
    node3 = next(m for m in st["members"] if m["id"] == "node3")
    assert node3["addr"] == cluster.nodes["node3"].addr and node3["voter"]


def test_a_joiner_still_joins(cluster):
    leader = cluster.wait_leader()
    joiner = cluster.add_joiner("node4", cluster.nodes[leader].addr)
    joiner.start()
    wait_until(lambda: any(m["id"] == "node4" for m in cluster.nodes[leader].status()["members"]),
               timeout=30, what="node4 in the configuration")
    wait_until(lambda: joiner.status().get("cluster_id") == cluster.cluster_id, what="node4 adopts the cluster id")
