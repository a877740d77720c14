"""bin/kvbench against real kvnode processes: the JSON reports are complete and sane.

No speed is asserted: these machines are shared and slow; only that work was done.
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


def _run(args: list, timeout: float, **extra_env: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **extra_env}
    env.pop("KV_SERVERS", None)
    p = subprocess.run([sys.executable, str(KVBENCH), *args], capture_output=True, text=True,
                       timeout=timeout, env=env, cwd=str(ROOT))
    assert p.returncode == 0, f"kvbench {' '.join(args)} exited {p.returncode}\n{p.stdout}\n{p.stderr}"
    lines = [ln for ln in p.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, f"--json must print one JSON object, got:\n{p.stdout}"
    return json.loads(lines[0])


def test_load_json(make_cluster):
    cluster = make_cluster(3)
    cluster.wait_leader()
    rep = _run(["load", "--servers", ",".join(cluster.servers), "--duration", "1", "--clients", "2",
                "--keys", "50", "--json"], timeout=120)
    assert rep["ops"] > 0
    assert rep["ops"] == rep["reads"] + rep["writes"]
    assert rep["ops_per_sec"] > 0
    assert rep["errors"] >= 0 and rep["clients_failed"] == 0
    assert rep["config"]["clients"] == 2 and rep["config"]["servers"] == cluster.servers
    lat = rep["latency_ms"]["all"]
    assert lat["count"] == rep["ops"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    for op in ("read", "write"):
        d = rep["latency_ms"][op]
        if d["count"]:
            assert 0 < d["p50"] <= d["max"]
    assert rep["timeline"] and sum(r["reads"] + r["writes"] for r in rep["timeline"]) == rep["ops"]


def test_failover_json(tmp_path):
    # TMPDIR: the benchmark's own cluster directory goes under the test's tmp_path.
    rep = _run(["failover", "--reps", "1", "--json"], timeout=240, TMPDIR=str(tmp_path))
    assert rep["nodes"] == 3 and rep["reps"] == 1
    assert len(rep["trials"]) == 1
    t = rep["trials"][0]
    assert t["failover_s"] > 0
    assert t["killed"] != t["new_leader"]
    assert t["new_term"] > t["old_term"]
    assert t["catchup_s"] >= 0
    f = rep["failover_s"]
    assert f["min"] == f["max"] == f["median"] == t["failover_s"]
    assert rep["unexpected_elections"] >= 0
    assert rep["writes_ok"] > 0
