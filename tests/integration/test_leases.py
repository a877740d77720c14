"""Leases with real kvnode processes (issue 14): expiry of a dead holder's lease within TTL plus
one election timeout, a kept-alive lease across leader failovers, leases across restarts and
InstallSnapshot, and the kvclient and HTTP surfaces."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request

import pytest

from raftkv.wire.client import Client, InvalidRequest, NotFound

from .harness import KVCLIENT, ROOT, wait_until

ELECTION_MAX = 0.6  # raft.election_timeout_ms default [300, 600]


def _present_everywhere(cluster, key: str) -> list:
    """The nodes whose own copy (a stale read) still holds ``key``."""
    out = []
    for nid, n in cluster.nodes.items():
        with Client([n.client], timeout=2) as c:
            try:
                c.get(key, consistency="stale")
                out.append(nid)
            except NotFound:
                pass
    return out


HOLDER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    from raftkv import Client
    kv = Client({servers!r}, timeout=5)
    lease = kv.lease(ttl={ttl})
    kv.put("svc/a", b"1", lease=lease.id)
    kv.put("svc/b", b"2", lease=lease.id)
    print(lease.id, flush=True)
    while True:
        time.sleep(1)
""")


def test_a_killed_holders_lease_expires_within_ttl_and_an_election_timeout_on_every_node(cluster):
    cluster.wait_leader()
    ttl = 3
    src = HOLDER.format(root=str(ROOT), servers=cluster.servers, ttl=ttl)
    holder = subprocess.Popen([sys.executable, "-c", src], stdout=subprocess.PIPE, text=True)
    try:
        lease_id = int(holder.stdout.readline())
        # it stays while the holder lives, well past one TTL
        with cluster.client() as kv:
            wait_until(lambda: len(_present_everywhere(cluster, "svc/b")) == 3, what="keys on every node")
            t_end = time.monotonic() + 2 * ttl
            while time.monotonic() < t_end:
                assert kv.get("svc/a") == b"1"
                time.sleep(0.2)
            holder.send_signal(signal.SIGKILL)
            holder.wait()
            killed = time.monotonic()
            gone = wait_until(lambda: (not _present_everywhere(cluster, "svc/a")
                                       and not _present_everywhere(cluster, "svc/b")) and time.monotonic(),
                              timeout=3 * ttl, interval=0.05, what="the dead holder's keys gone everywhere")
            took = gone - killed
            # The last keepalive was at most ttl/3 before the kill: never expired before 2/3 TTL;
            # at most TTL + one election timeout (plus the expiry check and the commit) after.
            assert 2 * ttl / 3 - 0.2 <= took <= ttl + ELECTION_MAX + 0.7, took
            with pytest.raises(NotFound):
                kv.lease_ttl(lease_id)
            assert all(x["id"] != lease_id for x in kv.lease_list())
    finally:
        holder.kill()
        holder.wait()


def test_a_kept_alive_lease_survives_five_leader_failovers(cluster):
    cluster.wait_leader()
    with cluster.client(timeout=15) as kv:
        with kv.lease(ttl=3) as lease:
            kv.put("owner", b"me", lease=lease.id)
            for i in range(5):
                old = cluster.wait_leader()
                term = cluster.nodes[old].status()["term"]
                cluster.nodes[old].kill(signal.SIGKILL)
                wait_until(lambda: cluster.leader_status(min_term=term + 1), what=f"a new leader (failover {i})")
                cluster.nodes[old].start()
                # the key outlives more than a TTL after each failover
                t_end = time.monotonic() + 3.5
                while time.monotonic() < t_end:
                    assert kv.get("owner") == b"me", f"lease lost after failover {i}"
                    assert lease.alive, f"lease lost after failover {i}"
                    time.sleep(0.25)
            info = kv.lease_ttl(lease.id)
            assert info["keys"] == ["owner"] and 0 < info["remaining"] <= 3 + ELECTION_MAX
        # closing the handle revokes it: the key goes with it
        with pytest.raises(NotFound):
            kv.get("owner")


def test_leases_survive_a_restart_and_reach_a_follower_through_install_snapshot(make_cluster):
    cluster = make_cluster(3, raft={"snapshot_threshold": 200, "trailing_logs": 50})
    leader = cluster.wait_leader()
    lagger = next(n for n in cluster.nodes if n != leader)
    with cluster.client() as kv:
        lease_id = kv.lease_grant(600)
        kv.put("k1", b"1", lease=lease_id)
        cluster.nodes[lagger].kill(signal.SIGKILL)
        kv.put("k2", b"2", lease=lease_id)
        kv.put_many((f"fill{i}", b"x") for i in range(1200))
        commit = cluster.nodes[cluster.leader()].status()["commit_index"]
        cluster.nodes[lagger].start()
        cluster.wait_applied(commit, nodes=[lagger])
        assert "installed snapshot" in cluster.nodes[lagger].log_text()
        # the follower that got the state by InstallSnapshot leads, and knows the lease
        kv.transfer_leader(lagger)
        wait_until(lambda: cluster.leader() == lagger, what=f"{lagger} leading")
        info = wait_until(lambda: kv.lease_ttl(lease_id), what="the lease on the new leader")
        assert info["keys"] == ["k1", "k2"] and info["ttl"] == 600
        # a whole-cluster restart keeps it too
        cluster.stop()
        cluster.start()
        cluster.wait_leader()
        info = wait_until(lambda: kv.lease_ttl(lease_id), what="the lease after a restart")
        assert info["keys"] == ["k1", "k2"]
        # get and list never show the lease table
        assert [k for k, _ in kv.list("k")] == ["k1", "k2"]
        kv.lease_revoke(lease_id)
        wait_until(lambda: not _present_everywhere(cluster, "k2"), what="k2 revoked everywhere")
        assert _present_everywhere(cluster, "fill7") == sorted(cluster.nodes)
        with pytest.raises(InvalidRequest, match=f"lease {lease_id} not found"):
            kv.put("k3", b"3", lease=lease_id)


def _kvclient(cluster, *args):
    return subprocess.run([sys.executable, str(KVCLIENT), "--servers", ",".join(cluster.servers), *args],
                          capture_output=True, text=True, timeout=60)


def test_kvclient_lease_commands(cluster):
    cluster.wait_leader()
    p = _kvclient(cluster, "lease", "grant", "30")
    assert p.returncode == 0, p.stderr
    lid = p.stdout.split()[-1]
    assert _kvclient(cluster, "put", "x", "1", "--lease", lid).returncode == 0
    p = _kvclient(cluster, "lease", "ttl", lid, "--json")
    info = json.loads(p.stdout)
    assert info["keys"] == ["x"] and 0 < info["remaining"] <= 30
    assert [x["id"] for x in json.loads(_kvclient(cluster, "lease", "list", "--json").stdout)] == [int(lid)]
    assert _kvclient(cluster, "lease", "keepalive", lid).returncode == 0
    assert _kvclient(cluster, "lease", "revoke", lid).returncode == 0
    p = _kvclient(cluster, "get", "x")
    assert p.returncode == 1
    p = _kvclient(cluster, "lease", "keepalive", lid)
    assert p.returncode == 1 and f"lease {lid}" in p.stderr
    p = _kvclient(cluster, "put", "y", "1", "--lease", lid)
    assert p.returncode == 2 and "not found" in p.stderr
    assert _kvclient(cluster, "lease", "grant", "0").returncode == 2


def _http(method: str, url: str, body: bytes = None):
    req = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_http_lease_routes(make_cluster):
    cluster = make_cluster(3, http=True)
    leader = cluster.wait_leader()
    follower = next(n for n in cluster.nodes.values() if n.id != leader)
    h = f"http://{follower.http}"  # a follower forwards to the leader
    st, body = _http("POST", h + "/lease", b'{"ttl": 20}')
    assert st == 200, body
    lid = json.loads(body)["id"]
    assert _http("PUT", h + f"/kv/hk?lease={lid}", b"v")[0] == 204
    lh = f"http://{cluster.nodes[leader].http}"  # the leader's in-process path
    assert _http("PUT", lh + f"/kv/hk2?lease={lid}", b"v")[0] == 204
    st, body = _http("PUT", lh + "/kv/hk3?lease=999999", b"v")
    assert st == 400 and b"lease 999999 not found" in body
    st, body = _http("GET", h + f"/lease/{lid}")
    assert st == 200 and json.loads(body)["keys"] == ["hk", "hk2"]
    assert [x["id"] for x in json.loads(_http("GET", h + "/lease")[1])["leases"]] == [lid]
    assert _http("POST", h + f"/lease/{lid}/keepalive") == (200, json.dumps({"id": lid, "ttl": 20}).encode())
    st, body = _http("PUT", h + "/kv/other?ttl=5", b"v")
    assert st == 400 and b"POST /lease" in body
    assert _http("PUT", h + "/kv/other?lease=x", b"v")[0] == 400
    st, body = _http("PUT", h + "/kv/other?lease=999999", b"v")
    assert st == 400 and b"lease 999999 not found" in body
    assert _http("POST", h + "/lease", b'{"ttl": -1}')[0] == 400
    assert _http("GET", h + "/lease?x=1")[0] == 400
    assert _http("DELETE", h + f"/lease/{lid}")[0] == 204
    assert _http("GET", h + "/kv/hk")[0] == 404 and _http("GET", lh + "/kv/hk2")[0] == 404
    st, body = _http("DELETE", h + f"/lease/{lid}")
    assert st == 404 and b"lease" in body
    assert _http("GET", h + "/kv/other")[0] == 404  # nothing was written by the refused PUTs
    assert _http("GET", lh + "/kv/hk3")[0] == 404


def test_a_lease_handle_notices_when_its_lease_is_gone(cluster):
    cluster.wait_leader()
    with cluster.client() as kv, cluster.client() as other:
        lease = kv.lease(ttl=1)
        kv.put("mine", b"1", lease=lease.id)
        other.lease_revoke(lease.id)  # e.g. an operator, or an expiry while the holder was paused
        wait_until(lambda: lease.lost.is_set(), timeout=5, what="the handle to notice")
        assert not lease.alive
        with pytest.raises(NotFound):
            kv.get("mine")
        lease.close()  # nothing left to revoke: no error
