"""On-disk compatibility: this release opens data written by the previous one, applies committed
entries a newer release extended, and stops loudly on a committed entry it cannot decode.

The fixture tests/fixtures/format_v1 is a one-node data directory written by the previous
release (tests/fixtures/make_format_v1.py): a few hundred writes with deletes, a CAS, a create
and a non-UTF-8 value, with a low snapshot threshold, so that it holds snapshot files and log
entries past the newest snapshot. expected.json is what that release read back before SIGTERM.
"""
from __future__ import annotations

import base64
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest

from raftkv.records import Command, Entry, EntryKind, spec_of, to_fields
from raftkv.storage.log_store import LogStore
from raftkv.wire.client import Client, NotFound

from .harness import KVNODE, ROOT, free_port, wait_until

pytestmark = pytest.mark.integration

FIXTURE = ROOT / "tests" / "fixtures" / "format_v1"
EXPECTED = {k: base64.b64decode(v) for k, v in json.loads((FIXTURE / "expected.json").read_text()).items()}


class OneNode:
    """The current kvnode on a copy of the fixture's data directory (node id n1)."""

    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path / "data"
        shutil.copytree(FIXTURE / "n1", self.root / "n1")
        self.log_path = tmp_path / "n1.log"
        self.proc: subprocess.Popen | None = None
        self.client = ""

    def start(self) -> None:
        self.client = f"127.0.0.1:{free_port()}"
        args = [sys.executable, str(KVNODE), "--id", "n1", "--addr", f"127.0.0.1:{free_port()}",
                "--client", self.client, "--http", f"127.0.0.1:{free_port()}", "--data-dir", str(self.root),
                "--bootstrap"]  # a no-op on a node with data, as a blind restart script would pass it
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(args, stdout=logf, stderr=subprocess.STDOUT)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def status(self) -> dict:
        with Client([self.client], timeout=1.0) as c:
            return c.status(self.client)

    def store(self) -> LogStore:
        return LogStore(str(self.root / "n1" / "raft"))


@pytest.fixture
def node(tmp_path, request):
    n = OneNode(tmp_path)
    yield n
    if n.proc is not None and n.proc.poll() is None:
        n.proc.kill()
        n.proc.wait()
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        print(n.log_text()[-8000:])


def _read_everything(node: OneNode) -> None:
    wait_until(lambda: node.status()["state"] == "leader", 30, what="n1 leading again")
    with Client([node.client], timeout=10.0) as kv:
        for key, value in EXPECTED.items():
            assert kv.get(key) == value, key
        for i in range(330):  # every key the fixture wrote and then deleted is gone
            if f"k{i:03d}" not in EXPECTED:
                with pytest.raises(NotFound):
                    kv.get(f"k{i:03d}")
        assert dict(kv.list("")) == EXPECTED


def test_current_release_reads_previous_release_data(node):
    node.start()
    _read_everything(node)
    st = node.status()
    # the state came from both a snapshot and the log entries after it
    assert st["snapshot_index"] == 349 and st["first_log_index"] == 330 and st["applied_index"] > 349
    # and this release carries on with that data: a write, a restart, everything still there
    with Client([node.client], timeout=10.0) as kv:
        kv.put("after-upgrade", b"yes")
    assert node.stop() == 0
    node.start()
    wait_until(lambda: node.status()["state"] == "leader", 30, what="n1 leading after a restart")
    with Client([node.client], timeout=10.0) as kv:
        assert kv.get("after-upgrade") == b"yes"
        assert kv.get("k002") == b"overwritten" and kv.get("binary") == b"\xff\x00\xfe raw"
    assert node.stop() == 0
    # the old snapshot was migrated into the key-value store on the first start only
    assert node.log_text().count("migrated a data directory of the previous format") == 1
    assert not list((node.root / "n1" / "snapshots").glob("snap-*.snap"))


def _append_committed(node: OneNode, kind: int, payload: bytes) -> int:
    store = node.store()
    try:
        index = store.last_index() + 1
        store.write(entries=[Entry(store.stable().term, kind, payload)], commit=index)
    finally:
        store.close()
    return index


def test_committed_entry_with_an_appended_field_is_applied(node):
    # a newer release's write, with a Command field this release does not know
    fields = to_fields(Command("put", "from-newer", b"v2")) + ["a field added later"]
    _append_committed(node, EntryKind.COMMAND, msgpack.packb([spec_of(Command).code, fields], use_bin_type=True))
    node.start()
    wait_until(lambda: node.status()["state"] == "leader", 30, what="n1 leading")
    with Client([node.client], timeout=10.0) as kv:
        assert kv.get("from-newer") == b"v2"
        assert kv.get("k002") == b"overwritten"
    assert node.stop() == 0


@pytest.mark.parametrize("kind, payload", [
    (EntryKind.COMMAND, b"\xc1 not a command"),
    (9, b""),  # an entry kind this release does not know
])
def test_undecodable_committed_entry_stops_the_node(node, kind, payload):
    index = _append_committed(node, kind, payload)
    node.start()
    wait_until(lambda: node.proc.poll() is not None, 30, what="kvnode to exit")
    assert node.proc.returncode == 70  # supervision's exit status for a failed actor
    lines = [ln for ln in node.log_text().splitlines() if " CRITICAL " in ln]
    assert lines and f"committed entry {index} cannot be decoded" in lines[0], node.log_text()[-3000:]
