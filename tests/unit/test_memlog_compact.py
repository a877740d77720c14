"""MemLog.compact of a large prefix (what a snapshot after a preload does) keeps exactly the
suffix, and frees the dropped entries on the background thread instead of the caller's."""
from __future__ import annotations

import threading
import time

from raftkv.actors import deferred_free
from raftkv.actors.memlog import MemLog
from raftkv.records import Entry
from tests.unit.polling import wait_for


def _log(n: int, base: int = 10) -> MemLog:
    return MemLog(base, 1, [Entry(2, 1, b"%d" % (base + 1 + i)) for i in range(n)])


def _wait_freed(timeout: float = 30.0) -> None:
    wait_for(lambda: not deferred_free.pending(), "the dropped entries freed", timeout=timeout, every=0.01)


def test_large_compaction_keeps_the_suffix_and_frees_the_prefix_in_the_background() -> None:
    n = 50 * deferred_free.SMALL
    ml = _log(n)
    upto = 10 + n - 1000
    ml.compact(upto, 2)
    assert (ml.base_index, ml.base_term) == (upto, 2)
    assert ml.first_index() == upto + 1 and ml.last_index() == 10 + n
    assert [ml.entry(i).data for i in (upto + 1, 10 + n)] == [b"%d" % (upto + 1), b"%d" % (10 + n)]
    assert ml.term(upto) == 2 and ml.term(upto - 1) is None
    ml.append([Entry(3, 1, b"next")])
    assert ml.last_index() == 10 + n + 1 and ml.last_term() == 3
    _wait_freed()


def test_a_large_prefix_before_a_longer_tail_is_dropped_the_same_way() -> None:
    n = 6 * deferred_free.SMALL
    ml = _log(n)
    upto = 10 + 2 * deferred_free.SMALL  # a third of the log: the head is the shorter part
    ml.compact(upto, 2)
    assert ml.first_index() == upto + 1 and ml.last_index() == 10 + n
    assert [e.data for e in ml.slice(upto + 1, upto + 3)] == [b"%d" % (upto + 1), b"%d" % (upto + 2)]
    assert len(ml.entries) == n - 2 * deferred_free.SMALL
    _wait_freed()


def test_compacting_everything_or_a_little_behaves_as_before() -> None:
    ml = _log(3 * deferred_free.SMALL)
    ml.compact(15, 2)  # a small prefix: dropped in place
    assert ml.first_index() == 16 and ml.entry(16).data == b"16"
    ml.compact(ml.last_index(), 2)  # everything
    assert ml.entries == [] and ml.last_index() == ml.base_index == 10 + 3 * deferred_free.SMALL
    assert ml.last_term() == 2
    ml.compact(5, 1)  # below the base: nothing
    assert ml.base_index == 10 + 3 * deferred_free.SMALL
    _wait_freed()


def test_the_caller_is_not_held_while_a_large_prefix_is_freed() -> None:
    """The objects dropped are freed a chunk at a time: another thread keeps getting the GIL."""
    items = [Entry(1, 1, bytes(100)) for _ in range(40 * deferred_free.CHUNK)]
    runs = []
    stop = threading.Event()

    def other() -> None:
        while not stop.is_set():
            runs.append(time.monotonic())
            time.sleep(0.0005)

    t = threading.Thread(target=other)
    t.start()
    try:
        deferred_free.free_later(items)
        _wait_freed()
    finally:
        stop.set()
        t.join()
    assert items == []
    assert len(runs) > 10  # the other thread ran meanwhile, not only before and after
