"""Private files (key pairs, tokens, TLS keys): written atomically with mode 0600, read back only if private.

A private file is never visible to anyone else, not even for a moment: it is written into a
temporary file created with mode 0600 (``O_CREAT | O_EXCL``, so no existing file is reused),
synced, then renamed or linked to its final name, and the directory is synced. Reading refuses a
file that group or others can read or write, the way ssh refuses a private key with loose modes.
"""
from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path
from typing import Union

from raftkv.fsync import fsync_dir

PathLike = Union[str, "os.PathLike[str]"]

PRIVATE_MODE = 0o600


class PrivateFileError(Exception):
    """A private file that cannot be used: loose permissions, not a regular file, or unreadable."""


def _write_temp(directory: Path, data: bytes) -> Path:
    """A new file in ``directory`` holding ``data``, mode 0600 from its creation on, synced."""
    while True:
        tmp = directory / f".tmp-{secrets.token_hex(8)}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), PRIVATE_MODE)
            break
        except FileExistsError:
            continue
    try:
        # The umask can only remove bits from 0600; fchmod makes it exactly 0600 (owner read+write).
        os.fchmod(fd, PRIVATE_MODE)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return tmp


def write_private_file(path: PathLike, data: bytes, *, overwrite: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically with mode 0600 and return the path.

    With ``overwrite=False`` an existing file is left alone and :class:`FileExistsError` is
    raised (two processes creating the same key at once: exactly one wins, the other loads it).
    The parent directory is created (mode 0700) if missing.
    """
    path = Path(path)
    directory = path.parent
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = _write_temp(directory, data)
    try:
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails with FileExistsError instead of replacing
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(directory)
    return path


def check_private(path: PathLike) -> None:
    """Raise :class:`PrivateFileError` unless ``path`` is a regular file that only its owner can access."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise PrivateFileError(f"{path}: cannot read: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise PrivateFileError(f"{path}: not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise PrivateFileError(
            f"{path}: permissions {mode:04o} are too open: this file holds a secret and must be "
            f"readable by its owner only (run: chmod 600 {path})")


def read_private_file(path: PathLike) -> bytes:
    """The content of a private file; :class:`PrivateFileError` if others could read or write it.

    :class:`FileNotFoundError` passes through, so callers can tell "missing" from "unusable".
    """
    check_private(path)
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise PrivateFileError(f"{path}: cannot read: {e.strerror}") from None
