"""The codec reads a record's fields in one call per record type and packs them with a msgpack
Packer reused per thread: the bytes are exactly those of packing the schema's field list
(raftkv.records.to_fields) with a fresh packer, so nothing on the wire or on disk changes. The
FSM's Command decoder (record_decoder) gives decode_record's records and errors."""
from __future__ import annotations

import threading

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from raftkv.records import (AppendEntries, ClientReply, ClientRequest, Command, Compare, Configuration, DecodeError,
                            Entry, EntryKind, Member, Txn, TxnOp, TxnOpResult, VoteReply, to_fields, type_code)
from raftkv.wire.codec import (PROTOCOL_VERSION, decode_record, encode_client, encode_peer, encode_record,
                               record_decoder)

SAMPLES = [
    Command("put", "k", b"v", None, False, "c", 7),
    Command("cas", "é", b"v", b"old", True, "c", 1, lease=3),
    Configuration([Member("n1", "127.0.0.1:1"), Member("n2", "127.0.0.1:2", voter=False)]),  # one field
    AppendEntries(3, 10, 2, [Entry(3, int(EntryKind.COMMAND), b"x")], 9),
    VoteReply(4, True),
    ClientRequest("put", "k", b"v", client_id="c", seq=2),
    ClientReply("ok", revision=5, responses=[TxnOpResult("get", "k", True, b"v", 1, 2, 3)]),
]


def test_encoded_bytes_are_the_schemas_field_list_packed():
    for m in SAMPLES:
        fields = to_fields(m)
        assert encode_record(m) == msgpack.packb([type_code(m), fields], use_bin_type=True)
        assert encode_peer("cid", "n1", m) == msgpack.packb([PROTOCOL_VERSION, "cid", "n1", type_code(m), fields],
                                                            use_bin_type=True)
        assert encode_client(m) == msgpack.packb([PROTOCOL_VERSION, type_code(m), fields], use_bin_type=True)
    assert decode_record(encode_record(SAMPLES[2]), Configuration) == SAMPLES[2]


def test_bytes_stay_exact_after_a_large_message_a_failed_one_and_across_threads():
    big = ClientReply("ok", value=b"x" * (1 << 20), revision=9)  # past the kept buffer: a new packer after it
    bad = Command("put", "k", object(), None, False, "c", 1)  # type: ignore[arg-type]  # msgpack cannot pack it
    errors: list = []

    def encode_all(rounds: int) -> None:
        try:
            for i in range(rounds):
                for m in (*SAMPLES, big) if i % 7 == 0 else SAMPLES:
                    want = msgpack.packb([PROTOCOL_VERSION, type_code(m), to_fields(m)], use_bin_type=True)
                    if encode_client(m) != want:
                        errors.append(m)
                if i % 5 == 0:
                    try:
                        encode_record(bad)
                    except TypeError:
                        pass
                    else:
                        errors.append("packed an object msgpack cannot pack")
        except BaseException as e:  # reported below: a thread's failure must fail the test
            errors.append(e)

    threads = [threading.Thread(target=encode_all, args=(60,)) for _ in range(4)]
    for t in threads:
        t.start()
    encode_all(60)
    for t in threads:
        t.join()
    assert errors == []


def _outcome(decode, data: bytes) -> tuple:
    try:
        m = decode(data)
    except DecodeError as e:
        return ("error", str(e))
    return ("record", type(m), m)


_values = st.one_of(st.none(), st.booleans(), st.integers(-3, 2**64 - 1), st.text(max_size=5), st.binary(max_size=5),
                    st.lists(st.integers(0, 3), max_size=2))


@settings(max_examples=400, deadline=None)
@given(frame=st.one_of(
    # what the leader writes, including every op the FSM applies and a transaction
    st.builds(lambda op, key, v, cid, seq, lease: [type_code(SAMPLES[0]), to_fields(
        Command(op, key, v, None, False, cid, seq, lease))],
        st.sampled_from(["put", "delete", "cas", "lease_grant", "nope"]), st.text(max_size=6),
        st.one_of(st.none(), st.binary(max_size=4)), st.text(max_size=4), st.integers(0, 2**63 - 1),
        st.integers(0, 9)),
    st.just([30, to_fields(Command("txn", "", client_id="c", seq=1, txn=Txn(
        [Compare("value", "=", "k", b"v")], [TxnOp("put", "k", b"w")], [TxnOp("get", "k")])))]),
    # malformed: any code, too few or too many values, wrong types, trailing frame values
    st.lists(_values, max_size=3),
    st.tuples(st.sampled_from([30, 31, 30.0, True, "30"]), st.lists(_values, max_size=11)).map(list),
    st.tuples(st.just(30), st.lists(_values, min_size=9, max_size=9), _values).map(list),
))
def test_the_command_decoder_gives_decode_records_records_and_errors(frame):
    data = msgpack.packb(frame, use_bin_type=True)
    assert _outcome(record_decoder(Command), data) == _outcome(lambda d: decode_record(d, Command), data)


def test_the_command_decoder_refuses_bytes_that_are_not_msgpack_as_decode_record_does():
    for data in (b"", b"\xc1", b"\x92\x1e"):
        assert _outcome(record_decoder(Command), data) == _outcome(lambda d: decode_record(d, Command), data)
        assert _outcome(record_decoder(Command), data)[0] == "error"
