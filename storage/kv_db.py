"""Opening the key-value state's RocksDB database: its options, its format version and header.

Shared by the live store (:mod:`.kv_store`), checkpoints (:mod:`.kv_checkpoint`) and the swap
of a received checkpoint (:mod:`.kv_install`), which all open the same kind of database.
"""
from __future__ import annotations

import rocksdict

from .format import FormatError, check_version, decode_int
from .log_store import StorageError

# 2: a user key's value is stored with its revisions (storage/kv_record.py) under the prefix "v";
# a format-1 DB (raw values under "d") is converted when opened (KvStore._upgrade_v1).
# 3: a client's results that left its window are deleted in blocks (kv_store.DropResultsBelow), so
# the rows of a few seqs below the window may remain: readers keep each client's highest
# SESSION_WINDOW seqs. A format-2 DB holds exactly the windows: it is a format-3 DB as it is (its
# version is rewritten when opened). Format 2 builds refuse a format-3 DB or checkpoint: they would
# take the remaining rows for results still in the window.
KV_FORMAT_VERSION = 3
READABLE_KV_FORMATS = frozenset({1, 2, 3})

# Default block cache: 128 MB. The cache also holds index and filter blocks (see kv_options), so
# a node's memory is bounded by it plus the memtables (2 x 64 MB) and the gets' value cache
# (kv_cache.py, ~30 MB at most), not by the number of keys;
# with the process's own ~100 MB a node stays near 400 MB at any data size (issue 12's goal is
# <= 600 MB at 10M keys). Raise ``storage.cache_mb`` when the hot set is larger than the cache.
DEFAULT_CACHE_MB = 128
WRITE_BUFFER_MB = 64  # per memtable; a checkpoint links (and fsyncs) at most this much of WAL
# Level sizing (issue 12, round 9). With level_compaction_dynamic_level_bytes and RocksDB's
# default 256 MB base, a DB under ~2.5 GB has a single level (L6) below L0, and the keys of every
# L0 file span it all: each L0 compaction rewrote the whole DB (224 MB at 10M keys, 4-7 s of a
# core, resumed at every restart and set off by every snapshot's flush). A 64 MB base makes L5 the
# base level from ~64 MB of data on: L0 compacts into a small L5, and L5 -> L6 compactions take
# one 16 MB file and the few L6 files its key range overlaps.
MAX_BYTES_FOR_LEVEL_BASE_MB = 64
TARGET_FILE_SIZE_MB = 16
MAX_MANIFEST_MB = 1  # a new MANIFEST past this size (kv_options says why)

K_FORMAT = b"m/format"
K_APPLIED = b"m/applied"


class KvFormatError(StorageError):
    """The key-value database is of a format version this build does not read, or damaged."""


def kv_options(cache_mb: int = DEFAULT_CACHE_MB, statistics: bool = False) -> "rocksdict.Options":
    """The RocksDB options of the KV database (also used to open a received checkpoint)."""
    opts = rocksdict.Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.set_keep_log_file_num(3)  # RocksDB's info LOG files otherwise accumulate forever
    # A crash may lose unsynced WAL records at the tail; recover to the last whole batch.
    opts.set_wal_recovery_mode(rocksdict.DBRecoveryMode.point_in_time())
    # Never reuse a WAL file: a snapshot hard-links the WAL files of the switched memtables
    # (storage/kv_live_checkpoint.py), and a recycled one would be overwritten under it.
    opts.set_recycle_log_file_num(0)
    # A snapshot reads the MANIFEST (storage/rocks_manifest.py, ~12 MB/s in Python): on from the
    # last snapshot's copy, but whole the first time after a start. A new one past 1 MB (RocksDB's
    # default is 1 GB) keeps that first read short.
    opts.set_max_manifest_file_size(MAX_MANIFEST_MB << 20)
    opts.set_write_buffer_size(WRITE_BUFFER_MB << 20)
    opts.set_max_write_buffer_number(2)
    opts.set_compression_type(rocksdict.DBCompressionType.lz4())
    opts.set_level_compaction_dynamic_level_bytes(True)
    opts.set_max_bytes_for_level_base(MAX_BYTES_FOR_LEVEL_BASE_MB << 20)
    opts.set_target_file_size_base(TARGET_FILE_SIZE_MB << 20)
    table = rocksdict.BlockBasedOptions()
    table.set_block_cache(rocksdict.Cache(max(1, cache_mb) << 20))
    # Index and filter blocks in the cache, not in table readers' private memory: otherwise
    # they grow with the data (about 1% of it) and memory is no longer bounded by cache_mb.
    table.set_cache_index_and_filter_blocks(True)
    table.set_pin_l0_filter_and_index_blocks_in_cache(True)
    table.set_bloom_filter(10, False)  # point gets of absent keys skip most files
    opts.set_block_based_table_factory(table)
    if statistics:
        opts.enable_statistics()
    return opts


def open_db(path: str, opts: "rocksdict.Options", read_only: bool = False) -> "rocksdict.Rdict":
    """Open a RocksDB directory with ``opts``, turning rocksdict's bare exceptions into
    StorageError."""
    # The default column family's options must be given too: without them rocksdict opens an
    # existing DB with the column family options of its OPTIONS file and an 8 MB block cache of
    # its own, so ``storage.cache_mb`` and any option changed since the DB was made were ignored
    # from the first restart on.
    cfs = {"default": opts}
    try:
        if read_only:
            return rocksdict.Rdict(path, opts, column_families=cfs,
                                   access_type=rocksdict.AccessType.read_only())
        return rocksdict.Rdict(path, opts, column_families=cfs)
    except Exception as e:  # rocksdict raises a bare Exception for every I/O error
        busy = "lock" in str(e).lower()
        hint = " (is another process using this data directory?)" if busy else ""
        raise StorageError(f"cannot open key-value store at {path}: {e}{hint}") from None


def read_format(db: "rocksdict.Rdict") -> int:
    """The format version of an open KV database whose header :func:`read_header` checked."""
    raw = db.get(K_FORMAT)
    return 0 if raw is None else decode_int(raw, "format version")


def read_header(db: "rocksdict.Rdict", path: str) -> int:
    """Check the format version of an open KV database and return its applied index."""
    try:
        raw = db.get(K_FORMAT)
        check_version(None if raw is None else decode_int(raw, "format version"), READABLE_KV_FORMATS)
        raw = db.get(K_APPLIED)
        return 0 if raw is None else decode_int(raw, "applied index")
    except FormatError as e:
        raise KvFormatError(f"key-value store at {path}: {e}") from None


