"""The msgpack codec of wire frames and of log entry payloads.

A peer frame is ``[version, cluster_id, sender, type_code, [fields...]]``; a client frame is
``[version, type_code, [fields...]]``; a log entry's payload (a Command or a Configuration,
carried in AppendEntries and stored in the log) is ``[type_code, [fields...]]``. Records are
positional arrays (compact and fast); the field rules, including tolerance of appended
trailing fields, are the schema's (:mod:`raftkv.records`). Decoding checks the version, the
type code and each field's type, so a malformed frame becomes one :class:`DecodeError`
instead of a crash deeper in.

``PROTOCOL_VERSION`` changes only for an incompatible change of the frame layout; appending an
optional field to a record does not change it. Trailing values appended to a frame itself by
a newer sender are ignored too, so the envelope can grow the same way.
"""
from __future__ import annotations

import operator
import threading
from dataclasses import dataclass
from typing import Any, Callable, Optional

import msgpack

from raftkv.records import (MAX_CLUSTER_ID_BYTES, MAX_ID_BYTES, MAX_KEY_BYTES, MAX_TEXT_BYTES, MAX_VALUE_BYTES,
                            PEER_TYPES, AppendEntries, ClientReply, Configuration, DecodeError,
                            EntryKind, _show, _utf8_len_over, fast_decoder_of, from_fields, spec_of, to_fields)

PROTOCOL_VERSION = 1
_CONFIG = int(EntryKind.CONFIG)

MAX_CLIENT_FRAME_BYTES = 2 * MAX_VALUE_BYTES + MAX_KEY_BYTES + MAX_TEXT_BYTES
"""The largest client frame worth unpacking: a CAS request with a value and an expected value of
the largest size any record allows, plus its key and small fields. Anything longer is refused
before msgpack builds it (a reply listing many keys is larger: replies are not capped here)."""

# The old names of the schema's helpers, kept for code that used them from wire.messages.
_build = from_fields
_fields_of = to_fields


def _unpack(data: bytes) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as e:  # msgpack raises several unrelated types for garbage
        raise DecodeError(f"not msgpack: {e.__class__.__name__}") from None
    # (msgpack bounds nesting depth itself: a too deeply nested frame raises above)


# One msgpack Packer per thread, reused. ``msgpack.packb`` builds a Packer per call, and a
# Packer allocates a 256 KiB buffer when built: ~0.8 us of the ~1.4 us packb takes for a put's
# Command on this machine (docs/performance.md, "Write CPU, round 8"). Every put's payload on
# the leader, every peer frame and every front-door reply is encoded here. A Packer is not
# shared between threads (its buffer is its state), so each thread has its own; a packer whose
# buffer grew past _KEEP_BUFFER for a large message is dropped after it, so that no thread keeps
# a large buffer for its life. The bytes are the same as packb's (same options).
_KEEP_BUFFER = 256 * 1024
_packers = threading.local()


def _pack(obj: Any) -> bytes:
    try:
        pack = _packers.pack
    except AttributeError:
        pack = _packers.pack = msgpack.Packer(use_bin_type=True).pack
    out: bytes = pack(obj)
    if len(out) > _KEEP_BUFFER:
        del _packers.pack  # its buffer grew for this message: a new one next time
    return out


# Per record type: its type code and one C call that reads all its fields as a tuple (packed as
# the same array as to_fields' list; ~1 us less per encoded record than a getattr per field).
_LAYOUT: dict[type, tuple[int, Callable[[Any], tuple]]] = {}


def _layout(cls: type) -> tuple[int, Callable[[Any], tuple]]:
    spec = spec_of(cls)  # KeyError for a type that is not a record, as type_code
    many = operator.attrgetter(*spec.names)
    get: Callable[[Any], tuple] = many
    if len(spec.names) == 1:  # attrgetter of one name returns the value itself
        get = lambda m: (many(m),)  # noqa: E731
    lay = _LAYOUT[cls] = (spec.code, get)
    return lay


def encode_record(msg: Any) -> bytes:
    """Encode a record standing alone (a log entry payload)."""
    code, fields = _LAYOUT.get(type(msg)) or _layout(type(msg))
    return _pack([code, fields(msg)])


def decode_record(data: bytes, expect: Optional[type] = None) -> Any:
    """Decode a record encoded by :func:`encode_record`, optionally requiring its type."""
    frame = _unpack(data)
    if type(frame) is not list or len(frame) < 2:
        raise DecodeError("record: expected [type, fields]")
    msg = from_fields(frame[0], frame[1])
    if expect is not None and type(msg) is not expect:
        raise DecodeError(f"expected {expect.__name__}, got {type(msg).__name__}")
    return msg


def record_decoder(cls: type) -> Callable[[bytes], Any]:
    """``decode_record(data, cls)`` as one function for one record type, for a hot path (the
    FSM decodes every committed Command with it): the usual shape (``[code, values]`` with one
    value per field) goes straight to the schema's generated decoder, without the three calls
    and checks around it (~0.4 us per Command); anything else, and every error, takes
    :func:`decode_record` itself, so the records and the errors are the same."""
    code = spec_of(cls).code
    n, fast, rule = fast_decoder_of(cls)
    unpackb = msgpack.unpackb

    def decode(data: bytes) -> Any:
        try:
            frame = unpackb(data, raw=False, strict_map_key=False)
        except Exception:  # decode_record unpacks again and says why
            frame = None
        if type(frame) is list and len(frame) == 2:
            c, values = frame
            if type(c) is int and c == code and type(values) is list and len(values) == n:
                try:
                    msg = fast(values)
                except DecodeError:  # a called checker refused a value: decode_record says which
                    msg = None
                if msg is not None and (rule is None or not rule(msg)):
                    return msg
        return decode_record(data, cls)

    return decode


@dataclass(slots=True)
class PeerFrame:
    """A decoded peer message with its envelope."""

    cluster_id: str
    sender: str
    msg: Any


def encode_peer(cluster_id: str, sender: str, msg: Any) -> bytes:
    """Encode a Raft message with its envelope."""
    code, fields = _LAYOUT.get(type(msg)) or _layout(type(msg))
    return _pack([PROTOCOL_VERSION, cluster_id, sender, code, fields(msg)])


def decode_peer(data: bytes) -> PeerFrame:
    """Decode and validate a peer frame; raises DecodeError on anything malformed."""
    frame = _unpack(data)
    if type(frame) is not list or len(frame) < 5:
        raise DecodeError("peer frame: expected [version, cluster_id, sender, type, fields]")
    version, cluster_id, sender, code, values = frame if len(frame) == 5 else frame[:5]
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise DecodeError(f"protocol version {_show(version)}, this node speaks {PROTOCOL_VERSION}")
    if type(cluster_id) is not str or type(sender) is not str or not sender:
        raise DecodeError("peer frame: cluster_id and sender must be strings")
    # (n characters are at most 4n UTF-8 bytes: short ids need no encoding to be measured)
    if len(sender) > _SENDER_SURE and _utf8_len_over(sender, MAX_ID_BYTES):
        raise DecodeError(f"peer frame: sender ({_show(sender)}) is longer than {MAX_ID_BYTES} bytes")
    if len(cluster_id) > _CLUSTER_ID_SURE and _utf8_len_over(cluster_id, MAX_CLUSTER_ID_BYTES):
        raise DecodeError(f"peer frame: cluster_id ({_show(cluster_id)}) is longer than {MAX_CLUSTER_ID_BYTES} bytes")
    msg = from_fields(code, values)
    tm = type(msg)
    if tm not in PEER_TYPES:
        raise DecodeError(f"{tm.__name__} is not a peer message")
    if tm is AppendEntries and _CONFIG in map(_KIND, msg.entries):
        _check_configs(msg.entries)
    return PeerFrame(cluster_id, sender, msg)


_SENDER_SURE = MAX_ID_BYTES // 4
_CLUSTER_ID_SURE = MAX_CLUSTER_ID_BYTES // 4
_KIND = operator.itemgetter(1)  # an Entry's kind


def _check_configs(entries: list) -> None:
    """Refuse an AppendEntries whose CONFIG entry does not hold a Configuration: a follower
    applies a configuration as soon as it appends it, before it is committed, so a malformed
    one must not get that far. (Called only for a batch holding a CONFIG entry: they are rare.)"""
    for i, e in enumerate(entries):
        if e.kind == _CONFIG:
            try:
                decode_record(e.data, Configuration)
            except DecodeError as err:
                raise DecodeError(f"AppendEntries: CONFIG entry {i} of the batch: {err}") from None


def encode_client(msg: Any) -> bytes:
    """Encode a ClientRequest or ClientReply."""
    code, fields = _LAYOUT.get(type(msg)) or _layout(type(msg))
    return _pack([PROTOCOL_VERSION, code, fields(msg)])


def decode_client(data: bytes, expect: type) -> Any:
    """Decode a client frame that must hold a record of type ``expect``; a request longer than
    :data:`MAX_CLIENT_FRAME_BYTES` is refused unread."""
    if expect is not ClientReply and len(data) > MAX_CLIENT_FRAME_BYTES:
        raise DecodeError(f"client frame of {len(data)} bytes is more than the limit of {MAX_CLIENT_FRAME_BYTES}")
    frame = _unpack(data)
    if type(frame) is not list or len(frame) < 3:
        raise DecodeError("client frame: expected [version, type, fields]")
    if type(frame[0]) is not int or frame[0] != PROTOCOL_VERSION:
        raise DecodeError(f"protocol version {_show(frame[0])}, this node speaks {PROTOCOL_VERSION}")
    msg = from_fields(frame[1], frame[2])
    if type(msg) is not expect:
        raise DecodeError(f"expected {expect.__name__}, got {type(msg).__name__}")
    return msg
