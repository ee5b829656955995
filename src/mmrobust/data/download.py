"""`mmrobust data download`: fetch a dataset's public files and verify their checksums.

Files land under the data directory at the layout the loader reads; each is written to a
temporary name, checked against its published SHA-256, then renamed, so a failed or
tampered download never leaves a file that looks valid. A network failure says how to do
without the network; a local one (disk full, read-only folder) says which, as any write does.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import urllib.request
from collections.abc import Callable, Generator
from pathlib import Path

from ..atomic import atomic_write
from ..errors import MMRobustError
from .registry import DatasetInfo


def download(
    name: str, info: DatasetInfo, root: Path, on_progress: Callable[[str], None] = lambda _: None
) -> list[Path]:
    """Fetch every file of `info.downloads` into `root`; returns the paths written."""
    if not info.downloads:
        where = f" from {info.homepage}" if info.homepage else ""
        raise MMRobustError(
            f"dataset '{name}' has no public direct download; get {', '.join(info.files) or 'its files'}{where} "
            f"and put them under {root}"
        )
    offline = f"offline, put {', '.join(info.files)} under {root} by hand" + (
        f" (official page: {info.homepage})" if info.homepage else ""
    )
    written = []
    for item in info.downloads:
        target = root / item.path
        on_progress(f"{item.url} -> {target}")

        def fetch(tmp: Path, url: str = item.url, expected: str = item.sha256) -> None:
            digest = hashlib.sha256()
            with tmp.open("wb") as out, contextlib.closing(_blocks(url, offline)) as blocks:
                for block in blocks:
                    digest.update(block)
                    out.write(block)  # an OSError here (disk full ...) is atomic_write's to report
            if digest.hexdigest() != expected:
                raise MMRobustError(
                    f"checksum mismatch for {url}: got {digest.hexdigest()}, expected {expected}"
                )

        atomic_write(target, fetch)
        written.append(target)
    return written


def _blocks(url: str, offline: str) -> Generator[bytes, None, None]:
    """The bytes at `url`, a MiB at a time; a network failure (only) is a one-line error."""
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            while block := response.read(1 << 20):
                yield block
    except (OSError, http.client.HTTPException, ValueError) as e:  # URLError is an OSError; ValueError: bad URL
        raise MMRobustError(f"cannot download {url} ({e}); {offline}") from None
