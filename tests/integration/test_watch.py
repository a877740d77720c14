"""Watches with real nodes (issue 14): every write seen once and in order across kill -9 of the
leader and of the watched node, the compacted error, the HTTP stream and long poll, kvclient watch."""
from __future__ import annotations

import http.client
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest
import yaml

from raftkv.wire.client import Client, ClientError, Compacted

from .harness import KVCLIENT, ROOT, wait_until

pytestmark = pytest.mark.integration
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def start_with_history(make_cluster, revisions: int, **kw):
    """A cluster whose nodes keep ``revisions`` revisions of watch history."""
    c = make_cluster(start=False, **kw)
    doc = yaml.safe_load(c.config_path.read_text())
    doc["watch"] = {"history_revisions": revisions}
    c.config_path.write_text(yaml.safe_dump(doc))
    c.start()
    return c


class Writers:
    """Ten threads each writing its own keys w/T/I in order; ``acked`` holds what was acknowledged."""

    def __init__(self, servers: list, n: int = 10) -> None:
        self.servers = servers
        self.stop = threading.Event()
        self.acked: dict[int, list] = {t: [] for t in range(n)}
        self.threads = [threading.Thread(target=self._run, args=(t,), daemon=True) for t in range(n)]

    def _run(self, t: int) -> None:
        with Client(self.servers, timeout=20) as kv:
            i = 0
            while not self.stop.is_set():
                key = f"w/{t}/{i:05d}"
                try:
                    kv.put(key, f"{t}-{i}")
                    self.acked[t].append(key)
                except ClientError:
                    pass  # unknown outcome: it may or may not be applied (it is seen at most once)
                i += 1

    def __enter__(self) -> "Writers":
        for th in self.threads:
            th.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for th in self.threads:
            th.join(30)

    def count(self) -> int:
        return sum(len(v) for v in self.acked.values())


def test_a_watcher_sees_every_write_of_10_writers_in_order_across_kill_9_of_the_leader_and_of_its_node(cluster):
    leader = cluster.wait_leader()
    watched = next(n for n in cluster.nodes if n != leader)
    third = next(n for n in cluster.nodes if n not in (leader, watched))
    servers = [cluster.nodes[watched].client] + [cluster.nodes[n].client for n in (third, leader)]
    seen: list = []
    errors: list = []
    with Client(servers, timeout=20) as kv:
        kv.put("w/start", "0")
        w = kv.watch("w/")
        first = w.next_revision
        assert w.server == cluster.nodes[watched].client  # through a follower

        def consume() -> None:
            try:
                for ev in w:
                    seen.append(ev)
            except Exception as e:  # reported by the assertions below
                errors.append(e)

        reader = threading.Thread(target=consume, daemon=True)
        reader.start()
        with Writers(cluster.servers) as writers:
            wait_until(lambda: len(seen) >= 100, 30, what="the first events")
            cluster.nodes[leader].kill()  # kill -9 of the leader
            cluster.wait_leader(among=[watched, third])
            n = writers.count()
            wait_until(lambda: writers.count() >= n + 100, 60, what="writes under the new leader")
            cluster.nodes[leader].start()
            cluster.wait_applied(cluster.leader_status()["commit_index"], nodes=[leader])
            before = len(seen)
            cluster.nodes[watched].kill()  # kill -9 of the node the watcher watches through
            n = writers.count()
            wait_until(lambda: writers.count() >= n + 100 and len(seen) > before + 50, 60,
                       what="writes and events after the watched node died")
            cluster.nodes[watched].start()
            n = writers.count()
            wait_until(lambda: writers.count() >= n + 50, 60, what="writes after the restart")
        acked = {k for keys in writers.acked.values() for k in keys}
        wait_until(lambda: acked <= {e.key for e in seen}, 60, what="every acknowledged write watched")
        w.close()
        reader.join(10)
    assert not errors, errors
    revs = [e.revision for e in seen]
    assert revs == sorted(set(revs)) and revs[0] >= first  # in order, no duplicate
    keys = [e.key for e in seen]
    assert len(keys) == len(set(keys))  # each write once (each key is written once)
    for t in writers.acked:
        order = [k for k in keys if k.startswith(f"w/{t}/")]
        assert order == sorted(order)  # a writer's writes in its order
    # No gap: the node that was never restarted still holds the whole stretch; its history,
    # read in one go, is exactly what the watcher saw across both failovers.
    with Client([cluster.nodes[third].client], timeout=20) as kv3:
        ref: list = []
        with kv3.watch("w/", start_revision=first) as whole:
            for e in whole:
                ref.append(e)
                if e.revision >= revs[-1]:
                    break
    assert [(e.revision, e.key, e.value) for e in ref if e.revision <= revs[-1]] == \
        [(e.revision, e.key, e.value) for e in seen]
    for e in seen:
        if e.key != "w/start":
            t, i = e.key.split("/")[1:]
            assert e.type == "put" and e.value == f"{t}-{int(i)}".encode()


def test_a_watch_from_a_compacted_revision_gets_a_clear_error_and_restarts_from_its_revision(make_cluster):
    c = start_with_history(make_cluster, 20, http=True)
    c.wait_leader()
    with c.client() as kv:
        for i in range(60):
            kv.put(f"k{i:02d}", str(i))
        with pytest.raises(Compacted) as exc:
            kv.watch("k", start_revision=1)
        oldest = exc.value.revision
        assert oldest > 1 and f"restart the watch from revision {oldest}" in str(exc.value)
        with kv.watch("k", start_revision=oldest) as w:
            first = next(w)
        assert first.revision >= oldest and first.key.startswith("k")
    node = next(iter(c.nodes.values()))
    conn = http.client.HTTPConnection(node.http, timeout=10)
    conn.request("GET", "/watch/k?rev=1")
    r = conn.getresponse()
    body = json.loads(r.read())
    assert r.status == 410 and body["revision"] > 1 and "compacted" in body["error"]
    # A long poll from a compacted revision reads the key: it changed since, so it answers at once.
    conn.request("GET", "/kv/k05?wait_rev=1&timeout=10s")
    r = conn.getresponse()
    assert (r.status, r.read()) == (200, b"5") and int(r.getheader("X-Mod-Revision")) > 1


def _lines(resp, n: int) -> list:
    out = []
    while len(out) < n:
        line = resp.readline()
        assert line, "the stream ended early"
        out.append(json.loads(line))
    return out


def test_http_watch_stream_and_long_poll(make_cluster):
    c = make_cluster(http=True)
    c.wait_leader()
    node = c.nodes["node2"]
    with c.client() as kv:
        kv.put("cfg/a", "1")
        rev = kv.status()["applied_index"]
        conn = http.client.HTTPConnection(node.http, timeout=20)
        conn.request("GET", f"/watch/cfg/?rev={rev}")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("Transfer-Encoding") == "chunked"
        kv.put("other", "x")
        kv.put("cfg/b", b"\xff\x00")
        kv.delete("cfg/a")
        got = _lines(resp, 3)
        assert [(e["type"], e["key"]) for e in got] == [("put", "cfg/a"), ("put", "cfg/b"), ("delete", "cfg/a")]
        assert got[0]["value"] == "1" and got[1]["value_b64"] is True and "value" not in got[2]
        assert [e["revision"] for e in got] == sorted({e["revision"] for e in got})
        conn.close()

        # long poll: a change at or after wait_rev answers at once
        lp = http.client.HTTPConnection(node.http, timeout=20)
        lp.request("GET", f"/kv/cfg/b?wait_rev={got[1]['revision']}&timeout=5s")
        r = lp.getresponse()
        assert (r.status, r.read(), r.getheader("X-Mod-Revision")) == (200, b"\xff\x00", str(got[1]["revision"]))
        # ... and one after it waits for the next change
        nxt = int(kv.status()["applied_index"]) + 1

        def later() -> None:
            time.sleep(0.3)
            with c.client() as kv2:
                kv2.put("cfg/b", "new")

        threading.Thread(target=later, daemon=True).start()
        t0 = time.monotonic()
        lp.request("GET", f"/kv/cfg/b?wait_rev={nxt}&timeout=10s")
        r = lp.getresponse()
        assert (r.status, r.read()) == (200, b"new") and time.monotonic() - t0 < 9
        # a timeout is 204 with the revision it waited up to
        lp.request("GET", f"/kv/cfg/b?wait_rev={nxt + 1000}&timeout=500ms")
        r = lp.getresponse()
        assert r.status == 204 and r.read() == b"" and int(r.getheader("X-Raft-Revision")) >= nxt
        # bad or inapplicable parameters are 400, naming the problem
        for url, words in [("/kv/cfg/b?wait_rev=abc", "wait_rev must be a revision"),
                           ("/kv/cfg/b?timeout=5s", "give wait_rev"),
                           ("/kv/cfg/b?wait_rev=1&consistency=stale", "consistency does not apply"),
                           ("/kv/cfg/b?wait_rev=1&timeout=forever", "timeout must be a duration"),
                           ("/watch/cfg/?rev=1&x=1", "unknown query parameter 'x'"),
                           ("/watch/cfg/?rev=0", "rev must be a revision")]:
            lp.request("GET", url)
            r = lp.getresponse()
            body = json.loads(r.read())
            assert r.status == 400 and words in body["error"], (url, body)
        lp.close()


def test_kvclient_watch_prints_one_line_per_event_until_ctrl_c(cluster):
    cluster.wait_leader()
    servers = ",".join(cluster.servers)
    for as_json in (False, True):
        args = [sys.executable, str(KVCLIENT), "--servers", servers, "watch", "app/"] + (["--json"] if as_json else [])
        p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV,
                             preexec_fn=_sigint_as_at_a_terminal)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(x) for x in iter(p.stdout.readline, b"")], daemon=True).start()
        try:
            with cluster.client() as kv:
                # The watch starts once kvclient has connected: write until its first line shows.
                first = None
                for i in range(200):
                    kv.put(f"app/k{i}", f"v{i}")
                    kv.put("unrelated", "x")
                    try:
                        first = lines.get(timeout=0.1)
                        break
                    except queue.Empty:
                        assert p.poll() is None, p.stderr.read()
                assert first is not None, "no line"
                kv.delete("app/k0")
                more = [first]
                while b"delete" not in more[-1]:
                    more.append(lines.get(timeout=10))
            if as_json:
                objs = [json.loads(x) for x in more]
                assert all(o["key"].startswith("app/") for o in objs) and objs[-1]["type"] == "delete"
                assert objs[0]["type"] == "put" and objs[0]["value"].startswith("v")
            else:
                words = more[0].decode().split()
                assert int(words[0]) > 0 and words[1] == "put" and words[2].startswith("app/k")
                assert words[3].startswith("v")
                assert more[-1].decode().split()[1:] == ["delete", "app/k0"]
                assert all(b"unrelated" not in x for x in more)
        finally:
            p.send_signal(signal.SIGINT)
            assert p.wait(20) == 0


def _sigint_as_at_a_terminal() -> None:
    # A test suite started in the background (`cmd &` without job control, as CI may be) runs
    # with SIGINT ignored, and children inherit that: Python then installs no KeyboardInterrupt
    # handler and the Ctrl-C this test sends would be lost. A user's terminal delivers it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
