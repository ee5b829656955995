"""`mmrobust data download`: fetch a dataset from its official source, check it, unpack it atomically.

Each `Download` of a dataset is fetched into `<data dir>/.mmrobust-download/<name>/` (a partial
file left by an interrupted run is resumed with an HTTP Range request), checked against its
SHA-256 when one is known, and unpacked into a staging tree beside it. When the dataset has a
`Release`, the SHA-256 of every unpacked file of the release is checked as well. Only then is
each file or folder renamed into its place in the official layout, so a failed, corrupted or
tampered download never leaves files that look valid. A source that cannot be reached (offline,
a dead link) or that has no download at all ends in one line saying what to do by hand.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext, suppress
from pathlib import Path, PurePosixPath
from typing import IO

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from ..atomic import write_error_message
from ..errors import MMRobustError
from .registry import DatasetInfo, Download

WORK = ".mmrobust-download"  # under the data dir: partial downloads and the staging tree
_BLOCK = 1 << 20


def download(name: str, info: DatasetInfo, root: Path, console: Console | None = None) -> list[Path]:
    """Fetch, check and install every `info.downloads` item under `root`; returns the paths
    installed (none when all were already there)."""
    if not info.downloads:
        raise MMRobustError(info.manual or _no_download(name, info, root))
    say = console.print if console is not None else (lambda *_: None)
    todo = [item for item in info.downloads if not _already_there(name, item, root)]
    archives = [item for item in info.downloads if item.unpack]
    if 0 < len([item for item in archives if item not in todo]) < len(archives):  # the release is checked whole
        there = next(item for item in archives if item not in todo)
        raise MMRobustError(
            f"{root / there.path} is there but not the rest of {name}'s release: remove it (or use an empty "
            "--data-dir) and run the command again"
        )
    if not todo:
        say(f"{name}: already in {root}; `mmrobust data verify {name}` checks it")
        return []
    work = root / WORK / name
    staging = work / "staging"
    shutil.rmtree(staging, ignore_errors=True)  # left by a failed run: its archives are re-checked
    with _writing(staging):
        staging.mkdir(parents=True)
    bar = _progress(console)
    with bar or nullcontext():
        for item in todo:
            part = work / (PurePosixPath(item.url).name or "download")
            _fetch(name, info, item, part, root, bar)
            problem = checksum_problem(item, part)
            if problem:
                part.unlink()
                raise MMRobustError(
                    f"checksum mismatch for {item.url}: {problem}; the download was deleted: run the command again, "
                    f"and if it repeats the source has changed (official page: {info.homepage or 'unknown'})"
                )
            with _writing(staging / item.path):
                _stage(item, part, staging / item.path)
    problem = info.release.problem(staging) if info.release is not None and info.release.tree_sha256 else None
    if problem:
        shutil.rmtree(work, ignore_errors=True)
        _remove_if_empty(root / WORK)
        raise MMRobustError(
            f"{name}: the downloaded files are not the official release ({problem}); nothing was installed and the "
            f"downloads were deleted: run the command again, or get the release from {info.homepage or 'its page'}"
        )
    installed = []
    for item in todo:
        target = root / item.path
        with _writing(target):
            _install(staging / item.path, target)
        installed.append(target)
        say(f"installed {target}")
    shutil.rmtree(work, ignore_errors=True)
    _remove_if_empty(root / WORK)
    return installed


def checksum_problem(item: Download, path: Path) -> str | None:
    """What differs between a downloaded file and the checksums `item` knows, or None."""
    for expected, gunzip in ((item.sha256, False), (item.gunzipped_sha256, True)):
        if expected:
            try:
                got = _sha256(path, gunzip)
            except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
                return f"cannot read it ({type(e).__name__}: {e})"
            if got != expected:
                return f"got {got}, expected {expected}"
    return None


def _sha256(path: Path, gunzip: bool) -> str:
    digest = hashlib.sha256()
    with gzip.open(path, "rb") if gunzip else path.open("rb") as f:
        while block := f.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _already_there(name: str, item: Download, root: Path) -> bool:
    """True if `item` is installed (a file passing its checks, or a folder); a file that fails
    them, or a folder left from something else, is for the user to remove, never overwritten."""
    target = root / item.path
    if not target.exists():
        return False
    if target.is_file() and not item.unpack:
        problem = checksum_problem(item, target)
        if problem:
            raise MMRobustError(f"{target} exists but differs from the download ({problem}); remove it and run again")
    return True


def _fetch(name: str, info: DatasetInfo, item: Download, part: Path, root: Path, bar: Progress | None) -> None:
    """Download `item.url` to `part`, continuing a partial file with an HTTP Range request."""
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(item.url, headers={"Range": f"bytes={have}-"} if have else {})
    received = 0
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            if have and getattr(response, "status", None) != 206:
                have = 0  # the server sends the whole file again: start over
            size = response.headers.get("Content-Length") if getattr(response, "headers", None) else None
            task = (
                bar.add_task(PurePosixPath(item.path).name, total=have + int(size) if size else None) if bar else None
            )
            if bar is not None and task is not None:
                bar.update(task, completed=have)
            with _writing(part):
                part.parent.mkdir(parents=True, exist_ok=True)
                out = part.open("ab" if have else "wb")
            with out:
                while block := response.read(_BLOCK):
                    with _writing(part):
                        out.write(block)
                    received += len(block)
                    if bar is not None and task is not None:
                        bar.advance(task, len(block))
            if size and received < int(size):  # http.client ends a cut-off body quietly
                raise http.client.IncompleteRead(b"", int(size) - received)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # "range not satisfiable": the partial file is already complete
            return
        raise MMRobustError(
            f"cannot download {item.url} (HTTP {e.code} {e.reason}): the link may be dead or need a manual step; "
            f"{_by_hand(name, info, item, root)}"
        ) from None
    except (OSError, http.client.HTTPException, ValueError) as e:  # URLError is an OSError; ValueError: bad URL
        if isinstance(e, MMRobustError):
            raise
        reason = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        if have + received:
            raise MMRobustError(
                f"download of {item.url} interrupted after {(have + received) / 1e6:.1f} MB ({reason}); "
                "run the same command again to resume it"
            ) from None
        raise MMRobustError(
            f"cannot download {item.url} ({reason}); if offline, {_by_hand(name, info, item, root)}"
        ) from None


def _stage(item: Download, part: Path, dest: Path) -> None:
    """Put a checked download at `dest`: the file itself, or the archive's folder holding `item.find`."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not item.unpack:
        os.replace(part, dest)
        return
    unpacked = dest.with_name(dest.name + ".unpacked")
    try:
        for member, data in _members(part, item.unpack):
            path = unpacked.joinpath(*member.parts)
            path.parent.mkdir(parents=True, exist_ok=True)
            with data, path.open("wb") as out:
                shutil.copyfileobj(data, out, _BLOCK)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, ValueError) as e:
        part.unlink()
        raise MMRobustError(
            f"{item.url} is not a readable {item.unpack} archive ({e}); it was deleted: run the command again"
        ) from None
    found = sorted(unpacked.rglob(item.find), key=lambda p: len(p.parts))  # the least nested one
    if not found:
        raise MMRobustError(f"{item.url} holds no {item.find}: it is not the expected release; get it by hand")
    os.replace(found[0].parent, dest)
    shutil.rmtree(unpacked, ignore_errors=True)
    part.unlink()


def _members(archive: Path, kind: str) -> Iterator[tuple[PurePosixPath, IO[bytes]]]:
    """(relative path, content) of every regular file of a zip or tar archive; a member naming
    an absolute path or `..` is refused, links and devices are skipped."""
    if kind == "zip":
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if not info.is_dir():
                    yield _safe(info.filename), zf.open(info)
        return
    with tarfile.open(archive) as tar:
        for member in tar:
            handle = tar.extractfile(member) if member.isfile() else None
            if handle is not None:
                yield _safe(member.name), handle


def _safe(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise ValueError(f"unsafe member name {name!r}")
    return path


def _install(staged: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged, target)  # atomic: the target appears complete or not at all


@contextmanager
def _writing(path: Path) -> Iterator[None]:
    """File-system work on `path`: an OS error (disk full, read-only folder) becomes one line."""
    try:
        yield
    except OSError as e:
        raise MMRobustError(write_error_message(path, e)) from None


def _remove_if_empty(folder: Path) -> None:
    with suppress(OSError):
        folder.rmdir()


def _progress(console: Console | None) -> Progress | None:
    if console is None or not console.is_terminal:
        return None
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    return Progress(*columns, TimeRemainingColumn(), console=console, transient=True)


def _by_hand(name: str, info: DatasetInfo, item: Download, root: Path) -> str:
    """One instruction to do the step by hand."""
    where = f" (official page: {info.homepage})" if info.homepage else ""
    if item.unpack:
        what = f"unpack it and move the folder holding {item.find} to {root / item.path}"
    else:
        what = f"save it as {root / item.path}"
    return f"download {item.url} by hand{where}, {what}, then run `mmrobust data verify {name}`"


def _no_download(name: str, info: DatasetInfo, root: Path) -> str:
    layout = info.release.layout if info.release is not None else ", ".join(info.files) or "its files"
    where = f" from {info.homepage}" if info.homepage else ""
    return (
        f"dataset '{name}' cannot be downloaded automatically; get it{where} and put {layout} under {root}, "
        f"then run `mmrobust data verify {name}`"
    )


def verify(name: str, info: DatasetInfo, root: Path, bundled: bool = False) -> list[str]:
    """Check the files of the layout under `root`: the official release as a whole (every file
    present, one SHA-256 over all), and single files by the checksums known for them. Returns
    one line per check passed; the first failure is a one-line error saying what to do. With
    `bundled` (no data dir given), a dataset absent from `root` may be read from its bundled copy."""
    copy = info.bundled() if bundled and info.bundled is not None and info.missing_files(root) else None
    if copy is not None:
        return [f"not under {root}: read from the copy at {copy}"]
    info.require(name, root)
    lines = []
    if info.release is not None and info.official(root):
        problem = info.release.problem(root)
        if problem:
            raise MMRobustError(
                f"{name}: {problem}; re-extract the release, or run `mmrobust data download {name}` into an empty "
                "--data-dir" + (f" (official page: {info.homepage})" if info.homepage else "")
            )
        checked = "SHA-256 of every file" if info.release.tree_sha256 else "no published checksums"
        count = len(info.release.files(root))
        lines.append(f"{info.release.layout}: {count} files of the official release ({checked})")
    downloads = {item.path: item for item in info.downloads}
    for f in info.needed(root):
        path = root / f
        item = downloads.get(f, Download("", f))
        item = Download(item.url, f, info.checksums.get(f, item.sha256), gunzipped_sha256=item.gunzipped_sha256)
        problem = checksum_problem(item, path)
        if problem:
            raise MMRobustError(f"{path}: checksum mismatch ({problem}); replace it with the official file")
        known = "matches" if item.sha256 or item.gunzipped_sha256 else "present (no published checksum)"
        lines.append(f"{f}: {known}")
    return lines
