"""Making a directory's entries durable: the one helper that storage/, wire/ (private files) and
the offline commands share, so it lives at the package root and imports nothing of ours.

A rename, creation or deletion is durable only once the directory holding it is fsynced
(POSIX; ext4 and XFS need it after a rename too).
"""
from __future__ import annotations

import os
from typing import Union

__all__ = ["fsync_dir"]


def fsync_dir(directory: Union[str, "os.PathLike[str]"]) -> None:
    """Make renames, creations and deletions in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
