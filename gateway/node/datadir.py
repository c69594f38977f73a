"""Claiming the data directory: private to its owner, and served by one gateway at a time.

A second gateway on the same directory would mark the first one's live sessions `gateway_restart`
and overwrite its ports.json, so `claim` takes an exclusive flock on `gateway.lock` before anything
else touches the directory. The kernel drops the lock when its holder exits, kill -9 included, so
there is never a stale lock to clean up (and the file is never deleted: deleting a lock file lets
two processes lock two different inodes). flock, not lockf: it belongs to the open file, not the
process, so a second claim from the same process is refused too.
"""

from __future__ import annotations

import fcntl
import logging
import os
import stat
from pathlib import Path

from pki.files import refuse_package

log = logging.getLogger(__name__)

LOCK_FILE = "gateway.lock"


class DataDirInUse(Exception):
    """Another gateway holds the data directory."""


class DataDirLock:
    """Held from `claim` until `release` or the end of the process."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # the only descriptor of this open file: closing it drops the flock
            self._fd = None


def claim(data_dir: Path) -> DataDirLock:
    """Creates the directory 0700 (tightening an older, looser one) and locks it for this process.

    Non-blocking: raises DataDirInUse, naming the holder's pid, at once if another gateway has it.
    A directory inside a Python package is refused before anything is written (SecretInPackage): the
    registry holds tokens and password hashes, the directory the admin token and TLS keys."""
    refuse_package(data_dir, f"the data directory {data_dir}")
    _make_private(data_dir)
    path = data_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise OSError(f"cannot open {path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _pid_in(fd)
        os.close(fd)
        raise DataDirInUse(
            f"data directory {data_dir} is in use by another gateway" + (f" (pid {holder})" if holder else "")
        ) from None
    except OSError as exc:  # e.g. ENOLCK on a network file system without locks
        os.close(fd)
        raise OSError(f"cannot lock {path}: {exc.strerror}") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return DataDirLock(fd)


def _make_private(data_dir: Path) -> None:
    """The directory holds the registry, the admin token and private keys. Older versions made it
    0755 (the umask's choice): tighten that rather than only warn, so an upgrade closes the hole."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = stat.S_IMODE(data_dir.stat().st_mode)
    if not mode & 0o077:
        return
    try:
        data_dir.chmod(mode & ~0o077)
    except OSError as exc:  # not ours to change (another owner): say so, and serve anyway
        log.warning("data directory %s is mode %04o, open to other users; cannot tighten it: %s", data_dir, mode, exc)
    else:
        log.warning(
            "data directory %s was mode %04o, open to other users; tightened to %04o", data_dir, mode, mode & ~0o077
        )


def _pid_in(fd: int) -> int | None:
    """The holder's pid, or None if it has not written it yet (or the file is not ours)."""
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None
