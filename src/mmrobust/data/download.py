"""`mmrobust data download`: fetch a dataset's public files and verify their checksums.

Files land under the data directory at the layout the loader reads; each is written to a
temporary name, checked against its published SHA-256, then renamed, so a failed or
tampered download never leaves a file that looks valid.
"""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from collections.abc import Callable
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
    written = []
    for item in info.downloads:
        target = root / item.path
        on_progress(f"{item.url} -> {target}")

        def fetch(tmp: Path, url: str = item.url, expected: str = item.sha256) -> None:
            digest = hashlib.sha256()
            try:
                with urllib.request.urlopen(url, timeout=60) as response, tmp.open("wb") as out:
                    for block in iter(lambda: response.read(1 << 20), b""):
                        digest.update(block)
                        out.write(block)
            except (urllib.error.URLError, OSError) as e:
                raise MMRobustError(
                    f"cannot download {url} ({e}); offline, put {', '.join(info.files)} under {root} by hand"
                    + (f" (official page: {info.homepage})" if info.homepage else "")
                ) from None
            if digest.hexdigest() != expected:
                raise MMRobustError(
                    f"checksum mismatch for {url}: got {digest.hexdigest()}, expected {expected}"
                )

        atomic_write(target, fetch)
        written.append(target)
    return written
