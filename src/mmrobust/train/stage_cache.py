"""Reusing a stage trained by an earlier run (`Stage.reuse_key`, e.g. UME's uni-modal members).

Entries live under $MMROBUST_STAGE_CACHE, else cache_dir()/stages, with a checksum. The cache only
saves time: an entry that cannot be written (disk full, read-only folder) or read back intact is a
warning, and the stage is trained (again). Its key holds the stage's settings and data, not the code:
a run meant to test the code as it is now (a recheck) points $MMROBUST_STAGE_CACHE at an empty folder.
A run claims an entry while it trains the stage (`claimed`), so a concurrent run of the same sweep that
needs it waits and reuses it instead of training it a second time beside it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..atomic import WriteError, atomic_write, save_tensors
from ..checkpoint import load_tensors, with_checksum
from ..data.cache import cache_dir
from ..data.dataset import MultimodalData
from ..errors import MMRobustError
from ..filelock import exclusive_lock
from ..methods.base import Stage
from ..seeds import SEEDING
from .state import data_digest

STAGE_FORMAT = "mmrobust-stage/1"


def options_read_by(stage: Stage, options: dict[str, Any]) -> dict[str, Any]:
    """The `fit` options a stage's training depends on: a stage that does not select ignores
    `select` and `patience`, one with its own `epochs` ignores `fit`'s. Keying the stage cache on
    these alone lets e.g. one label-free pretraining serve runs that select on different metrics."""
    unread = ({"select", "patience"} if not stage.select else set()) | ({"epochs"} if stage.epochs else set())
    return {k: v for k, v in options.items() if k not in unread}


def entry_path(index: int, stage: Stage, options: dict[str, Any], train: MultimodalData, val: MultimodalData) -> Path:
    key = {
        "stage": dict(stage.reuse_key or {}),
        "index": index,
        "options": options_read_by(stage, options),
        "data": data_digest(train, val),
        "torch": torch.__version__,
        "seeding": SEEDING,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:24]
    return stage_cache_dir() / f"{digest}.pt"


@contextlib.contextmanager
def claimed(path: Path, stage: Stage) -> Iterator[None]:
    """Hold the claim on the entry at `path` while its stage is looked up and, if absent, trained.
    A cache folder that cannot hold the claim's lock file is not claimed: storing the entry warns."""
    waiting = f"another run is training stage '{stage.name}' ({path.name}); waiting to reuse it"
    with contextlib.ExitStack() as claim:
        with contextlib.suppress(WriteError):
            claim.enter_context(exclusive_lock(path.with_suffix(".lock"), waiting))
        yield


def stage_cache_dir() -> Path:
    """$MMROBUST_STAGE_CACHE, else the `stages` folder of the data cache."""
    env = os.environ.get("MMROBUST_STAGE_CACHE")
    return Path(env).expanduser() if env else cache_dir() / "stages"


def load_entry(path: Path, module: nn.Module) -> dict[str, Any] | None:
    """The entry at `path` loaded into `module` (its history and selection as a dict), or None
    when there is none or it is damaged or foreign (a warning: the stage trains again)."""
    if not path.is_file():
        return None
    try:
        saved = load_tensors(
            path,
            STAGE_FORMAT,
            "stage cache entry",
            unreadable="is not a readable stage cache entry",
            advice="training the stage again",
        )
        _check_fits(saved, module, path)
    except MMRobustError as e:
        warnings.warn(str(e), stacklevel=5)
        return None
    module.load_state_dict(saved["module"])
    return saved


def store_entry(path: Path, stage: Stage, module: nn.Module, history: list[dict[str, Any]],
                best_epoch: int, val_metrics: dict[str, float]) -> None:  # fmt: skip
    payload = {
        "format": STAGE_FORMAT,
        "module": module.state_dict(),
        "history": history,
        "best_epoch": best_epoch,
        "val_metrics": val_metrics,
    }
    try:
        atomic_write(path, lambda p: save_tensors(with_checksum(payload), p))
    except WriteError as e:  # the trained stage is in memory: the run goes on without the cache
        warnings.warn(f"stage '{stage.name}' not cached for reuse: {e}", stacklevel=5)


def _check_fits(saved: dict[str, Any], module: nn.Module, path: Path) -> None:
    """Fail unless `saved` is a whole stage entry whose weights fit `module` key for key and
    shape for shape (`load_state_dict` would change some weights before failing on others)."""
    own, weights = module.state_dict(), saved.get("module")
    if (
        not isinstance(weights, dict)
        or not {"history", "best_epoch", "val_metrics"} <= saved.keys()
        or weights.keys() != own.keys()
        or any(not isinstance(weights[k], Tensor) or weights[k].shape != v.shape for k, v in own.items())
    ):
        raise MMRobustError(
            f"{path} does not hold this stage's weights (written by other code?); training the stage again"
        )
