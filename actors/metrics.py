"""Prometheus metrics of one node (served by the HTTP gateway at /metrics).

Names follow Prometheus conventions: a ``raftkv_`` prefix, the unit in the name (``_seconds``,
``_bytes``, ``_entries``), ``_total`` on counters, histograms for latencies; every raftkv
series carries a ``node`` label. The process collector adds the standard ``process_*``
series (CPU seconds, resident memory, open file descriptors).

Cost on the hot path: the role actor publishes one tuple per Ready (:meth:`NodeMetrics.observe`,
a tuple comparison when nothing changed; the gauges read it when scraped) and sets per-peer
gauges every PEER_EVERY_TICKS ticks (:meth:`NodeMetrics.on_tick`); the log writer, the front
door and the HTTP gateway keep plain, lock-free statistics (wire/stats.py) that
:class:`_WireCollector` reads only when scraped.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Optional

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

from raftkv.wire.stats import Histogram as WireHistogram

from .core import CANDIDATE, FOLLOWER, LEADER, PRE_CANDIDATE

ROLES = (FOLLOWER, PRE_CANDIDATE, CANDIDATE, LEADER)
PEER_EVERY_TICKS = 10  # per-peer gauges and health checks: every 100 ms, not every 10 ms tick
_ROUNDS_KEPT = 64  # heartbeat rounds remembered for round-trip times
SNAPSHOT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

# Every metric name this module exports (without the _bucket/_sum/_count/_created suffixes
# the exposition format adds), for the dashboard's and the integration test's checks.
METRIC_NAMES = (
    "raftkv_term", "raftkv_role", "raftkv_is_leader", "raftkv_leader_changes_total", "raftkv_elections_started_total",
    "raftkv_commit_index", "raftkv_applied_index", "raftkv_last_log_index", "raftkv_apply_lag_entries",
    "raftkv_peer_match_index", "raftkv_peer_last_contact_seconds", "raftkv_peer_round_trip_seconds",
    "raftkv_peer_reachable", "raftkv_quorum_reachable",
    "raftkv_log_fsync_seconds", "raftkv_log_batch_entries",
    "raftkv_http_requests_total", "raftkv_http_request_duration_seconds",
    "raftkv_client_requests_total", "raftkv_client_replies_total", "raftkv_client_request_duration_seconds",
    "raftkv_read_index_rounds_total", "raftkv_reads_failed_total",
    "raftkv_snapshots_total", "raftkv_snapshot_size_bytes", "raftkv_snapshot_duration_seconds",
    "raftkv_snapshot_transfers_total", "raftkv_sessions",
    "process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds",
)


class NodeMetrics:
    """The metrics of one node, in a private registry (several nodes may share a process in tests).

    ``observe``, ``on_tick``, ``on_role_change`` and the event methods run in the role actor's
    thread only; ``render`` in the HTTP gateway's (prometheus_client's metrics lock their own
    values, and the wire statistics are read as described in wire/stats.py).
    """

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.registry = reg = CollectorRegistry()
        node = {"node": node_id}

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, ["node"], registry=reg).labels(**node)

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, ["node"], registry=reg).labels(**node)

        self.term = gauge("raftkv_term", "Current Raft term")
        role = Gauge("raftkv_role", "1 for the role this node is in, 0 for the others", ["node", "role"], registry=reg)
        self.roles = {r: role.labels(node_id, r) for r in ROLES}
        self.leader = gauge("raftkv_is_leader", "1 if this node is the leader")
        self.leader_changes = counter("raftkv_leader_changes", "Times this node saw a new leader (a new term's leader)")
        elections = Counter("raftkv_elections_started", "Campaigns this node started, by kind (pre_vote, then vote)",
                            ["node", "kind"], registry=reg)
        self.elections = {PRE_CANDIDATE: elections.labels(node_id, "pre_vote"),
                          CANDIDATE: elections.labels(node_id, "vote")}
        self.commit = gauge("raftkv_commit_index", "Highest log index known committed")
        self.applied = gauge("raftkv_applied_index", "Highest log index applied to the key-value state")
        self.last = gauge("raftkv_last_log_index", "Last index in this node's log")
        self.lag = gauge("raftkv_apply_lag_entries", "Committed entries not yet applied (commit - applied)")
        self._peer_match = Gauge("raftkv_peer_match_index", "Leader only: highest index known replicated on the peer",
                                 ["node", "peer"], registry=reg)
        self._peer_contact = Gauge("raftkv_peer_last_contact_seconds", "Seconds since this node last heard from "
                                   "the peer (the leader hears from every peer; a follower from the leader)",
                                   ["node", "peer"], registry=reg)
        self._peer_rtt = Gauge("raftkv_peer_round_trip_seconds", "Leader only: time from a heartbeat round's start "
                               "to the peer's acknowledgement of it (the most recent one)", ["node", "peer"],
                               registry=reg)
        self._peer_up = Gauge("raftkv_peer_reachable", "Leader only: 1 while the peer answers, 0 once it has been "
                              "silent longer than the unreachable threshold", ["node", "peer"], registry=reg)
        self.quorum = gauge("raftkv_quorum_reachable", "Leader only: 1 while a quorum of voters answers")
        self.read_rounds = counter("raftkv_read_index_rounds", "Batches of linearizable reads confirmed "
                                   "(one ReadIndex round, or one answer to a forwarded ReadIndex request)")
        self.reads_failed = counter("raftkv_reads_failed", "Linearizable reads that could not be confirmed "
                                    "(leadership lost, or no answer from the leader): the client retries")
        self.snapshots = counter("raftkv_snapshots", "Snapshots this node wrote")
        self.snapshot_size = gauge("raftkv_snapshot_size_bytes", "Size of the newest snapshot")
        self.snapshot_seconds = Histogram("raftkv_snapshot_duration_seconds", "Time to write a snapshot",
                                          ["node"], buckets=SNAPSHOT_BUCKETS, registry=reg).labels(**node)
        transfers = Counter("raftkv_snapshot_transfers", "Snapshot transfers: sent (started to a follower), "
                            "received (complete, from the leader), failed (could not be read for a follower)",
                            ["node", "direction"], registry=reg)
        self.transfers = {d: transfers.labels(node_id, d) for d in ("sent", "received", "failed")}
        self.sessions = gauge("raftkv_sessions", "Client sessions the state machine remembers (exactly-once writes)")
        ProcessCollector(registry=reg)
        self.wire = _WireCollector(node_id)
        reg.register(self.wire)
        self._last_seen: Optional[tuple] = None
        self._bind_gauges()
        self._leader_seen: Optional[tuple] = None  # (term, leader) of the newest leader seen
        self._peers: set = set()
        self._round = 0
        self._round_at: dict[int, float] = {}
        self._acked: dict[str, int] = {}
        self._rtt: dict[str, float] = {}

    def _bind_gauges(self) -> None:
        # The per-Ready gauges are computed from observe()'s snapshot (term, commit, applied,
        # last, role, leader) when scraped; a tuple reference is read atomically by the
        # scraping thread. Before the first Ready they read 0, as unset gauges did.
        def field(i: int) -> Callable[[], float]:
            return lambda: self._last_seen[i] if self._last_seen is not None else 0

        def role_is(r: Any) -> Callable[[], float]:
            return lambda: 1 if self._last_seen is not None and self._last_seen[4] == r else 0

        def lag() -> float:
            s = self._last_seen
            return max(0, s[1] - s[2]) if s is not None else 0

        self.term.set_function(field(0))
        self.commit.set_function(field(1))
        self.applied.set_function(field(2))
        self.last.set_function(field(3))
        self.lag.set_function(lag)
        for r, g in self.roles.items():
            g.set_function(role_is(r))
        self.leader.set_function(role_is(LEADER))

    # ------------------------------------------------------------------ wiring

    def bind(self, frontdoor: Any, log_writer: Any, gateway: Callable[[], Any]) -> None:
        """Where the wire statistics live; ``gateway()`` returns the HTTP gateway or None (it
        starts after the role actor)."""
        self.wire.frontdoor, self.wire.log_writer, self.wire.gateway = frontdoor, log_writer, gateway

    # ------------------------------------------------------------------ role actor (per Ready)

    def observe(self, core: Any, applied: int) -> None:
        """Set the gauges from the role actor's core and the FSM's published applied index (once
        per Ready: a tuple comparison when nothing changed)."""
        if core.role == LEADER:
            self._rounds(core)
        last = core.log.last_index()
        snap = (core.term, core.commit, applied, last, core.role, core.leader_id)
        if snap == self._last_seen:
            return
        # Published as one immutable tuple: the gauges read it when scraped (_bind_gauges), so
        # a Ready costs one comparison and one store instead of a dozen locked Gauge.set calls
        # (4 us per Ready, paid on every node for every write).
        self._last_seen = snap
        if core.leader_id is not None and (core.term, core.leader_id) != self._leader_seen:
            if self._leader_seen is None or core.term > self._leader_seen[0]:
                self.leader_changes.inc()
            self._leader_seen = (core.term, core.leader_id)

    def _rounds(self, core: Any) -> None:
        # Round-trip times: when a heartbeat round starts (the core's ``round`` advances) and when
        # each peer's ``acked_round`` reaches it. Two dict operations per new round; per peer an
        # int comparison.
        now = time.perf_counter()
        if core.round != self._round:
            self._round = core.round
            at = self._round_at
            at[core.round] = now
            if len(at) > _ROUNDS_KEPT:
                for r in [r for r in at if r < core.round - _ROUNDS_KEPT // 2]:
                    del at[r]
        acked = self._acked
        for pid, pr in core.progress.items():
            a = pr.acked_round
            if acked.get(pid) != a:
                acked[pid] = a
                started = self._round_at.get(a)
                if started is not None:
                    self._rtt[pid] = now - started

    def on_role_change(self, core: Any) -> None:
        """The core's role changed (or a pre-candidate or candidate started another round)."""
        c = self.elections.get(core.role)
        if c is not None:
            c.inc()
        if core.role != LEADER:
            self._acked.clear()
            self._rtt.clear()
            self._round_at.clear()

    # ------------------------------------------------------------------ role actor (per tick)

    def on_tick(self, core: Any, last_contact: dict, reachable: dict, quorum_ok: Optional[bool],
                sessions: int) -> None:
        """Per-peer gauges and sessions (every PEER_EVERY_TICKS ticks). ``reachable``: the health
        watch's verdict per peer (leader only), ``quorum_ok`` its quorum verdict (None off the leader)."""
        now = time.monotonic()
        me = self.node_id
        peers = {m.id for m in core.members if m.id != me}
        for gone in self._peers - peers:
            for g in (self._peer_match, self._peer_contact, self._peer_rtt, self._peer_up):
                try:
                    g.remove(me, gone)
                except KeyError:
                    pass
        self._peers = peers
        leading = core.role == LEADER
        for pid in peers:
            seen = last_contact.get(pid)
            if seen is not None:
                self._peer_contact.labels(me, pid).set(now - seen)
            if leading:
                pr = core.progress.get(pid)
                self._peer_match.labels(me, pid).set(pr.match if pr is not None else 0)
                rtt = self._rtt.get(pid)
                if rtt is not None:
                    self._peer_rtt.labels(me, pid).set(rtt)
                self._peer_up.labels(me, pid).set(1 if reachable.get(pid, True) else 0)
        self.quorum.set(1 if quorum_ok else 0)
        self.sessions.set(sessions)

    # ------------------------------------------------------------------ role actor (events)

    def on_reads(self, confirmed: int, failed: int) -> None:
        if confirmed:
            self.read_rounds.inc(confirmed)
        if failed:
            self.reads_failed.inc(failed)

    def on_snapshot_saved(self, size: int, seconds: float) -> None:
        self.snapshots.inc()
        self.snapshot_size.set(size)
        self.snapshot_seconds.observe(seconds)

    def on_snapshot_installed(self, size: int) -> None:
        self.transfers["received"].inc()
        self.snapshot_size.set(size)

    def on_snapshot_transfer(self, direction: str) -> None:
        self.transfers[direction].inc()

    # ------------------------------------------------------------------ HTTP gateway

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _WireCollector:
    """Turns the lock-free statistics of the log writer, the front door and the HTTP gateway
    (wire/stats.py) into Prometheus families when scraped."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.frontdoor: Any = None
        self.log_writer: Any = None
        self.gateway: Callable[[], Any] = lambda: None

    def describe(self) -> list:
        return []  # names are only known once scraped; nothing to check at registration

    def collect(self) -> Iterable[Any]:
        node = self.node_id
        fsync = HistogramMetricFamily("raftkv_log_fsync_seconds", "Duration of each synced log write (group commit)",
                                      labels=["node"])
        batch = HistogramMetricFamily("raftkv_log_batch_entries", "Entries per synced log write (group commit size)",
                                      labels=["node"])
        lw = self.log_writer
        if lw is not None:
            _add(fsync, [node], lw.stats.fsync)
            _add(batch, [node], lw.stats.batch)
        yield fsync
        yield batch
        http_n = CounterMetricFamily("raftkv_http_requests", "HTTP requests answered, by operation and status code",
                                     labels=["node", "op", "code"])
        http_t = HistogramMetricFamily("raftkv_http_request_duration_seconds",
                                       "HTTP request duration from parse to answer, by operation",
                                       labels=["node", "op"])
        gw = self.gateway()
        if gw is not None:
            stats = gw.engine.stats
            for (op, code), n in dict(stats.count).items():
                http_n.add_metric([node, op, code], n)
            for op, h in dict(stats.latency).items():
                _add(http_t, [node, op], h)
        yield http_n
        yield http_t
        req_n = CounterMetricFamily("raftkv_client_requests",
                                    "Requests received on the client port (ZeroMQ), by operation",
                                    labels=["node", "op"])
        rep_n = CounterMetricFamily("raftkv_client_replies", "Replies sent on the client port (ZeroMQ), by status",
                                    labels=["node", "status"])
        fd = self.frontdoor
        if fd is not None:
            for op, n in dict(fd.requests).items():
                req_n.add_metric([node, op], n)
            for status, c in dict(fd.replies).items():
                rep_n.add_metric([node, status], _count_value(c))
        yield req_n
        yield rep_n
        req_t = HistogramMetricFamily("raftkv_client_request_duration_seconds",
                                      "Client port (ZeroMQ) request duration from arrival to the reply's hand-over "
                                      "to the I/O thread, by operation", labels=["node", "op"])
        if fd is not None:
            for op, h in dict(getattr(fd, "latency", {})).items():
                _add(req_t, [node, op], h)
        yield req_t


def _add(family: HistogramMetricFamily, labels: list, h: WireHistogram) -> None:
    family.add_metric(labels, h.cumulative(), h.total)


def _count_value(c: Any) -> int:
    """How many times an itertools.count(0) was advanced, read without advancing it: its repr is
    ``count(N)``."""
    return int(repr(c)[6:-1])
