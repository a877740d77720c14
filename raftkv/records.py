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
import re
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Optional

if TYPE_CHECKING:  # tells the type checker that @record makes dataclasses; nothing to import at run time
    from typing_extensions import dataclass_transform
else:
    def dataclass_transform(**_: Any) -> Callable[[Any], Any]:
        return lambda f: f


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
    """One cluster member: its id and addresses; ``voter`` is False for a learner.

    ``incarnation`` is the random id of the member's data directory as admitted (docs/architecture.md 8:
    a node's identity is its id plus its incarnation); "" is unknown (a legacy record or a
    whole-cluster bootstrap), which every incarnation matches, as before. ``promote`` False
    marks a learner that stays one (``add-node --learner``): every leader honours it.
    ``curve_key`` is the member's CURVE public key (Z85, 40 characters) on a secure cluster:
    the only key its peer door admits for it (issue 11); "" on clusters made without --secure."""

    id: str
    addr: str
    client: str = ""
    http: str = ""
    voter: bool = True
    incarnation: str = ""
    promote: bool = True
    curve_key: str = ""


# --- hard limits of what a record may hold
#
# Every field a peer or a client sends is checked against these before it reaches the core, so
# that no message, from an outsider or a buggy member, can crash a node ("no message can crash
# a node", issue 11). They are deliberately generous: each is far above what this build ever
# sends, and the configurable limits (raftkv.config: max_key_bytes, max_value_bytes,
# max_batch) are enforced by the node itself below these caps.

INDEX_LIMIT = 1 << 63
"""Terms, indexes, commits, offsets, sequence numbers, sizes and counters are in [0, 2^63): a
signed 64-bit range, so that ``term + 1`` and ``index + n`` still fit every 64-bit encoding."""
MAX_ID_BYTES = 64  # node ids (the config's id rule allows at most 64 characters) and client ids
MAX_CLUSTER_ID_BYTES = 256
MAX_NAME_BYTES = 64  # op, status and consistency names
MAX_ADDR_BYTES = 262  # "[" + 253-character host name or IPv6 literal + "]:" + 5-digit port
MAX_TEXT_BYTES = 64 * 1024  # error messages, incarnations and other free text
MAX_KEY_BYTES = 64 * 1024  # >= any sane max_key_bytes (default 4096)
MAX_VALUE_BYTES = 16 * 1024 * 1024  # >= any sane max_value_bytes (default 1 MiB); CAS expected too
MAX_ENTRY_BYTES = 2 * MAX_VALUE_BYTES + MAX_KEY_BYTES + 64 * 1024  # a Command: value + expected + key + rest
MAX_ENTRIES = 65536  # entries per AppendEntries (max_batch defaults to 512)
MAX_CHUNK_BYTES = 16 * 1024 * 1024  # one InstallSnapshot chunk (the snapshotter sends 512 KiB)
MAX_MEMBERS = 1024  # members of one configuration
MAX_LIST_LIMIT = (1 << 31) - 1  # a list request's limit (0 = all keys)
MAX_ITEMS = 10_000_000  # key/value pairs of one list reply
MAX_EVENTS = 1_000_000  # watch events of one reply (a node sends at most a few thousand)
MAX_WAIT_MS = 600_000  # a watch request's long-poll wait (the node caps it lower, actors/watch_hub.py)


def _show(v: Any) -> str:
    """A short description of a received value, for an error message (never the value in full)."""
    if type(v) is int:
        return str(v)
    if type(v) in (str, bytes):
        return f"{type(v).__name__} of {len(v)} characters" if type(v) is str else f"{len(v)} bytes"
    return type(v).__name__


# --- field checkers: each takes the decoded value and returns it (possibly converted) or raises

# For a checker that returns its value unchanged when it accepts it: a Python expression (of the
# variable name given) that is true only for values the checker accepts. ``from_fields`` inlines
# these into one generated decoder per record type (see ``_fast_decoder``); a value the
# expression does not accept goes to the checker itself, so each may be stricter than its
# checker (a string is taken at once only if it fits the byte bound whatever its characters).
_INLINE: dict[Callable[[Any], Any], Callable[[str], str]] = {}
# An optional field's checker whose inner checker has no inline form -> that inner checker: a
# generated decoder passes None through without a call (a Command's ``txn``: once per decoded
# committed entry on every follower).
_OPTIONAL_OF: dict[Callable[[Any], Any], Callable[[Any], Any]] = {}


def _int(v: Any) -> int:
    if type(v) is not int:
        raise DecodeError(f"expected int, got {type(v).__name__}")
    if not 0 <= v < INDEX_LIMIT:
        raise DecodeError(f"{v} is out of range [0, 2^63)")
    return v


def _int_at_most(cap: int) -> Callable[[Any], int]:
    def check(v: Any) -> int:
        if _int(v) > cap:
            raise DecodeError(f"{v} is more than {cap}")
        return v

    top = min(cap, INDEX_LIMIT - 1)
    _INLINE[check] = lambda x: f"(type({x}) is int and 0 <= {x} <= {top})"
    return check


def _bool(v: Any) -> bool:
    if type(v) is not bool:
        raise DecodeError(f"expected bool, got {type(v).__name__}")
    return v


_INLINE[_int] = lambda x: f"(type({x}) is int and 0 <= {x} < {INDEX_LIMIT})"
_INLINE[_bool] = lambda x: f"type({x}) is bool"


def _utf8_len_over(s: str, cap: int) -> bool:
    # A character is at most 4 UTF-8 bytes: encode only when the length alone cannot decide.
    n = len(s)
    return n > cap or (n * 4 > cap and len(s.encode("utf-8", "surrogatepass")) > cap)


def _bytes_at_most(cap: int) -> Callable[[Any], bytes]:
    def check(v: Any) -> bytes:
        if type(v) is not bytes:
            raise DecodeError(f"expected bytes, got {type(v).__name__}")
        if len(v) > cap:
            raise DecodeError(f"{len(v)} bytes is more than the limit of {cap}")
        return v

    _INLINE[check] = lambda x: f"(type({x}) is bytes and len({x}) <= {cap})"
    return check


def _str_at_most(cap: int, nonempty: bool = False) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        if type(v) is not str:
            raise DecodeError(f"expected str, got {type(v).__name__}")
        n = len(v)  # _utf8_len_over inlined: this runs for every string field of every record
        if n > cap or (n * 4 > cap and len(v.encode("utf-8", "surrogatepass")) > cap):
            raise DecodeError(f"{_show(v)} is more than the limit of {cap} bytes")
        if nonempty and not v:
            raise DecodeError("must not be empty")
        return v

    # An ASCII string is as many UTF-8 bytes as characters (isascii() reads a flag), and n
    # characters of any kind are at most 4n bytes: either way within the bound, nothing encoded.
    lo, quarter = (1 if nonempty else 0), cap // 4
    _INLINE[check] = lambda x: (f"(type({x}) is str and {lo} <= len({x}) <= {cap} "
                                f"and ({x}.isascii() or len({x}) <= {quarter}))")
    return check


_bytes = _bytes_at_most(MAX_VALUE_BYTES)
_str = _str_at_most(MAX_TEXT_BYTES)
_name = _str_at_most(MAX_NAME_BYTES)
_key = _str_at_most(MAX_KEY_BYTES)
_client_id = _str_at_most(MAX_ID_BYTES)
_node_id = _str_at_most(MAX_ID_BYTES, nonempty=True)
_cluster_id = _str_at_most(MAX_CLUSTER_ID_BYTES)
_incarnation = _str_at_most(MAX_ID_BYTES * 4)

# HOST:PORT as raftkv.config.normalize_address writes it (brackets around an IPv6 host). The host
# may be empty or "*" (all interfaces) in what a user typed; advertised addresses never are.
_ADDR_RE = re.compile(r"(?:\*|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])?:[0-9]{1,5}\Z")


def _addr(v: Any, may_be_empty: bool = True) -> str:
    if type(v) is not str:
        raise DecodeError(f"expected str, got {type(v).__name__}")
    if not v:
        if may_be_empty:
            return v
        raise DecodeError("address must not be empty")
    if len(v) > MAX_ADDR_BYTES:
        raise DecodeError(f"address of {len(v)} characters is more than the limit of {MAX_ADDR_BYTES}")
    if not v.isascii() or _ADDR_RE.match(v) is None or not 0 < int(v.rpartition(":")[2]) < 65536:
        raise DecodeError("address is not HOST:PORT")
    return v


def _optional(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def opt(v: Any) -> Any:
        return None if v is None else check(v)

    inner = _INLINE.get(check)
    if inner is not None:
        _INLINE[opt] = lambda x: f"({x} is None or {inner(x)})"
    else:
        _OPTIONAL_OF[opt] = check  # the generated decoders test None before calling it (_fast_decoder)
    return opt


def _check_entry(e: Any) -> Entry:
    """An Entry from ``[term, kind, data, ...]`` with every value checked."""
    if type(e) is not list or len(e) < 3:
        raise DecodeError("entry: expected [term, kind, data]")
    t, k, d = e[0], e[1], e[2]
    if type(t) is not int or type(k) is not int or type(d) is not bytes:
        raise DecodeError("entry: wrong field types")
    if not (0 <= t < INDEX_LIMIT and 0 <= k < INDEX_LIMIT):
        raise DecodeError(f"entry: term {t} or kind {k} is out of range [0, 2^63)")
    if len(d) > MAX_ENTRY_BYTES:
        raise DecodeError(f"entry: data of {len(d)} bytes is more than the limit of {MAX_ENTRY_BYTES}")
    return Entry(t, k, d)


def _entries(v: Any) -> list:
    if type(v) is not list:
        raise DecodeError("entries: expected a list")
    if len(v) > MAX_ENTRIES:
        raise DecodeError(f"{len(v)} entries is more than the limit of {MAX_ENTRIES}")
    out = []
    limit, cap = INDEX_LIMIT, MAX_ENTRY_BYTES
    new, entry = tuple.__new__, Entry
    for e in v:  # inline, not _check_entry: this runs for every entry a follower receives
        if type(e) is not list or len(e) != 3:
            if type(e) is not list or len(e) < 3:
                raise DecodeError("entry: expected [term, kind, data]")
            e = e[:3]  # values a newer writer appended
        t, k, d = e
        if type(t) is not int or type(k) is not int or type(d) is not bytes:
            raise DecodeError("entry: wrong field types")
        if not (0 <= t < limit and 0 <= k < limit and len(d) <= cap):
            return [_check_entry(e)]  # raises, saying which value is wrong
        out.append(new(entry, e))  # Entry(t, k, d) without the Python frame of its __new__
    return out


def entry_from_fields(e: Any) -> Entry:
    """An Entry from ``[term, kind, data, ...]``; trailing values a newer writer appended are ignored."""
    return _check_entry(e)


_MEMBER_NAMES = ("id", "addr", "client", "http", "voter", "incarnation", "promote", "curve_key")
_Z85_RE = re.compile(r"[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}\Z")


def _curve_key_text(v: Any) -> str:
    """A CURVE public key in Z85 ("" = none): 40 characters of the Z85 alphabet."""
    if type(v) is not str:
        raise DecodeError(f"expected str, got {type(v).__name__}")
    if v and _Z85_RE.match(v) is None:
        raise DecodeError("not a CURVE public key (40 Z85 characters)")
    return v


def _curve_key_bytes(v: Any) -> bytes:
    """A CURVE key in Z85 bytes (a JoinReply's cluster key)."""
    if type(v) is not bytes or len(v) != 40:
        raise DecodeError("not a CURVE key (40 Z85 characters)")
    _curve_key_text(v.decode("ascii", "replace"))
    return v
_MEMBER_REQUIRED = 2  # id and addr; the others have defaults


def _member_checker(strict: bool) -> Callable[[Any], Member]:
    """A Member checker. ``strict`` (a member of a configuration, or one that asks to join) needs a
    non-empty id and address; a client's add_node request may leave them empty, and the leader
    answers that with its own message."""
    checks: tuple[Callable[[Any], Any], ...] = (
        _node_id if strict else _client_id, lambda a: _addr(a, not strict), _addr, _addr, _bool, _incarnation, _bool,
        _curve_key_text)

    def member(v: Any) -> Member:
        if type(v) is not list or len(v) < _MEMBER_REQUIRED:
            raise DecodeError("member: expected [id, addr, client, http, voter]")
        try:
            return Member(*[check(x) for check, x in zip(checks, v)])
        except DecodeError as e:
            for name, check, x in zip(_MEMBER_NAMES, checks, v):
                try:
                    check(x)
                except DecodeError:
                    raise DecodeError(f"member: {e} in field {name!r}") from None
            raise DecodeError(f"member: {e}") from None

    return member


_member = _member_checker(strict=True)
_loose_member = _member_checker(strict=False)


def _members(v: Any) -> list:
    if type(v) is not list:
        raise DecodeError("members: expected a list")
    if len(v) > MAX_MEMBERS:
        raise DecodeError(f"{len(v)} members is more than the limit of {MAX_MEMBERS}")
    return [_member(m) for m in v]


def _pairs(v: Any) -> list:
    if type(v) is not list:
        raise DecodeError("items: expected a list")
    if len(v) > MAX_ITEMS:
        raise DecodeError(f"{len(v)} items is more than the limit of {MAX_ITEMS}")
    out = []
    for p in v:
        if type(p) is not list or len(p) != 2:
            raise DecodeError("item: expected [key, value]")
        out.append((_key(p[0]), _bytes(p[1])))
    return out


class Event(NamedTuple):
    """One watch event as it crosses the client door (actors/watch_events.py's WatchEvent, on the
    wire): what ``revision`` (the log index of the committed entry) did to ``key``; ``type`` is
    "put" or "delete"; ``value`` is None for a delete; ``prev_value`` None when not known;
    ``create_revision`` and ``version`` 0 when the state does not track them."""

    revision: int
    type: str
    key: str
    value: Optional[bytes] = None
    prev_value: Optional[bytes] = None
    create_revision: int = 0
    version: int = 0

    @property
    def mod_revision(self) -> int:
        """The key's modification revision this event made: its ``revision``."""
        return self.revision


_EVENT_TYPES = frozenset(("put", "delete"))


def _events(v: Any) -> list:
    if type(v) is not list:
        raise DecodeError("events: expected a list")
    if len(v) > MAX_EVENTS:
        raise DecodeError(f"{len(v)} events is more than the limit of {MAX_EVENTS}")
    out = []
    for e in v:
        if type(e) is not list or len(e) < 3:
            raise DecodeError("event: expected [revision, type, key, ...]")
        e = e[:7]  # values a newer writer appended are ignored
        rev, kind, key = _int(e[0]), _name(e[1]), _key(e[2])
        if kind not in _EVENT_TYPES:
            raise DecodeError(f"event: unknown type {_show(kind)}")
        rest = [_optional(_bytes)(x) for x in e[3:5]] + [_int(x) for x in e[5:7]]
        out.append(Event(rev, kind, key, *rest))
    return out


def _plain(v: Any) -> Any:
    """Any msgpack value (used only for the status document, which is data, not protocol)."""
    return v


# The checker of each field type, by its annotation; a record overrides it per field where a
# field needs a tighter rule (see ``record``). Every default is bounded too.
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
    "Optional[list[Member]]": _optional(_members),
    "list[tuple[str, bytes]]": _pairs,
    "list[Event]": _events,
    "Any": _plain,
}

class RecordSpec(NamedTuple):
    """How one record type is laid out: its type code, field names and checkers in order, and
    how many leading fields have no default (a decoder needs at least those)."""

    code: int
    names: tuple[str, ...]
    checks: tuple[Callable[[Any], Any], ...]
    required: int
    rule: Optional[Callable[[Any], Optional[str]]] = None  # a check across fields: the problem or None


_BY_CODE: dict[int, type] = {}
_SPEC: dict[type, RecordSpec] = {}
# type code -> (number of fields, generated decoder, cross-field rule): see _fast_decoder
_FAST: dict[int, tuple[int, Callable[[list], Any], Optional[Callable[[Any], Optional[str]]]]] = {}


def _fast_decoder(cls: type, checks: tuple) -> Callable[[list], Any]:
    """A decoder of the values of one record of ``cls`` with exactly one value per field (what
    this build writes): the checkers that have an inline form (``_INLINE``) become one boolean
    expression, the others are called; it returns the record, or None when an inline condition
    fails (then ``from_fields`` runs every checker, which accepts what the condition did not
    cover or raises the usual error). Same records as the checkers give, ~3x faster for a
    record of plain fields: one call instead of one per field (every peer message, entry
    payload and client frame is decoded through here)."""
    n = len(checks)
    vs = [f"v{i}" for i in range(n)]
    env: dict[str, Any] = {"cls": cls}
    conds, args = [], []
    for i, (v, check) in enumerate(zip(vs, checks)):
        inline = _INLINE.get(check)
        if inline is not None:
            conds.append(inline(v))
            args.append(v)
        elif check in _OPTIONAL_OF:
            env[f"c{i}"] = _OPTIONAL_OF[check]
            args.append(f"(None if {v} is None else c{i}({v}))")
        else:
            env[f"c{i}"] = check
            args.append(f"c{i}({v})")
    unpack = f"    {', '.join(vs)}, = values\n" if n else ""
    test = f"    if not ({' and '.join(conds)}):\n        return None\n" if conds else ""
    src = f"def decode(values):\n{unpack}{test}    return cls({', '.join(args)})\n"
    exec(compile(src, f"<decoder of {cls.__name__}>", "exec"), env)
    return env["decode"]


@dataclass_transform(field_specifiers=(field,))
def record(code: int, rule: Optional[Callable[[Any], Optional[str]]] = None,
           **checks_by_field: Callable[[Any], Any]) -> Callable[[type], type]:
    """Register a dataclass as a record with a stable type code.

    Each field is checked by the checker of its annotation, or by ``checks_by_field[name]``
    when given (a tighter bound: an id, an address, a key). ``rule(record)`` checks what one
    field alone cannot and returns the problem, or None.

    Fields with defaults must all come after the fields without (dataclasses enforce it), so
    "the first ``required`` fields" are exactly the ones a decoder cannot do without.
    """

    def wrap(cls: type) -> type:
        cls = dataclass(slots=True)(cls)
        fields = dataclasses.fields(cls)
        names = tuple(f.name for f in fields)
        assert set(checks_by_field) <= set(names), f"{cls.__name__}: no field {set(checks_by_field) - set(names)}"
        checks = tuple(checks_by_field.get(f.name) or _CHECKERS[f.type] for f in fields)
        required = sum(1 for f in fields
                       if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
        assert code not in _BY_CODE, f"duplicate type code {code}"
        _BY_CODE[code] = cls
        _SPEC[cls] = RecordSpec(code, names, checks, required, rule)
        _FAST[code] = (len(names), _fast_decoder(cls, checks), rule)
        return cls

    return wrap


def spec_of(cls: type) -> RecordSpec:
    """The layout of a registered record type (KeyError for anything else)."""
    return _SPEC[cls]


def fast_decoder_of(cls: type) -> tuple[int, Callable[[list], Any], Optional[Callable[[Any], Optional[str]]]]:
    """``(number of fields, decoder, rule)`` of a registered record type: the decoder
    :func:`from_fields` tries first for exactly one value per field (it returns the record, or
    None: then :func:`from_fields` decides), and the cross-field rule it applies after."""
    return _FAST[_SPEC[cls].code]


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
    fast = _FAST.get(code) if type(code) is int else None
    if fast is not None and type(values) is list and len(values) == fast[0]:
        try:
            msg = fast[1](values)
        except DecodeError:  # a called checker refused a value: the generic path says which
            msg = None
        if msg is not None:
            rule = fast[2]
            if rule is None or not rule(msg):
                return msg
    return _from_fields_checked(code, values)


def _from_fields_checked(code: Any, values: Any) -> Any:
    """:func:`from_fields` calling every field's checker (extra or missing trailing values, and
    every error message)."""
    cls = _BY_CODE.get(code) if type(code) is int else None
    if cls is None:
        raise DecodeError(f"unknown message type {_show(code)}")
    _, names, checks, required, rule = _SPEC[cls]
    if type(values) is not list:
        raise DecodeError(f"{cls.__name__}: fields must be an array")
    if len(values) < required:
        raise DecodeError(f"{cls.__name__}: expected at least {required} fields, got {len(values)}")
    try:
        # zip stops at the shorter: extra values are dropped, missing ones take their defaults
        msg = cls(*[check(v) for check, v in zip(checks, values)])
    except DecodeError as e:
        raise DecodeError(f"{cls.__name__}: {e} in field {_failing_field(names, checks, values)!r}") from None
    if rule is not None:
        problem = rule(msg)
        if problem:
            raise DecodeError(f"{cls.__name__}: {problem}")
    return msg


def _failing_field(names: tuple, checks: tuple, values: list) -> str:
    """The name of the first field whose value its checker refuses (the slow path of an error)."""
    for name, check, v in zip(names, checks, values):
        try:
            check(v)
        except DecodeError:
            return name
    return "?"


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
    to_incarnation: str = ""  # the addressee's incarnation as the sender's configuration knows it ("" = unchecked)


@record(2)
class VoteReply:
    """Answer to RequestVote; ``pre_vote`` echoes the request's kind."""

    term: int
    granted: bool
    pre_vote: bool = False
    from_incarnation: str = ""  # the sender's own incarnation ("" = unknown)


@record(3)
class AppendEntries:
    """Log replication (Raft Figure 2)."""

    term: int
    prev_index: int
    prev_term: int
    entries: list[Entry]
    commit: int
    to_incarnation: str = ""  # the addressee's incarnation as the sender's configuration knows it ("" = unchecked)


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
    from_incarnation: str = ""  # the sender's own incarnation ("" = unknown)


@record(5)
class Heartbeat:
    """Leader liveness and commit propagation without log checks. ``round`` tags a ReadIndex
    confirmation round (thesis 6.4); ``commit`` is at most what the follower is known to hold."""

    term: int
    commit: int
    round: int
    to_incarnation: str = ""  # the addressee's incarnation as the sender's configuration knows it ("" = unchecked)


@record(6)
class HeartbeatReply:
    """Echoes the round it answers, so an ack can only confirm reads registered before it."""

    term: int
    round: int
    last_index: int
    from_incarnation: str = ""  # the sender's own incarnation ("" = unknown)


@record(7)
class TimeoutNow:
    """Leadership transfer (thesis 3.10): start an election at once, skipping pre-vote."""

    term: int
    to_incarnation: str = ""  # the addressee's incarnation as the sender's configuration knows it ("" = unchecked)


@record(8, incarnation=_str_at_most(MAX_ID_BYTES * 4))
class JoinRequest:
    """Sent by a node that wants to become a member; followers forward it to the leader."""

    member: Member
    incarnation: str


def _join_reply_rule(m: Any) -> Optional[str]:
    # A joining node adopts the cluster id of an accepting reply: an empty one is no cluster.
    return "an accepting reply must name its cluster (cluster_id is empty)" if m.ok and not m.cluster_id else None


@record(9, _join_reply_rule, cluster_id=_cluster_id, leader_addr=_optional(_addr),
        error=_optional(_str_at_most(1024)), cluster_key=_optional(_curve_key_bytes))
class JoinReply:
    """``ok`` once the member is in the leader's configuration; otherwise an error or a leader hint.

    On a secure cluster an accepting reply also carries the cluster's CURVE *secret* server key
    (``cluster_key``, Z85) and the configuration (``members``, with their keys): only ever sent
    on a CURVE connection that proved the join token or a member's key (issue 11)."""

    ok: bool
    cluster_id: str
    leader_addr: Optional[str] = None
    error: Optional[str] = None
    cluster_key: Optional[bytes] = None
    members: Optional[list[Member]] = None


# The start of a JoinReply's error when the leader refuses to replace a member it still hears
# from (actors/replacement_guard.py): the joiner logs it as such and keeps retrying.
JOIN_REFUSED_LIVE_MEMBER = "refused: the member is live"


@record(10, data=_bytes_at_most(MAX_CHUNK_BYTES))
class InstallSnapshot:
    """One chunk of a snapshot streamed from the leader."""

    term: int
    last_index: int
    last_term: int
    offset: int
    data: bytes
    done: bool
    members: list[Member]
    to_incarnation: str = ""  # the addressee's incarnation as the sender's configuration knows it ("" = unchecked)


@record(11)
class InstallSnapshotReply:
    """Acknowledges a chunk; ``next_offset`` lets the leader resume, and ``last_index`` names the snapshot."""

    term: int
    last_index: int
    next_offset: int
    done: bool
    from_incarnation: str = ""  # the sender's own incarnation ("" = unknown)


@record(12)
class ReadIndexRequest:
    """A follower asks the leader for a read index on behalf of its clients (thesis 6.4.1)."""

    term: int
    req_id: int
    to_incarnation: str = ""  # the addressee's incarnation as the sender's configuration knows it ("" = unchecked)


@record(13)
class ReadIndexReply:
    """The index the follower must have applied before serving ``req_id``'s reads; ``ok`` False
    when the leader could not confirm its leadership (the follower redirects its clients)."""

    term: int
    req_id: int
    index: int
    ok: bool
    from_incarnation: str = ""  # the sender's own incarnation ("" = unknown)


# ---------------------------------------------------------------- transactions (issue 14)
#
# A transaction is carried by a Command (op "txn") and a ClientRequest as one ``Txn`` value:
# NamedTuples, so that each packs as a plain array inside its record, like Member. The node
# applies it atomically in one log entry (actors/kv_apply.py); raftkv/txn.py is the library's
# builder. Enums are ``str`` so that they pack as their plain strings.

MAX_TXN_COMPARES = 1024  # record-level caps (a node enforces its own, lower: actors/txn_check.py)
MAX_TXN_OPS = 1024


class CompareTarget(str, Enum):
    """What of a key a compare looks at. An absent key has version, create and mod revision 0
    (so ``version(k) = 0`` tests absence) and no value (a value compare on it is false)."""

    VALUE = "value"
    VERSION = "version"
    CREATE = "create"
    MOD = "mod"


class CompareResult(str, Enum):
    """How the key's current value or number must relate to the compare's."""

    EQUAL = "="
    NOT_EQUAL = "!="
    LESS = "<"
    GREATER = ">"


class TxnOpType(str, Enum):
    """One operation of a transaction branch."""

    GET = "get"
    PUT = "put"
    DELETE = "delete"


class Compare(NamedTuple):
    """``target(key) result operand``: the operand is ``value`` for VALUE (bytes, compared
    bytewise), ``number`` for the others."""

    target: str
    result: str
    key: str
    value: Optional[bytes] = None
    number: int = 0


class TxnOp(NamedTuple):
    """A get, put (with ``value``) or delete of ``key`` in a transaction branch. A put's
    ``lease`` (0: none) attaches its key to that lease, as Command.lease does."""

    type: str
    key: str
    value: Optional[bytes] = None
    lease: int = 0


class Txn(NamedTuple):
    """If every compare holds, ``success`` runs, else ``failure``; in order, in one entry."""

    compare: list
    success: list
    failure: list


class TxnOpResult(NamedTuple):
    """What one op of the branch that ran did: a get's value and revisions (``found`` False:
    absent), a put's new revisions, a delete's ``found`` (whether the key existed)."""

    type: str
    key: str
    found: bool = False
    value: Optional[bytes] = None
    create_revision: int = 0
    mod_revision: int = 0
    version: int = 0


_COMPARE_TARGETS = frozenset(t.value for t in CompareTarget)
_COMPARE_RESULTS = frozenset(r.value for r in CompareResult)
_TXN_OP_TYPES = frozenset(t.value for t in TxnOpType)


def _list_of(what: str, cap: int, v: Any) -> list:
    if type(v) is not list:
        raise DecodeError(f"{what}: expected a list")
    if len(v) > cap:
        raise DecodeError(f"{len(v)} {what} is more than the limit of {cap}")
    return v


def _tuple_fields(what: str, v: Any, least: int, most: int) -> list:
    if type(v) is not list or len(v) < least:
        raise DecodeError(f"{what}: expected an array of at least {least} fields")
    return v[:most]  # values a newer writer appended are ignored


def _compare(v: Any) -> Compare:
    f = _tuple_fields("compare", v, 3, 5)
    c = Compare(*f)
    if c.target not in _COMPARE_TARGETS:
        raise DecodeError(f"compare: unknown target {_show(c.target)}")
    if c.result not in _COMPARE_RESULTS:
        raise DecodeError(f"compare: unknown result {_show(c.result)}")
    return Compare(c.target, c.result, _key(c.key), _optional(_bytes)(c.value), _int(c.number))


def _txn_op(v: Any) -> TxnOp:
    f = _tuple_fields("txn op", v, 2, 4)
    op = TxnOp(*f)
    if op.type not in _TXN_OP_TYPES:
        raise DecodeError(f"txn op: unknown type {_show(op.type)}")
    lease = _int(op.lease)
    if lease and op.type != TxnOpType.PUT.value:
        raise DecodeError(f"txn op: a {op.type} carries no lease")
    return TxnOp(op.type, _key(op.key), _optional(_bytes)(op.value), lease)


def _txn(v: Any) -> Txn:
    f = _tuple_fields("txn", v, 3, 3)
    t = Txn([_compare(c) for c in _list_of("compares", MAX_TXN_COMPARES, f[0])],
            [_txn_op(o) for o in _list_of("success ops", MAX_TXN_OPS, f[1])],
            [_txn_op(o) for o in _list_of("failure ops", MAX_TXN_OPS, f[2])])
    size = sum(len(c.key) + len(c.value or b"") for c in t.compare)
    size += sum(len(o.key) + len(o.value or b"") for o in t.success + t.failure)
    if size > MAX_ENTRY_BYTES:
        raise DecodeError(f"txn of {size} bytes is more than the limit of {MAX_ENTRY_BYTES}")
    return t


def _txn_result(v: Any) -> TxnOpResult:
    f = _tuple_fields("txn result", v, 2, 7)
    r = TxnOpResult(*f)
    if r.type not in _TXN_OP_TYPES:
        raise DecodeError(f"txn result: unknown type {_show(r.type)}")
    return TxnOpResult(r.type, _key(r.key), _bool(r.found), _optional(_bytes)(r.value), _int(r.create_revision),
                       _int(r.mod_revision), _int(r.version))


def _txn_results(v: Any) -> list:
    return [_txn_result(r) for r in _list_of("txn results", MAX_TXN_OPS, v)]


_CHECKERS["Optional[Txn]"] = _optional(_txn)
_CHECKERS["list[TxnOpResult]"] = _txn_results


# ---------------------------------------------------------------- log entry payloads


@record(30, op=_name, key=_key, client_id=_client_id)
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
    # Leases (issue 14, actors/lease_state.py): on a put or cas, the lease the key is attached to
    # (0: none); on lease_revoke, the lease revoked (by a client, or expired by the leader); on
    # lease_grant, the TTL in seconds (the new lease's id is the index of the grant's entry).
    lease: int = 0
    txn: Optional[Txn] = None  # op "txn": the transaction (issue 14)


@record(31)
class Configuration:
    """The cluster's members, as carried by a CONFIG entry or a snapshot."""

    members: list[Member]


# ---------------------------------------------------------------- client protocol


@record(50, op=_name, key=_key, consistency=_name, client_id=_client_id, limit=_int_at_most(MAX_LIST_LIMIT),
        member=_optional(_loose_member), wait_ms=_int_at_most(MAX_WAIT_MS))
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
    txn: Optional[Txn] = None  # op "txn" (issue 14)
    # Leases (issue 14): the lease of a put, or the lease a lease_* op names; the TTL in seconds
    # for lease_grant (as Command.lease).
    lease: int = 0
    # Op.WATCH (key = the prefix, limit = most events per answer, 0 = the node's bound): the
    # first revision wanted (0: start now, after a read confirmed as ``consistency`` says), and
    # how long the node may hold the request while nothing matches (0: answer at once).
    start_revision: int = 0
    wait_ms: int = 0


@record(51, status=_name, leader_id=_optional(_client_id), leader_client=_optional(_addr))
class ClientReply:
    """``status`` is one of REPLY_STATUSES. ``leader_client`` is a redirect hint."""

    status: str
    value: Optional[bytes] = None
    error: Optional[str] = None
    leader_id: Optional[str] = None
    leader_client: Optional[str] = None
    items: list[tuple[str, bytes]] = field(default_factory=list)
    info: Any = None
    # issue 14: the revision (applied log index) the reply reflects: a write's own entry, a read's
    # state; a get's key's revisions and version (0: absent or unknown); a txn's branch and results
    revision: int = 0
    create_revision: int = 0
    mod_revision: int = 0
    version: int = 0
    succeeded: bool = False
    responses: list[TxnOpResult] = field(default_factory=list)
    # Op.WATCH: the matching events, in revision order; ``revision`` is then the revision the
    # answer is complete up to (resume from revision + 1), and with Status.COMPACTED the oldest
    # revision the node can still start from.
    events: list[Event] = field(default_factory=list)


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
    # Round two (issues 11, 13, 14). Declared together so that every branch shares one enum; an
    # op a node does not serve yet is answered "invalid" (unknown operation).
    TOKEN_CREATE = "token_create"
    TOKEN_LIST = "token_list"
    TOKEN_REVOKE = "token_revoke"
    BACKUP = "backup"
    TXN = "txn"
    WATCH = "watch"
    LEASE_GRANT = "lease_grant"
    LEASE_REVOKE = "lease_revoke"
    LEASE_KEEPALIVE = "lease_keepalive"
    LEASE_TTL = "lease_ttl"
    LEASE_LIST = "lease_list"


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
    # The request's token lacks the role its op needs, or is unknown/revoked (issue 11).
    NOT_AUTHORIZED = "not_authorized"
    # A watch asked for a revision older than the node's event history keeps (issue 14).
    COMPACTED = "compacted"


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
    Status.NOT_AUTHORIZED: Outcome.REJECTED,
    Status.COMPACTED: Outcome.REJECTED,
}

CLIENT_OPS = frozenset(op.value for op in Op)
WRITE_OPS = frozenset({Op.PUT.value, Op.DELETE.value, Op.CAS.value, Op.TXN.value})
REPLY_STATUSES = frozenset(st.value for st in Status)

PEER_TYPES = (RequestVote, VoteReply, AppendEntries, AppendReply, Heartbeat, HeartbeatReply,
              TimeoutNow, JoinRequest, JoinReply, InstallSnapshot, InstallSnapshotReply, ReadIndexRequest,
              ReadIndexReply)
