"""An exclusive lock between processes: an flock on a lock file, removed on release.

One process at a time works on a run folder (`runfolder.run_lock`) or trains a reusable stage
(`train/stage_cache.claimed`). The lock dies with its process, so a killed holder never leaves a
stale lock; where the file system cannot lock, nothing is locked (the lock only saves work there).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

from .atomic import WriteError, write_error_message


@contextlib.contextmanager
def exclusive_lock(path: Path, waiting: str | None) -> Iterator[None]:
    """Hold an flock on `path`, waiting (with the warning `waiting`, once, unless None: for locks held
    a moment) while another holds it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WriteError(write_error_message(path, e)) from e
    warned = False
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise WriteError(write_error_message(path, e)) from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not warned and waiting is not None:
                warnings.warn(waiting, stacklevel=3)
                warned = True
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as e:
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                os.close(fd)
                raise
        if _same_file(fd, path):
            break
        os.close(fd)  # the holder removed the file while we waited: lock the current one
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # still held: a waiter then finds its file gone and locks a new one
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
