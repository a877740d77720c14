"""Prometheus metrics of one node (served by the HTTP gateway at /metrics)."""
from __future__ import annotations

from typing import Optional

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from .core import LEADER


class NodeMetrics:
    """Gauges read off the core after each batch of inputs; a private registry per node.

    ``observe`` runs in the role actor's thread only; ``render`` in the HTTP gateway's (the
    prometheus_client gauges lock their own values).
    """

    def __init__(self, node_id: str) -> None:
        self.registry = CollectorRegistry()
        labels = {"node": node_id}

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, ["node"], registry=self.registry).labels(**labels)

        self.term = gauge("raft_term", "Current Raft term")
        self.commit = gauge("raft_commit_index", "Highest log index known committed")
        self.applied = gauge("raft_applied_index", "Highest log index applied to the key-value state")
        self.last = gauge("raft_last_log_index", "Last index in this node's log")
        self.leader = gauge("raft_is_leader", "1 if this node is the leader")
        self._last_seen: Optional[tuple] = None

    def observe(self, core, applied: int) -> None:  # noqa: ANN001
        """Set the gauges from the role actor's core and the FSM's published applied index."""
        snap = (core.term, core.commit, applied, core.log.last_index(), core.role)
        if snap == self._last_seen:
            return
        self._last_seen = snap
        self.term.set(core.term)
        self.commit.set(core.commit)
        self.applied.set(applied)
        self.last.set(core.log.last_index())
        self.leader.set(1 if core.role == LEADER else 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
