"""Every message that crosses a socket, as a typed record, and the one msgpack codec for all.

A peer frame is ``[version, cluster_id, sender, type_code, [fields...]]``; a client frame is
``[version, type_code, [fields...]]``. Records are encoded as positional arrays (compact and
fast), and decoding checks the version, the type code, the number of fields and each field's
type, so a malformed frame becomes one :class:`DecodeError` instead of a crash deeper in.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Any, Callable, NamedTuple, Optional

import msgpack

PROTOCOL_VERSION = 1


class DecodeError(ValueError):
    """A frame that is not a well-formed message of this protocol version."""


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
    for e in v:
        if type(e) is not list or len(e) != 3:
            raise DecodeError("entry: expected [term, kind, data]")
        t, k, d = e
        if type(t) is not int or type(k) is not int or type(d) is not bytes:
            raise DecodeError("entry: wrong field types")
        out.append(Entry(t, k, d))
    return out


def _member(v: Any) -> Member:
    if type(v) is not list or len(v) != 5:
        raise DecodeError("member: expected [id, addr, client, http, voter]")
    return Member(_str(v[0]), _str(v[1]), _str(v[2]), _str(v[3]), _bool(v[4]))


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

_BY_CODE: dict[int, type] = {}
_SPEC: dict[type, tuple[int, tuple[str, ...], tuple[Callable[[Any], Any], ...]]] = {}


def record(code: int) -> Callable[[type], type]:
    """Register a dataclass as a wire record with a stable type code."""

    def wrap(cls: type) -> type:
        cls = dataclass(slots=True)(cls)
        fields = dataclasses.fields(cls)
        names = tuple(f.name for f in fields)
        checks = tuple(_CHECKERS[f.type] for f in fields)
        assert code not in _BY_CODE, f"duplicate type code {code}"
        _BY_CODE[code] = cls
        _SPEC[cls] = (code, names, checks)
        return cls

    return wrap


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


# ---------------------------------------------------------------- the codec


def _fields_of(msg: Any) -> list:
    _, names, _ = _SPEC[type(msg)]
    return [getattr(msg, n) for n in names]


def _build(code: Any, values: Any) -> Any:
    cls = _BY_CODE.get(code) if type(code) is int else None
    if cls is None:
        raise DecodeError(f"unknown message type {code!r}")
    _, names, checks = _SPEC[cls]
    if type(values) is not list:
        raise DecodeError(f"{cls.__name__}: fields must be an array")
    if len(values) != len(names):
        raise DecodeError(f"{cls.__name__}: expected {len(names)} fields, got {len(values)}")
    try:
        return cls(*[check(v) for check, v in zip(checks, values)])
    except DecodeError as e:
        raise DecodeError(f"{cls.__name__}: {e}") from None


def _unpack(data: bytes) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as e:  # msgpack raises several unrelated types for garbage
        raise DecodeError(f"not msgpack: {e.__class__.__name__}") from None


def encode_record(msg: Any) -> bytes:
    """Encode a record standing alone (a log entry payload)."""
    return msgpack.packb([_SPEC[type(msg)][0], _fields_of(msg)], use_bin_type=True)


def decode_record(data: bytes, expect: Optional[type] = None) -> Any:
    """Decode a record encoded by :func:`encode_record`, optionally requiring its type."""
    frame = _unpack(data)
    if type(frame) is not list or len(frame) != 2:
        raise DecodeError("record: expected [type, fields]")
    msg = _build(frame[0], frame[1])
    if expect is not None and type(msg) is not expect:
        raise DecodeError(f"expected {expect.__name__}, got {type(msg).__name__}")
    return msg


@dataclass(slots=True)
class PeerFrame:
    """A decoded peer message with its envelope."""

    cluster_id: str
    sender: str
    msg: Any


def encode_peer(cluster_id: str, sender: str, msg: Any) -> bytes:
    """Encode a Raft message with its envelope."""
    return msgpack.packb(
        [PROTOCOL_VERSION, cluster_id, sender, _SPEC[type(msg)][0], _fields_of(msg)], use_bin_type=True
    )


def decode_peer(data: bytes) -> PeerFrame:
    """Decode and validate a peer frame; raises DecodeError on anything malformed."""
    frame = _unpack(data)
    if type(frame) is not list or len(frame) != 5:
        raise DecodeError("peer frame: expected [version, cluster_id, sender, type, fields]")
    version, cluster_id, sender, code, values = frame
    if version != PROTOCOL_VERSION:
        raise DecodeError(f"protocol version {version!r}, this node speaks {PROTOCOL_VERSION}")
    if type(cluster_id) is not str or type(sender) is not str or not sender:
        raise DecodeError("peer frame: cluster_id and sender must be strings")
    msg = _build(code, values)
    if type(msg) not in PEER_TYPES:
        raise DecodeError(f"{type(msg).__name__} is not a peer message")
    return PeerFrame(cluster_id, sender, msg)


def encode_client(msg: Any) -> bytes:
    """Encode a ClientRequest or ClientReply."""
    return msgpack.packb([PROTOCOL_VERSION, _SPEC[type(msg)][0], _fields_of(msg)], use_bin_type=True)


def decode_client(data: bytes, expect: type) -> Any:
    """Decode a client frame that must hold a record of type ``expect``."""
    frame = _unpack(data)
    if type(frame) is not list or len(frame) != 3:
        raise DecodeError("client frame: expected [version, type, fields]")
    if frame[0] != PROTOCOL_VERSION:
        raise DecodeError(f"protocol version {frame[0]!r}, this node speaks {PROTOCOL_VERSION}")
    msg = _build(frame[1], frame[2])
    if type(msg) is not expect:
        raise DecodeError(f"expected {expect.__name__}, got {type(msg).__name__}")
    return msg
