"""A bounded cache of values in front of the key-value store, for gets.

A RocksDB point lookup costs 4 us of a leader's ~32 us per read under load and ~22 us at one
request at a time (cold CPU caches: memtables, then each L0 file's filter and index); a dict
lookup a tenth of a microsecond (docs/performance.md, "The second round's regression").

Filled by gets only; a write drops the keys it wrote (a write that refilled them cost the FSM
~2 us per write on every node in a running cluster, more than most reads saved), so a
write-only load leaves it empty and pays one truthiness test per batch.

Linearizability. One lock covers, on the writer's side, the DB write of a batch together with
dropping the keys it wrote, and on the readers' side a lookup together with, on a miss, the DB
read and the insert. So whatever the cache holds for a key is what the DB holds, as seen by
anyone who takes the lock: a get never returns an older value than another get or a list
(which reads the DB without the lock) already returned.

Bounded by key count and bytes (least recently used first out); a value larger than
:data:`MAX_CACHED_VALUE` is not kept.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Iterable, Optional

from .kv_record import KeyRecord

MAX_KEYS = 65_536
MAX_BYTES = 16 << 20
MAX_CACHED_VALUE = 4096  # larger values are read from the DB every time
_ABSENT = object()


class ValueCache:
    """Key -> record (value and revisions; None: absent) for the keys read most recently and not
    written since."""

    def __init__(self, max_keys: int = MAX_KEYS, max_bytes: int = MAX_BYTES) -> None:
        self.lock = threading.Lock()  # see the module docstring: the writer holds it across its DB write
        self._d: OrderedDict[str, Optional[KeyRecord]] = OrderedDict()
        self._bytes = 0
        self._max_keys = max_keys
        self._max_bytes = max_bytes

    def get(self, key: str, load: Callable[[str], Optional[KeyRecord]]) -> Optional[KeyRecord]:
        """The record of ``key``: cached, else ``load(key)`` (the DB), kept for next time."""
        with self.lock:
            d = self._d
            if key in d:
                d.move_to_end(key)
                return d[key]
            v = load(key)  # may raise (the store is being replaced): nothing is kept then
            self._keep(key, v)
            return v

    def written(self, keys: Iterable[str]) -> None:
        """Forget the keys a batch just wrote to the DB. Call with :attr:`lock` held, right after
        the write, in the same critical section."""
        d = self._d
        if not d:
            return
        for key in keys:
            old = d.pop(key, _ABSENT)
            if isinstance(old, KeyRecord):
                self._bytes -= len(old.value)

    def clear(self) -> None:
        """Forget everything (the whole state is being replaced). Call with :attr:`lock` held."""
        self._d.clear()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._d)

    def _keep(self, key: str, v: Optional[KeyRecord]) -> None:
        if v is not None and len(v.value) > MAX_CACHED_VALUE:
            return  # not kept
        d = self._d
        d[key] = v  # a miss: the key is not in the cache
        if v is not None:
            self._bytes += len(v.value)
        while len(d) > self._max_keys or self._bytes > self._max_bytes:
            _, gone = d.popitem(last=False)
            if gone is not None:
                self._bytes -= len(gone.value)
