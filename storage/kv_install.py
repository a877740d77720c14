"""Swapping a received checkpoint in for the live key-value DB, atomically across crashes.

Directories beside the live DB ``<path>`` (all in the same parent, so renames are atomic):

- ``<path>.incoming``: the received, verified checkpoint about to become the live DB;
- ``<path>.swap``: the marker file. Its existence is the commit point of a swap: written (and
  the parent fsynced) only once ``<path>.incoming`` is complete, fsynced and verified;
- ``<path>.old``: the previous live DB, deleted once the swap is done.

The swap: (1) move the staged dir to ``.incoming`` and verify it, (2) create the marker,
(3) rename ``<path>`` to ``.old``, (4) rename ``.incoming`` to ``<path>``, (5) delete the
marker, (6) delete ``.old``; the parent directory is fsynced after every step.

Recovery rule, applied by :func:`recover` every time the store opens:

- marker present: the swap was committed, roll it forward: finish steps 3 and 4 (whichever is
  not done yet), then 5 and 6. The new state wins.
- no marker: nothing was committed (or everything was): delete ``.incoming`` and ``.old``
  leftovers. The live dir is the old state (crash before step 2) or the new one (after step 5).

So a crash at any point leaves either the old state or the new one, never a mix, and the Raft
layer may record the snapshot as installed (drop its log) only after :func:`install` returns.
"""
from __future__ import annotations

import logging
import os
import shutil
from enum import Enum

from raftkv.fsync import fsync_dir

from .kv_db import kv_options, open_db, read_header

log = logging.getLogger("storage.kv")


class SwapStep(str, Enum):
    """Names of the points of :func:`install` between two durable steps (for fault injection)."""

    STAGED = "staged"  # .incoming is in place and verified; no marker yet
    MARKED = "marked"  # marker durable: committed
    OLD_MOVED = "old_moved"  # live renamed to .old
    NEW_MOVED = "new_moved"  # .incoming renamed to live
    UNMARKED = "unmarked"  # marker deleted; only .old is left to delete


def _crash_point(step: SwapStep) -> None:
    """Called between the steps of a swap; tests replace it to simulate a crash there."""


def _paths(path: str) -> tuple[str, str, str, str]:
    path = os.path.abspath(path)
    return os.path.dirname(path), path + ".incoming", path + ".old", path + ".swap"


def verify_db(path: str) -> int:
    """Open the DB at ``path`` read-only, check its format version and return its applied
    index. Raises StorageError / KvFormatError if it is not a usable key-value DB."""
    db = open_db(path, kv_options(cache_mb=8), read_only=True)
    try:
        return read_header(db, path)
    finally:
        db.close()


def recover(path: str) -> None:
    """Finish or roll back a swap a crash interrupted (see the module docstring). Call it with
    the live DB closed, before opening it."""
    parent, incoming, old, marker = _paths(path)
    live = os.path.abspath(path)
    if os.path.exists(marker):
        log.warning("completing an interrupted install of a snapshot into %s", live)
        if os.path.isdir(incoming):
            if os.path.isdir(live):
                os.rename(live, old)
                fsync_dir(parent)
            os.rename(incoming, live)
            fsync_dir(parent)
        os.unlink(marker)
        fsync_dir(parent)
    for leftover in (incoming, old):
        if os.path.isdir(leftover):
            log.info("removing leftover directory %s", leftover)
            shutil.rmtree(leftover)


def install(path: str, staged: str) -> int:
    """Make the DB in ``staged`` the live DB at ``path``, atomically (module docstring), and
    return its applied index. The live DB must be closed; ``staged`` must be complete and
    fsynced (:class:`~raftkv.storage.kv_checkpoint.CheckpointReceiver` does that) and on the
    same filesystem (staging it directly in ``<path>.incoming`` saves a rename; a crash
    before the swap commits deletes it). Raises StorageError, leaving the live DB untouched, if ``staged`` does not
    open as a key-value DB of a format this build reads."""
    parent, incoming, old, marker = _paths(path)
    live = os.path.abspath(path)
    staged = os.path.abspath(staged)
    if os.path.exists(marker):
        recover(live)  # finish an earlier swap first (normally done when the store opened)
    if os.path.isdir(old):
        shutil.rmtree(old)
    if staged != incoming:
        if os.path.isdir(incoming):
            shutil.rmtree(incoming)
        os.rename(staged, incoming)
        fsync_dir(parent)
    applied = verify_db(incoming)
    # the checkpoint's info file means nothing in a live DB (its index goes stale at once)
    info = os.path.join(incoming, "RAFTKV-CHECKPOINT")
    if os.path.exists(info):
        os.unlink(info)
        fsync_dir(incoming)
    _crash_point(SwapStep.STAGED)
    with open(marker, "wb") as f:
        f.write(b"%d\n" % applied)
        f.flush()
        os.fsync(f.fileno())
    fsync_dir(parent)
    _crash_point(SwapStep.MARKED)
    if os.path.isdir(live):
        os.rename(live, old)
        fsync_dir(parent)
    _crash_point(SwapStep.OLD_MOVED)
    os.rename(incoming, live)
    fsync_dir(parent)
    _crash_point(SwapStep.NEW_MOVED)
    os.unlink(marker)
    fsync_dir(parent)
    _crash_point(SwapStep.UNMARKED)
    if os.path.isdir(old):
        shutil.rmtree(old)
    log.info("installed a snapshot at applied index %d into %s", applied, live)
    return applied
