"""The codec reads a record's fields in one call per record type and packs them with a msgpack
Packer reused per thread: the bytes are exactly those of packing the schema's field list
(raftkv.records.to_fields) with a fresh packer, so nothing on the wire or on disk changes."""
from __future__ import annotations

import threading

import msgpack

from raftkv.records import (AppendEntries, ClientReply, ClientRequest, Command, Configuration, Entry, EntryKind, Member,
                            TxnOpResult, VoteReply, to_fields, type_code)
from raftkv.wire.codec import PROTOCOL_VERSION, decode_record, encode_client, encode_peer, encode_record

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
