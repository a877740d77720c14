"""Every record the node exchanges or persists, as typed data, and the rules for their fields.

This module is the schema: peer (Raft) messages, the client request and reply, the log entry
and its payloads (Command, Configuration), cluster members, and the Op/Status enums. It imports
no third-party package (no msgpack, no zmq): the wire codec (``raftkv.wire.codec``) and the
disk format (``raftkv.storage.format``) each turn these records into bytes their own way, and
storage can import it without depending on the transport. It lives at the package root, not in
``wire/``, because three layers share it: ``actors`` decide on records, ``wire`` carries them,
``storage`` remembers them.

A record is encoded as its type code and the positional list of its field values
(:func:`to_fields`); :func:`from_fields` rebuilds it and checks every field's type. The schema
grows only by appending fields, and the decoder accepts both directions of a version skew:

- more values than it knows (a newer writer appended fields): the extra trailing values are
  ignored (forward compatibility);
- fewer values (an older writer): the missing trailing fields take their defaults, provided
  every field without a default is present (backward compatibility).

So a new field must be appended, must have a default, and must mean "as before" at that
default. Type codes and the order of existing fields never change; an incompatible change
needs a new envelope version (``PROTOCOL_VERSION`` for frames, the disk format version for
persisted data) instead.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Any, Callable, NamedTuple, Optional


class DecodeError(ValueError):
    """Bytes or values that are not a well-formed record (or frame) of a version this build reads."""


class UndecodableEntry(Exception):
    """A committed log entry this build cannot decode (unknown kind, malformed payload, unknown
    operation). Skipping it would make this node's state silently differ from that of nodes
    that can apply it, so the node must stop instead; the message names the index."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(f"committed entry {index} cannot be decoded by this build ({reason}); "
                         "refusing to apply the log past it (run a build that reads it)")
        self.index = index


class EntryKind(IntEnum):
    """What a log entry holds."""

    NOOP = 0  # appended by every new leader so that it can commit entries of earlier terms
    COMMAND = 1  # a client Command for the FSM
    CONFIG = 2  # a Configuration: the cluster's members from this index on


class Entry(NamedTuple):
    """One log entry. A NamedTuple rather than a dataclass: there are millions and it packs as an array."""

    term: int
    kind: int
    data: bytes


class Member(NamedTuple):
    """One cluster member: its id and addresses; ``voter`` is False for a learner."""

    id: str
    addr: str
    client: str = ""
    http: str = ""
    voter: bool = True


# --- field checkers: each takes the decoded value and returns it (possibly converted) or raises


def _int(v: Any) -> int:
    if type(v) is not int:
        raise DecodeError(f"expected int, got {type(v).__name__}")
    return v


def _bool(v: Any) -> bool:
    if type(v) is not bool:
        raise DecodeError(f"expected bool, got {type(v).__name__}")
    return v


def _bytes(v: Any) -> bytes:
    if type(v) is not bytes:
        raise DecodeError(f"expected bytes, got {type(v).__name__}")
    return v


def _str(v: Any) -> str:
    if type(v) is not str:
        raise DecodeError(f"expected str, got {type(v).__name__}")
    return v


def _optional(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def opt(v: Any) -> Any:
        return None if v is None else check(v)

    return opt


def _entries(v: Any) -> list:
    if type(v) is not list:
        raise DecodeError("entries: expected a list")
    out = []
    for e in v:  # inline, not entry_from_fields: this runs for every entry a follower receives
        if type(e) is not list or len(e) != 3:
            if type(e) is not list or len(e) < 3:
                raise DecodeError("entry: expected [term, kind, data]")
            e = e[:3]  # values a newer writer appended
        t, k, d = e
        if type(t) is not int or type(k) is not int or type(d) is not bytes:
            raise DecodeError("entry: wrong field types")
        out.append(Entry(t, k, d))
    return out


def entry_from_fields(e: Any) -> Entry:
    """An Entry from ``[term, kind, data, ...]``; trailing values a newer writer appended are ignored."""
    if type(e) is not list or len(e) < 3:
        raise DecodeError("entry: expected [term, kind, data]")
    t, k, d = e[0], e[1], e[2]
    if type(t) is not int or type(k) is not int or type(d) is not bytes:
        raise DecodeError("entry: wrong field types")
    return Entry(t, k, d)


_MEMBER_CHECKS = (_str, _str, _str, _str, _bool)
_MEMBER_REQUIRED = 2  # id and addr; client, http and voter have defaults


def _member(v: Any) -> Member:
    if type(v) is not list or len(v) < _MEMBER_REQUIRED:
        raise DecodeError("member: expected [id, addr, client, http, voter]")
    try:
        return Member(*[check(x) for check, x in zip(_MEMBER_CHECKS, v)])
    except DecodeError as e:
        raise DecodeError(f"member: {e}") from None


def _members(v: Any) -> list:
    if type(v) is not list:
        raise DecodeError("members: expected a list")
    return [_member(m) for m in v]


def _pairs(v: Any) -> list:
    if type(v) is not list:
        raise DecodeError("items: expected a list")
    out = []
    for p in v:
        if type(p) is not list or len(p) != 2:
            raise DecodeError("item: expected [key, value]")
        out.append((_str(p[0]), _bytes(p[1])))
    return out


def _plain(v: Any) -> Any:
    """Any msgpack value (used only for the status document, which is data, not protocol)."""
    return v


_CHECKERS: dict[Any, Callable[[Any], Any]] = {
    "int": _int,
    "bool": _bool,
    "bytes": _bytes,
    "str": _str,
    "Optional[str]": _optional(_str),
    "Optional[bytes]": _optional(_bytes),
    "Optional[int]": _optional(_int),
    "list[Entry]": _entries,
    "list[Member]": _members,
    "Member": _member,
    "Optional[Member]": _optional(_member),
    "list[tuple[str, bytes]]": _pairs,
    "Any": _plain,
}

class RecordSpec(NamedTuple):
    """How one record type is laid out: its type code, field names and checkers in order, and
    how many leading fields have no default (a decoder needs at least those)."""

    code: int
    names: tuple[str, ...]
    checks: tuple[Callable[[Any], Any], ...]
    required: int


_BY_CODE: dict[int, type] = {}
_SPEC: dict[type, RecordSpec] = {}


def record(code: int) -> Callable[[type], type]:
    """Register a dataclass as a record with a stable type code.

    Fields with defaults must all come after the fields without (dataclasses enforce it), so
    "the first ``required`` fields" are exactly the ones a decoder cannot do without.
    """

    def wrap(cls: type) -> type:
        cls = dataclass(slots=True)(cls)
        fields = dataclasses.fields(cls)
        names = tuple(f.name for f in fields)
        checks = tuple(_CHECKERS[f.type] for f in fields)
        required = sum(1 for f in fields
                       if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
        assert code not in _BY_CODE, f"duplicate type code {code}"
        _BY_CODE[code] = cls
        _SPEC[cls] = RecordSpec(code, names, checks, required)
        return cls

    return wrap


def spec_of(cls: type) -> RecordSpec:
    """The layout of a registered record type (KeyError for anything else)."""
    return _SPEC[cls]


def type_code(msg: Any) -> int:
    """The stable type code of a record."""
    return _SPEC[type(msg)].code


def to_fields(msg: Any) -> list:
    """A record's field values in schema order (what the codecs pack as an array)."""
    return [getattr(msg, n) for n in _SPEC[type(msg)].names]


def from_fields(code: Any, values: Any) -> Any:
    """Rebuild the record with type ``code`` from its field values, checking each one's type.

    Accepts extra trailing values (ignored: fields appended by a newer writer) and missing
    trailing values whose fields have defaults (an older writer). Raises DecodeError for an
    unknown code, too few values, or a value of the wrong type.
    """
    cls = _BY_CODE.get(code) if type(code) is int else None
    if cls is None:
        raise DecodeError(f"unknown message type {code!r}")
    _, names, checks, required = _SPEC[cls]
    if type(values) is not list:
        raise DecodeError(f"{cls.__name__}: fields must be an array")
    if len(values) < required:
        raise DecodeError(f"{cls.__name__}: expected at least {required} fields, got {len(values)}")
    try:
        # zip stops at the shorter: extra values are dropped, missing ones take their defaults
        return cls(*[check(v) for check, v in zip(checks, values)])
    except DecodeError as e:
        raise DecodeError(f"{cls.__name__}: {e}") from None


# ---------------------------------------------------------------- peer (Raft) messages


@record(1)
class RequestVote:
    """RequestVote, or a pre-vote (thesis 9.6) when ``pre_vote``: then ``term`` is the term the
    sender would campaign in, and nobody's term changes. ``transfer`` marks an election started
    by TimeoutNow, which bypasses the receivers' leader stickiness (thesis 3.10)."""

    term: int
    last_log_index: int
    last_log_term: int
    pre_vote: bool = False
    transfer: bool = False


@record(2)
class VoteReply:
    """Answer to RequestVote; ``pre_vote`` echoes the request's kind."""

    term: int
    granted: bool
    pre_vote: bool = False


@record(3)
class AppendEntries:
    """Log replication (Raft Figure 2)."""

    term: int
    prev_index: int
    prev_term: int
    entries: list[Entry]
    commit: int


@record(4)
class AppendReply:
    """On success ``match_index`` is ``prev_index + len(entries)`` of the request it answers (never
    the follower's last index: a reordered old reply must not claim more than it confirmed). On
    failure, ``reject_index`` is the request's prev_index and the conflict hints let the leader skip
    a whole term at a time."""

    term: int
    success: bool
    match_index: int = 0
    reject_index: int = 0
    conflict_index: int = 0
    conflict_term: int = 0
    need_snapshot: bool = False  # the follower cannot rebuild its state from its own disk


@record(5)
class Heartbeat:
    """Leader liveness and commit propagation without log checks. ``round`` tags a ReadIndex
    confirmation round (thesis 6.4); ``commit`` is at most what the follower is known to hold."""

    term: int
    commit: int
    round: int


@record(6)
class HeartbeatReply:
    """Echoes the round it answers, so an ack can only confirm reads registered before it."""

    term: int
    round: int
    last_index: int


@record(7)
class TimeoutNow:
    """Leadership transfer (thesis 3.10): start an election at once, skipping pre-vote."""

    term: int


@record(8)
class JoinRequest:
    """Sent by a node that wants to become a member; followers forward it to the leader."""

    member: Member
    incarnation: str


@record(9)
class JoinReply:
    """``ok`` once the member is in the leader's configuration; otherwise an error or a leader hint."""

    ok: bool
    cluster_id: str
    leader_addr: Optional[str] = None
    error: Optional[str] = None


@record(10)
class InstallSnapshot:
    """One chunk of a snapshot streamed from the leader."""

    term: int
    last_index: int
    last_term: int
    offset: int
    data: bytes
    done: bool
    members: list[Member]


@record(11)
class InstallSnapshotReply:
    """Acknowledges a chunk; ``next_offset`` lets the leader resume, and ``last_index`` names the snapshot."""

    term: int
    last_index: int
    next_offset: int
    done: bool


@record(12)
class ReadIndexRequest:
    """A follower asks the leader for a read index on behalf of its clients (thesis 6.4.1)."""

    term: int
    req_id: int


@record(13)
class ReadIndexReply:
    """The index the follower must have applied before serving ``req_id``'s reads; ``ok`` False
    when the leader could not confirm its leadership (the follower redirects its clients)."""

    term: int
    req_id: int
    index: int
    ok: bool


# ---------------------------------------------------------------- log entry payloads


@record(30)
class Command:
    """A client write as stored in the log. (client_id, seq) identify it for exactly-once
    application (thesis 6.3); ``expected``/``expect_absent`` make it a compare-and-set."""

    op: str
    key: str
    value: Optional[bytes] = None
    expected: Optional[bytes] = None
    expect_absent: bool = False
    client_id: str = ""
    seq: int = 0


@record(31)
class Configuration:
    """The cluster's members, as carried by a CONFIG entry or a snapshot."""

    members: list[Member]


# ---------------------------------------------------------------- client protocol


@record(50)
class ClientRequest:
    """One request to a node's front door. ``op`` is one of CLIENT_OPS."""

    op: str
    key: str = ""
    value: Optional[bytes] = None
    expected: Optional[bytes] = None
    expect_absent: bool = False
    consistency: str = "linearizable"
    client_id: str = ""
    seq: int = 0
    limit: int = 0
    member: Optional[Member] = None


@record(51)
class ClientReply:
    """``status`` is one of REPLY_STATUSES. ``leader_client`` is a redirect hint."""

    status: str
    value: Optional[bytes] = None
    error: Optional[str] = None
    leader_id: Optional[str] = None
    leader_client: Optional[str] = None
    items: list[tuple[str, bytes]] = field(default_factory=list)
    info: Any = None


class Op(str, Enum):
    """A client request's operation. A ``str`` so that it packs as the plain string on the wire."""

    GET = "get"
    PUT = "put"
    DELETE = "delete"
    CAS = "cas"
    LIST = "list"
    STATUS = "status"
    MEMBERS = "members"
    ADD_NODE = "add_node"
    REMOVE_NODE = "remove_node"
    TRANSFER_LEADER = "transfer_leader"
    SNAPSHOT = "snapshot"


class Status(str, Enum):
    """A reply's status; what a client does with each is in STATUS_CLASS."""

    OK = "ok"
    NOT_FOUND = "not_found"
    CAS_FAILED = "cas_failed"
    NOT_LEADER = "not_leader"
    UNAVAILABLE = "unavailable"
    INVALID = "invalid"
    TIMEOUT = "timeout"
    # The write's session is no longer known (or the request is older than its window): it was
    # not applied now; the client starts a new session.
    EXPIRED = "expired"


class Outcome(Enum):
    """How a client treats a reply status: the one table the library, the pipeline and HTTP use."""

    FINAL = "final"          # the answer: return it to the caller
    REJECTED = "rejected"    # the request is bad: raise, never retry
    RETRY = "retry"          # ask again (the leader, or later): nothing was applied by this attempt
    NEW_SESSION = "new_session"  # retry in a fresh session if this was the first send, else unknown


STATUS_CLASS: dict[Status, Outcome] = {
    Status.OK: Outcome.FINAL,
    Status.NOT_FOUND: Outcome.FINAL,
    Status.CAS_FAILED: Outcome.FINAL,
    Status.INVALID: Outcome.REJECTED,
    Status.NOT_LEADER: Outcome.RETRY,
    Status.UNAVAILABLE: Outcome.RETRY,
    Status.TIMEOUT: Outcome.RETRY,
    Status.EXPIRED: Outcome.NEW_SESSION,
}

CLIENT_OPS = frozenset(op.value for op in Op)
WRITE_OPS = frozenset({Op.PUT.value, Op.DELETE.value, Op.CAS.value})
REPLY_STATUSES = frozenset(st.value for st in Status)

PEER_TYPES = (RequestVote, VoteReply, AppendEntries, AppendReply, Heartbeat, HeartbeatReply,
              TimeoutNow, JoinRequest, JoinReply, InstallSnapshot, InstallSnapshotReply, ReadIndexRequest,
              ReadIndexReply)
