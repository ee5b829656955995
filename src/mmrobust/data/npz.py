"""`npz`: bring your own data, one file, no loader to write.

Format (first axis = samples everywhere):
- `x_<modality>`: one array per modality. Its encoder kind follows from its rank:
  (N, F) -> `mlp`, (N, C, T) -> `conv1d`, (N, C, H, W) -> `conv2d`; override with a string
  array `kind_<modality>` (e.g. "seq" for (N, T, F) sequences).
- `y`: labels. Integers -> classification with classes 0..max; floats -> regression.
- `present_<modality>` (optional): bool (N,), False where the sample lacks the modality;
  the placeholder values there are never read.
- `split` (optional): strings "train"/"val"/"test". Without it, a seeded stratified
  60/20/20 split is made.
The file is read with pickling disabled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import MMRobustError
from .dataset import (
    ENCODER_KINDS,
    SPLITS,
    DataSpec,
    ModalitySpec,
    MultimodalData,
    standardize,
    stratified_split,
)
from .safe_npz import read_npz

_KIND_BY_RANK = {2: "mlp", 3: "conv1d", 4: "conv2d"}


def load_npz(path: str | Path, split_seed: int = 0, normalize: bool = True) -> MultimodalData:
    """Read a bring-your-own `.npz` file (see the module docstring for the format)."""
    path = Path(path)
    if not path.is_file():
        raise MMRobustError(f"npz file not found: {path}")
    arrays = read_npz(path)
    if "y" not in arrays:
        raise MMRobustError(f"{path.name} has no labels array 'y' (arrays: {sorted(arrays)})")
    names = sorted(k[2:] for k in arrays if k.startswith("x_"))
    if not names:
        raise MMRobustError(f"{path.name} has no modality arrays named x_<modality>")
    y = arrays["y"]
    n = len(y)
    specs, inputs, present = [], {}, []
    for m in names:
        x = arrays[f"x_{m}"]
        if x.shape[0] != n:
            raise MMRobustError(
                f"{path.name}: x_{m} has {x.shape[0]} samples but y has {n}; every array "
                "needs the same first axis"
            )
        kind = str(arrays[f"kind_{m}"]) if f"kind_{m}" in arrays else _KIND_BY_RANK.get(x.ndim)
        if kind not in ENCODER_KINDS:
            raise MMRobustError(
                f"{path.name}: cannot infer an encoder for x_{m} of shape {x.shape}; add "
                f"kind_{m} (one of {', '.join(ENCODER_KINDS)})"
            )
        mask = arrays.get(f"present_{m}", np.ones(n, dtype=bool))
        if mask.shape != (n,) or mask.dtype != bool:
            raise MMRobustError(f"{path.name}: present_{m} must be a bool array of shape ({n},)")
        specs.append(ModalitySpec(m, kind, tuple(x.shape[1:])))
        inputs[m] = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        present.append(torch.from_numpy(mask))
    if np.issubdtype(y.dtype, np.integer):
        if n and y.min() < 0:
            raise MMRobustError(f"{path.name}: labels out of range (found {y.min()}); use 0..C-1")
        target, task, n_out = torch.from_numpy(y.astype(np.int64)), "classification", int(y.max()) + 1
    elif np.issubdtype(y.dtype, np.floating):
        target, task, n_out = torch.from_numpy(y.astype(np.float32)), "regression", 1
    else:
        raise MMRobustError(f"{path.name}: y must be integer (classes) or float (regression)")
    splits = _splits(arrays.get("split"), target, task, split_seed, path.name)
    spec = DataSpec(path.stem, tuple(specs), task, n_out)  # type: ignore[arg-type]
    data = MultimodalData(spec, inputs, torch.stack(present, dim=1), target, splits)
    return standardize(data) if normalize else data


def _splits(
    split: np.ndarray | None, target: torch.Tensor, task: str, seed: int, fname: str
) -> dict[str, torch.Tensor]:
    if split is None:
        strata = target if task == "classification" else (target >= 0).long()
        parts = stratified_split(strata, (0.6, 0.2, 0.2), torch.Generator().manual_seed(seed))
        return dict(zip(SPLITS, parts, strict=True))
    labels = split.astype(str)
    unknown = set(labels) - set(SPLITS)
    if unknown or len(labels) != len(target):
        raise MMRobustError(
            f"{fname}: 'split' must hold one of train/val/test per sample (found {sorted(unknown)})"
        )
    out = {s: torch.from_numpy(np.flatnonzero(labels == s)) for s in SPLITS}
    for s in ("train", "val"):
        if not len(out[s]):
            raise MMRobustError(f"{fname}: the '{s}' split is empty")
    return out
