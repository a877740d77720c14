"""The backup file format (storage/backup_file.py): what it writes reads back, and every damaged,
truncated, oversized or foreign file is refused with a message naming the problem."""
from __future__ import annotations

import io
import os
import struct

import msgpack
import pytest

from raftkv.records import Member
from raftkv.storage import backup_file as bf
from raftkv.storage.backup_file import BackupError, BackupHeader, BackupWriter, iter_stream, new_header, verify

MEMBERS = [Member("node1", "127.0.0.1:9001", "127.0.0.1:5001", "", True, "inc1"),
           Member("node2", "127.0.0.1:9002", "127.0.0.1:5002", "127.0.0.1:8002", False)]


def _write(path, stream: bytes, **kw) -> BackupHeader:
    header = new_header(kw.get("cluster_id", "c1"), kw.get("index", 42), kw.get("term", 3), MEMBERS, len(stream),
                        "node1")
    w = BackupWriter(str(path), header)
    for i in range(0, len(stream), 1000):
        w.write(stream[i:i + 1000])
    assert w.finish() == os.path.getsize(path) == bf.file_size(header)
    return header


def _raw(version: int = bf.FORMAT_VERSION, header: bytes = b"", magic: bytes = bf.MAGIC) -> bytes:
    return struct.pack(">8sHI", magic, version, len(header)) + header


def test_round_trip(tmp_path):
    stream = os.urandom(5000)
    path = tmp_path / "b"
    header = _write(path, stream)
    got = verify(str(path))
    assert got == header
    assert (got.cluster_id, got.index, got.term, list(got.members)) == ("c1", 42, 3, MEMBERS)
    assert b"".join(iter_stream(str(path))) == stream
    assert not os.path.exists(str(path) + ".tmp")


def test_to_a_file_object():
    buf = io.BytesIO()
    header = new_header("c1", 7, 1, MEMBERS, 3, "n")
    w = BackupWriter(buf, header)
    w.write(b"abc")
    w.finish()
    assert len(buf.getvalue()) == bf.file_size(header)


def test_every_flipped_byte_is_detected(tmp_path):
    path = tmp_path / "b"
    _write(path, os.urandom(300))
    data = path.read_bytes()
    for pos in range(0, len(data), 7):
        bad = tmp_path / "bad"
        bad.write_bytes(data[:pos] + bytes([data[pos] ^ 1]) + data[pos + 1:])
        with pytest.raises(BackupError):
            verify(str(bad))


@pytest.mark.parametrize("cut", [1, 20, 40, 100, 500])
def test_truncated(tmp_path, cut):
    path = tmp_path / "b"
    _write(path, os.urandom(600))
    data = path.read_bytes()
    path.write_bytes(data[:len(data) - cut])
    with pytest.raises(BackupError, match="truncated|not a raftkv backup"):
        verify(str(path))


def test_extra_bytes(tmp_path):
    path = tmp_path / "b"
    _write(path, b"x" * 10)
    with open(path, "ab") as f:
        f.write(b"more")
    with pytest.raises(BackupError, match="more than its header"):
        verify(str(path))


def test_unknown_version_and_magic(tmp_path):
    path = tmp_path / "b"
    path.write_bytes(_raw(version=2, header=b"\x80"))
    with pytest.raises(BackupError, match="format version 2; this build reads 1"):
        verify(str(path))
    path.write_bytes(_raw(magic=b"SQLite f"))
    with pytest.raises(BackupError, match="not a raftkv backup"):
        verify(str(path))
    path.write_bytes(b"RAF")
    with pytest.raises(BackupError, match="only 3 bytes"):
        verify(str(path))


def test_oversized_header_is_refused_before_reading_it(tmp_path):
    path = tmp_path / "b"
    path.write_bytes(struct.pack(">8sHI", bf.MAGIC, 1, 0xFFFFFFFF))
    with pytest.raises(BackupError, match="more than the limit"):
        verify(str(path))


def _header_with(**changes) -> bytes:
    doc = msgpack.unpackb(new_header("c1", 5, 1, MEMBERS, 10, "n").to_bytes(), raw=False)
    for k, v in changes.items():
        if v is None:
            doc.pop(k)
        else:
            doc[k] = v
    return msgpack.packb(doc, use_bin_type=True)


@pytest.mark.parametrize("changes, words", [
    ({"index": -1}, "'index'"),
    ({"index": "5"}, "'index'"),
    ({"index": 0}, "index 0"),
    ({"term": 1 << 63}, "'term'"),
    ({"stream_bytes": (256 << 30) + 1}, "'stream_bytes'"),
    ({"cluster_id": "x" * 10_000}, "'cluster_id'"),
    ({"members": b"\x93\x01\x02"}, "members"),
    ({"members": msgpack.packb([31, [[["", "bad address"]]]])}, "members"),
    ({"members": None}, "'members'"),
    ({"source": 5}, "'source'"),
    ({"created": "yesterday"}, "'created'"),
])
def test_hostile_header_fields(changes, words):
    with pytest.raises(BackupError, match=words):
        BackupHeader.from_bytes(_header_with(**changes))


def test_header_that_is_not_a_map_or_not_msgpack():
    for blob in (msgpack.packb([1, 2, 3]), b"\xc1", msgpack.packb({1: 2})):
        with pytest.raises(BackupError):
            BackupHeader.from_bytes(blob)


def test_unknown_header_keys_are_ignored():
    assert BackupHeader.from_bytes(_header_with(future_field=[1, 2])).index == 5


def test_writer_refuses_more_or_less_than_announced(tmp_path):
    path = tmp_path / "b"
    w = BackupWriter(str(path), new_header("c", 1, 1, MEMBERS, 4, "n"))
    with pytest.raises(BackupError, match="more stream bytes"):
        w.write(b"12345")
    w.write(b"12")
    with pytest.raises(BackupError, match="after 2 of 4"):
        w.finish()
    w.abort()
    assert not path.exists() and not os.path.exists(str(path) + ".tmp")


def test_the_client_library_can_write_a_backup_without_the_node_dependencies():
    # Client.backup writes through this module: a client-only install has no rocksdict or pykka.
    import subprocess
    import sys

    code = ("import sys, raftkv.storage.backup_file; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('rocksdict', 'pykka')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
