"""bin/kvbench snapshot against its own real kvnode processes: the JSON report is complete and sane.

No speed is asserted: these machines are shared and slow; only that every step happened.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
KVBENCH = ROOT / "bin" / "kvbench"


def test_snapshot_json(tmp_path):
    # TMPDIR: the benchmark's own cluster directory goes under the test's tmp_path.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path)}
    env.pop("KV_SERVERS", None)
    keys = 2000
    p = subprocess.run([sys.executable, str(KVBENCH), "snapshot", "--keys", str(keys), "--baseline", "2", "--json"],
                       capture_output=True, text=True, timeout=300, env=env, cwd=str(ROOT))
    assert p.returncode == 0, f"kvbench snapshot exited {p.returncode}\n{p.stdout}\n{p.stderr}"
    lines = [ln for ln in p.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, f"--json must print one JSON object, got:\n{p.stdout}"
    rep = json.loads(lines[0])

    assert rep["config"]["keys"] == keys and rep["config"]["raft"]["snapshot_threshold"] >= 10**9
    pre = rep["preload"]
    assert pre["keys"] == keys and pre["seconds"] > 0 and pre["keys_per_sec"] > 0

    ls, fs = rep["leader_snapshot"], rep["follower_snapshot"]
    assert ls["seconds"] > 0 and ls["index"] > keys  # preload entries plus the leader's no-op
    assert ls["keys"] is None or ls["keys"] >= keys
    assert fs["seconds"] > 0 and fs["index"] >= ls["index"] and fs["node"] != ls["node"]

    r = rep["restart"]
    assert r["node"] == fs["node"]
    assert 0 < r["answering_s"] <= r["caught_up_s"]
    assert r["caught_up_index"] >= fs["index"]
    # The restarted follower opened its key-value store at (at least) the snapshot it took.
    assert r["restored_index"] >= fs["index"] and r["restore_s"] >= 0

    j = rep["join"]
    assert j["node"] == "node4"
    assert 0 < j["voter_s"] <= j["caught_up_s"]
    assert j["caught_up_index"] >= ls["index"]
    # trailing_logs is below the preload, so the joiner needed a snapshot from the leader.
    assert j["snapshot_index"] is not None and j["snapshot_index"] >= ls["index"]
    assert j["snapshot_bytes"] > 0 and j["snapshot_receive_s"] >= 0

    lat = rep["write_latency"]
    for name in ("baseline", "during_leader_snapshot", "during_follower_snapshot", "during_restart",
                 "during_join"):
        w = lat[name]
        assert w["seconds"] > 0 and w["failed"] >= 0, name
        if w["writes"]:
            assert 0 < w["p50_ms"] <= w["p99_ms"] <= w["max_ms"], (name, w)
    assert lat["baseline"]["writes"] > 0 and lat["during_leader_snapshot"]["writes"] > 0
    assert rep["writes_ok"] > 0
    assert rep["dir"] is None
    assert not list(tmp_path.glob("kvbench-snapshot-*")), "the cluster directory must be removed"
