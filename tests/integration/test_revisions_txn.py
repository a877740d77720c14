"""Revisions, transactions and compare-and-delete on real kvnode processes (issues 13 and 14):
what a user sees through the library, kvclient and HTTP, and that revisions are replicated state
(the same on every node, across a restart and a snapshot install)."""
from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
import threading

import pytest

from raftkv import txn as t
from raftkv.wire.client import Client, NotFound

from .harness import KVCLIENT, wait_until

pytestmark = pytest.mark.integration

SMALL = {"snapshot_threshold": 2000, "trailing_logs": 500}


def http_call(node, method, path, body=None):
    host, port = node.http.rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        c.request(method, path, body=body)
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        c.close()


def kvclient(cluster, *args, stdin=None):
    return subprocess.run([sys.executable, str(KVCLIENT), "--servers", ",".join(cluster.servers), *args],
                          input=stdin, capture_output=True, timeout=60)


def metas_on_every_node(cluster, keys):
    """node id -> key -> (value, create revision, mod revision, version), read from each node itself."""
    out = {}
    for nid, node in cluster.nodes.items():
        with Client([node.client], timeout=10) as c:
            out[nid] = {}
            for k in keys:
                m = c.get_meta(k, consistency="stale")
                out[nid][k] = (m.value, m.create_revision, m.mod_revision, m.version)
    return out


def test_revisions_everywhere_and_across_a_snapshot_install_and_a_restart(make_cluster):
    cluster = make_cluster(3, http=True, raft=SMALL)
    leader = cluster.nodes[cluster.wait_leader()]
    status, headers, _ = http_call(leader, "PUT", "/kv/k", b"one")
    assert status == 204
    created = int(headers["X-Raft-Revision"])
    status, headers, _ = http_call(leader, "PUT", "/kv/k", b"two")
    modified = int(headers["X-Raft-Revision"])
    assert modified > created > 0
    with cluster.client() as kv:
        m = kv.get_meta("k")
        assert (m.value, m.create_revision, m.mod_revision, m.version) == (b"two", created, modified, 2)
        assert m.revision >= modified
        assert kv.get("k", meta=True).mod_revision == modified
        kv.delete("k")
        kv.put("k", "three")  # a delete resets the version; the put creates the key again
        again = kv.get_meta("k")
        assert again.version == 1 and again.create_revision == again.mod_revision > modified
    r = kvclient(cluster, "get", "k", "--json")
    got = json.loads(r.stdout)
    assert r.returncode == 0 and got["value"] == "three" and got["version"] == 1
    assert got["create_revision"] == again.create_revision and got["revision"] >= again.mod_revision
    status, headers, body = http_call(leader, "GET", "/kv/k")
    assert (status, body, int(headers["X-Mod-Revision"]), int(headers["X-Version"])) == (
        200, b"three", again.mod_revision, 1)
    assert int(headers["X-Raft-Revision"]) >= again.mod_revision
    status, _, body = http_call(leader, "GET", "/kv/k?meta=1")
    assert status == 200 and json.loads(body)["create_revision"] == again.create_revision
    assert http_call(leader, "GET", "/kv/k?meta=maybe")[0] == 400

    # A follower misses more than a snapshot's worth of writes: it catches up by InstallSnapshot.
    lagger = cluster.nodes[next(n for n in cluster.nodes if n != leader.id)]
    lagger.kill(signal.SIGKILL)
    with cluster.client(timeout=30) as kv:
        kv.put_many((f"bulk{i:05d}", b"x") for i in range(3000))
        kv.put("k", "four")
        final = kv.get_meta("k")
    lagger.start()
    commit = leader.status()["commit_index"]
    wait_until(lambda: lagger.status()["applied_index"] >= commit, timeout=60, what="the lagger catching up")
    assert "from a snapshot" in lagger.log_text()  # brought up to date by InstallSnapshot, not the log alone
    keys = ["k", "bulk00000", "bulk02999"]
    before = metas_on_every_node(cluster, keys)
    assert before["node1"] == before["node2"] == before["node3"]
    assert before[lagger.id]["k"] == (b"four", again.create_revision, final.mod_revision, 2)

    for node in cluster.nodes.values():  # the whole cluster restarts
        node.kill(signal.SIGTERM)
    for node in cluster.nodes.values():
        node.start()
    cluster.wait_leader()
    # every node, from its own state (stale reads: each may take a moment to replay its log)
    wait_until(lambda: metas_on_every_node(cluster, keys) == before, timeout=30, what="the same revisions after a restart")


def test_a_txn_moves_a_value_atomically_while_readers_see_exactly_one(make_cluster):
    cluster = make_cluster(3)
    cluster.wait_leader()
    with cluster.client() as kv:
        kv.put("left", "token")
    stop = threading.Event()
    problems: list = []
    reads = [0]

    def reader() -> None:
        with cluster.client() as kv:
            while not stop.is_set():
                res = kv.txn(success=[t.get("left"), t.get("right")])
                found = [r.key for r in res.responses if r.found]
                if len(found) != 1:
                    problems.append((res.revision, found))
                reads[0] += 1

    readers = [threading.Thread(target=reader) for _ in range(3)]
    for r in readers:
        r.start()
    try:
        with cluster.client() as kv:
            for i in range(150):
                res = kv.txn(compare=[t.version("left") > 0],
                             success=[t.delete("left"), t.put("right", "token")],
                             failure=[t.delete("right"), t.put("left", "token")])
                assert res.succeeded == (i % 2 == 0)  # it alternates, so each branch ran as planned
                assert [r.type for r in res.responses] == ["delete", "put"] and res.responses[0].found
                assert res.responses[1].mod_revision == res.revision
        wait_until(lambda: reads[0] >= 100, timeout=30, what="readers reading")
    finally:
        stop.set()
        for r in readers:
            r.join()
    assert problems == []


def test_compare_and_delete_and_txn_through_library_kvclient_and_http(make_cluster):
    cluster = make_cluster(3, http=True)
    leader = cluster.nodes[cluster.wait_leader()]
    with cluster.client() as kv:
        kv.put("x", "1")
        assert kv.delete("x", expected="2") is False
        assert kv.get("x") == b"1"
        assert kv.delete("x", expected=b"1") is True
        with pytest.raises(NotFound):
            kv.get("x")
        assert kv.delete("x", expected="1") is False  # absent: nothing to delete
        kv.put("y", "v")
        kv.put("z", "zz")
    r = kvclient(cluster, "delete", "y", "--if-value", "w")
    assert r.returncode == 1 and b"compare failed" in r.stderr
    assert kvclient(cluster, "get", "y").stdout == b"v\n"
    assert kvclient(cluster, "delete", "y", "--if-value", "v").returncode == 0
    assert kvclient(cluster, "get", "y").returncode == 1
    status, _, _ = http_call(leader, "DELETE", "/kv/z?prev_value=nope")
    assert status == 412
    assert http_call(leader, "GET", "/kv/z")[2] == b"zz"
    assert http_call(leader, "DELETE", "/kv/z?prev_value=zz")[0] == 204
    assert http_call(leader, "GET", "/kv/z")[0] == 404

    script = b'version("a") = "0"\n\nput a "first value"\nget a\n\nget a\n'
    r = kvclient(cluster, "txn", stdin=script)
    assert (r.returncode, r.stdout) == (0, b"SUCCESS\nOK\na\nfirst value\n")
    r = kvclient(cluster, "txn", stdin=script)  # now a exists: the failure branch
    assert (r.returncode, r.stdout) == (0, b"FAILURE\na\nfirst value\n")
    r = kvclient(cluster, "txn", stdin=b'value(a) = "x"\n')
    assert r.returncode == 2 and b"line 1" in r.stderr

    body = {"compare": [{"target": "value", "key": "a", "result": "=", "value": "first value"}],
            "success": [{"op": "put", "key": "b", "value_b64": "/wA="}, {"op": "get", "key": "b"}]}
    status, headers, data = http_call(leader, "POST", "/txn", json.dumps(body).encode())
    res = json.loads(data)
    assert status == 200 and res["succeeded"] and int(headers["X-Raft-Revision"]) == res["revision"]
    assert res["responses"][1] == {"op": "get", "key": "b", "found": True, "value": "/wA=", "value_b64": True,
                                   "create_revision": res["revision"], "mod_revision": res["revision"],
                                   "version": 1}
    status, _, data = http_call(leader, "POST", "/txn", b'{"success": [{"op": "put", "key": "c"}]}')
    assert status == 400 and b"needs value" in data
    with cluster.client() as kv:
        assert kv.get("b") == b"\xff\x00"
        with pytest.raises(NotFound):
            kv.get("c")
