"""Freeing a large list of objects a little at a time, on a background thread.

When a snapshot lets the role actor compact its in-memory log, the entries it drops are freed
where the last reference goes. After a preload, that is about a million ``Entry`` tuples and
their ``bytes`` (two million objects): ``del entries[:n]`` took 100-230 ms on this machine with
the GIL held, and every thread of the node (the peers' and clients' I/O, the log writer, the
FSM) stopped meanwhile; the writes in flight waited for it (docs/performance.md, "write stall
during a leader snapshot, round 5").

:func:`free_later` takes such a list, which nothing else may use afterwards, and a daemon thread
frees it from its end in chunks of :data:`CHUNK` objects (well under a millisecond each, no
memmove), pausing :data:`PAUSE_S` between chunks so that the node's threads get the GIL between
them. A list of a million entries is gone within a second or two; the memory is then returned
as before (pymalloc unmaps its empty arenas). Lists shorter than :data:`SMALL` are freed at once
by the caller: that costs less than handing them over.
"""
from __future__ import annotations

import collections
import threading
import time

CHUNK = 2000  # objects freed per GIL hold: ~0.2-0.5 ms here
PAUSE_S = 0.002  # between chunks: the GIL is free for the node's threads
SMALL = 4096  # shorter lists are not worth a hand-over

_lock = threading.Lock()
_ready = threading.Condition(_lock)
_queue: collections.deque = collections.deque()
_thread: threading.Thread | None = None


def free_later(items: list) -> None:
    """Free the objects of ``items`` (emptying it) on the background thread, a chunk at a time;
    a short list is emptied here. The caller must hold no other use of ``items``."""
    global _thread
    if len(items) < SMALL:
        items.clear()
        return
    with _lock:
        _queue.append(items)
        if _thread is None:
            _thread = threading.Thread(target=_run, name="deferred-free", daemon=True)
            _thread.start()
        _ready.notify()


def pending() -> int:
    """Objects handed over and not freed yet (tests)."""
    with _lock:  # the lengths themselves are read without it: len() of a list is atomic
        return sum(len(x) for x in _queue)


def _run() -> None:
    while True:
        with _lock:
            while not _queue:
                _ready.wait()
            items = _queue[0]
        while items:
            del items[-CHUNK:]  # from the end: nothing is moved
            time.sleep(PAUSE_S)
        with _lock:
            _queue.popleft()
