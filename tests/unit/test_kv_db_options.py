"""The KV database is opened with this build's options, also when it already exists."""
from __future__ import annotations

import glob
import os

import rocksdict

from raftkv.storage.kv_db import MAX_BYTES_FOR_LEVEL_BASE_MB, TARGET_FILE_SIZE_MB, kv_options, open_db


def _persisted_options(path: str) -> dict[str, str]:
    """The default column family's options RocksDB wrote for the DB's latest open."""
    newest = max(glob.glob(os.path.join(path, "OPTIONS-*")), key=lambda p: int(p.rsplit("-", 1)[1]))
    section, found = "", {}
    for line in open(newest, encoding="utf-8"):
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == '[CFOptions "default"]' and "=" in line:
            key, _, value = line.partition("=")
            found[key.strip()] = value.strip()
    return found


def test_an_existing_db_is_opened_with_this_builds_options(tmp_path):
    # A DB made by an earlier build: RocksDB's default level sizes, no block cache of its own.
    path = str(tmp_path / "kv")
    old = rocksdict.Options(raw_mode=True)
    old.create_if_missing(True)
    old.set_level_compaction_dynamic_level_bytes(True)
    db = rocksdict.Rdict(path, old)
    db[b"k"] = b"v"
    db.close()
    assert _persisted_options(path)["max_bytes_for_level_base"] == str(256 << 20)

    db = open_db(path, kv_options(cache_mb=24))
    try:
        assert db[b"k"] == b"v"
        # storage.cache_mb is honoured (rocksdict alone would give an existing DB 8 MB).
        assert db.property_int_value("rocksdb.block-cache-capacity") == 24 << 20
        persisted = _persisted_options(path)
        assert persisted["max_bytes_for_level_base"] == str(MAX_BYTES_FOR_LEVEL_BASE_MB << 20)
        assert persisted["target_file_size_base"] == str(TARGET_FILE_SIZE_MB << 20)
    finally:
        db.close()


def test_a_db_of_this_build_opens_read_only(tmp_path):
    # verify_db and checkpoints open read-only with the same options.
    path = str(tmp_path / "kv")
    db = open_db(path, kv_options())
    db[b"k"] = b"v"
    db.close()
    ro = open_db(path, kv_options(cache_mb=8), read_only=True)
    try:
        assert ro[b"k"] == b"v"
    finally:
        ro.close()
