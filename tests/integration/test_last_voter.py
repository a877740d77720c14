"""Removing the last voter is refused (issue 11): a cluster without a voter never elects again."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from raftkv.wire.client import Refused

from .harness import KVCLIENT, ROOT

pytestmark = pytest.mark.integration


def test_removing_the_last_voter_is_refused_and_the_cluster_keeps_serving(make_cluster):
    cluster = make_cluster(1)
    only = cluster.wait_leader()
    with cluster.client(timeout=10) as kv:
        kv.put("x", b"1")
        with pytest.raises(Refused, match=f"refusing to remove {only}: it is the last voter"):
            kv.remove_node(only)
    r = subprocess.run([sys.executable, str(KVCLIENT), "--servers", ",".join(cluster.servers), "remove-node", only],
                       capture_output=True, text=True, timeout=30, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 1, r.stderr
    assert "last voter" in r.stderr
    assert cluster.nodes[only].alive()
    with cluster.client(timeout=10) as kv:
        assert [m["id"] for m in kv.members()] == [only]
        kv.put("x", b"2")
        assert kv.get("x") == b"2"
