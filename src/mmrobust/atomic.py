"""Atomic file writes and checksums: a reader sees the old file or the complete new one, never half
of one, and a file damaged after it was written is detected when it is read.

- `atomic_write(path, write)`: `write(tmp)` then rename tmp to `path`. A failure (disk full,
  read-only folder, an exception in `write`) leaves the old file untouched and no temporary file
  behind, and file-system errors become a one-line `WriteError` naming the file. Temporary files
  are named after the writing host and process, so that a later write to the same folder removes
  those left by a process that was killed mid-write (never those of a live one).
- `file_sha256`, `payload_sha256`: digests of a file and of a nested payload of tensors and plain
  values (for checkpoints and caches: a bit flip in tensor bytes is not noticed by `torch.load`).
- `seal_json` / `seal_ok`: a JSON record carrying a SHA-256 of its own content, so that a record
  that parses but was corrupted or truncated to valid JSON is still refused; `files_problem`
  checks files against the digests a record lists (a run's manifest lists its files').
- `save_tensors`: `torch.save` through a Python file object, so a full disk raises
  `OSError(ENOSPC)` (torch's own file writer reports it as a cryptic RuntimeError, which
  `atomic_write` still turns into a `WriteError` asking to check the disk space).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import socket
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from .errors import MMRobustError

CHECKSUM = "sha256"  # the key under which sealed JSON records and tensor payloads carry their digest
_HOST = "".join(c if c.isalnum() or c in "-_" else "_" for c in socket.gethostname())[:40] or "host"
_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_NOT_WRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM}


class WriteError(MMRobustError):
    """A file could not be written (disk full, read-only folder ...); the old file, if any, is intact."""


def write_error_message(path: Path | str | None, error: OSError) -> str:
    """One line for an OS error while writing `path` (None: an error from elsewhere, naming its
    own file), with what to do about it."""
    reason = error.strerror or str(error)
    if error.errno in _NO_SPACE:
        advice = "free some disk space (or write elsewhere) and repeat the command; finished work is kept"
    elif error.errno in _NOT_WRITABLE:
        advice = "the folder is read-only or not yours: choose a writable output folder"
    else:
        advice = "fix the cause and repeat the command"
    if path is None:
        where = f"{error.filename}: " if error.filename else ""
        return f"{where}{reason}; {advice}"
    return f"cannot write {path}: {reason}; {advice}"


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.tmp-{_HOST}-"


def _remove_stale_temps(path: Path) -> None:
    """Remove temporary files of `path` left by processes of this host that no longer exist."""
    prefix = _temp_prefix(path)
    with contextlib.suppress(OSError):
        for entry in os.scandir(path.parent):
            if not entry.name.startswith(prefix):
                continue
            pid = entry.name[len(prefix) :].split("-", 1)[0]
            if pid.isdigit() and not _alive(int(pid)):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _mode() -> int:
    """Permissions of a new file under the current umask (mkstemp creates 0600 files)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _mode()  # read once, at import (umask is per process and rarely changes)


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call `write(tmp)` then rename tmp to `path` (atomic on POSIX filesystems).

    An OS error (disk full, read-only folder, no permission) raises a one-line `WriteError`; any
    other exception from `write` propagates. Either way `path` keeps its old content, if any, and
    the temporary file is removed.
    """
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{_temp_prefix(path)}{os.getpid()}-", suffix=path.suffix)
        try:
            os.fchmod(fd, _FILE_MODE)
        finally:
            os.close(fd)
        write(Path(tmp))
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise WriteError(write_error_message(path, e)) from e
    except RuntimeError as e:  # torch.save to a path: its C++ writer reports I/O errors this way
        if not any(s in str(e) for s in ("inline_container", "PytorchStreamWriter", "file write failed")):
            raise
        raise WriteError(
            f"cannot write {path}: the file could not be written ({str(e).splitlines()[0]}); check the free disk "
            "space and that the folder is writable, then repeat the command"
        ) from e
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def save_tensors(payload: Any, path: Path) -> None:
    """`torch.save` to a plain path, through a Python file so that OS errors surface as `OSError`."""
    with open(path, "wb") as f:
        torch.save(payload, f)


# --- checksums --------------------------------------------------------------------------------
def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def payload_sha256(payload: Any) -> str:
    """SHA-256 of a nested payload of tensors, dicts, lists and JSON scalars (key order ignored)."""
    digest = hashlib.sha256()
    _feed(digest, payload)
    return digest.hexdigest()


def _feed(digest: Any, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        digest.update(f"T{t.dtype}{tuple(t.shape)}:".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, Mapping):
        digest.update(b"D%d:" % len(obj))
        for key in sorted(obj, key=repr):
            digest.update(repr(key).encode() + b"=")
            _feed(digest, obj[key])
    elif isinstance(obj, list | tuple):
        digest.update(b"L%d:" % len(obj))
        for item in obj:
            _feed(digest, item)
    else:
        digest.update(f"S{obj!r};".encode())


def seal_json(record: Mapping[str, Any]) -> str:
    """`record` as indented JSON with a `sha256` field over the rest of its content."""
    plain = json.loads(json.dumps(dict(record), default=str))  # what a reader will parse back
    plain.pop(CHECKSUM, None)
    plain[CHECKSUM] = _json_digest(plain)
    return json.dumps(plain, indent=1)


def seal_ok(record: Any) -> bool | None:
    """True if the parsed `record` matches its `sha256` field, False if not, None if it has none."""
    if not isinstance(record, dict) or CHECKSUM not in record:
        return None
    rest = {k: v for k, v in record.items() if k != CHECKSUM}
    return record[CHECKSUM] == _json_digest(rest)


def _json_digest(plain: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(plain, sort_keys=True).encode()).hexdigest()


def files_problem(folder: Path, digests: Mapping[str, str]) -> str | None:
    """What is wrong with the files `digests` lists (name -> SHA-256) in `folder`, or None."""
    for name, expected in digests.items():
        path = Path(folder) / name
        try:
            actual = file_sha256(path)
        except FileNotFoundError:
            return f"{name} is missing"
        except OSError as e:
            return f"{name} cannot be read ({e.strerror or e})"
        if actual != expected:
            return f"{name} does not match its checksum (truncated, corrupted or replaced)"
    return None
