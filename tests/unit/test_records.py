"""The record schema's growth rules, through the wire codec and the disk format.

A decoder accepts a record with more fields than it knows when the extras are at the end (a
newer writer), and one with fewer when the missing ones have defaults (an older writer); every
known field is still type-checked.
"""
import subprocess
import sys

import msgpack
import pytest

from raftkv.records import (AppendEntries, AppendReply, ClientReply, ClientRequest, Command, Configuration,
                            DecodeError, Entry, Member, from_fields, spec_of, to_fields)
from raftkv.storage import format as disk
from raftkv.wire.codec import (PROTOCOL_VERSION, decode_client, decode_peer, decode_record, encode_client,
                               encode_peer, encode_record)

MEMBER = Member("n2", "127.0.0.1:9002", "127.0.0.1:5002", "", False)


def _peer_frame(code, fields, *extra):
    return msgpack.packb([PROTOCOL_VERSION, "c1", "n1", code, fields, *extra], use_bin_type=True)


def _record(code, fields):
    return msgpack.packb([code, fields], use_bin_type=True)


def test_records_module_has_no_third_party_imports():
    # storage imports the schema: it must not drag the transport (zmq) or the codec (msgpack) in
    code = ("import sys, raftkv.records; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('zmq', 'msgpack', 'rocksdict')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---------------------------------------------------------------- forward: extra trailing fields


def test_command_with_an_extra_trailing_field_decodes():
    cmd = Command("put", "k", b"v", client_id="c", seq=3)
    data = _record(spec_of(Command).code, to_fields(cmd) + ["a field from a newer release"])
    assert decode_record(data, Command) == cmd


def test_peer_message_with_extra_trailing_fields_and_envelope_values_decodes():
    msg = AppendReply(4, True, match_index=9)
    frame = decode_peer(_peer_frame(spec_of(AppendReply).code, to_fields(msg) + [123, b"x"], "trace-id"))
    assert (frame.cluster_id, frame.sender, frame.msg) == ("c1", "n1", msg)


def test_client_request_with_an_extra_trailing_field_decodes():
    req = ClientRequest("get", "k", consistency="stale")
    data = msgpack.packb([PROTOCOL_VERSION, spec_of(ClientRequest).code, to_fields(req) + [{"new": 1}]],
                         use_bin_type=True)
    assert decode_client(data, ClientRequest) == req


def test_nested_member_and_entry_with_extra_trailing_values_decode():
    ae = from_fields(spec_of(AppendEntries).code, [1, 0, 0, [[1, 1, b"d", "extra"]], 0])
    assert ae.entries == [Entry(1, 1, b"d")]
    conf = from_fields(spec_of(Configuration).code, [[list(MEMBER) + ["zone-a", 7]]])
    assert conf.members == [MEMBER]


# ---------------------------------------------------------------- backward: missing trailing optional fields


def test_missing_trailing_optional_fields_take_their_defaults():
    assert decode_record(_record(spec_of(Command).code, ["delete", "k"]), Command) == Command("delete", "k")
    reply = from_fields(spec_of(AppendReply).code, [5, False])
    assert reply == AppendReply(5, False) and reply.need_snapshot is False
    req = decode_client(msgpack.packb([PROTOCOL_VERSION, spec_of(ClientRequest).code, ["status"]]), ClientRequest)
    assert req.consistency == "linearizable" and req.member is None
    rep = from_fields(spec_of(ClientReply).code, ["ok"])
    assert rep.items == [] and rep.value is None
    conf = from_fields(spec_of(Configuration).code, [[["n1", "127.0.0.1:9001"]]])
    assert conf.members == [Member("n1", "127.0.0.1:9001", "", "", True)]


def test_missing_required_fields_are_rejected():
    with pytest.raises(DecodeError, match="Command: expected at least 2 fields, got 1"):
        decode_record(_record(spec_of(Command).code, ["put"]), Command)
    with pytest.raises(DecodeError, match="AppendEntries: expected at least 5 fields"):
        decode_peer(_peer_frame(spec_of(AppendEntries).code, [1, 0, 0, []]))
    with pytest.raises(DecodeError, match="member"):
        from_fields(spec_of(Configuration).code, [[["n1"]]])
    with pytest.raises(DecodeError, match="entry"):
        from_fields(spec_of(AppendEntries).code, [1, 0, 0, [[1, 1]], 0])


# ---------------------------------------------------------------- every field still type-checked


@pytest.mark.parametrize("fields, where", [
    (["put", "k", "not bytes"], "expected bytes, got str"),
    (["put", 7], "expected str, got int"),
    (["put", "k", None, None, 1], "expected bool, got int"),
    (["put", "k", None, None, False, "c", "3"], "expected int, got str"),
    (["put", "k", b"v", None, False, "c", "3", "extra"], "expected int, got str"),  # extras do not hide it
])
def test_wrong_typed_field_is_rejected(fields, where):
    with pytest.raises(DecodeError, match=f"Command: {where}"):
        decode_record(_record(spec_of(Command).code, fields), Command)


def test_wrong_typed_nested_fields_are_rejected():
    with pytest.raises(DecodeError, match="member: expected bool"):
        from_fields(spec_of(Configuration).code, [[["n1", "a:1", "b:2", "c:3", "yes"]]])
    with pytest.raises(DecodeError, match="entry: wrong field types"):
        from_fields(spec_of(AppendEntries).code, [1, 0, 0, [[1, "1", b"d"]], 0])


def test_envelope_rules_are_unchanged():
    with pytest.raises(DecodeError, match="protocol version"):
        decode_peer(msgpack.packb([PROTOCOL_VERSION + 1, "c1", "n1", 7, [1]]))
    with pytest.raises(DecodeError, match="unknown message type 999"):
        decode_peer(_peer_frame(999, []))
    with pytest.raises(DecodeError, match="expected \\[version, cluster_id, sender, type, fields\\]"):
        decode_peer(msgpack.packb([PROTOCOL_VERSION, "c1", "n1"]))
    with pytest.raises(DecodeError, match="is not a peer message"):
        decode_peer(encode_peer("c1", "n1", Command("put", "k")))
    with pytest.raises(DecodeError, match="expected ClientRequest, got ClientReply"):
        decode_client(encode_client(ClientReply("ok")), ClientRequest)


def test_every_record_round_trips_through_the_codec():
    for msg in (Command("cas", "k", b"n", b"o", True, "c", 9), Configuration([MEMBER]),
                ClientReply("ok", items=[("a", b"1")], info={"x": [1, 2]})):
        assert decode_record(encode_record(msg)) == msg


# ---------------------------------------------------------------- the disk format


def test_stored_entry_with_an_extra_trailing_value_decodes_and_wrong_types_are_rejected():
    assert disk.decode_entry(msgpack.packb([2, 1, b"d", "newer"])) == Entry(2, 1, b"d")
    assert disk.decode_entry(disk.encode_entry(Entry(2, 0, b""))) == Entry(2, 0, b"")
    with pytest.raises(disk.FormatError, match="entry: wrong field types"):
        disk.decode_entry(msgpack.packb([2, 1, "not bytes"]))
    with pytest.raises(disk.FormatError, match="entry: expected"):
        disk.decode_entry(msgpack.packb([2, 1]))
    with pytest.raises(disk.FormatError, match="not msgpack"):
        disk.decode_entry(b"\xc1")


def test_stored_members_and_base_tolerate_appended_values():
    blob = msgpack.packb([spec_of(Configuration).code, [[list(MEMBER) + ["zone"], ["n1", "a:1"]], "extra"]],
                         use_bin_type=True)
    assert disk.decode_members(blob) == [MEMBER, Member("n1", "a:1")]
    assert disk.decode_members(disk.encode_members([MEMBER])) == [MEMBER]
    # the members are written byte for byte as the first release wrote them (a Configuration record)
    assert disk.encode_members([MEMBER]) == encode_record(Configuration([MEMBER]))
    assert disk.decode_base(msgpack.packb([10, 2, "extra"])) == (10, 2)
    with pytest.raises(disk.FormatError, match="member: expected str"):
        disk.decode_members(msgpack.packb([spec_of(Configuration).code, [[["n1", 5]]]]))
    with pytest.raises(disk.FormatError, match="snapshot base"):
        disk.decode_base(msgpack.packb([10, "2"]))
    with pytest.raises(disk.FormatError, match="term: expected a non-negative int"):
        disk.decode_int(msgpack.packb("3"), "term")
    with pytest.raises(disk.FormatError, match="vote: expected a str"):
        disk.decode_vote(msgpack.packb(3))


def test_generated_decoders_agree_with_the_field_checkers():
    """Every record type's generated decoder (the inlined checks) gives the same record, with the
    same field types, as calling each field's checker, and refuses what they refuse with the
    same message: on values at and around every inlined bound (ids of 16/17 and 64/65 bytes,
    4-byte characters, 2^63, bools where ints go, None where a value must be)."""
    import dataclasses
    import random

    from raftkv.records import _BY_CODE, _FAST, _from_fields_checked

    big = 2 ** 63
    ints = [0, 1, 7, big - 1, big, -1, True, 1.0, None]
    strs = ["", "a", "n1", "x" * 16, "x" * 17, "x" * 64, "x" * 65, "x" * 300, "é" * 16, "é" * 17, "é" * 32,
            "é" * 33, "\U0001F600" * 16, "\U0001F600" * 17, "put", "linearizable", b"n1", None, 3]
    pools = {"int": ints, "bool": [True, False, 0, 1, None], "str": strs,
             "bytes": [b"", b"v", b"v" * 100, "v", None, bytearray(b"v")]}
    every = [x for p in pools.values() for x in p] + [[], [[1, 1, b""]], {}, [MEMBER_FIELDS]]
    rng = random.Random(15)
    agreed = refused = inlined = 0
    for code, cls in sorted(_BY_CODE.items()):
        types = [f.type for f in dataclasses.fields(cls)]
        for _ in range(1000):
            values = []
            for t in types:
                base = t[len("Optional["):-1] if t.startswith("Optional[") else t
                pool = pools.get(base, every)
                v = rng.choice(pool) if rng.random() < 0.85 else rng.choice(every)
                values.append(None if t.startswith("Optional[") and rng.random() < 0.3 else v)
            try:
                want = _from_fields_checked(code, values)
            except DecodeError as e:
                with pytest.raises(DecodeError) as got:
                    from_fields(code, values)
                assert str(got.value) == str(e)
                refused += 1
                continue
            got = from_fields(code, values)
            inlined += _FAST[code][1](values) is not None
            assert got == want
            assert [type(x) for x in to_fields(got)] == [type(x) for x in to_fields(want)]
            agreed += 1
    # both sides of the bounds were exercised, and the generated decoders did accept records
    assert agreed > 500 and refused > 5000 and inlined > 300


MEMBER_FIELDS = ["n2", "127.0.0.1:9002", "127.0.0.1:5002", "", False]
