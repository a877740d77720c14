"""No message can crash a node (issue 11 item 6): a structure-aware, property-based fuzzer of the codec.

Every peer and client record type is generated with random, boundary (0, 2^63-1, 2^63, 2^64-1,
-1, strings and bytes just past each cap) and wrong-typed fields, then wrapped in its frame;
valid frames are also mutated byte by byte. Decoding must either give a record whose every
field is within the schema's limits, or raise DecodeError with a message, nothing else. Every
accepted Raft message is then stepped into a RaftCore in each role, which must not raise.
"""
from __future__ import annotations

import dataclasses

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftkv.actors.core import CANDIDATE, FOLLOWER, LEADER, PRE_CANDIDATE
from raftkv.actors.memlog import MemLog
from raftkv.records import (INDEX_LIMIT, MAX_ADDR_BYTES, MAX_CHUNK_BYTES, MAX_CLUSTER_ID_BYTES, MAX_ENTRIES,
                            MAX_ENTRY_BYTES, MAX_ID_BYTES, MAX_KEY_BYTES, MAX_LIST_LIMIT, MAX_MEMBERS, MAX_NAME_BYTES,
                            MAX_TEXT_BYTES, MAX_VALUE_BYTES, PEER_TYPES, AppendEntries, AppendReply, ClientReply,
                            ClientRequest, Command, Configuration, DecodeError, Entry, EntryKind, Heartbeat,
                            HeartbeatReply, InstallSnapshot, InstallSnapshotReply, JoinReply, JoinRequest, Member,
                            ReadIndexReply, ReadIndexRequest, RequestVote, TimeoutNow, VoteReply, spec_of, to_fields)
from raftkv.wire.codec import (MAX_CLIENT_FRAME_BYTES, PROTOCOL_VERSION, decode_client, decode_peer,
                               decode_record, encode_client, encode_peer, encode_record)
from tests.unit.test_core import E, commit_noop, core, elect

FUZZ = settings(max_examples=4000, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

BOUNDARY_INTS = [0, 1, 2, 3, INDEX_LIMIT - 1, INDEX_LIMIT, 2**64 - 1, -1, -(2**63), MAX_LIST_LIMIT,
                 MAX_LIST_LIMIT + 1]
# Strings and bytes at and just past each cap (built once: some are megabytes).
BIG_STR = {n: "x" * n for n in (MAX_ID_BYTES, MAX_ID_BYTES + 1, MAX_NAME_BYTES + 1, MAX_CLUSTER_ID_BYTES + 1,
                                MAX_ADDR_BYTES + 1, MAX_KEY_BYTES + 1, MAX_TEXT_BYTES + 1)}
BIG_STR["multibyte"] = "\u20ac" * (MAX_ID_BYTES // 3 + 1)  # 22 characters, 66 UTF-8 bytes
BIG_BYTES = [b"v" * MAX_VALUE_BYTES, b"v" * (MAX_VALUE_BYTES + 1), b"c" * (MAX_CHUNK_BYTES + 1)]

ADDRS = ["127.0.0.1:9001", "localhost:1", "[::1]:9001", "0.0.0.0:65535", "h:0", "h:65536", "h:99999", "h",
         ":", ":9001", "*:9001", "tcp://h:1", "h:1\n", "h :1", "-h:1", "\u00e9:1", "a" * MAX_ADDR_BYTES + ":1", ""]

wrong = st.one_of(st.none(), st.floats(allow_nan=True), st.booleans(), st.binary(max_size=8),
                  st.text(max_size=8), st.dictionaries(st.text(max_size=3), st.integers(-5, 5), max_size=2),
                  st.lists(st.integers(-5, 5), max_size=3),
                  st.recursive(st.integers(0, 3), lambda c: st.lists(c, max_size=2), max_leaves=6))


ints_good = st.integers(0, 12)
ints_bad = st.one_of(st.sampled_from(BOUNDARY_INTS), st.integers(-(2**63), 2**64 - 1))
names = st.sampled_from(["n1", "n2", "n3", "n4", "get", "put", "cas", "delete", "list", "status", "add_node",
                         "remove_node", "linearizable", "stale", "lease", "ok", "not_leader", "c1", ""])
strs_bad = st.one_of(st.text(max_size=12), st.sampled_from(sorted(BIG_STR.values(), key=len)))
addrs_good = st.sampled_from(ADDRS[:4])
addrs_bad = st.one_of(st.sampled_from(ADDRS[4:]), st.text(max_size=12))
member_good = st.tuples(st.sampled_from(["n1", "n2", "n3", "n4"]), addrs_good, addrs_good,
                        st.sampled_from(["", ADDRS[0]]), st.booleans()).map(list)
member_bad = st.one_of(
    st.tuples(st.one_of(names, strs_bad), st.one_of(addrs_good, addrs_bad), addrs_bad).map(list),
    st.lists(st.one_of(names, addrs_bad, st.booleans(), wrong), max_size=6), wrong)


def _config_payload(ms: list) -> bytes:
    return msgpack.packb([spec_of(Configuration).code, [ms]], use_bin_type=True)


entry_good = st.one_of(
    st.tuples(st.integers(0, 5), st.just(int(EntryKind.COMMAND)),
              st.builds(lambda k, v: encode_record(Command("put", k, v)), names, st.binary(max_size=4))).map(list),
    st.tuples(st.integers(0, 5), st.just(int(EntryKind.CONFIG)),
              st.lists(st.one_of(member_good, member_bad), max_size=4).map(_config_payload)).map(list),
    st.tuples(st.integers(0, 5), st.just(int(EntryKind.NOOP)), st.just(b"")).map(list))
entry_bad = st.one_of(st.tuples(ints_bad, ints_bad, st.sampled_from(BIG_BYTES)).map(list),
                      st.tuples(st.integers(0, 5), ints_bad, st.binary(max_size=4)).map(list),
                      st.lists(st.one_of(ints_bad, st.binary(max_size=4), wrong), max_size=5), wrong)

# For each field annotation: values that pass (mostly in range) and values that should not.
GOOD = {"int": ints_good, "bool": st.booleans(), "bytes": st.binary(max_size=16), "str": names,
        "Optional[str]": st.one_of(st.none(), names, addrs_good), "Optional[bytes]": st.one_of(st.none(), st.binary(max_size=16)),
        "Optional[int]": st.one_of(st.none(), ints_good), "list[Entry]": st.lists(entry_good, max_size=6),
        "list[Member]": st.lists(member_good, max_size=4), "Member": member_good,
        "Optional[Member]": st.one_of(st.none(), member_good),
        "Optional[list[Member]]": st.one_of(st.none(), st.lists(member_good, max_size=4)),
        "list[tuple[str, bytes]]": st.lists(st.tuples(names, st.binary(max_size=4)).map(list), max_size=3),
        "Any": st.one_of(st.none(), ints_good, names),
        "list[Event]": st.lists(st.tuples(ints_good, st.sampled_from(["put", "delete"]), names,
                                          st.one_of(st.none(), st.binary(max_size=4))).map(list), max_size=3)}
BAD = {"int": ints_bad, "bool": wrong, "bytes": st.sampled_from(BIG_BYTES), "str": strs_bad,
       "Optional[str]": st.one_of(strs_bad, addrs_bad), "Optional[bytes]": st.sampled_from(BIG_BYTES),
       "Optional[int]": ints_bad,
       "list[Entry]": st.one_of(st.lists(st.one_of(entry_good, entry_bad), min_size=1, max_size=4),
                                st.just([[1, 1, b""]] * (MAX_ENTRIES + 1))),
       "list[Member]": st.one_of(st.lists(st.one_of(member_good, member_bad), min_size=1, max_size=4),
                                 st.just([["n1", "h:1"]] * (MAX_MEMBERS + 1))),
       "Member": member_bad, "Optional[Member]": member_bad,
       "Optional[list[Member]]": st.lists(st.one_of(member_good, member_bad), min_size=1, max_size=4),
       "list[tuple[str, bytes]]": st.lists(st.one_of(st.tuples(strs_bad, st.sampled_from(BIG_BYTES)).map(list),
                                                     wrong), min_size=1, max_size=3),
       "Any": st.one_of(wrong, ints_bad),
       "list[Event]": st.lists(st.one_of(st.tuples(ints_bad, st.one_of(names, strs_bad), strs_bad,
                                                   st.sampled_from(BIG_BYTES)).map(list), wrong),
                               min_size=1, max_size=3)}

# Transactions (issue 14): NamedTuples packed as arrays inside Command, ClientRequest, ClientReply.
_compare_good = st.tuples(st.sampled_from(["value", "version", "create", "mod"]), st.sampled_from(["=", "!=", "<", ">"]),
                          names, st.one_of(st.none(), st.binary(max_size=4)), ints_good).map(list)
_op_good = st.tuples(st.sampled_from(["get", "put", "delete"]), names,
                     st.one_of(st.none(), st.binary(max_size=4))).map(list)
_txn_good = st.tuples(st.lists(_compare_good, max_size=3), st.lists(_op_good, max_size=3),
                      st.lists(_op_good, max_size=3)).map(list)
_result_good = st.tuples(st.sampled_from(["get", "put", "delete"]), names, st.booleans(),
                         st.one_of(st.none(), st.binary(max_size=4)), ints_good, ints_good, ints_good).map(list)
_compare_bad = st.one_of(st.tuples(st.sampled_from(["exists", "", "VALUE"]), st.just("="), names).map(list),
                         st.tuples(st.just("value"), st.sampled_from(["==", "<>", ""]), names).map(list),
                         st.tuples(st.just("mod"), st.just("<"), strs_bad, st.none(), ints_bad).map(list),
                         st.lists(wrong, max_size=2), wrong)
_op_bad = st.one_of(st.tuples(st.sampled_from(["range", "", "PUT"]), names).map(list),
                    st.tuples(st.just("put"), strs_bad, st.sampled_from(BIG_BYTES)).map(list), wrong)
_txn_bad = st.one_of(st.tuples(st.lists(_compare_bad, min_size=1, max_size=2), st.just([]), st.just([])).map(list),
                     st.tuples(st.just([]), st.lists(_op_bad, min_size=1, max_size=2), st.just([])).map(list),
                     st.tuples(st.just([]), st.just([]), st.just([["get", "k"]] * 1025)).map(list),
                     st.lists(wrong, max_size=2), wrong)
GOOD["Optional[Txn]"] = st.one_of(st.none(), _txn_good)
GOOD["list[TxnOpResult]"] = st.lists(_result_good, max_size=3)
BAD["Optional[Txn]"] = _txn_bad
BAD["list[TxnOpResult]"] = st.one_of(st.lists(st.one_of(
    st.tuples(st.just("get"), names, wrong).map(list), st.tuples(st.just("get"), names, st.booleans(), st.none(),
                                                                  ints_bad).map(list), wrong), min_size=1, max_size=2), wrong)

ODDS = [True] + [False] * 9  # one in ten
ALL_TYPES = list(PEER_TYPES) + [Command, Configuration, ClientRequest, ClientReply]


@st.composite
def record_values(draw, cls):
    """The field values of a ``cls`` record: all of the right type and in range, then up to three
    of them replaced by a hostile value of the right type or by a wrong-typed one, and sometimes
    fields cut off or appended."""
    fields = dataclasses.fields(cls)
    values = [draw(GOOD[f.type]) for f in fields]
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 1, 2, 3]))):
        i = draw(st.integers(0, len(fields) - 1))
        values[i] = draw(st.one_of(BAD[fields[i].type], wrong))
    if draw(st.sampled_from(ODDS)):
        values = values[:draw(st.integers(0, len(values)))]
    if draw(st.sampled_from(ODDS)):
        values += draw(st.lists(st.one_of(ints_good, ints_bad, names, wrong), max_size=2))
    return values


@st.composite
def peer_frames(draw, broken: bool = False):
    """A peer frame, usually of a peer record type; with ``broken`` its envelope is wrong in one place."""
    cls = draw(st.sampled_from(list(PEER_TYPES) * 2 + ALL_TYPES))
    frame = [PROTOCOL_VERSION, "c1", draw(st.sampled_from(["n2", "n3", "n9"])), spec_of(cls).code,
             draw(record_values(cls))]
    if broken:
        where = draw(st.integers(0, 5))
        if where < 5:
            frame[where] = draw(st.one_of(st.sampled_from([0, 2, 1.0, True, 2**64 - 1, 8, 31, 50]), strs_bad, wrong))
        else:
            frame = frame[:draw(st.integers(0, 4))]
    return msgpack.packb(frame, use_bin_type=True)


@st.composite
def client_frames(draw):
    """A client frame, usually a ClientRequest; its envelope is sometimes broken in one place."""
    cls = draw(st.sampled_from([ClientRequest, ClientRequest, ClientRequest, ClientReply, Command, RequestVote]))
    frame = [PROTOCOL_VERSION, spec_of(cls).code, draw(record_values(cls))]
    broken = draw(st.sampled_from(range(10)))
    if broken < 3:
        frame[broken] = draw(st.one_of(st.sampled_from([0, 2, 1.0, True, 2**64 - 1, 50, 51]), wrong))
    return msgpack.packb(frame, use_bin_type=True)


def _valid_frames() -> list:
    m = Member("n2", "127.0.0.1:9002", "127.0.0.1:5002", "", True)
    msgs = [RequestVote(5, 3, 2, True), VoteReply(5, True), AppendEntries(2, 1, 1, [E(2), E(2)], 1),
            AppendReply(2, True, 3), Heartbeat(2, 1, 4), HeartbeatReply(2, 4, 3), TimeoutNow(2),
            JoinRequest(m, "abc"), JoinReply(True, "c1", "127.0.0.1:9001"),
            InstallSnapshot(3, 10, 2, 0, b"snap", True, [m]), InstallSnapshotReply(3, 10, 4, True),
            ReadIndexRequest(2, 7), ReadIndexReply(2, 7, 3, True)]
    return [encode_peer("c1", "n2", x) for x in msgs]


VALID_PEER = _valid_frames()
VALID_CLIENT = [encode_client(ClientRequest("cas", "k", b"new", b"old", client_id="c" * 32, seq=4)),
                encode_client(ClientRequest("add_node", member=Member("n4", "127.0.0.1:9004"))),
                encode_client(ClientRequest("list", "p", limit=10))]


@st.composite
def mutated(draw, frames):
    """A valid frame with a few bytes flipped, inserted, deleted, or the tail cut off."""
    data = bytearray(draw(st.sampled_from(frames)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.integers(0, 3))
        i = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == 0 and data:
            data[i] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xC0, 0xC1, 0xCF, 0xD3, 0xDC, 0xDD, 0xFF,
                                            draw(st.integers(0, 255))]))
        elif op == 1:
            data[i:i] = draw(st.binary(min_size=1, max_size=9))
        elif op == 2 and data:
            del data[i:i + draw(st.integers(1, 4))]
        else:
            data = data[:i]
    return bytes(data)


# ---------------------------------------------------------------- what "in range" means


def _text_ok(s, cap: int) -> bool:
    return type(s) is str and len(s.encode("utf-8", "surrogatepass")) <= cap


def _int_ok(v) -> bool:
    return type(v) is int and 0 <= v < INDEX_LIMIT


def _addr_ok(a, may_be_empty: bool) -> bool:
    if a == "" and may_be_empty:
        return True
    if type(a) is not str or not a or len(a) > MAX_ADDR_BYTES or ":" not in a:
        return False
    host, _, port = a.rpartition(":")
    return port.isdigit() and 0 < int(port) < 65536 and a.isascii() and not any(c.isspace() for c in a)


def _member_ok(m, strict: bool = True) -> bool:
    return (type(m) is Member and _text_ok(m.id, MAX_ID_BYTES) and (m.id != "" or not strict)
            and _addr_ok(m.addr, not strict) and _addr_ok(m.client, True) and _addr_ok(m.http, True)
            and type(m.voter) is bool)


def assert_in_range(msg) -> None:
    """Every field of a decoded record is of its type and within the schema's limits."""
    caps = {"key": MAX_KEY_BYTES, "op": MAX_NAME_BYTES, "status": MAX_NAME_BYTES, "consistency": MAX_NAME_BYTES,
            "client_id": MAX_ID_BYTES, "leader_id": MAX_ID_BYTES, "cluster_id": MAX_CLUSTER_ID_BYTES}
    for f in dataclasses.fields(msg):
        v = getattr(msg, f.name)
        where = f"{type(msg).__name__}.{f.name}={v!r:.60}"
        if f.type in ("int", "Optional[int]") and v is not None:
            assert _int_ok(v), where
            if f.name == "limit":
                assert v <= MAX_LIST_LIMIT, where
        elif f.type == "bool":
            assert type(v) is bool, where
        elif f.type in ("bytes", "Optional[bytes]") and v is not None:
            cap = MAX_CHUNK_BYTES if type(msg) is InstallSnapshot else MAX_VALUE_BYTES
            assert type(v) is bytes and len(v) <= cap, where
        elif f.name in ("leader_addr", "leader_client") and v is not None:
            assert _addr_ok(v, True), where
        elif f.type in ("str", "Optional[str]") and v is not None:
            assert _text_ok(v, caps.get(f.name, MAX_TEXT_BYTES)), where
        elif f.type == "list[Entry]":
            assert type(v) is list and len(v) <= MAX_ENTRIES, where
            for e in v:
                assert type(e) is Entry and _int_ok(e.term) and _int_ok(e.kind), where
                assert type(e.data) is bytes and len(e.data) <= MAX_ENTRY_BYTES, where
        elif f.type == "list[Member]":
            assert type(v) is list and len(v) <= MAX_MEMBERS and all(_member_ok(m) for m in v), where
        elif f.type in ("Member", "Optional[Member]") and v is not None:
            assert _member_ok(v, strict=type(msg) is not ClientRequest), where
        elif f.type == "list[tuple[str, bytes]]":
            assert all(_text_ok(k, MAX_KEY_BYTES) and type(b) is bytes and len(b) <= MAX_VALUE_BYTES for k, b in v)
        elif f.type == "list[Event]":
            for e in v:
                assert _int_ok(e.revision) and e.type in ("put", "delete") and _text_ok(e.key, MAX_KEY_BYTES), where
                assert all(x is None or (type(x) is bytes and len(x) <= MAX_VALUE_BYTES)
                           for x in (e.value, e.prev_value)), where
                assert _int_ok(e.create_revision) and _int_ok(e.version), where
    if type(msg) is JoinReply and msg.ok:
        assert msg.cluster_id, "an accepting JoinReply names its cluster"


# ---------------------------------------------------------------- the core must take what decodes


def _cores() -> list:
    """A RaftCore in each role, with a log to disagree about."""
    log = [1, 1, 2, 2, 3]
    follower = core("n1", log=MemLog(entries=[E(t) for t in log]), term=3, commit=2)
    pre = core("n1", log=MemLog(entries=[E(t) for t in log]), term=3, commit=2)
    pre.campaign()
    cand = core("n1", log=MemLog(entries=[E(t) for t in log]), term=3, commit=2, pre_vote=False)
    cand.campaign()
    leader = core("n1", log=MemLog(entries=[E(t) for t in log]), term=3, commit=2)
    elect(leader)
    commit_noop(leader)
    leader.take_ready()
    assert [c.role for c in (follower, pre, cand, leader)] == [FOLLOWER, PRE_CANDIDATE, CANDIDATE, LEADER]
    return [follower, pre, cand, leader]


def step_everywhere(sender: str, msg) -> None:
    """Step an accepted Raft message into a core of each role (as actors/role.py does: join
    messages go elsewhere), then let time pass; nothing may raise."""
    if type(msg) in (JoinRequest, JoinReply):
        return
    for c in _cores():
        c.step(sender, msg)
        c.take_ready()
        for _ in range(3):
            c.tick()
        c.take_ready()


def check_peer(data: bytes) -> None:
    try:
        frame = decode_peer(data)
    except DecodeError as e:
        assert str(e)
        return
    assert_in_range(frame.msg)
    assert type(frame.msg) in PEER_TYPES
    assert 0 < len(frame.sender.encode()) <= MAX_ID_BYTES
    assert len(frame.cluster_id.encode()) <= MAX_CLUSTER_ID_BYTES
    step_everywhere(frame.sender, frame.msg)


def check_client(data: bytes) -> None:
    for expect in (ClientRequest, ClientReply):
        try:
            msg = decode_client(data, expect)
        except DecodeError as e:
            assert str(e)
            continue
        assert_in_range(msg)


@FUZZ
@given(peer_frames())
def test_generated_peer_frames_decode_in_range_or_raise_decode_error(data):
    check_peer(data)


@settings(FUZZ, max_examples=500)
@given(peer_frames(broken=True))
def test_peer_frames_with_a_broken_envelope_decode_in_range_or_raise_decode_error(data):
    check_peer(data)


@FUZZ
@given(mutated(VALID_PEER))
def test_mutated_peer_frames_decode_in_range_or_raise_decode_error(data):
    check_peer(data)


@settings(FUZZ, max_examples=1000)
@given(st.one_of(client_frames(), mutated(VALID_CLIENT)))
def test_generated_and_mutated_client_frames_decode_in_range_or_raise_decode_error(data):
    check_client(data)


@settings(FUZZ, max_examples=500)
@given(st.sampled_from([Command, Configuration]).flatmap(
    lambda cls: st.tuples(st.just(cls), st.one_of(record_values(cls), wrong))))
def test_generated_log_payloads_decode_in_range_or_raise_decode_error(cls_values):
    cls, values = cls_values
    try:
        msg = decode_record(msgpack.packb([spec_of(cls).code, values], use_bin_type=True), cls)
    except DecodeError as e:
        assert str(e)
        return
    assert_in_range(msg)


# ---------------------------------------------------------------- the attacks of issue 11, by name


def _peer(cls, values, sender="n2"):
    return msgpack.packb([PROTOCOL_VERSION, "c1", sender, spec_of(cls).code, values], use_bin_type=True)


@pytest.mark.parametrize("data, why", [
    (_peer(RequestVote, [2**64 - 1, 0, 0]), r"RequestVote: 18446744073709551615 is out of range \[0, 2\^63\) in field 'term'"),
    (_peer(RequestVote, [2**63, 0, 0]), r"out of range .* in field 'term'"),
    (_peer(AppendEntries, [1, -1, 0, [], 0]), r"AppendEntries: -1 is out of range .* in field 'prev_index'"),
    (_peer(AppendEntries, [1, 0, 0, [[2**63, 1, b""]], 0]), r"entry: term 9223372036854775808 .* out of range"),
    (_peer(AppendEntries, [1, 0, 0, [[1, 1, b""]] * (MAX_ENTRIES + 1), 0]), r"entries is more than the limit"),
    (_peer(Heartbeat, [1, 2**63, 0]), r"Heartbeat: .* in field 'commit'"),
    (_peer(InstallSnapshot, [1, 5, 1, -1, b"", True, []]), r"in field 'offset'"),
    (_peer(InstallSnapshot, [1, 5, 1, 0, b"x" * (MAX_CHUNK_BYTES + 1), False, []]), r"in field 'data'"),
    (_peer(JoinRequest, [["n9", "h:1"], "i"], sender="x" * 65), r"sender .* longer than 64 bytes"),
    (_peer(JoinRequest, [["", "h:1"], "i"]), r"member: must not be empty in field 'id'"),
    (_peer(JoinRequest, [["n9", "nowhere"], "i"]), r"member: address is not HOST:PORT in field 'addr'"),
    (_peer(JoinRequest, [["n9", "h:1", "h:2", "a" * 300 + ":3"], "i"]), r"in field 'http'"),
    (_peer(JoinReply, [True, ""]), r"JoinReply: an accepting reply must name its cluster"),
    (_peer(ReadIndexRequest, [1, 2**64 - 1]), r"in field 'req_id'"),
    # a follower applies a CONFIG entry when it appends it: one that does not decode must not get there
    (_peer(AppendEntries, [1, 0, 0, [[1, 1, b""], [1, int(EntryKind.CONFIG), msgpack.packb(5)]], 0]),
     r"AppendEntries: CONFIG entry 1 of the batch: record: expected \[type, fields\]"),
    (_peer(AppendEntries, [1, 0, 0, [[1, int(EntryKind.CONFIG), _config_payload([["n1", "h:1", "bad"]])]], 0]),
     r"CONFIG entry 0 .* address is not HOST:PORT in field 'client'"),
])
def test_out_of_range_peer_fields_are_refused_naming_the_field(data, why):
    with pytest.raises(DecodeError, match=why):
        decode_peer(data)


def _client(values):
    return msgpack.packb([PROTOCOL_VERSION, spec_of(ClientRequest).code, values], use_bin_type=True)


@pytest.mark.parametrize("data, why", [
    (_client(["put", "k", b"v", None, False, "linearizable", "c" * (20 * 1024 * 1024)]),
     r"more than the limit of 64 bytes in field 'client_id'"),
    (_client(["put", "k", b"v", None, False, "linearizable", "c" * 65]), r"in field 'client_id'"),
    (_client(["cas", "k", b"v", b"e" * (MAX_VALUE_BYTES + 1)]), r"in field 'expected'"),
    (_client(["put", "k" * (MAX_KEY_BYTES + 1), b"v"]), r"in field 'key'"),
    (_client(["put", "k", b"v", None, False, "linearizable", "c", 2**64 - 1]), r"in field 'seq'"),
    (_client(["list", "", None, None, False, "linearizable", "", 0, 10**23 % 2**64]), r"in field 'limit'"),
    (_client(["list", "", None, None, False, "linearizable", "", 0, -1]), r"in field 'limit'"),
    (_client(["add_node", "", None, None, False, "linearizable", "", 0, 0, ["n4", "no port"]]),
     r"address is not HOST:PORT"),
])
def test_out_of_range_client_fields_are_refused_naming_the_field(data, why):
    with pytest.raises(DecodeError, match=why):
        decode_client(data, ClientRequest)


def test_a_20_mb_cas_expected_is_refused_and_a_larger_frame_is_not_even_unpacked():
    data = encode_client(ClientRequest("cas", "k", b"v", b"e" * (20 * 1024 * 1024)))
    with pytest.raises(DecodeError, match="ClientRequest: 20971520 bytes is more than the limit of .* 'expected'"):
        decode_client(data, ClientRequest)
    data = encode_client(ClientRequest("put", "k", b"v" * (MAX_CLIENT_FRAME_BYTES + 1)))
    with pytest.raises(DecodeError, match="client frame of .* bytes is more than the limit"):
        decode_client(data, ClientRequest)


def test_the_largest_legal_values_still_decode():
    big = ClientRequest("cas", "k" * MAX_KEY_BYTES, b"v" * MAX_VALUE_BYTES, b"e" * MAX_VALUE_BYTES,
                        client_id="c" * MAX_ID_BYTES, seq=INDEX_LIMIT - 1, limit=MAX_LIST_LIMIT)
    assert decode_client(encode_client(big), ClientRequest) == big
    rv = RequestVote(INDEX_LIMIT - 1, INDEX_LIMIT - 1, INDEX_LIMIT - 1)
    assert decode_peer(encode_peer("c" * MAX_CLUSTER_ID_BYTES, "n" * MAX_ID_BYTES, rv)).msg == rv
    m = Member("n" * MAX_ID_BYTES, "[::1]:65535", "h.example.com:1", "", False)
    assert decode_record(encode_record(Configuration([m] * MAX_MEMBERS)), Configuration).members == [m] * MAX_MEMBERS
    ae = AppendEntries(1, 0, 0, [Entry(1, 1, b"")] * MAX_ENTRIES, 0)
    assert decode_peer(encode_peer("c1", "n2", ae)).msg == ae


def test_a_max_term_request_vote_is_taken_by_every_role_without_raising():
    # The largest term that decodes: each core adopts it and can still count one more.
    step_everywhere("n2", decode_peer(encode_peer("c1", "n2", RequestVote(INDEX_LIMIT - 1, 0, 0))).msg)
    c = _cores()[0]
    c.step("n2", RequestVote(INDEX_LIMIT - 1, 99, 99, transfer=True))
    assert c.term == INDEX_LIMIT - 1
    to_fields(VoteReply(c.term + 1, True))  # the next term still fits a 64-bit field
    msgpack.packb(c.term + 1)
