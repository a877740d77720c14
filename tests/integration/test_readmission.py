"""Re-admission on real processes (actors/readmission.py, sim seed 4095): a wiped node was admitted
again as its new incarnation by a leader that then died before the entry committed; a leader of a
later term, elected without that entry, still lists the old incarnation. The node, restarted all
along with its one command line, must ask that leader to admit it again by itself, and end up a
voter serving reads with every acknowledged write, on a plain and on a secure cluster (where the
request goes with the join token: actors/secure_readmission.py).

How the scenario is held still with real processes: node5 (a joiner: ``--join node1``) is wiped
while node1 leads; node2-4 are killed, so the entry replacing node5's old record reaches node5
alone (a paused node would read it from its socket buffer on resume, a killed one restarts from
its disk without it). ``check_quorum: false`` keeps node1 leading alone meanwhile (with it, a
leader that hears no majority steps down after an election timeout and could not admit anyone).
node5 is paused before node1 is killed and node2-4 elect a leader among themselves, so that
leader commits an entry of its own term first: node5's log is then behind theirs and its
campaigns (it is a learner whose log was ahead, sim seed 10517) cannot win; only its request to be
admitted again brings it back.
"""
from __future__ import annotations

import re
import shutil
from collections import defaultdict

from raftkv.wire.client import Client

from .harness import Cluster, SecureCluster, wait_until

RAFT = {"check_quorum": False}
ASKED = "asking it to admit this one again"
_LEADER_LINE = re.compile(r"\b(node\d+): leader in term (\d+)")


def _client(cluster, servers: list, timeout: float = 20) -> Client:
    return Client(servers, timeout=timeout, token=cluster.status_token())


def _members(cluster) -> dict:
    st = wait_until(cluster.leader_status, 30, what="a leader's status")
    return {m["id"]: m for m in st["members"]}


def _leaders_by_term(cluster) -> dict:
    """{term: ids that logged becoming its leader}, from every node's whole log (all restarts)."""
    seen: dict = defaultdict(set)
    for n in cluster.nodes.values():
        for nid, term in _LEADER_LINE.findall(n.log_text()):
            seen[int(term)].add(nid)
    return seen


def _admitted_then_truncated(cluster) -> dict:
    """Run the scenario up to node5 asking the new leader to admit it again; returns the keys
    acknowledged so far ({key: value})."""
    n1, n5 = cluster.nodes["node1"], cluster.nodes["node5"]
    others = [cluster.nodes[f"node{i}"] for i in (2, 3, 4)]
    wait_until(lambda: all(m["voter"] for m in _members(cluster).values()) and len(_members(cluster)) == 5, 90,
               what="five voters")
    acked = {}
    with cluster.client(timeout=20) as kv:
        if cluster.leader() != "node1":
            kv.transfer_leader("node1")  # node5's --join names node1: it must lead while the others are down
        for i in range(20):
            kv.put(f"k{i}", b"v%d" % i)
            acked[f"k{i}"] = b"v%d" % i
    wait_until(lambda: cluster.leader() == "node1", 30, what="node1 leading")
    term1 = n1.status()["term"]

    n5.kill()
    shutil.rmtree(cluster.data_dir / "node5")
    for n in others:
        n.kill()
    before = len(n5.log_text())  # its log file goes on across restarts
    n5.start()  # the same command line, as after a disk replacement
    wait_until(lambda: "by incarnation" in n1.log_text(), 60, what="node1 replacing node5's old record")
    wait_until(lambda: "is a member of cluster" in n5.log_text()[before:], 60,
               what="the new node5 seeing itself admitted in its own log")
    assert n1.status()["term"] == term1 and n1.status()["state"] == "leader"
    n5.pause()
    n1.kill()  # the entry admitting the new node5 dies uncommitted with it

    for n in others:
        n.start()
    ids = [n.id for n in others]
    wait_until(lambda: cluster.leader(among=ids), 60, what="a leader among node2-4")
    with _client(cluster, [n.client for n in others]) as kv:
        kv.put("during", b"node5 away")  # committed by node2-4 in a term after node1's
        acked["during"] = b"node5 away"
    top = cluster.leader_status(among=ids)
    assert top["term"] > term1
    return acked


def _back_as_voter(cluster, acked: dict) -> None:
    """node5 re-admitted and promoted; node1 back; every acknowledged key everywhere; writes go on;
    at most one leader per term."""
    n1, n5 = cluster.nodes["node1"], cluster.nodes["node5"]
    others = [cluster.nodes[f"node{i}"] for i in (2, 3, 4)]
    wait_until(lambda: "by incarnation" in "".join(n.log_text() for n in others), 90,
               what="the new leader replacing node5's old record again")
    n1.start()
    wait_until(lambda: _members(cluster)["node5"]["voter"], 90, what="node5 promoted to voter")
    with cluster.client(timeout=30) as kv:
        for k, v in acked.items():
            assert kv.get(k) == v, k
        kv.put("after", b"readmitted")
        acked["after"] = b"readmitted"
    commit = cluster.leader_status()["commit_index"]
    cluster.wait_applied(commit, timeout=90)
    st5 = n5.status()
    assert st5["state"] == "follower" and st5["leader_id"] in ("node2", "node3", "node4", "node1")
    with _client(cluster, [n5.client]) as kv:  # node5 alone serves linearizable reads
        for k, v in acked.items():
            assert kv.get(k) == v, k
    for n in cluster.nodes.values():
        with _client(cluster, [n.client], timeout=5) as kv:
            assert kv.get("during", consistency="stale") == b"node5 away", n.id
    two = {t: ids for t, ids in _leaders_by_term(cluster).items() if len(ids) > 1}
    assert two == {}, f"two leaders in one term: {two}"
    assert cluster.exited() == {}


def test_a_readmitted_node_whose_admission_was_truncated_asks_again(make_cluster):
    cluster: Cluster = make_cluster(4, raft=RAFT)
    cluster.wait_leader(30)
    n5 = cluster.add_joiner("node5", cluster.nodes["node1"].addr)
    n5.start()
    acked = _admitted_then_truncated(cluster)
    n5.resume()
    wait_until(lambda: ASKED in n5.log_text(), 60, what="node5 asking the new leader to admit it again")
    _back_as_voter(cluster, acked)


def _secure_cluster(tmp_path, request):
    c = SecureCluster(tmp_path / "s", n=5, raft=RAFT)
    request.addfinalizer(lambda: _stop(c, request))
    c.start()
    return c


def _stop(cluster, request) -> None:
    cluster.stop()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(cluster.logs())


def test_on_a_secure_cluster_the_request_goes_with_the_join_token(tmp_path, request):
    """The new leader's door admits only the CURVE keys its configuration lists, and node5's new
    key was only in the truncated entry: the request is carried by a join-token connection, as a
    join is, and node5 comes back without the operator doing anything."""
    cluster = _secure_cluster(tmp_path, request)
    acked = _admitted_then_truncated(cluster)
    n5 = cluster.nodes["node5"]
    n5.resume()
    wait_until(lambda: ASKED in n5.log_text(), 60, what="node5 asking the new leader to admit it again")
    _back_as_voter(cluster, acked)


def test_on_a_secure_cluster_a_rotated_join_token_is_named_as_the_fix(tmp_path, request):
    """The join token node5 was started with was rotated while it was away: the request is refused
    at the door; node5 says so once in a while naming the fix (restart it with the current token),
    and after that restart it comes back."""
    cluster = _secure_cluster(tmp_path, request)
    acked = _admitted_then_truncated(cluster)
    others = [cluster.nodes[f"node{i}"] for i in (2, 3, 4)]
    with _client(cluster, [n.client for n in others]) as kv:
        new = kv.join_token_rotate()
    n5 = cluster.nodes["node5"]
    n5.resume()
    wait_until(lambda: "refused this join token" in n5.log_text(), 60,
               what="node5 saying the cluster refused its join token")
    line = next(x for x in n5.log_text().splitlines() if "refused this join token" in x)
    assert "ERROR" in line and "--token" in line, line
    assert "by incarnation" not in "".join(n.log_text() for n in others)  # not admitted meanwhile
    n5.kill()
    n5.token = new
    n5.start()
    _back_as_voter(cluster, acked)


def test_on_a_secure_cluster_a_node_restarted_without_its_token_names_the_fix(tmp_path, request):
    """node5 was restarted without --token after its admission was truncated (an operator dropped it
    from the command line: its data directory exists, so kvnode starts). It cannot ask to be
    admitted again: it logs an ERROR naming the fix (restart it with the current --token); the
    cluster is unchanged and keeps serving; after that restart it comes back."""
    cluster = _secure_cluster(tmp_path, request)
    acked = _admitted_then_truncated(cluster)
    others = [cluster.nodes[f"node{i}"] for i in (2, 3, 4)]
    n5 = cluster.nodes["node5"]
    n5.kill()
    before = len(n5.log_text())
    n5.token = ""  # no --token
    n5.start()
    wait_until(lambda: "started without --token" in n5.log_text()[before:], 60,
               what="node5 saying it cannot ask without its join token")
    line = next(x for x in n5.log_text()[before:].splitlines() if "started without --token" in x)
    assert "ERROR" in line and "restart this node with --token" in line and "current join token" in line, line
    members = _members(cluster)
    assert sorted(members) == ["node1", "node2", "node3", "node4", "node5"]
    assert "by incarnation" not in "".join(n.log_text() for n in others)  # not admitted meanwhile
    with _client(cluster, [n.client for n in others]) as kv:  # the cluster serves on
        kv.put("no-token", b"still serving")
        acked["no-token"] = b"still serving"
        for k, v in acked.items():
            assert kv.get(k) == v, k
    assert _members(cluster) == members and cluster.exited() == {}
    n5.kill()
    n5.token = None  # the cluster's join token
    n5.start()
    _back_as_voter(cluster, acked)
