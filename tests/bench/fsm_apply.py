"""CPU per applied entry of the state machine, in-process: the in-memory KVState against the
RocksDB DbState, at several batch sizes (entries per ``Apply``: 1 at one client, tens under load).

    python -m tests.bench.fsm_apply [--entries 20000] [--batches 1,16,64]

Each entry is a put of a 16-byte key with a 100-byte value in a session of the HTTP gateway's
kind (512 writes per session), decoded from its log payload as the FSM does. Prints the best of
five runs of process CPU time (RocksDB's own threads included) per entry, and the decode alone.
A development tool: no figure here is asserted anywhere.
"""
from __future__ import annotations

import os
import tempfile
import time
from typing import Any

import click

from raftkv.actors.db_state import DbState
from raftkv.actors.fsm import KVState, committed_command
from raftkv.storage.kv_store import KvStore
from raftkv.wire.codec import encode_record
from raftkv.wire.messages import Command, EntryKind

_KIND = int(EntryKind.COMMAND)


def _payloads(n: int) -> list:
    return [encode_record(Command("put", "k%015d" % (i % 10_000), b"0123456789" * 10, None, False,
                                  "gw-%d" % (i // 512), i % 512 + 1)) for i in range(n)]


def _apply_all(state: Any, payloads: list, batch: int) -> float:
    t0 = time.process_time()
    n = len(payloads)
    for s in range(0, n, batch):
        for j in range(s, min(s + batch, n)):
            state.apply(j + 1, _KIND, payloads[j])
        state.end_batch(1, None)
    return (time.process_time() - t0) / n * 1e6


def _decode_all(payloads: list) -> float:
    t0 = time.process_time()
    for j, p in enumerate(payloads):
        committed_command(j + 1, _KIND, p)
    return (time.process_time() - t0) / len(payloads) * 1e6


@click.command()
@click.option("--entries", default=20_000, show_default=True)
@click.option("--batches", default="1,16,64", show_default=True, help="Entries per Apply, comma-separated.")
def main(entries: int, batches: str) -> None:
    """Microseconds of CPU per applied entry: KVState (dict) and DbState (RocksDB)."""
    payloads = _payloads(entries)
    click.echo(f"decode alone: {min(_decode_all(payloads) for _ in range(5)):.2f} us/entry")
    with tempfile.TemporaryDirectory() as d:
        for b in (int(x) for x in batches.split(",")):
            mem = min(_apply_all(KVState(), payloads, b) for _ in range(5))
            runs = []
            for r in range(5):
                st = DbState(KvStore(os.path.join(d, f"kv-{b}-{r}")))
                runs.append(_apply_all(st, payloads, b))
                st.store.close()
            click.echo(f"batch {b:>3}: KVState {mem:.2f} us/entry, DbState {min(runs):.2f} us/entry")


if __name__ == "__main__":
    main()
