"""Resolve a data source (a registered dataset with options, or an npz file)."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .data import DATASETS, MultimodalData, load_dataset, load_npz
from .errors import MMRobustError
from .registry import check_options


def load_data(
    name: str | None,
    npz: str | Path | None,
    data_dir: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> MultimodalData:
    """Exactly one of a registered dataset name (with loader options) or an npz file; an option the
    loader does not take is a one-line error naming the closest one (`load_dataset` checks its own)."""
    if (name is None) == (npz is None):
        raise MMRobustError("give exactly one of --data NAME or --npz FILE")
    options = dict(options or {})
    if npz is not None:
        check_options("data.options (an npz file)", load_npz, options)
        return load_npz(npz, **options)
    assert name is not None
    loader = DATASETS.get(name).loader
    if data_dir and "data_dir" in inspect.signature(loader).parameters:
        options["data_dir"] = data_dir
    return load_dataset(name, **options)
