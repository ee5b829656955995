"""`npz`: bring your own data, one file, no loader to write.

Format (first axis = samples everywhere):
- `x_<modality>`: one array per modality. Its encoder kind follows from its rank:
  (N, F) -> `mlp`, (N, C, T) -> `conv1d`, (N, C, H, W) -> `conv2d`; override with a string
  array `kind_<modality>` (e.g. "seq" for (N, T, F) sequences).
- `y`: labels, shape (N,) ((N, 1) is read as (N,)). Integers -> classification with classes
  0..C-1, every one present; floats -> regression (whole-number floats too, with a warning).
- `task` (optional): a string array "classification" or "regression" that decides instead of
  y's dtype (the `task` argument, `data.options.task` in a config, overrides it).
- `present_<modality>` (optional): bool (N,), False where the sample lacks the modality;
  the placeholder values there are never read. Every sample needs at least one modality.
- `split` (optional): strings "train"/"val"/"test". Without it, a seeded stratified
  60/20/20 split is made. With no "val" rows, fit a fixed budget (`select="none"`). With no
  "train" rows (rows to evaluate a trained model on), load with `normalize=False`.
Any other array, or a `kind_<m>` / `present_<m>` without `x_<m>`, is refused: a misspelt name
(`X_c`) would otherwise drop a modality silently. The file is read with pickling disabled.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from ..errors import MMRobustError, unknown_name, wrong_argument
from .dataset import (
    ENCODER_KINDS,
    SPLITS,
    DataSpec,
    ModalitySpec,
    MultimodalData,
    check_split_options,
    standardize,
    stratified_split,
)
from .safe_npz import read_npz

_KIND_BY_RANK = {2: "mlp", 3: "conv1d", 4: "conv2d"}
_FILE_ARRAYS = ("y", "task", "split")
_MODALITY_PREFIXES = ("x_", "kind_", "present_")  # each followed by the modality's name


def load_npz(
    path: str | Path,
    /,
    *,
    split_seed: int = 0,
    normalize: bool = True,
    task: str | None = None,
    encoders: Mapping[str, str] | None = None,
) -> MultimodalData:
    """Read a bring-your-own `.npz` file (see the module docstring for the format). `task`
    ("classification" or "regression") overrides the file's `task` array and the labels' dtype;
    `encoders` (modality -> registered encoder) reads some modalities with another encoder than their kind's."""
    check_split_options(split_seed)
    if not isinstance(path, str | Path):
        raise wrong_argument("load_npz", "a file path (str or Path)", path, "e.g. load_npz('mine.npz')")
    path = Path(path)
    if not path.is_file():
        raise MMRobustError(f"npz file not found: {path}")
    arrays = read_npz(path)
    if "y" not in arrays:
        raise MMRobustError(f"{path.name} has no labels array 'y' (arrays: {sorted(arrays)})")
    names = sorted(k[2:] for k in arrays if k.startswith("x_"))
    if not names:
        raise MMRobustError(f"{path.name} has no modality arrays named x_<modality>")
    _check_array_names(list(arrays), names, path.name)
    y = _labels(arrays["y"], path.name)
    n = len(y)
    specs, inputs, present = [], {}, []
    for m in names:
        x = _inputs(arrays[f"x_{m}"], f"x_{m}", n, path.name)
        given = f"kind_{m}" in arrays
        kind = str(arrays[f"kind_{m}"]) if given else _KIND_BY_RANK.get(x.ndim, "")
        if given and kind not in ENCODER_KINDS:
            raise MMRobustError(f"{path.name}: kind_{m}: {unknown_name('encoder kind', kind, ENCODER_KINDS)}")
        if kind not in ENCODER_KINDS:
            raise MMRobustError(
                f"{path.name}: cannot infer an encoder for x_{m} of shape {x.shape}; add "
                f"kind_{m} (one of {', '.join(ENCODER_KINDS)})"
            )
        has = arrays.get(f"present_{m}", np.ones(n, dtype=bool))
        if has.shape != (n,) or has.dtype != bool:
            raise MMRobustError(f"{path.name}: present_{m} must be a bool array of shape ({n},)")
        specs.append(ModalitySpec(m, kind, tuple(x.shape[1:])))
        inputs[m] = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        present.append(torch.from_numpy(has))
    mask = torch.stack(present, dim=1)
    _check_every_sample_has_a_modality(mask, path.name)
    chosen = _task(task if task is not None else arrays.get("task"), y, path.name)
    if chosen == "classification":
        target = torch.from_numpy(_classes(y, path.name))
        n_out = int(target.max()) + 1
    else:
        if len(np.unique(y)) < 2:
            raise MMRobustError(f"{path.name}: y is {y[0]} for every sample; a regression target must vary")
        target, n_out = torch.from_numpy(y.astype(np.float32)), 1
    splits = _splits(arrays.get("split"), target, chosen, split_seed, path.name, normalize)
    spec = DataSpec(path.stem, tuple(specs), chosen, n_out)  # type: ignore[arg-type]
    data = MultimodalData(spec, inputs, mask, target, splits)
    data = data.with_encoders(encoders) if encoders else data
    return standardize(data) if normalize else data


def _check_array_names(keys: list[str], modalities: list[str], fname: str) -> None:
    """Every array is one the format reads: an unknown name (`X_c`) or a `kind_c` / `present_c`
    without `x_c` used to be ignored, dropping the modality the user meant without a word."""
    orphans = sorted(k for k in keys if k.startswith(("kind_", "present_")) and k.split("_", 1)[1] not in modalities)
    if orphans:
        given, wanted = ", ".join(orphans), ", ".join(sorted({"x_" + k.split("_", 1)[1] for k in orphans}))
        raise MMRobustError(
            f"{fname}: {given} without {wanted}: add {wanted} (the modality's values, first axis = samples) "
            f"or remove {given}"
        )
    unknown = sorted(k for k in keys if k not in _FILE_ARRAYS and not k.startswith(_MODALITY_PREFIXES))
    if unknown:
        lower = [(k, k.lower()) for k in unknown]
        cased = [f"{k} -> {low}" for k, low in lower if low in _FILE_ARRAYS or low.startswith(_MODALITY_PREFIXES)]
        hint = f" (names are case-sensitive: {', '.join(cased)})" if cased else ""
        raise MMRobustError(
            f"{fname}: unrecognised arrays {unknown}{hint}; the format reads x_<modality>, kind_<modality>, "
            "present_<modality>, y, task and split only: rename or remove the others"
        )


def _labels(y: np.ndarray, fname: str) -> np.ndarray:
    """`y` as one number per sample: (N, 1) is read as (N,) with a note; anything else is refused."""
    if y.ndim == 2 and y.shape[1] == 1:
        warnings.warn(f"{fname}: y has shape {y.shape}; read as ({len(y)},), one label per sample", stacklevel=3)
        y = y[:, 0]
    if y.ndim != 1:
        raise MMRobustError(f"{fname}: y must hold one label per sample, shape (N,); got shape {y.shape}")
    if not len(y):
        raise MMRobustError(f"{fname} holds no samples (y is empty); a dataset needs samples to train and test on")
    if y.dtype == bool or not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        raise MMRobustError(
            f"{fname}: y must be integer (classes 0..C-1) or float (regression), got {y.dtype}"
            + (
                "; map class names to integers (e.g. np.unique(y, return_inverse=True)[1])"
                if y.dtype.kind in "US"
                else ""
            )
        )
    return y


def _inputs(x: np.ndarray, name: str, n: int, fname: str) -> np.ndarray:
    """A modality's array, checked: numbers (not text or complex), one row per label, a feature axis."""
    if x.dtype.kind not in "biuf":
        advice = {
            "c": "split it into real and imaginary parts, e.g. np.stack([x.real, x.imag], axis=1)",
            "U": "encode the text as numbers first",
            "S": "encode the text as numbers first",
        }.get(x.dtype.kind, "store numbers")
        raise MMRobustError(f"{fname}: {name} holds {x.dtype} values, not real numbers; {advice}")
    if x.ndim == 0 or x.shape[0] != n:
        got = "a single value" if x.ndim == 0 else f"{x.shape[0]} samples"
        raise MMRobustError(f"{fname}: {name} has {got} but y has {n}; every array needs the same first axis")
    if x.ndim == 1:
        raise MMRobustError(
            f"{fname}: {name} has shape ({n},), one value per sample; give it a feature axis: "
            f"{name}.reshape(-1, 1) is read as an mlp modality of one feature"
        )
    return x


def _check_every_sample_has_a_modality(present: torch.Tensor, fname: str) -> None:
    """A sample with every modality absent carries no input: refused rather than trained on as noise."""
    empty = (~present.any(dim=1)).nonzero().flatten()
    if len(empty):
        raise MMRobustError(
            f"{fname}: {len(empty)} samples have every modality absent (first: sample {int(empty[0])}); "
            "drop them or mark at least one modality present"
        )


def _task(given: object, y: np.ndarray, fname: str) -> str:
    """The task: as given (the `task` argument or array), else from y's dtype; float labels that are
    all whole numbers are read as regression with a warning saying how to choose."""
    if given is not None:
        task = str(given)
        if task not in ("classification", "regression"):
            raise MMRobustError(f"{fname}: task must be 'classification' or 'regression', got {task!r}")
        return task
    if np.issubdtype(y.dtype, np.integer):
        return "classification"
    if np.isfinite(y).all() and (y == np.round(y)).all():
        warnings.warn(
            f"{fname}: y holds floats that are all whole numbers ({len(np.unique(y))} values): read as regression; "
            "for classification store integer labels or set task=classification (an array 'task' in the file, "
            "data.options.task in a config), or set task=regression to silence this",
            stacklevel=3,
        )
    return "regression"


def _classes(y: np.ndarray, fname: str) -> np.ndarray:
    """Class labels as int64, refused unless they are 0..C-1 with every class present (C >= 2): a
    label of 10^9 would make 10^9 outputs, labels {0, 1, 7} eight classes of which five never occur."""
    fractional = ~(np.isfinite(y) & (y == np.round(y))) if not np.issubdtype(y.dtype, np.integer) else None
    if fractional is not None and fractional.any():
        raise MMRobustError(f"{fname}: task is classification but y holds non-integer values (e.g. {y[fractional][0]})")
    labels = y.astype(np.int64)
    classes = np.unique(labels)
    if classes[0] < 0:
        raise MMRobustError(f"{fname}: labels out of range (found {classes[0]}); use 0..C-1")
    if len(classes) < 2:
        raise MMRobustError(f"{fname}: every label is {classes[0]}; a classifier needs at least two classes")
    if classes[-1] + 1 != len(classes):
        missing = np.setdiff1d(np.arange(min(int(classes[-1]) + 1, 10**6)), classes)
        shown = ", ".join(map(str, missing[:8])) + (
            f" and {int(classes[-1]) + 1 - len(classes) - 8:,} more" if len(missing) > 8 else ""
        )
        raise MMRobustError(
            f"{fname}: labels must be 0..C-1 with every class present; found {len(classes)} classes up to "
            f"{classes[-1]}, missing {shown}; relabel them, e.g. y = np.unique(y, return_inverse=True)[1]"
        )
    return labels


def _splits(
    split: np.ndarray | None, target: torch.Tensor, task: str, seed: int, fname: str, normalize: bool
) -> dict[str, torch.Tensor]:
    """The file's splits. Unscaled, a file may hold no train rows: rows to evaluate a trained model on
    (`fit` refuses it; `audit` scales it as the model's training data were)."""
    if split is None:
        strata = target if task == "classification" else (target >= 0).long()
        parts = stratified_split(strata, (0.6, 0.2, 0.2), torch.Generator().manual_seed(seed))
        return dict(zip(SPLITS, parts, strict=True))
    labels = split.astype(str)
    unknown = set(labels) - set(SPLITS)
    if unknown or len(labels) != len(target):
        raise MMRobustError(f"{fname}: 'split' must hold one of train/val/test per sample (found {sorted(unknown)})")
    out = {s: torch.from_numpy(np.flatnonzero(labels == s)) for s in SPLITS}
    if not len(out["train"]) and normalize:  # no val rows is fine: a fixed budget (select none) reads none
        raise MMRobustError(
            f"{fname}: the 'train' split is empty, and standardisation takes its statistics from it; mark the rows "
            "to train on 'train' in 'split', or, for rows to evaluate a trained model on, load with normalize=False "
            "(`mmrobust audit --checkpoint` then scales them with the statistics the checkpoint records)"
        )
    return out
