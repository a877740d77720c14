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
:meth:`clear` empties the map. Bounded in keys and value bytes; large values are not kept.

Two generations of plain dicts rather than one LRU OrderedDict: a write goes into the young
one (one dict store, where the OrderedDict needed a pop and a re-insert per write to keep LRU
order: :meth:`written` went from ~0.85 to ~0.5 us per write in-process, docs/performance.md
"Write CPU, round 7"), a lookup tries the young one, then the old one. When the young one reaches
half of a bound it becomes the old one and the old one is dropped (its keys not written since
are read from the DB again). Each generation holds at most half of each bound, so the whole
holds at most ``max_keys`` keys and ``max_bytes`` value bytes; the bytes are counted as written
(a key written twice in one generation counts twice), an upper bound of what is held. A key
that is held stays equal to the DB: a newer write of it is in the young generation, looked up
first, and a value too large to keep removes the key from both.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

from raftkv.storage.kv_record import KeyRecord

MAX_KEYS = 65_536
MAX_BYTES = 16 << 20  # value bytes held at most
MAX_VALUE = 4096  # larger values are read from the DB
_MISSING = object()


class RecentRecords:
    """A record reader for the FSM's KvBatch: the records written lately, then ``store``'s."""

    __slots__ = ("store", "young", "old", "young_bytes", "old_bytes", "max_keys", "max_bytes")

    def __init__(self, store: Any, max_keys: int = MAX_KEYS, max_bytes: int = MAX_BYTES) -> None:
        if max_keys < 2 or max_bytes < 2:
            raise ValueError("RecentRecords bounds must be at least 2")
        self.store = store  # a KvStore (get_record)
        self.young: dict[str, Optional[KeyRecord]] = {}
        self.old: dict[str, Optional[KeyRecord]] = {}
        self.young_bytes = 0  # value bytes written into ``young`` since it started
        self.old_bytes = 0
        self.max_keys = max_keys
        self.max_bytes = max_bytes

    def get_record(self, key: str) -> Optional[KeyRecord]:
        """The key's record as the DB holds it (None: absent)."""
        rec = self.young.get(key, _MISSING)
        if rec is _MISSING:
            rec = self.old.get(key, _MISSING)
            if rec is _MISSING:
                return self.store.get_record(key)
        return rec  # type: ignore[return-value]  # a KeyRecord or None

    def written(self, records: Mapping[str, Optional[KeyRecord]]) -> None:
        """``records`` (key -> record, None for a delete) are now in the DB."""
        young = self.young
        used = self.young_bytes
        half_keys, half_bytes = self.max_keys // 2, self.max_bytes // 2
        largest = min(MAX_VALUE, half_bytes)
        for key, rec in records.items():
            n = 0 if rec is None else len(rec[0])  # the value's bytes
            if n > largest:
                young.pop(key, None)  # not kept: neither generation may answer for it any more
                self.old.pop(key, None)
                continue
            if len(young) >= half_keys or used + n > half_bytes:
                self.old, self.old_bytes = young, used  # the young generation is full: it ages
                young = self.young = {}
                used = 0
            young[key] = rec
            used += n
        self.young_bytes = used

    def held(self) -> dict[str, Optional[KeyRecord]]:
        """Every key held and the record it is held as (for checks and tests)."""
        return {**self.old, **self.young}

    def held_bytes(self) -> int:
        """An upper bound of the value bytes held."""
        return self.young_bytes + self.old_bytes

    def __len__(self) -> int:
        """Keys held (a key held in both generations counts twice)."""
        return len(self.young) + len(self.old)

    def clear(self) -> None:
        """Forget everything (the DB was replaced)."""
        self.young, self.old = {}, {}
        self.young_bytes = self.old_bytes = 0
