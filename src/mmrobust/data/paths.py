"""Where datasets live: an explicit directory, else $MMROBUST_DATA, else ~/.cache/mmrobust."""

from __future__ import annotations

import os
from pathlib import Path


def data_dir(explicit: str | Path | None = None) -> Path:
    if explicit is not None:
        return Path(explicit).expanduser()
    env = os.environ.get("MMROBUST_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mmrobust"
