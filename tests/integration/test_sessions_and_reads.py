"""Exactly-once writes and reads that do not touch the log (thesis 6.3, 6.4)."""
from __future__ import annotations

import signal

import pytest

from raftkv.wire.client import Client, ClientError

from .harness import wait_until

pytestmark = pytest.mark.integration


def test_a_retried_write_is_applied_once_even_across_a_leader_kill(cluster):
    old = cluster.wait_leader()
    with cluster.client(timeout=20) as kv:
        kv.put("n", b"0")
        # The same request sent twice (as a client whose first reply was lost would) applies once.
        assert kv.write("cas", "n", b"1", expected=b"0", client_id="c-1", seq=1).status == "ok"
        assert kv.write("cas", "n", b"1", expected=b"0", client_id="c-1", seq=1).status == "ok"
        assert kv.get("n") == b"1"
        # A non-idempotent increment: sent once, the leader dies, sent again to the new leader.
        assert kv.write("cas", "n", b"2", expected=b"1", client_id="c-1", seq=2).status == "ok"
        cluster.nodes[old].kill(signal.SIGKILL)
        cluster.wait_leader(among=[n for n in cluster.nodes if n != old])
        reply = kv.write("cas", "n", b"2", expected=b"1", client_id="c-1", seq=2)
        assert reply.status == "ok"  # the stored result, not a failed compare
        assert kv.get("n") == b"2"
        # and a later, different request of the same session is applied normally
        assert kv.write("put", "m", b"x", client_id="c-1", seq=3).status == "ok"
        assert kv.get("m") == b"x"


def test_reads_do_not_append_to_the_log(cluster):
    leader = cluster.wait_leader()
    with cluster.client() as kv:
        kv.put("r", b"1")
        before = cluster.nodes[leader].status()
        for _ in range(200):
            assert kv.get("r") == b"1"
        after = cluster.nodes[leader].status()
    assert after["last_log_index"] == before["last_log_index"]
    assert after["commit_index"] == before["commit_index"]


def test_stale_reads_on_a_follower_and_cas_semantics(cluster):
    leader = cluster.wait_leader()
    follower = next(n for n in cluster.nodes.values() if n.id != leader)
    with cluster.client() as kv:
        assert kv.cas("c", expected=None, new=b"a") is True      # create
        assert kv.cas("c", expected=None, new=b"b") is False     # already exists
        assert kv.cas("c", expected=b"x", new=b"b") is False     # wrong expected value
        assert kv.cas("c", expected=b"a", new=b"b") is True
        commit = cluster.nodes[leader].status()["commit_index"]
    cluster.wait_applied(commit, nodes=[follower.id])
    with Client([follower.client], timeout=5) as c:
        assert c.get("c", consistency="stale") == b"b"  # served by the follower itself
        assert c.status(follower.client)["state"] == "follower"


def test_a_leader_cut_off_by_paused_followers_answers_no_linearizable_read(cluster):
    leader = cluster.wait_leader()
    others = [n for n in cluster.nodes.values() if n.id != leader]
    with cluster.client() as kv:
        kv.put("lin", b"old")
    for n in others:
        n.pause()
    try:
        with Client([cluster.nodes[leader].client], timeout=2) as c:
            with pytest.raises(ClientError):
                c.get("lin")  # no heartbeat round can be confirmed: no answer from local state
    finally:
        for n in others:
            n.resume()
    with cluster.client() as kv:
        wait_until(lambda: kv.get("lin") == b"old", what="reads again after the pause")


def test_a_follower_serves_linearizable_reads_itself_through_the_read_index(cluster):
    leader = cluster.wait_leader()
    follower = next(n for n in cluster.nodes.values() if n.id != leader)
    with cluster.client() as kv, Client([follower.client], timeout=5) as f:
        for i in range(50):
            kv.put("fr", str(i).encode())
            assert f.get("fr") == str(i).encode()  # never behind a write acknowledged before the read
        # answered by the follower, not redirected to the leader
        assert f.leader == follower.client


def test_lease_reads_when_enabled(make_cluster):
    cluster = make_cluster(3, raft={"lease_reads": True})
    leader = cluster.wait_leader()
    with cluster.client() as kv:
        kv.put("l", b"1")
        assert kv.get("l", consistency="lease") == b"1"
        before = cluster.nodes[leader].status()["last_log_index"]
        for _ in range(100):
            assert kv.get("l", consistency="lease") == b"1"
        assert cluster.nodes[leader].status()["last_log_index"] == before
