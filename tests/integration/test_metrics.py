"""Observability of a real cluster: /metrics parsed with prometheus_client's own parser, and the
WARNING lines an operator relies on when a peer goes away and comes back."""
from __future__ import annotations

import http.client
import re

from prometheus_client.parser import text_string_to_metric_families

from raftkv.actors.metrics import METRIC_NAMES
from raftkv.wire.client import Client

from .harness import wait_until


def http_request(addr: str, method: str, path: str, body: bytes = None) -> tuple[int, bytes]:
    host, port = addr.rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        c.request(method, path, body=body)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def scrape(addr: str) -> dict:
    """name -> list of (labels, value) of every sample, names as the parser gives them."""
    code, body = http_request(addr, "GET", "/metrics")
    assert code == 200
    out: dict = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def value(samples: dict, name: str, **labels: str) -> float:
    matching = [v for lab, v in samples.get(name, []) if all(lab.get(k) == w for k, w in labels.items())]
    assert matching, f"no sample {name} {labels}"
    return sum(matching)


def test_metrics_of_a_working_cluster(make_cluster):
    c = make_cluster(3, http=True)
    leader = c.wait_leader()
    lnode = c.nodes[leader]
    with c.client() as kv:
        for i in range(20):
            kv.put(f"k{i}", b"v")
        assert kv.get("k1") == b"v"
        kv.snapshot()
    for i in range(5):
        assert http_request(lnode.http, "PUT", f"/kv/h{i}", b"x")[0] == 204
    assert http_request(lnode.http, "GET", "/kv/h1") == (200, b"x")
    assert http_request(lnode.http, "GET", "/kv/nope")[0] == 404

    def scraped_with_peers() -> dict:
        s = scrape(lnode.http)
        rtts = [v for _, v in s.get("raftkv_peer_round_trip_seconds", [])]
        matches = [v for _, v in s.get("raftkv_peer_match_index", [])]
        done = len(rtts) == 2 and len(matches) == 2 and min(matches) >= 26
        return s if done and value(s, "raftkv_snapshots_total") >= 1 else None

    s = wait_until(scraped_with_peers, what="per-peer gauges and the snapshot on the leader's /metrics")
    for name in METRIC_NAMES:
        base = name[:-len("_total")] if name.endswith("_total") else name
        assert name in s or base + "_bucket" in s or base + "_count" in s, f"{name} missing from /metrics"
    assert value(s, "raftkv_is_leader", node=leader) == 1
    assert value(s, "raftkv_role", node=leader, role="leader") == 1
    assert value(s, "raftkv_term") >= 1
    assert value(s, "raftkv_leader_changes_total") >= 1
    assert value(s, "raftkv_commit_index") >= 26 and value(s, "raftkv_last_log_index") >= 26
    assert value(s, "raftkv_apply_lag_entries") >= 0
    assert value(s, "raftkv_http_requests_total", op="put", code="204") == 5
    assert value(s, "raftkv_http_requests_total", op="get", code="404") == 1
    assert value(s, "raftkv_http_request_duration_seconds_count", op="put") == 5
    assert value(s, "raftkv_client_requests_total", op="put") >= 20
    assert value(s, "raftkv_client_replies_total", status="ok") >= 20
    assert value(s, "raftkv_log_fsync_seconds_count") >= 1
    assert value(s, "raftkv_log_batch_entries_sum") >= 20
    assert value(s, "raftkv_read_index_rounds_total") >= 1
    assert value(s, "raftkv_snapshot_size_bytes") > 0
    assert value(s, "raftkv_snapshot_duration_seconds_count") >= 1
    assert value(s, "raftkv_sessions") >= 1
    assert value(s, "raftkv_quorum_reachable") == 1
    for peer in (n for n in c.nodes if n != leader):
        assert value(s, "raftkv_peer_match_index", peer=peer) >= 26
        assert value(s, "raftkv_peer_reachable", peer=peer) == 1
        assert 0 < value(s, "raftkv_peer_round_trip_seconds", peer=peer) < 5
        assert value(s, "raftkv_peer_last_contact_seconds", peer=peer) < 5
    assert value(s, "process_resident_memory_bytes") > 0 and value(s, "process_open_fds") > 0
    # A follower reports its own view: not leading, the same commit, the leader's contact.
    follower = next(n for n in c.nodes if n != leader)
    fs = wait_until(lambda: (lambda x: x if value(x, "raftkv_applied_index") >= 26 else None)(
        scrape(c.nodes[follower].http)), what="the follower applying the writes")
    assert value(fs, "raftkv_is_leader") == 0
    assert value(fs, "raftkv_peer_last_contact_seconds", peer=leader) < 5


def test_unreachable_peer_is_warned_once_and_its_return_too(make_cluster):
    c = make_cluster(3)
    leader = c.wait_leader()
    victim = next(n for n in c.nodes if n != leader)
    lnode = c.nodes[leader]
    c.nodes[victim].kill()
    gone = re.compile(rf"WARNING.*{leader}: peer {victim} unreachable in term \d+")
    wait_until(lambda: gone.search(lnode.log_text()), what="the unreachable warning")
    with c.client() as kv:  # the two others still form a quorum: no quorum warning
        kv.put("during", b"1")
    c.nodes[victim].start()
    back = re.compile(rf"WARNING.*{leader}: peer {victim} returned in term \d+")
    wait_until(lambda: back.search(lnode.log_text()), what="the returned warning")
    text = lnode.log_text()
    assert len(gone.findall(text)) == 1, text
    assert "quorum lost" not in text


def test_lost_quorum_is_warned_by_the_leader_and_its_return(make_cluster):
    c = make_cluster(3)
    leader = c.wait_leader()
    lnode = c.nodes[leader]
    others = [n for n in c.nodes if n != leader]
    for n in others:
        c.nodes[n].kill()
    lost = re.compile(rf"WARNING.*{leader}: quorum lost in term \d+")
    wait_until(lambda: lost.search(lnode.log_text()), what="the quorum lost warning")
    for n in others:
        c.nodes[n].start()
    wait_until(lambda: re.search(rf"WARNING.*{leader}: quorum regained in term \d+", lnode.log_text()),
               what="the quorum regained warning")
    assert len(lost.findall(lnode.log_text())) == 1


def _histogram(s: dict, name: str, **labels: str) -> tuple[list, float, float]:
    """(cumulative bucket counts in bound order, count, sum) of one labelled histogram."""
    buckets = sorted(((float(lab["le"]), v) for lab, v in s.get(name + "_bucket", [])
                      if all(lab.get(k) == w for k, w in labels.items())))
    return [v for _, v in buckets], value(s, name + "_count", **labels), value(s, name + "_sum", **labels)


def test_request_latency_histograms_by_op_at_the_client_door_and_the_gateway(make_cluster):
    c = make_cluster(1, http=True)  # one node: each request is answered by the door it reached
    c.wait_leader()
    n = c.nodes["node1"]
    sent = {"put": 3, "get": 2, "delete": 1, "cas": 2, "list": 1}
    with Client([n.client], timeout=10) as kv:
        for i in range(sent["put"]):
            kv.put(f"k{i}", b"v")
        for _ in range(sent["get"]):
            assert kv.get("k0") == b"v"
        kv.delete("k2")
        assert kv.cas("k0", b"v", b"w") and not kv.cas("k0", b"nope", b"x")
        assert len(kv.list("k")) == 2
    for i in range(2):
        assert http_request(n.http, "PUT", f"/kv/h{i}", b"x")[0] == 204
    assert http_request(n.http, "GET", "/kv/h1") == (200, b"x")
    assert http_request(n.http, "DELETE", "/kv/h0")[0] == 204
    s = scrape(n.http)
    for op, count in sent.items():
        buckets, total, seconds = _histogram(s, "raftkv_client_request_duration_seconds", op=op)
        assert total == count and buckets[-1] == count, (op, buckets, total)
        assert buckets == sorted(buckets) and 0 < seconds < 10 * count, (op, buckets, seconds)
    for op, count in {"put": 2, "get": 1, "delete": 1}.items():
        buckets, total, seconds = _histogram(s, "raftkv_http_request_duration_seconds", op=op)
        assert total == count and buckets[-1] == count and seconds > 0, (op, buckets, total)
    # requests that went through the gateway are not counted again at the client door
    assert _histogram(s, "raftkv_client_request_duration_seconds", op="put")[1] == sent["put"]
