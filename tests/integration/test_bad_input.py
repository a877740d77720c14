"""Bad peer input is logged and dropped; the node keeps serving (docs/architecture.md 7)."""
from __future__ import annotations

import msgpack
import pytest
import zmq

from raftkv.wire.messages import PROTOCOL_VERSION, AppendEntries, Heartbeat, encode_peer

from .harness import wait_until

pytestmark = pytest.mark.integration


def test_malformed_peer_frames_are_dropped_and_the_node_keeps_serving(cluster):
    leader = cluster.wait_leader()
    target = cluster.nodes[leader]
    with cluster.client() as kv:
        kv.put("k", b"before")
    frames = [
        b"\xc1 this is not msgpack",
        msgpack.packb([PROTOCOL_VERSION, cluster.cluster_id, "node9"]),  # lacks fields
        msgpack.packb([PROTOCOL_VERSION, cluster.cluster_id, "node9", 3, ["x", 1, 2, [], 4]]),  # wrong types
        msgpack.packb([PROTOCOL_VERSION, cluster.cluster_id, "node9", 999, []]),  # unknown type
        msgpack.packb([PROTOCOL_VERSION + 7, cluster.cluster_id, "node9", 5, [1, 0, 0]]),  # unknown version
        # Another cluster's leader in a far higher term: must not depose ours.
        encode_peer("another-cluster", "node2", Heartbeat(10_000, 0, 1)),
        encode_peer("another-cluster", "node2", AppendEntries(10_000, 0, 0, [], 0)),
    ]
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 5000)  # let the frames leave before close
    s.connect(f"tcp://{target.addr}")
    for _ in range(3):  # each kind several times: logged once, dropped every time
        for f in frames:
            s.send(f)
    s.send_multipart([b"two", b"frames"])
    s.close()
    ctx.term()
    with cluster.client() as kv:
        kv.put("k", b"after")
        assert kv.get("k") == b"after"
    st = target.status()
    assert st["state"] == "leader" and st["term"] < 10_000
    wait_until(lambda: "another-cluster" in target.log_text(), what="the foreign cluster logged")
    text = target.log_text()
    assert text.count("of cluster 'another-cluster'") == 1  # once per sender and cluster, not per frame
    assert "not msgpack" in text and "unknown message type 999" in text and "protocol version" in text
    assert target.alive()
