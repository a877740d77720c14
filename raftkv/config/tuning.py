"""Raft tuning: the ``raft:`` section of a config file, validated once, and the one
conversion of its milliseconds into the ticks the core (``raftkv.actors.core``) counts.

Every check lives in :func:`tuning_problem`: constructing a :class:`RaftTuning` runs it, so an
invalid tuning cannot exist, and the YAML loader only adds the file name and the ``raft.``
prefix to its message.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Optional

from raftkv.actors.core import CoreConfig

from .errors import show_value

@dataclass(frozen=True)
class RaftTuning:
    """Raft timing and limits: the ``raft:`` section of a config file.

    The defaults suit a LAN or a single machine running CPython. Direct construction
    validates too (ValueError naming the field), so an invalid tuning cannot exist.
    """

    # Leader heartbeat interval. Well below the election timeout (6x its minimum) so
    # that one or two lost heartbeats, or a GC/GIL pause of tens of ms, do not start
    # an election; cheap, because a heartbeat round is one small message per follower.
    heartbeat_ms: int = 50
    # Randomised election timeout range [min, max). The Raft paper's 150-300 ms is
    # doubled for Python's pauses; a range as wide as its minimum spreads candidates
    # so that split votes are rare. Must be min < max and min > 2 * heartbeat_ms.
    election_timeout_ms: tuple[int, int] = (300, 600)
    # Entries applied since the last snapshot that trigger a new one: bounds restart
    # replay and disk use while keeping the (whole-FSM) snapshot cost rare.
    snapshot_threshold: int = 10000
    # Entries kept in the log behind a snapshot, so that a follower that lagged briefly
    # catches up from the log instead of receiving a whole snapshot.
    trailing_logs: int = 5000
    # Snapshot files kept on disk: if the newest is corrupt (checksum), the node falls
    # back to an older one instead of needing a transfer from the leader (docs/architecture.md 7).
    snapshots_kept: int = 3
    # Maximum entries per AppendEntries / log write batch. Large enough to amortise the
    # per-message cost that dominates in Python (docs/architecture.md 4), small enough that one message
    # does not hold the GIL long enough to delay heartbeats.
    max_batch: int = 512
    # Largest key accepted, in UTF-8 bytes; larger is rejected before anything is written.
    max_key_bytes: int = 4096
    # Largest value accepted (1 MiB, close to etcd's 1.5 MiB request limit): big values
    # stall replication and snapshots for every other client.
    max_value_bytes: int = 1048576
    # Pre-vote (thesis 9.6): a node that was partitioned away asks whether it could win
    # before raising its term, so its return does not depose a healthy leader. Costs one
    # extra round trip, only when an election happens.
    pre_vote: bool = True
    # A leader that has not heard from a majority for an election timeout steps down,
    # so clients of a minority-side leader are redirected instead of hanging; lease reads
    # are only safe with it.
    check_quorum: bool = True
    # Serve default reads from the leader's lease instead of a ReadIndex heartbeat round.
    # Off: a lease is only safe if clocks advance at about the same rate and no process
    # pauses (GC, SIGSTOP, VM stalls) longer than the margin; ReadIndex is always safe.
    lease_reads: bool = False

    def __post_init__(self) -> None:
        problem = tuning_problem(self)
        if problem:
            raise ValueError(problem)
        # Accept a [min, max] list (as YAML gives it) and keep a tuple: hashable, immutable.
        object.__setattr__(self, "election_timeout_ms", tuple(self.election_timeout_ms))


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)  # YAML's true is no number


# Least value of each integer field: zero trailing logs is allowed (compact everything).
_MINIMUM = {"heartbeat_ms": 1, "snapshot_threshold": 1, "trailing_logs": 0, "snapshots_kept": 1,
            "max_batch": 1, "max_key_bytes": 1, "max_value_bytes": 1}


def tuning_problem(t: RaftTuning) -> Optional[str]:
    """The first invalid value of ``t`` as one line starting with the field name, or None."""
    for f in fields(t):
        v = getattr(t, f.name)
        if f.name == "election_timeout_ms":
            if not isinstance(v, (list, tuple)) or len(v) != 2 or not all(_is_int(x) for x in v):
                return f"election_timeout_ms must be a [min, max] list of two integers (got {show_value(v)})"
        elif f.type in ("bool", bool):
            if not isinstance(v, bool):
                return f"{f.name} must be true or false (got {show_value(v)})"
        elif not _is_int(v):
            return f"{f.name} must be an integer (got {show_value(v)})"
    for name, least in _MINIMUM.items():
        if getattr(t, name) < least:
            return f"{name} must be at least {least} (got {getattr(t, name)})"
    lo, hi = t.election_timeout_ms
    if lo >= hi:
        return f"election_timeout_ms: min ({lo}) must be less than max ({hi})"
    if lo <= 2 * t.heartbeat_ms:
        # Followers must be able to miss a heartbeat (and wait out a pause) before they
        # start an election, or a healthy leader is deposed by ordinary jitter.
        return (f"election_timeout_ms: min ({lo}) must be more than twice heartbeat_ms "
                f"({t.heartbeat_ms})")
    if t.lease_reads and not t.check_quorum:
        # Without check_quorum a deposed leader keeps believing its lease: stale reads.
        return "lease_reads requires check_quorum: true"
    return None


TUNING_KEYS = tuple(f.name for f in fields(RaftTuning))


def core_config(tuning: RaftTuning, tick_ms: int) -> CoreConfig:
    """The core's settings for ``tuning`` with a tick of ``tick_ms`` milliseconds.

    The only place milliseconds become ticks. Timeouts round down to whole ticks, with floors
    that keep the core's order (1 <= heartbeat < election min < election max) even for
    timings shorter than a few ticks, where the validated millisecond order alone could
    round to equal tick counts.
    """
    lo, hi = tuning.election_timeout_ms
    election_min = max(2, lo // tick_ms)
    return CoreConfig(
        election_ticks_min=election_min,
        election_ticks_max=max(election_min + 1, hi // tick_ms),
        heartbeat_ticks=max(1, tuning.heartbeat_ms // tick_ms),
        max_batch=tuning.max_batch,
        pre_vote=tuning.pre_vote,
        check_quorum=tuning.check_quorum,
        lease_reads=tuning.lease_reads,
    )
