"""The Raft log reuses its WAL files (storage/log_store.py, LOG_FILES_RECYCLED) and still keeps
every synced write across a kill -9: a real writer process, SIGKILLed while it writes into a
recycled WAL file, loses nothing it was told is durable, and the log reopens contiguous."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from raftkv.records import Entry, EntryKind
from raftkv.storage.log_store import WRITE_BUFFER_MB, LogStore

BATCH = 100

# Writes synced batches of numbered entries and prints the last index of each once write()
# returned (durable). A WAL file first seen at half a memtable's size or more was not written
# from empty: it is an old one renamed for reuse, and the writer says so.
WRITER = r"""
import os, sys
from raftkv.records import Entry, EntryKind
from raftkv.storage.log_store import LogStore
path, batch, half = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
store = LogStore(path)
seen = set()
i = store.last_index()
while True:
    store.write(term=1, entries=[Entry(1, EntryKind.COMMAND, b"%d:" % n + b"v" * 400)
                                 for n in range(i + 1, i + batch + 1)])
    i += batch
    print("ack", i, flush=True)
    for e in os.scandir(path):
        if e.name.endswith(".log") and e.name not in seen:
            seen.add(e.name)
            if e.stat().st_size >= half:
                print("recycled", e.name, flush=True)
"""


def test_synced_writes_survive_a_kill_while_the_log_writes_into_a_recycled_wal(tmp_path: Path) -> None:
    path = tmp_path / "raft"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(BATCH), str((WRITE_BUFFER_MB << 20) // 2)],
                            stdout=subprocess.PIPE, text=True)
    acked = 0
    recycled_at = None
    deadline = time.monotonic() + 60
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            word, value = line.split()
            if word == "ack":
                acked = int(value)
            elif recycled_at is None:
                recycled_at = acked
            # Killed mid-stream, some batches into the reused file.
            if recycled_at is not None and acked >= recycled_at + 20 * BATCH:
                break
            assert time.monotonic() < deadline, f"no WAL file was reused after {acked} entries"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    # Acknowledgements printed before the kill and not read yet count too (a line the kill cut
    # short does not).
    assert proc.stdout is not None
    for line in proc.stdout:
        word, _, value = line.partition(" ")
        if word == "ack" and line.endswith("\n"):
            acked = max(acked, int(value))
    proc.stdout.close()
    assert recycled_at is not None, f"the writer ended after {acked} entries without reusing a WAL file"

    store = LogStore(str(path))
    try:
        assert store.last_index() >= acked
        for lo in range(1, acked + 1, 5000):
            hi = min(lo + 5000, acked + 1)
            assert store.entries(lo, hi) == [Entry(1, EntryKind.COMMAND, b"%d:" % n + b"v" * 400)
                                             for n in range(lo, hi)]
    finally:
        store.close()
