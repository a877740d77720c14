"""Helpers for secure clusters with HTTP gateways (tests and the secure_cost benchmark)."""
from __future__ import annotations

from .harness import Cluster, free_port


def with_http(cluster: Cluster) -> Cluster:
    """Give every node of a cluster started from flags (a SecureCluster) an HTTP gateway on a
    free port of its host, before it starts."""
    for i, n in enumerate(cluster.nodes.values(), start=1):
        if n.http is None:
            n.http = f"{cluster.host_for(i)}:{free_port()}"
            assert n.args is not None, "only nodes started from flags"
            n.args += ["--http", n.http]
    return cluster
