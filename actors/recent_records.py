"""The records the FSM wrote lately, so that a write finds its key's old record without RocksDB.

Every put reads its key's current record (revisions, issue 14) before writing the new one. In a
running node that RocksDB point lookup costs 8-9 us of the FSM thread per write (measured in a
3-node cluster under PUT load, docs/performance.md "Fourth pass"), against ~1 us in a hot
in-process loop: the lookup walks memtables and filters on CPU caches the other threads and
processes keep evicting. Keys written lately are the ones written again soonest, so the FSM
keeps the records it wrote in a bounded map consulted before the DB.

Equal to the DB for every key it holds: only the FSM's thread writes user keys, always through
a KvBatch (puts and deletes of user keys, including those of transactions and lease
revocations), and :meth:`written` is called with a batch's records only once the batch is in
the DB; a deleted key is held as None (absent). A snapshot install replaces the DB:
:meth:`clear` empties the map. Bounded in keys and value bytes (least recently written dropped
first); large values are not kept.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Mapping, Optional

from raftkv.storage.kv_record import KeyRecord

MAX_KEYS = 65_536
MAX_BYTES = 16 << 20  # value bytes held at most
MAX_VALUE = 4096  # larger values are read from the DB
_MISSING = object()


class RecentRecords:
    """A record reader for the FSM's KvBatch: the records written lately, then ``store``'s."""

    __slots__ = ("store", "map", "bytes", "max_keys", "max_bytes")

    def __init__(self, store: Any, max_keys: int = MAX_KEYS, max_bytes: int = MAX_BYTES) -> None:
        self.store = store  # a KvStore (get_record)
        self.map: OrderedDict[str, Optional[KeyRecord]] = OrderedDict()
        self.bytes = 0
        self.max_keys = max_keys
        self.max_bytes = max_bytes

    def get_record(self, key: str) -> Optional[KeyRecord]:
        """The key's record as the DB holds it (None: absent)."""
        rec = self.map.get(key, _MISSING)
        if rec is _MISSING:
            return self.store.get_record(key)
        return rec  # type: ignore[return-value]  # a KeyRecord or None

    def written(self, records: Mapping[str, Optional[KeyRecord]]) -> None:
        """``records`` (key -> record, None for a delete) are now in the DB."""
        m = self.map
        for key, rec in records.items():
            old = m.pop(key, None)
            if old is not None:
                self.bytes -= len(old.value)
            if rec is None:
                m[key] = None
            elif len(rec.value) <= MAX_VALUE:
                m[key] = rec
                self.bytes += len(rec.value)
        while len(m) > self.max_keys or self.bytes > self.max_bytes:
            old = m.popitem(last=False)[1]
            if old is not None:
                self.bytes -= len(old.value)

    def clear(self) -> None:
        """Forget everything (the DB was replaced)."""
        self.map.clear()
        self.bytes = 0
