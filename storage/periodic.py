"""A daemon thread that looks at the live DBs' files every so often (the background CRC-32s, the
disk writeback)."""
from __future__ import annotations

import logging
import os
import threading
from typing import Optional

log = logging.getLogger("storage")


class PeriodicScan:
    """Calls :meth:`scan_once` every ``every`` seconds on a daemon thread named ``name`` from
    :meth:`start` until :meth:`stop`. An error in one round is logged at DEBUG and the next round
    runs: a look at files that RocksDB deletes and a snapshot install swaps may fail now and then.
    ``nice``: the thread's nice increment (Linux sets it per thread; 0 keeps the process's)."""

    def __init__(self, name: str, every: float, nice: int = 0) -> None:
        self._name = name
        self._every = every
        self._nice = nice
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def scan_once(self) -> int:
        """One round's work; returns how many files it handled."""
        raise NotImplementedError

    def start(self) -> None:
        """Start the thread."""
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the thread (waits for the round under way: short reads and system calls)."""
        self._stop.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout=5)
        self._thread = None

    def _run(self) -> None:
        if self._nice:
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self._nice)
            except (OSError, AttributeError):
                pass  # not Linux: the thread keeps the process's priority
        while not self._stop.wait(self._every):
            try:
                self.scan_once()
            except Exception as e:  # never let a bad round end the thread; the next may work
                log.debug("%s: %s", self._name, e)
