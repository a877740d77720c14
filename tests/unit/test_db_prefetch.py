"""Reading an Apply's keys ahead (DbState.prefetch, issue 15) changes nothing: the same results,
watch events (with their revisions) and stored records as applying entry by entry, and as the
in-memory model, whatever the batch size and however the keys repeat within a batch."""
from __future__ import annotations

import random

from raftkv.actors.db_state import DbState
from raftkv.actors.fsm import KVState
from raftkv.storage.kv_store import KvStore
from raftkv.wire.messages import EntryKind

from .test_db_state import _commands

_KIND = int(EntryKind.COMMAND)


def _run(state, payloads: list, batch: int, prefetch: bool) -> tuple[list, list]:
    results, events = [], []
    for s in range(0, len(payloads), batch):
        entries = [(j + 1, _KIND, payloads[j]) for j in range(s, min(s + batch, len(payloads)))]
        if prefetch:
            state.prefetch(entries)
        results.extend(state.apply(i, k, p) for i, k, p in entries)
        state.end_batch(1, None)
        events.extend(state.take_events())
    return results, events


def test_prefetch_changes_no_result_event_or_record(tmp_path):
    rng = random.Random(15)
    payloads = _commands(rng, 600)
    model = _run(KVState(), payloads, 1, False)
    keys = [f"k{i}" for i in range(31)]
    for batch in (1, 2, 5, 64):
        plain = DbState(KvStore(str(tmp_path / f"plain-{batch}")))
        ahead = DbState(KvStore(str(tmp_path / f"ahead-{batch}")))
        try:
            want = _run(plain, payloads, batch, False)
            got = _run(ahead, payloads, batch, True)
            assert got == want
            assert got == model
            assert [ahead.store.get_record(k) for k in keys] == [plain.store.get_record(k) for k in keys]
            assert any(r is not None for r in (ahead.store.get_record(k) for k in keys))
        finally:
            plain.store.close()
            ahead.store.close()


def test_an_entry_read_ahead_is_applied_only_with_its_own_payload(tmp_path):
    # the decoded command is reused only for the very payload it came from
    rng = random.Random(3)
    a, b = _commands(rng, 2)
    st = DbState(KvStore(str(tmp_path / "kv")))
    try:
        st.prefetch([(1, _KIND, a), (2, _KIND, a)])
        other = DbState(KvStore(str(tmp_path / "kv2")))
        try:
            assert st.apply(1, _KIND, a) == other.apply(1, _KIND, a)
            assert st.apply(2, _KIND, b) == other.apply(2, _KIND, b)
            st.end_batch(1, None)
            other.end_batch(1, None)
            assert st.take_events() == other.take_events()
        finally:
            other.store.close()
    finally:
        st.store.close()
