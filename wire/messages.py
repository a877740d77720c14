"""Every message that crosses a socket, under its historical import path.

The records now live in :mod:`raftkv.records` (the schema, no third-party imports, shared with
storage) and the msgpack codec in :mod:`raftkv.wire.codec`. This module re-exports both, so
``from raftkv.wire.messages import ...`` keeps working for every name it held.
"""
from __future__ import annotations

from raftkv.records import (CLIENT_OPS, PEER_TYPES, REPLY_STATUSES, STATUS_CLASS, WRITE_OPS, AppendEntries,
                            AppendReply, ClientReply, ClientRequest, Command, Configuration, DecodeError, Entry,
                            EntryKind, Heartbeat, HeartbeatReply, InstallSnapshot, InstallSnapshotReply, JoinReply,
                            JoinRequest, Member, Op, Outcome, ReadIndexReply, ReadIndexRequest, RequestVote, Status,
                            TimeoutNow, VoteReply, record)
from raftkv.records import _BY_CODE, _CHECKERS, _SPEC  # old private names, kept for code that pokes them

from .codec import (PROTOCOL_VERSION, PeerFrame, _build, _fields_of, _unpack, decode_client, decode_peer,
                    decode_record, encode_client, encode_peer, encode_record)

__all__ = [
    "CLIENT_OPS", "PEER_TYPES", "REPLY_STATUSES", "STATUS_CLASS", "WRITE_OPS", "AppendEntries", "AppendReply",
    "ClientReply", "ClientRequest", "Command", "Configuration", "DecodeError", "Entry", "EntryKind", "Heartbeat",
    "HeartbeatReply", "InstallSnapshot", "InstallSnapshotReply", "JoinReply", "JoinRequest", "Member", "Op",
    "Outcome", "ReadIndexReply", "ReadIndexRequest", "RequestVote", "Status", "TimeoutNow", "VoteReply", "record",
    "PROTOCOL_VERSION", "PeerFrame", "decode_client", "decode_peer", "decode_record", "encode_client",
    "encode_peer", "encode_record", "_build", "_fields_of", "_unpack", "_BY_CODE", "_CHECKERS", "_SPEC",
]
