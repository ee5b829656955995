"""Preprocess once: cache a built dataset, keyed by its raw files' checksums and recipe.

A loader calls `cached(name, recipe, raw_files, options, build)`. The key hashes the dataset
name, the recipe version string, the loader options and the SHA-256 of every raw file, so
editing a raw file or bumping the recipe rebuilds automatically. Entries are tensors (the data
and the statistics they were standardised with) plus a JSON spec and a SHA-256 of them, written
atomically and read with `weights_only=True`; an unreadable or damaged entry (a truncated write,
flipped bytes) is rebuilt, never trusted, and so is one of an older version without statistics.
The cache only saves time: when an entry cannot be written (disk full, read-only folder) the data
built is used anyway, with a warning.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..atomic import CHECKSUM, WriteError, atomic_write, file_sha256, payload_sha256, save_tensors
from .dataset import DataSpec, MultimodalData, scaling_from_file, scaling_to_file


def cache_dir() -> Path:
    """$MMROBUST_CACHE, else ~/.cache/mmrobust/processed."""
    env = os.environ.get("MMROBUST_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mmrobust" / "processed"


def raw_file_sha256(path: Path) -> str:
    """SHA-256 of a raw data file, memoised per (path, size, mtime) within the process (raw files are
    large and every load hashes them)."""
    stat = path.stat()
    return _memoised_sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.cache
def _memoised_sha256(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(Path(path))


def cache_key(name: str, recipe: str, raw_files: Sequence[Path], options: Mapping[str, Any]) -> str:
    parts = [name, recipe, json.dumps(options, sort_keys=True, default=str)]
    parts += [f"{p.name}:{raw_file_sha256(p)}" for p in raw_files]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]


def _save(data: MultimodalData, path: Path) -> None:
    payload = {
        "spec": json.dumps(data.spec.to_dict()),
        "inputs": data.inputs,
        "present": data.present,
        "target": data.target,
        "splits": data.splits,
        "scaling": scaling_to_file(data.scaling),
    }
    payload[CHECKSUM] = payload_sha256(payload)
    try:
        atomic_write(path, lambda p: save_tensors(payload, p))
    except WriteError as e:
        warnings.warn(f"not cached: {e}", stacklevel=3)


def _load(path: Path) -> MultimodalData | None:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        saved = payload.pop(CHECKSUM, None)  # entries of mmrobust 0.1 have none
        if saved is not None and saved != payload_sha256(payload):
            return None
        spec = DataSpec.from_dict(json.loads(payload["spec"]))
        scaling = scaling_from_file(payload["scaling"])  # none: rebuilt, so it is recorded
        return MultimodalData(
            spec, payload["inputs"], payload["present"], payload["target"], payload["splits"], scaling
        )
    except Exception:  # any unreadable entry is rebuilt, never trusted
        return None


def cached(
    name: str,
    recipe: str,
    raw_files: Sequence[Path],
    options: Mapping[str, Any],
    build: Callable[[], MultimodalData],
    use_cache: bool = True,
) -> MultimodalData:
    """Return `build()`'s result, from the cache when the raw files and recipe are unchanged."""
    if not use_cache:
        return build()
    path = cache_dir() / f"{name}-{cache_key(name, recipe, raw_files, options)}.pt"
    if path.is_file():
        data = _load(path)
        if data is not None:
            return data
    logging.getLogger(__name__).info("preprocessing %s (once: later loads read the cache in %s)", name, cache_dir())
    data = build()
    _save(data, path)
    return data
