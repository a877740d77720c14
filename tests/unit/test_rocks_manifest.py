"""Reading which SST files a RocksDB MANIFEST names (storage/rocks_manifest.py): the same set as
RocksDB's live_files through flushes and compactions, any prefix of the file readable, and bytes
that are no MANIFEST refused with ManifestError, never another exception."""
from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftkv.storage.rocks_manifest import BLOCK, ManifestError, TableFiles, live_table_files, records, table_file_name


def _manifest(path: str) -> bytes:
    with open(os.path.join(path, "CURRENT")) as f:
        name = f.read().strip()
    with open(os.path.join(path, name), "rb") as f:
        return f.read()


def _live(db) -> set:
    return {int(f["name"].lstrip("/").split(".")[0]) for f in db.live_files()}


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """A MANIFEST over 32 KiB (records cut across blocks) from many flushes and compactions, with
    the live files after each step."""
    import rocksdict

    from raftkv.storage.kv_db import kv_options
    path = str(tmp_path_factory.mktemp("manifest") / "db")
    opts = kv_options(cache_mb=8)
    opts.set_disable_auto_compactions(True)  # compactions only when asked: each step's state is settled
    db = rocksdict.Rdict(path, opts)
    steps = []
    try:
        for round_ in range(300):
            for i in range(20):
                db[b"k%03d-%02d" % (round_ % 50, i)] = b"%d" % round_
            db.flush(True)
            if round_ % 60 == 59:
                db.compact_range(None, None)
            steps.append((len(_manifest(path)), _live(db)))
        return _manifest(path), steps
    finally:
        db.close()


def test_the_files_named_are_those_rocksdb_lists_live_after_every_flush_and_compaction(history):
    data, steps = history
    assert len(data) > BLOCK  # fragments across block boundaries were read
    for size, live in steps:
        assert live_table_files(data[:size]) == live
    assert len(steps[-1][1]) < 30  # compactions removed files, so deletions were applied


def test_any_prefix_reads_as_the_records_complete_in_it(history):
    data, steps = history
    whole = [r for r, _ in records(data)]
    assert sum(len(r) for r in whole) < len(data)
    for cut in range(0, min(len(data), 3 * BLOCK), 97):
        got = [r for r, _ in records(data[:cut])]
        assert got == whole[:len(got)]  # never a torn record, only whole ones in order
        live_table_files(data[:cut])


def test_copies_of_a_growing_manifest_are_read_on_from_where_the_last_ended(history, tmp_path, monkeypatch):
    from raftkv.storage import rocks_manifest

    data, steps = history
    parsed: list = []
    real = rocks_manifest._edit_files

    def counted(edit: bytes) -> tuple:
        parsed.append(len(edit))
        return real(edit)

    monkeypatch.setattr(rocks_manifest, "_edit_files", counted)
    tables = TableFiles()
    for i, (size, live) in enumerate(steps):  # each step's copy in a checkpoint directory of its own
        copy = tmp_path / f"ckpt{i}" / "MANIFEST-000005"
        copy.parent.mkdir()
        copy.write_bytes(data[:size])
        assert tables.read(str(copy)) == live
    assert len(parsed) == len(list(records(data)))  # every record parsed once over all the copies
    other = tmp_path / "other" / "MANIFEST-000005"  # same name, other bytes: read from the start
    other.parent.mkdir()
    other.write_bytes(data[:steps[3][0]])
    assert tables.read(str(other)) == steps[3][1]
    renamed = tmp_path / "renamed" / "MANIFEST-000099"  # another name: from the start
    renamed.parent.mkdir()
    renamed.write_bytes(data[:steps[-1][0]])
    assert tables.read(str(renamed)) == steps[-1][1]


def test_the_names_are_rocksdb_table_file_names():
    assert table_file_name(15) == "000015.sst" and table_file_name(1234567) == "1234567.sst"


@settings(max_examples=1500, deadline=None, derandomize=True, database=None)
@given(st.binary(max_size=300), st.integers(min_value=1, max_value=4))
def test_hostile_bytes_are_a_manifest_error_or_a_set(payload, kind):
    framed = b"\0\0\0\0" + len(payload).to_bytes(2, "little") + bytes([kind]) + payload
    for data in (payload, framed):
        try:
            assert isinstance(live_table_files(data), set)
        except ManifestError:
            pass
