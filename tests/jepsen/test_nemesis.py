"""Jepsen-style fault tests on real kvnode processes: a short schedule per nemesis.

Each run (``tests/jepsen/runner.py``) drives concurrent clients through a nemesis, heals,
and asserts: the history is linearizable, every chosen kind of fault was injected, ops
succeeded while faults were being injected, the cluster serves reads and writes again after
the final heal, and no node exited on its own.  A failing run saves its history under /tmp
(replay: ``python -m tests.jepsen.checker FILE``) and keeps the node logs; both paths are in
the failure message.  Longer soaks: see the docstring of runner.py.

Partition tests need root and nftables: without them they FAIL (NftUnavailable), they do
not skip -- CI installs nftables (.ci/run).
"""
from __future__ import annotations

import random
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.jepsen import runner
from tests.jepsen.nemesis import (GROUPS, NEMESES, Firewall, bridge_cut, expand_nemeses,
                                  split_cut)

pytestmark = pytest.mark.integration


def _run(tmp_path, nemeses, nodes, duration, seed, **kw):
    lines = []
    res = runner.run(nemeses, nodes=nodes, duration_s=duration, seed=seed,
                     directory=tmp_path / "cluster", log=lines.append, **kw)
    print("\n".join(lines))
    print(res.summary())
    return res


def _assert_run(res: runner.RunResult) -> None:
    why = f"\n{res.summary()}\n--- nemesis timeline ---\n" + \
          "\n".join(f"+{t:7.2f}s {s}" for t, s in res.events)
    if not res.ok:
        why += f"\n--- node logs (tail) ---\n{res.log_tail}"
    assert res.linearizable is not None, "the checker gave no verdict in time" + why
    assert res.linearizable, "history is NOT linearizable" + why
    for kind in res.nemeses:
        assert res.faults[kind] > 0, f"no {kind} fault was injected" + why
    assert res.ops_during_faults > 0, "no op succeeded while faults were injected" + why
    assert res.live, "the cluster did not recover after the final heal" + why
    assert not res.crashed, f"nodes exited on their own: {res.crashed}" + why


# ---------------------------------------------------------------- real processes, real faults


def test_kill_3_nodes(tmp_path):
    _assert_run(_run(tmp_path, "kill-random,kill-leader", 3, 20, seed=11))


def test_wipe_3_nodes(tmp_path):
    """A node's disk wiped (kill -9, data directory deleted, restarted with --join): it is a new
    member, and every acknowledged write survives (the checker), with kills mixed in."""
    res = _run(tmp_path, "wipe-random,kill-random", 3, 20, seed=16)
    _assert_run(res)
    assert any("delete its data directory" in s for _, s in res.events)


def test_pause_3_nodes(tmp_path):
    _assert_run(_run(tmp_path, "pause-random,pause-leader", 3, 20, seed=12))


def test_partition_3_nodes(tmp_path):
    _assert_run(_run(tmp_path, "partition-leader,partition-halves,partition-bridge", 3, 20, seed=13))


def test_mix_5_nodes(tmp_path):
    _assert_run(_run(tmp_path, "kill-leader,pause-leader,partition-leader,partition-halves,partition-bridge",
                     5, 25, seed=14))


def test_stale_reads_are_caught(tmp_path):
    """The harness is not vacuous: reads served by any node's local state (``stale``) while
    the leader is cut off must make the checker fail."""
    res = _run(tmp_path, "partition-leader", 3, 6, seed=15, read_consistency="stale",
               history_dir=tmp_path / "histories")
    assert res.faults["partition-leader"] > 0
    assert res.linearizable is False, res.summary()
    assert res.history_path and res.cluster_dir  # a failing run keeps what is needed to replay it
    replay = subprocess.run([sys.executable, "-m", "tests.jepsen.checker", res.history_path],
                            capture_output=True, text=True, cwd=str(Path(__file__).parents[2]))
    assert replay.returncode == 1 and "NOT LINEARIZABLE" in replay.stdout, replay.stdout + replay.stderr


# ---------------------------------------------------------------- the pieces


def test_expand_nemeses():
    assert expand_nemeses("kill") == ["kill-random", "kill-leader"]
    assert expand_nemeses("partition-leader, kill-leader,partition") == [
        "partition-leader", "kill-leader", "partition-follower", "partition-halves", "partition-bridge"]
    assert expand_nemeses(["all"]) == list(NEMESES)
    assert set(GROUPS["all"]) == set(NEMESES)
    with pytest.raises(ValueError, match="unknown nemesis"):
        expand_nemeses("kill,flood")


def test_topologies():
    assert split_cut([["a"], ["b", "c"]]) == {("a", "b"), ("a", "c")}
    assert split_cut([["a", "b", "c"], ["d", "e"]]) == {
        ("a", "d"), ("a", "e"), ("b", "d"), ("b", "e"), ("c", "d"), ("c", "e")}
    rng = random.Random(3)
    nodes = ["n1", "n2", "n3", "n4", "n5"]
    for _ in range(20):
        bridge, a, b, cut = bridge_cut(nodes, rng)
        assert len(a) == len(b) == 2 and bridge not in a + b and set(a + b + [bridge]) == set(nodes)
        assert all(bridge not in pair for pair in cut) and len(cut) == 4
        # the bridge and each half form a majority; neither half does alone
        assert len(a) + 1 >= 3 and len(b) + 1 >= 3
    bridge, a, b, cut = bridge_cut(["n1", "n2", "n3"], rng)
    assert len(a) == len(b) == 1 and cut == {tuple(sorted(a + b))}


def _serve(ip: str):
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((ip, 0))
    srv.listen(8)

    def loop():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            c.close()
    threading.Thread(target=loop, daemon=True).start()
    return srv


def _reaches(src: str, dst: tuple) -> bool:
    s = socket.socket()
    s.settimeout(0.5)
    try:
        s.bind((src, 0))
        s.connect(dst)
        return True
    except OSError:
        return False
    finally:
        s.close()


def test_firewall_cuts_and_heals_links_between_loopback_ips():
    sr = random.SystemRandom()
    net = f"127.{sr.randint(1, 254)}.{sr.randint(1, 254)}"
    a, b, c = f"{net}.1", f"{net}.2", f"{net}.3"
    srv_b = _serve(b)
    try:
        dst = srv_b.getsockname()
        assert _reaches(a, dst) and _reaches(c, dst)
        with Firewall() as fw:
            table = fw.table
            fw.cut([(a, b)])
            assert not _reaches(a, dst), "the cut a-b did not drop a's packets to b"
            assert _reaches(c, dst), "the cut a-b also cut c-b"
            assert _reaches("127.0.0.1", dst), "clients (127.0.0.1) must reach every node"
            fw.heal()
            assert _reaches(a, dst)
        tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
        assert table not in tables, "the nftables table was not deleted"
    finally:
        srv_b.close()


def test_kill_and_pause_on_a_secure_cluster(tmp_path):
    # Issue 11: the nemesis once on a secure cluster (CurveZMQ doors, joins with a token, the
    # clients with the admin token): restarted nodes must get back in through their keys.
    _assert_run(_run(tmp_path, "kill-random,kill-leader,pause-leader", 3, 15, seed=23, secure=True))
