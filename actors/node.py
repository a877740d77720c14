"""A node: opens the storage, rebuilds the core, starts and wires the actors, transports and timers.

Start-up order follows "persistence before speech" (docs/architecture.md 7): the data directory is checked
(format, node id, cluster id), a brand-new node's bootstrap configuration is synced, and only
then do the ports open.
"""
from __future__ import annotations

import gc
import logging
import os
import queue
import random
import signal
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Optional, cast

import pykka
import zmq

from raftkv.storage.bg_priority import RocksThreadPriority
from raftkv.storage.checkpoint_store import CheckpointMeta, CheckpointStore, stage_copy
from raftkv.storage.kv_store import KvStore
from raftkv.storage.log_store import LogStore, StorageError
from raftkv.storage.writeback import Writeback
from raftkv.wire import door_hardening
from raftkv.wire.frontdoor import FrontDoor, LocalRoute, max_request_bytes
from raftkv.wire.messages import ClientReply, Entry, EntryKind, JoinRequest, Member
from raftkv.records import JOIN_REFUSED_LIVE_MEMBER
from raftkv.wire.peer import PeerTransport, max_peer_message
from raftkv.wire.ratelog import RateLimitedLog
from raftkv.wire.security.loopback import LoopbackGuard
from raftkv.wire.security.zap import Door, DoorAuthenticator

from . import node_security
from .token_state import TokenState

from .candidate import Candidate
from ..config import NodeConfig, core_config
from .core import CANDIDATE, FOLLOWER, LEADER, PRE_CANDIDATE, PersistBatch, RaftCore, encode_config
from .db_state import DbState
from .fsm import NOTHING_APPLIED, AppliedView, Fsm
from .legacy_migration import legacy_snapshots_present, load_legacy_snapshot, migrate_legacy
from .follower import Follower
from .leader import Leader
from .log_manager import LogManager, LogWriter
from .memlog import MemLog
from .secure_readmission import SecureReadmission
from .messages import (ClientBatch, HandOff, PeerBatch, PeerLost, Read, SetMeta, SnapshotDone, StatusQuery,
                       TakeSnapshot, Tick)
from .role import RoleActor
from .role_door import RoleDoor, inline_client_batch, inline_peer_batch
from .snapshot_transfer import SnapshotRef
from .snapshotter import Snapshotter
from .metrics import NodeMetrics
from .watch_hub import WatchHub

log = logging.getLogger("actors.node")
_join_ratelog = RateLimitedLog(log, interval=5.0)  # the leader's "member is live" join refusals

JOIN_WARN_AFTER_S = 5.0  # a join not done by then is worth a WARNING naming the address
JOIN_WARN_EVERY_S = 30.0  # and another at most this often
JOIN_MAX_DELAY_S = 2.0  # the join retry backoff grows to this
JOIN_WATCH_S = 1.0  # how often an admitted joiner checks that the configuration still admits it
TICK_MS = 10  # one logical tick; heartbeat and election timeouts are whole numbers of ticks
GC_YOUNG_THRESHOLD = 50_000  # gc.set_threshold for generation 0 (see Node.start: why not 700)


def process_age() -> Optional[float]:
    """Seconds since this process was created (Linux's /proc; None elsewhere): the start-up time
    the "serving" line reports, which includes the interpreter's start and the imports."""
    try:
        with open("/proc/self/stat", "rb") as f:
            start_ticks = int(f.read().rsplit(b")", 1)[1].split()[19])
        return time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


class NodeError(Exception):
    """The node cannot start (bad data directory, port in use...): one clear line for the operator."""


class NoWayIn(NodeError):
    """A node with no data, started with neither --bootstrap nor --join: it could only wait in
    silence, so it says how to start and kvnode exits with status 2 (a bad configuration)."""

    exit_status = 2


def no_way_in(node_dir: Any) -> str:
    """The one message for a node with no data and neither --bootstrap nor --join (kvnode checks
    before anything is written, the node again once its storage shows no configuration)."""
    return (f"no data in {node_dir} and neither --bootstrap nor --join given: start a new cluster with "
            f"--bootstrap, or join one with --join ADDR (the peer address of any member; also after "
            f"kvclient add-node)")


@dataclass(frozen=True, slots=True)
class RoleView:
    """The node's role, term, leader and configuration, published by the role actor (and only by
    it) whenever one of them changes: what threads other than the role actor (the node's stop
    and join logic) may know of the core."""

    role: str
    term: int
    leader_id: Optional[str]
    members: list  # the core's configuration list, never mutated (a change makes a new list)


class NodeContext:
    """What the role actor of one node works with, by owner:

    * Wiring, set at construction and never reassigned: ``node``, ``node_id``, ``tuning``, the
      actor refs and transports (``fsm``, ``log_manager``, ``log_writer``, ``snapshotter``,
      ``peer``, ``frontdoor``, ``watch_hub``), ``snapshot_store``, ``role_classes``, ``started``,
      the security wiring (``secure``, ``doors``, ``cluster_key``, ``readmit``, and ``tokens``: one table
      whose contents the FSM's thread swaps whole), and ``more_input`` (set once by the RoleActor).
    * The role actor's own state, read and written only in its thread: ``core`` (the RaftCore),
      the persist buffer (``persist_buffer``, ``persist_after``, ``persist_in_flight``),
      ``ticks``, ``cluster_id``, ``snapshot_index``, ``last_contact`` (recorded as
      it handles each PeerBatch), ``disk_error`` (as the log writer reports it by DiskState
      message), and the membership seen by ``after_ready`` (``_members_seen``). Other threads
      get what they need of it by asking the role actor (StatusQuery) or from ``role_view``.
    * Views published by their owner, each one reference swapped atomically, read by anyone,
      written by nobody else: ``applied_view`` (an AppliedView, by the FSM through
      Node._on_applied; ``applied`` is its index) and ``role_view`` (a RoleView, by the role
      actor, see publish_role_view).
    """

    def __init__(self, node: "Node") -> None:
        self.node = node
        self.node_id = node.cfg.id
        self.tuning = node.cfg.raft
        self.core: RaftCore = node.core
        self.cluster_id: Optional[str] = node.cluster_id
        self.peer: PeerTransport = node.peer
        self.frontdoor: FrontDoor = node.frontdoor
        self.fsm = node.fsm_ref
        self.log_manager = node.log_ref
        self.log_writer = node.log_writer
        self.persist_buffer = PersistBatch()
        self.persist_after: list = []
        self.persist_in_flight = False
        self.role_classes = {FOLLOWER: Follower, PRE_CANDIDATE: Candidate, CANDIDATE: Candidate, LEADER: Leader}
        self.more_input: Callable[[], bool] = lambda: False  # whether input waits in the role actor's inbox
        self.started = node.core_started
        # The state opened at start-up is already applied up to its index: readers see it at once.
        self.applied_view: AppliedView = getattr(node, "initial_view", NOTHING_APPLIED)
        self.ticks = 0
        self.disk_error = ""  # the log writer's last DiskState: set while this node's disk fails
        self.snapshotter = node.snap_ref
        self.snapshot_store = node.snapshots
        self.snapshot_index = node.snapshot_index
        self.watch_hub = getattr(node, "watch_hub", None)  # serves watch requests (actors/watch_serving.py)
        self.role_door: Optional[RoleDoor] = getattr(node, "role_door", None)  # wiring (actors/role_door.py)
        self.last_contact: dict[str, float] = {}
        core = self.core
        self.role_view = RoleView(core.role, core.term, core.leader_id, core.members)
        self._members_seen: Optional[list] = None
        # Issue 11. ``secure``: this node is a member of a secure cluster. ``tokens``: the applied
        # token table (a TokenTable, one object whose contents the FSM's thread swaps whole), what
        # the HTTP gateway authorizes bearer tokens against; ``doors``: the key rings (None if
        # not secure). ``cluster_key``: the cluster's CURVE server key pair (None if not secure).
        self.secure: bool = bool(getattr(node, "secure", False))
        self.doors = getattr(node, "doors", None)
        self.tokens = self.doors.tokens if self.doors is not None else None
        self.cluster_key = getattr(node, "cluster_key", None)
        # Secure: the core's re-admission requests go with the join token (actors/secure_readmission.py).
        self.readmit: Optional[SecureReadmission] = None
        if self.secure:
            core_member = self.core.member
            self.readmit = SecureReadmission(self.node_id, self.cluster_id, node.cfg.join_token,
                                             lambda pid: getattr(core_member(pid), "addr", None))

    @property
    def applied(self) -> int:
        """The index the FSM last published as applied."""
        return self.applied_view.index

    # ------------------------------------------------------------ helpers for the roles

    def status(self) -> dict:
        st = self.core.status()
        st["applied_index"] = self.applied
        st["snapshot_index"] = self.snapshot_index
        if self.disk_error:
            st["disk_error"] = self.disk_error
        st["cluster_id"] = self.cluster_id
        st["members"] = [{"id": m.id, "addr": m.addr, "client": m.client, "http": m.http, "voter": m.voter}
                         for m in self.core.members]
        return st

    def members_info(self) -> list:
        core = self.core
        now = time.monotonic()
        out = []
        for m in core.members:
            d = {"id": m.id, "addr": m.addr, "client": m.client, "http": m.http, "voter": m.voter}
            if m.id == self.node_id:
                d.update(match_index=core.log.last_index(), last_contact=0.0, leader=True)
            else:
                pr = core.progress.get(m.id)
                seen = self.last_contact.get(m.id)
                d.update(match_index=pr.match if pr else 0,
                         last_contact=round(now - seen, 3) if seen else None, leader=False)
            out.append(d)
        return out

    def redirect(self) -> ClientReply:
        core = self.core
        lid = core.leader_id
        if lid is not None and lid != self.node_id:
            m = core.member(lid)
            return ClientReply("not_leader", leader_id=lid, leader_client=m.client if m else None,
                               error=f"not the leader; the leader is {lid}")
        return ClientReply("unavailable", error="no leader known (election in progress or no quorum)")

    def serve_reads(self, index: int, handles: list) -> None:
        """Serve reads once ``index`` is applied: gets straight from the FSM's published view
        when it is far enough (one thread hop fewer), anything else through the FSM actor."""
        view = self.applied_view
        kv = view.state
        if kv is not None and view.index >= index:
            gets = [(r, kv.read("get", q.key)) for r, q in handles if q.op == "get"]
            if len(gets) == len(handles):
                self.frontdoor.reply_many(gets)
                return
        self.fsm.tell(Read(index, handles))

    def clock_ticks(self) -> int:
        """Real time since the core was created, in ticks (the lease clock, see RaftCore.sync_clock)."""
        return int((time.monotonic() - self.started) * 1000 / TICK_MS)

    def validate_key(self, key: str) -> Optional[str]:
        if not key:
            return "key must not be empty"
        n = len(key) if key.isascii() else len(key.encode())  # (isascii reads a flag: no copy)
        if n > self.tuning.max_key_bytes:
            return f"key too large: {n} bytes (max_key_bytes is {self.tuning.max_key_bytes})"
        return None

    def adopt_cluster_id(self, cid: str) -> None:
        log.info("%s: joined cluster %s", self.node_id, cid)
        self.cluster_id = cid
        # The node's and the transport's copies: written here once (None -> cid), a str
        # reference the other threads only read.
        self.node.cluster_id = cid
        self.peer.cluster_id = cid
        self.log_manager.tell(SetMeta({"cluster_id": cid}))

    def on_join_reply(self, reply: Any) -> None:
        self.node.on_join_reply(reply)

    def after_ready(self) -> None:
        core = self.core
        members = core.members
        if members is not self._members_seen:
            self._members_seen = members
            self.peer.set_peers({m.id: m.addr for m in members if m.id != self.node_id})
            if self.doors is not None:
                self.doors.on_members(members)  # removing a member revokes its key (issue 11)
        self.node.metrics.observe(self.core, self.applied)

    def token_state(self) -> TokenState:
        """The applied token table with the join secret (the leader checks token ops against it)."""
        return getattr(self.node, "token_state", None) or TokenState()

    def publish_role_view(self) -> None:
        """Publish a new RoleView if the role, term, leader or configuration changed (called by
        the role actor after each Ready: four comparisons, an allocation only on a change)."""
        core = self.core
        v = self.role_view
        if core.role != v.role or core.term != v.term or core.leader_id != v.leader_id or core.members is not v.members:
            self.role_view = RoleView(core.role, core.term, core.leader_id, core.members)


class Node:
    """One Raft node. ``start()`` returns once it is serving; ``stop()`` shuts it down cleanly.

    Its fields are set by ``start()`` before the actors run and not reassigned after, except
    ``stopping`` (the thread that stops the node) and ``cluster_id`` (the role actor, once, when a
    joining node learns it). Once the role actor runs, the core is its alone: the node reads
    ``ctx.role_view`` (stop, join loop) and asks the role actor for ``status()``; the join loop
    gets leader hints by queue from the role actor (``on_join_reply``).
    """

    # Made by start(), before anything reads them.
    fsm_ref: Any
    log_ref: Any
    log_writer: Any
    snap_ref: Any

    def __init__(self, cfg: NodeConfig) -> None:
        self.cfg = cfg
        self.stopping = False
        self.cluster_id: Optional[str] = None
        self._threads: list = []
        self._stop = threading.Event()
        self._join_hints: queue.SimpleQueue = queue.SimpleQueue()  # leader addresses, for the join loop
        # Issue 11 (set by start(); see _open_security): secure mode, keys, the doors' tables.
        self.secure = False
        self.cluster_key: Any = None
        self.node_key: Any = None
        self.join_reply: Any = None
        self.doors: Optional[node_security.NodeDoors] = None
        self.token_state = TokenState()

    # ------------------------------------------------------------ storage and identity

    def _open_storage(self) -> LogStore:
        cfg = self.cfg
        d = cfg.node_dir
        try:
            store = LogStore(str(d / "raft"))
        except StorageError as e:
            raise NodeError(str(e)) from None
        nid = store.get_meta("node_id")
        if nid is not None and nid != cfg.id:
            store.close()
            raise NodeError(f"data directory {d} belongs to node {nid!r}, not {cfg.id!r}")
        cid = store.get_meta("cluster_id")
        if cid is not None and cfg.cluster_id is not None and cid != cfg.cluster_id:
            store.close()
            raise NodeError(f"data directory {d} belongs to cluster {cid!r}, not {cfg.cluster_id!r}")
        if store.get_meta("removed") == "true":
            store.close()
            raise NodeError(f"node {cfg.id!r} was removed from cluster {cid!r}; wipe {d} to add it again")
        fresh = store.last_index() == 0 and nid is None
        if fresh:
            incarnation = uuid.uuid4().hex
            meta = {"node_id": cfg.id, "incarnation": incarnation}
            if cfg.bootstrap:
                cid = cfg.cluster_id or uuid.uuid4().hex[:16]
                # A node bootstrapping alone records its incarnation. The nodes of a whole-cluster
                # file each write the same entry 1 without knowing the others' incarnations, so
                # theirs stay "" (unknown: unchecked, as before), for their logs to agree.
                members = [Member(p.id, p.addr, p.client, p.http or "", True,
                                  incarnation if p.id == cfg.id and len(cfg.peers) == 1 else "")
                           for p in cfg.peers] or [
                    Member(cfg.id, cfg.spec.addr, cfg.spec.client, cfg.spec.http or "", True, incarnation)]
                extra: list = []
                if cfg.secure:
                    # Keys, tokens and the certificate exist before any port opens, and the join
                    # secret and first admin token are in the same synced write as entry 1.
                    boot = self._bootstrap_secure(store, cid, members)
                    members = [m._replace(curve_key=boot.node_key.public_text) for m in members]
                    extra = node_security.bootstrap_entries(boot)
                    meta[node_security.META_SECURE] = "true"
                # Every node of a whole-cluster file writes the same entry 1, so their logs agree.
                store.write(term=1, vote=None, first_index=1,
                            entries=[Entry(1, EntryKind.CONFIG, encode_config(members))] + extra)
                if cfg.secure:
                    node_security.announce_bootstrap(cfg.id, boot)
                log.info("%s: bootstrapped cluster %s with %s", cfg.id, cid, ", ".join(m.id for m in members))
            elif cfg.cluster_id:
                cid = cfg.cluster_id
            if cid:
                meta["cluster_id"] = cid
            store.set_meta(**meta)
        else:
            if cfg.bootstrap_asked:
                log.info("%s: already has data; --bootstrap ignored", cfg.id)
        self.cluster_id = cid
        return store

    def _bootstrap_secure(self, store: LogStore, cid: str, members: list) -> Any:
        cfg = self.cfg
        from raftkv.wire.security.bootstrap import bootstrap_secure
        from raftkv.wire.security.files import PrivateFileError
        from raftkv.wire.security.tls import TlsError

        if len(members) != 1:
            store.close()
            raise NodeError("--secure bootstraps one node; start the others with --join ADDR --token JOIN_TOKEN")
        host = cfg.http.rpartition(":")[0].strip("[]") if cfg.http else ""
        try:
            return bootstrap_secure(cfg.node_dir, cid, [host] if host and host not in ("0.0.0.0", "*") else [],
                                    make_tls=not getattr(cfg, "tls_cert", None))
        except FileExistsError:
            store.close()
            raise NodeError(f"{cfg.node_dir}/cluster.key exists (an interrupted bootstrap?): remove "
                            f"{cfg.node_dir} and bootstrap again") from None
        except (PrivateFileError, TlsError, OSError) as e:
            store.close()
            raise NodeError(f"secure bootstrap failed: {e}") from None

    def _open_security(self, store: LogStore) -> None:
        """Issue 11: decide the mode from the node's meta (never from a flag alone), load the keys
        of a secure node (a missing or loose key file stops it: never a silent fall-back to an
        insecure node), and run the one-shot join of a node given --join and --token."""
        cfg = self.cfg
        from raftkv.wire.security.bootstrap import CLUSTER_KEY, NODE_KEY, load_cluster_key, save_cluster_key
        from raftkv.wire.security.files import PrivateFileError
        from raftkv.wire.security.keys import keypair_from_secret, load_or_create_keypair

        self.secure = store.get_meta(node_security.META_SECURE) == "true"
        self.cluster_key = self.node_key = None
        self.join_reply = None
        try:
            if cfg.join and cfg.join_token and not self.secure:
                if self.core.members:
                    raise NodeError(f"node {cfg.id} is a member of cluster {self.cluster_id!r}, made without "
                                    "--secure: --token does not apply to it")
                self.node_key = load_or_create_keypair(cfg.node_dir / NODE_KEY)
                self.join_reply = self._join_secure()
                save_cluster_key(cfg.node_dir, keypair_from_secret(self.join_reply.cluster_key))
                store.set_meta(**{node_security.META_SECURE: "true", "cluster_id": self.join_reply.cluster_id})
                self.cluster_id = self.join_reply.cluster_id
                self.secure = True
            if cfg.join and not cfg.join_token and not self.secure and not self.core.members:
                self._refuse_secure_target()
            if cfg.secure and not self.secure:
                raise NodeError(f"data directory {cfg.node_dir} belongs to a cluster made without --secure "
                                "(a cluster's mode is chosen at bootstrap)")
            if self.secure:
                self.node_key = load_or_create_keypair(cfg.node_dir / NODE_KEY)
                self.cluster_key = load_cluster_key(cfg.node_dir)
                if self.cluster_key is None:
                    raise NodeError(f"{cfg.node_dir / CLUSTER_KEY}: missing; this node is a member of a secure "
                                    "cluster and cannot serve without the cluster key")
        except (PrivateFileError, ValueError) as e:
            raise NodeError(str(e)) from None

    def _refuse_secure_target(self) -> None:
        """A plain join aimed at a secure cluster can never succeed: say so and stop (exit 1)."""
        from raftkv.wire.security.join_client import door_is_secure

        ctx = zmq.Context()
        try:
            secure = next((a for a in self.cfg.join_addrs if door_is_secure(ctx, a)), None)
        finally:
            ctx.destroy(linger=0)
        if secure:
            raise NodeError(f"{secure} is a member of a secure cluster: start this node with --token "
                            "JOIN_TOKEN (or $KV_JOIN_TOKEN; the join.token file of its bootstrap node)")

    def _join_secure(self) -> Any:
        """The one-shot CURVE join (wire/security/join_client.py) before any door of ours opens."""
        cfg = self.cfg
        from raftkv.wire.address import parse_address
        from raftkv.wire.port_probe import check_bindable
        from raftkv.wire.security.join_client import JoinRefused, join_secure
        from raftkv.wire.security.tokens import JoinToken, TokenError

        try:
            token = JoinToken.decode(cfg.join_token)
        except TokenError as e:
            raise NodeError(f"--token: {e}") from None
        # A busy port is exit 1 before anything is sent (the cluster must not add a node that
        # cannot start).
        a = parse_address(cfg.addr, port_zero=True)
        try:
            check_bindable(a.host, a.port)  # as libzmq binds: a just-killed process's TIME_WAIT is not busy
        except OSError as e:
            raise NodeError(f"cannot listen on peer address {cfg.addr}: {e.strerror}") from None
        spec = cfg.spec
        req = JoinRequest(Member(cfg.id, spec.addr, spec.client, spec.http or "", True, self._incarnation,
                                 curve_key=self.node_key.public_text), self._incarnation)
        ctx = zmq.Context()
        try:
            reply = join_secure(ctx, token, cfg.join_addrs, cfg.id, req)
        except JoinRefused as e:
            raise NodeError(str(e)) from None
        finally:
            ctx.destroy(linger=0)
        log.info("%s: the leader of cluster %s admitted this node; joining", cfg.id, reply.cluster_id)
        return reply

    def _restore_snapshot(self, store: LogStore) -> None:
        """Open the key-value state (its own RocksDB beside the log) and the snapshots
        (checkpoints of it). The state is at its own applied index: only the log entries after
        it are replayed. Compaction never drops entries above the DB's durable index (the log is
        compacted only below a checkpoint, whose flush made the DB durable up to it); a DB left
        below the log's start (lost, or a snapshot install cut short) is restored from the
        newest local checkpoint, or else from the leader."""
        cfg = self.cfg
        d = cfg.node_dir
        t0 = time.monotonic()
        try:
            self.kv = KvStore(str(d / "kv"), cache_mb=cfg.storage_cache_mb)
        except StorageError as e:
            store.close()
            raise NodeError(str(e)) from None
        snap_dir = str(d / "snapshots")
        migrate = self.kv.applied_index() == 0 and legacy_snapshots_present(snap_dir)
        legacy = None
        if migrate:
            legacy = load_legacy_snapshot(snap_dir, cfg.raft.snapshots_kept)
        self.snapshots = CheckpointStore(snap_dir, keep=cfg.raft.snapshots_kept)
        if legacy is not None:
            migrate_legacy(cfg.id, legacy, self.kv, self.snapshots)
        self.want_snapshot = False
        base_index, _ = store.base()
        newest = self.snapshots.newest()
        if newest is not None and newest.last_index > base_index and \
                store.term_at(newest.last_index) != newest.last_term:
            newest = self._finish_cut_install(store, newest)
            base_index, _ = store.base()
        if self.kv.applied_index() < base_index:
            # Restoring from a checkpoint: check it first (a damaged newest one is deleted and the
            # next older one that covers the log's start is used, or else the leader's).
            newest = self.snapshots.newest_verified(base_index)
            if newest is not None:
                log.warning("%s: the key-value store is at index %d, before the log's start %d: restoring it from "
                            "snapshot %d", cfg.id, self.kv.applied_index(), base_index, newest.last_index)
                self._restore_state(newest)
            else:
                log.error("%s: the log starts after index %d and no valid snapshot covers it; "
                          "asking the leader for a snapshot", cfg.id, base_index)
                self.want_snapshot = True
        self.fsm_state = DbState(self.kv)
        self.snapshot_index, self.snapshot_term, self.snapshot_members, self.snapshot_size = 0, 0, [], 0
        if newest is not None and newest.last_index >= base_index:
            self.snapshot_index, self.snapshot_term = newest.last_index, newest.last_term
            self.snapshot_members = list(newest.members)
            self.snapshot_size = newest.size
        log.info("%s: opened the key-value store at applied index %d (snapshot %d) in %.3f s; replaying log "
                 "entries after it, up to %d", cfg.id, self.fsm_state.applied, self.snapshot_index,
                 time.monotonic() - t0, store.last_index())

    def _restore_state(self, meta: CheckpointMeta) -> None:
        """Replace the key-value store's state by a copy of the (verified) checkpoint ``meta``."""
        stage_copy(meta.path, self.kv.path + ".incoming")
        self.kv.install(self.kv.path + ".incoming")

    def _finish_cut_install(self, store: LogStore, newest: CheckpointMeta) -> Optional[CheckpointMeta]:
        """Finish a snapshot install that a stop cut short; return the newest snapshot left.

        The newest snapshot is past the log's start, and the log does not hold its last entry:
        a snapshot from the leader was saved, but the node stopped before its key-value store
        and its log were moved to it. A local snapshot never looks like this (it is taken of
        applied entries, which the log holds until it is compacted to the snapshot). Left so,
        the core started from a log ending before the snapshot and refused every append after
        it, while the leader, told the snapshot was in, kept sending them (sim seed 1003129).
        So do now what the install would have: the store from the snapshot (unless it got
        there), then the log compacted to it, as RaftCore.install_snapshot does."""
        cfg = self.cfg
        checked = self.snapshots.newest_verified(newest.last_index)
        if checked is None:  # damaged and deleted: the older ones are covered by the log, or restored below
            return self.snapshots.newest()
        log.warning("%s: snapshot %d (term %d) from the leader was saved but not installed when the node stopped; "
                    "installing it now (the log ends at %d)", cfg.id, checked.last_index, checked.last_term,
                    store.last_index())
        if self.kv.applied_index() < checked.last_index:
            self._restore_state(checked)
        store.drop_prefix(checked.last_index, checked.last_term)
        if store.stable().commit < checked.last_index:
            store.write(commit=checked.last_index)  # a snapshot holds committed entries only
        return checked

    def _build_core(self, store: LogStore) -> RaftCore:
        t = self.cfg.raft
        st = store.stable()
        base_index, base_term = store.base()
        ents = store.all_entries()
        cc = core_config(t, TICK_MS)
        core = RaftCore(self.cfg.id, cc, term=st.term, vote=st.vote, log=MemLog(base_index, base_term, ents),
                        members=self.snapshot_members, commit=st.commit, rng=random.Random(),
                        incarnation=store.get_meta("incarnation") or "")
        # The FSM starts from its DB's applied index: only the entries after it are handed out.
        core.handed = max(core.handed, self.snapshot_index, self.fsm_state.applied)
        core.want_snapshot = self.want_snapshot
        if self.snapshot_index:
            core.set_snapshot(SnapshotRef(self.snapshot_index, self.snapshot_term, self.snapshot_size))
        return core

    # ------------------------------------------------------------ life cycle

    def start(self) -> None:
        cfg = self.cfg
        t_start = time.monotonic()
        store = self._open_storage()
        self.store = store
        self._restore_snapshot(store)
        self.core = self._build_core(store)
        self._incarnation = store.get_meta("incarnation") or ""
        try:
            self._open_security(store)
        except NodeError:
            store.close()
            self.kv.close()
            raise
        # Joining is idempotent until it succeeds: a node not yet admitted (as this incarnation)
        # joins on every start, whatever is in its data directory already.
        admitted = self._admitted(self.core.members)
        if cfg.join and admitted:
            log.info("%s: already has data and is a member; --join ignored", cfg.id)
        elif not admitted and not cfg.join and not cfg.bootstrap and not self.core.members:
            # A directory left by a join that never got a configuration: no data to restart
            # from, and nothing would ever reach it (issue 13 item 2).
            store.close()
            self.kv.close()
            raise NoWayIn(no_way_in(cfg.node_dir))
        self.needs_join = bool(cfg.join) and not admitted
        self.core_started = time.monotonic()
        self.metrics = NodeMetrics(cfg.id)
        self.zctx = zmq.Context()
        zap = self._start_door_guard()
        self.doors = None
        self.token_state = self.fsm_state.tokens
        if self.secure:
            # The rings are filled before any door binds (with none, every key would be refused).
            self.doors = node_security.NodeDoors(self.auth, cfg.id, cfg.node_dir)
            if self.join_reply is not None and self.join_reply.members:
                self.doors.seed(self.join_reply.members)
            self.doors.on_members(self.core.members)
            self.doors.on_tokens(self.fsm_state.tokens)
        # The applied token table for the HTTP gateway's bearer checks (None: not secure).
        self.tokens = self.doors.tokens if self.doors is not None else None
        try:
            t = cfg.raft
            curve = (self.cluster_key, self.node_key) if self.secure else None
            self.peer = PeerTransport(self.zctx, cfg.id, cfg.addr, self._on_peer, self.cluster_id,
                                      on_lost=lambda pid: self._tell_role(PeerLost(pid)),
                                      max_message=max_peer_message(t.max_batch, t.max_key_bytes, t.max_value_bytes),
                                      zap_door=Door.PEER if zap else None, curve=curve)
            if self.doors is not None:
                self.doors.peer = self.peer
                self.doors.on_members(self.core.members)
            self.frontdoor = FrontDoor(self.zctx, cfg.client, self._on_clients, cfg.id,
                                       max_request_bytes=max_request_bytes(t.max_key_bytes, t.max_value_bytes),
                                       zap_door=Door.CLIENT if zap else None,
                                       curve_key=self.cluster_key if self.secure else None,
                                       authorize=self.doors.authorize if self.doors is not None else None)
        except zmq.ZMQError as e:
            store.close()
            self._stop_door_guard()
            self.kv.close()
            self.zctx.destroy(linger=0)
            which = "peer" if not hasattr(self, "peer") else "client"
            addr = cfg.addr if which == "peer" else cfg.client
            raise NodeError(f"cannot listen on {which} address {addr}: {e.strerror}") from None
        log.info("%s: %s", cfg.id, door_hardening.describe())
        self.ctx = None
        t = cfg.raft
        # The watch history starts at the state's applied index: events before it are not known.
        self.watch_hub = WatchHub(self.frontdoor.reply_many, self.fsm_state.applied, name=cfg.id,
                                  history_revisions=cfg.watch_history_revisions)
        self.watch_hub.start()
        self.fsm_ref = Fsm.start(self.frontdoor.reply_many, self._on_applied, lambda m: self.snap_ref.tell(m),
                                 t.snapshot_threshold, state=self.fsm_state, applied_term=self.fsm_state.term,
                                 members=self.fsm_state.members or self.snapshot_members,
                                 checkpoint_path=self.snapshots.path_for, last_snapshot=self.snapshot_index,
                                 hub=self.watch_hub)
        self.initial_view = AppliedView(self.fsm_state.applied, self.fsm_state)
        self.fsm_state = None  # the FSM owns it now
        self.log_writer = LogWriter(store, self.peer.send_many, self._tell_role, cfg.id)
        self.log_ref = LogManager.start(self.log_writer)
        # New SST files are summed in the background: a snapshot's manifest then reads only its flush.
        self.snapshots.warm_from(self.kv.path, self.kv.sst_files)
        # Both DBs' files are written back as they grow, so that no fsync (the snapshot's, a
        # flush's) finds a burst to write with the log's fsyncs queued behind it.
        self.writeback = Writeback([self.kv.path, str(cfg.node_dir / "raft")], on_grown=self.kv.wal_sums.advance)
        self.writeback.start()
        # Their flushes and compactions at the lowest CPU priority: a snapshot's flush no longer
        # takes a core from the writes' Python threads (storage/bg_priority.py).
        self.bg_priority = RocksThreadPriority()
        self.bg_priority.start()
        self.snap_ref = Snapshotter.start(cfg.id, self.snapshots, self.peer.send, self._tell_role,
                                          lambda i: self.fsm_ref.tell(SnapshotDone(i)), self.frontdoor.reply_many,
                                          lambda: self.fsm_ref.tell(TakeSnapshot(None)))
        # Read off the core now: once the role actor runs, it alone touches the core.
        core = self.core
        servers = [cfg.spec.client] + [m.client for m in core.members if m.id != cfg.id and m.client]
        recovered = (core.term, core.log.first_index(), core.log.last_index(), core.commit)
        self.role_door = RoleDoor()  # every input of the role actor passes it (actors/role_door.py)
        self.ctx = NodeContext(self)
        self.role_ref = RoleActor.start(self.ctx)
        self.peer.start()
        self.frontdoor.start()
        self._tell_role(Tick())  # hands out the entries recovered from disk to the FSM
        self.gateway = None
        if cfg.http:
            from raftkv.wire.http import HttpGateway

            from raftkv.wire.http_tls import TlsError, gateway_ssl_context

            try:
                # A secure node: HTTPS, and bearer tokens checked against the applied token table.
                tls = gateway_ssl_context(cfg.id, cfg.node_dir, cfg.http, cfg.tls_cert, cfg.tls_key) \
                    if self.secure else None
                self.gateway = HttpGateway(cfg.http, servers, status_fn=self.status, metrics_fn=self.metrics.render,
                                           local=(cfg.spec.client, self.local_call), submit=self.submit_local,
                                           max_value=t.max_value_bytes, max_key=t.max_key_bytes,
                                           lease_reads=t.lease_reads,
                                           admit=self.guard.admit if self.guard.enabled else None,
                                           ssl_context=tls, tokens=self.tokens, metrics_open=cfg.metrics_open)
                self.gateway.start()
            except TlsError as e:
                self.stop()
                raise NodeError(f"HTTPS gateway: {e}") from None
            except OSError as e:
                self.stop()
                raise NodeError(f"cannot listen on http address {cfg.http}: {e.strerror}") from None
        # Everything made so far (modules, classes, functions: ~40k objects) lives as long as
        # the process: keep it out of the cyclic GC's full collections, which otherwise walk it
        # all while holding the GIL (PUT c=64: full collections up to 38-46 ms -> 8-9 ms).
        gc.freeze()
        # A young collection every GC_YOUNG_THRESHOLD net container allocations, not CPython's
        # 700: under writes the FSM thread's bursts (a batch's records, replies freed later by the
        # gateway) crossed 700 every ~100 writes, and each collection walked the records still
        # young and alive (the watch history's, the recent records'), ~4 us of CPU per write on
        # the leader, nearly all on the FSM thread. Each collection is bounded by those live
        # records, not by the threshold (docs/performance.md "Write CPU, round 6").
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        self._spawn(self._ticker, "ticker")
        if self.needs_join:
            self._spawn(self._join_loop, "join")
        age = process_age()
        log.info("%s: serving (peer %s, client %s%s), term %d, log %d..%d, commit %d; started in %s (%.2f s of it "
                 "in Node.start), %.2f s of CPU", cfg.id, cfg.addr, cfg.client,
                 f", http {cfg.http}" if cfg.http else "", *recovered,
                 f"{age:.2f} s" if age is not None else "?", time.monotonic() - t_start, time.process_time())

    def _start_door_guard(self) -> bool:
        """Loopback-only mode (issue 11; a cluster made without --secure): start the ZAP handler
        that refuses non-loopback peers at the ZeroMQ doors, before any door binds (with no
        handler bound libzmq lets everyone in). The same guard refuses them at the HTTP door.
        False with --insecure: every door is open, and a WARNING says so at every start."""
        self.auth: Optional[DoorAuthenticator] = None
        if self.secure:  # CURVE on every door: the guard has nothing to refuse
            self.guard = LoopbackGuard(enabled=False, logger=logging.getLogger("raftkv.security"))
            self.auth = DoorAuthenticator(self.zctx, self.guard)
            self.auth.start()
            return False
        self.guard = LoopbackGuard(enabled=not self.cfg.insecure, logger=logging.getLogger("raftkv.security"))
        if not self.guard.enabled:
            log.warning("%s: --insecure: every door (peer, client, HTTP) accepts connections from anyone who "
                        "can reach it, with no authentication; make a secure cluster instead "
                        "(kvnode --bootstrap --secure)", self.cfg.id)
            return False
        self.auth = DoorAuthenticator(self.zctx, self.guard)
        self.auth.start()
        return True

    def _stop_door_guard(self) -> None:
        if getattr(self, "auth", None) is not None:
            self.auth.stop()
            self.auth = None

    def _spawn(self, fn: Any, name: str) -> None:
        t = threading.Thread(target=fn, name=f"{name}-{self.cfg.id}", daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self) -> None:
        """Stop serving, stop the actors, close the storage. Safe to call twice."""
        if self.stopping:
            return
        ctx = getattr(self, "ctx", None)
        if ctx is not None and ctx.role_view.role == LEADER:
            # A planned stop of the leader costs no election timeout: hand leadership over first.
            self._tell_role(HandOff())
            deadline = time.monotonic() + self.cfg.raft.election_timeout_ms[0] / 1000.0
            while ctx.role_view.role == LEADER and time.monotonic() < deadline:
                time.sleep(0.01)
        self.stopping = True
        self._stop.set()
        log.info("%s: shutting down", self.cfg.id)
        if getattr(self, "gateway", None) is not None:
            self.gateway.stop()
        for t in self._threads:
            t.join(timeout=2)
        if getattr(self, "watch_hub", None) is not None:
            self.watch_hub.stop()
        self.frontdoor.stop()
        self.peer.stop()
        pykka.ActorRegistry.stop_all(block=True, timeout=5)
        try:
            self.store.close()
        except Exception:  # already closed by a disk-fault reopen
            pass
        self._stop_door_guard()
        self.snapshots.close()
        if getattr(self, "writeback", None) is not None:
            self.writeback.stop()
        if getattr(self, "bg_priority", None) is not None:
            self.bg_priority.stop()
        self.kv.close()
        self.zctx.destroy(linger=0)

    # ------------------------------------------------------------ inputs from the outside

    def _tell_role(self, msg: Any) -> None:
        """Deliver an input to the role actor, the one address of every input for the node's life.
        Inputs are dropped only once the node is stopping (its actors are being stopped); a dead
        role actor otherwise is a failure, raised to the sender (whose supervision ends the
        process, as the role actor's own already did)."""
        self.role_door.counted()
        try:
            self.role_ref.tell(msg)
        except pykka.ActorDeadError:
            if not self.stopping:
                raise
            log.debug("%s: stopping; %s not delivered", self.cfg.id, type(msg).__name__)

    def _on_peer(self, batch: list) -> None:
        msg = PeerBatch(batch)
        if not (inline_peer_batch(msg) and self._run_inline(msg)):
            self._tell_role(msg)

    def _on_clients(self, batch: list) -> None:
        msg = ClientBatch(batch)
        if not (inline_client_batch(msg) and self._run_inline(msg)):
            self._tell_role(msg)

    def _run_inline(self, msg: Any) -> bool:
        """Handle a read-path input in this thread if the role actor is idle (actors/role_door.py)."""
        return not self.stopping and self.role_door.try_run(msg)

    def _on_applied(self, view: AppliedView) -> None:
        # The FSM's publication: one reference assignment, so a reader sees an index and the
        # state that holds it together (a restore replaces the state object).
        self.ctx.applied_view = view
        st = view.state
        if st is not None:
            self.token_state = st.tokens
            if self.doors is not None:
                self.doors.on_tokens(st.tokens)

    def _ticker(self) -> None:
        period = TICK_MS / 1000.0
        nxt = time.monotonic()
        while not self._stop.is_set():
            nxt += period
            delay = nxt - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            else:
                nxt = time.monotonic()  # we fell behind (GC, GIL): do not burst ticks to catch up
            self._tell_role(Tick())

    def status(self, timeout: float = 2.0) -> dict:
        """This node's status (``kvclient status``'s dict), built by the role actor, which owns
        what it reports; callable from any thread (the HTTP gateway's workers)."""
        self.role_door.counted()
        return cast(dict, self.role_ref.ask(StatusQuery(), timeout=timeout))

    def submit_local(self, items: list) -> None:
        """Submit a batch ``[(route, ClientRequest)]`` in-process (the HTTP gateway's event loop);
        each route is answered with ``route.deliver(reply)`` from the actors' threads."""
        self._on_clients(items)

    def local_call(self, req: Any, wait: float) -> Optional[ClientReply]:
        """Submit a client request in-process (the HTTP gateway's path to its own node)."""
        route = LocalRoute()
        self._tell_role(ClientBatch([(route, req)]))
        return route.wait(wait)

    def on_removed(self) -> None:
        """This node's removal from the cluster committed: record it and stop (docs/architecture.md 3)."""
        log.warning("%s: removed from cluster %s; recording it and stopping", self.cfg.id, self.cluster_id)
        self.log_ref.tell(SetMeta({"removed": "true"}))
        os.kill(os.getpid(), signal.SIGTERM)  # the process's main thread performs the clean stop

    # ------------------------------------------------------------ joining

    def _join_loop(self) -> None:
        """Ask a member to add us until we see ourselves in the configuration (nodes are often
        started together, before any leader exists, so keep retrying); then keep watching, and ask
        again if the configuration goes back to another incarnation of our id. That happens when
        the entry admitting us is truncated and we then install a snapshot of a leader that never
        had it: our configuration no longer admits us, so the core's re-admission request (which
        needs our own log to admit us) never goes out, and every message to us is addressed to
        the old incarnation (sim seed 987039)."""
        while not self._stop.is_set():
            if not self._ask_to_join():
                return
            while not self._replaced_back(self.ctx.role_view.members):
                if self._stop.wait(JOIN_WATCH_S):
                    return
            log.warning("%s: the configuration lists this id as another incarnation again (the entry admitting "
                        "incarnation %s was truncated): asking to be admitted again", self.cfg.id, self._incarnation)

    def _replaced_back(self, members: list) -> bool:
        """Whether the configuration lists our id only as another incarnation (not a removal: a
        removed node is not listed at all, and must not join again)."""
        inc = self._incarnation
        return bool(inc) and not self._admitted(members) and any(
            m.id == self.cfg.id and m.incarnation and m.incarnation != inc for m in members)

    def _ask_to_join(self) -> bool:
        """The join requests, until admitted (True) or stopped (False)."""
        cfg = self.cfg
        spec = cfg.spec
        req = JoinRequest(Member(cfg.id, spec.addr, spec.client, spec.http or "", True, self._incarnation,
                                 curve_key=self.node_key.public_text if self.node_key is not None else ""),
                          self._incarnation)
        addrs = cfg.join_addrs
        target = addrs[0]  # this loop's own: the role actor only sends hints (on_join_reply)
        delay = 0.2
        attempt = 0
        started = time.monotonic()
        warned_at = 0.0
        while not self._stop.is_set():
            if self._admitted(self.ctx.role_view.members):
                log.info("%s: is a member of cluster %s", cfg.id, self.cluster_id)
                return True
            attempt += 1
            while not self._join_hints.empty():
                target = self._join_hints.get_nowait()
            if attempt % 5 == 0:
                # A leader hint may be stale, and a configured member may be down: go back to the
                # configured members, the next one each time.
                target = addrs[(attempt // 5) % len(addrs)]
            now = time.monotonic()
            if now - started >= JOIN_WARN_AFTER_S and now - warned_at >= JOIN_WARN_EVERY_S:
                warned_at = now
                log.warning("%s: not admitted yet after %.0fs: cannot join through %s (is a member listening "
                            "there, and does the cluster have a leader?); still trying", cfg.id, now - started,
                            target)
            self.peer.send_to_addr(target, req)
            if self._stop.wait(delay):
                return False
            delay = min(delay * 1.5, JOIN_MAX_DELAY_S)
        return False

    def _admitted(self, members: list) -> bool:
        """Whether the configuration lists this node as this incarnation (a record of unknown
        incarnation, "", counts: a legacy record): a record of another incarnation of our id is
        the member our replaced data directory was, and we must be admitted anew."""
        inc = self._incarnation
        return any(m.id == self.cfg.id and (not m.incarnation or not inc or m.incarnation == inc) for m in members)

    def on_join_reply(self, reply: Any) -> None:
        # Success shows as ourselves in the replicated configuration (see _join_loop);
        # a reply only matters as a hint of where the leader is.
        if reply.members and self.doors is not None and not self.ctx.role_view.members:
            self.doors.seed(reply.members)  # a restarted joiner: let the members in before the config arrives
        if not reply.ok and reply.leader_addr:
            self._join_hints.put(reply.leader_addr)
        elif reply.error and reply.error.startswith(JOIN_REFUSED_LIVE_MEMBER):
            # A member runs as this id already (actors/replacement_guard.py): the join loop keeps
            # retrying with backoff, so a wiped node gets in once its old process is really dead.
            _join_ratelog.warn("live", "%s: join refused: %s", self.cfg.id, reply.error)
        elif reply.error:
            log.debug("%s: join: %s", self.cfg.id, reply.error)
