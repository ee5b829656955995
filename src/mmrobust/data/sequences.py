"""Ragged-sequence helpers shared by the sensor loaders (`utd_mhad`, `spsw_har`).

Raw recordings come packed in npz files (`read_arrays`), concatenated along time: sequence i
at rows `offsets[i] : offsets[i] + lengths[i]`. Everything here works on that layout for all
sequences at once (index arithmetic, no per-sequence Python loop), so a loader can stretch
every sequence to a fixed length (`stretch`; `formats/_windows.resample` changes a sampling rate
instead), cut sliding windows and split by subject in a few vectorised calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import MMRobustError
from .safe_npz import READ_ERRORS as READ_ERRORS  # re-exported for the loaders that import them from here
from .safe_npz import read_npz


def read_arrays(path: Path, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """Named arrays of an npz (only those are decompressed; pickling disabled), or the one-line
    error `safe_npz` gives for a bad file."""
    return read_npz(path, keys)


def check_ragged(offsets: np.ndarray, lengths: np.ndarray, total: int, min_length: int, where: str) -> None:
    """Fail in one line unless the sequences tile the `total` data rows in order, none shorter
    than `min_length` rows."""
    if offsets.ndim != 1 or offsets.shape != lengths.shape or not len(lengths):
        raise MMRobustError(f"{where}: offsets {offsets.shape} and lengths {lengths.shape} must be equal non-empty 1-D")
    if not np.array_equal(offsets, np.cumsum(lengths) - lengths) or int(lengths.sum()) != total:
        raise MMRobustError(f"{where}: the sequences (offsets, lengths) do not tile the {total} data rows in order")
    short = np.flatnonzero(lengths < min_length)
    if len(short):
        raise MMRobustError(
            f"{where}: sequence {short[0]} has {lengths[short[0]]} rows, at least {min_length} are needed"
        )


def positions(offsets: np.ndarray, lengths: np.ndarray, steps: int) -> np.ndarray:
    """Fractional row of `steps` evenly spaced points spanning each whole sequence: (S, steps)."""
    frac = np.linspace(0.0, 1.0, steps)
    return offsets[:, None] + frac[None, :] * (lengths[:, None] - 1)


def stretch(data: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, steps: int) -> np.ndarray:
    """Linearly interpolate every sequence to `steps` points: (rows, *F) -> (S, steps, *F) float32.

    First and last samples are kept exactly, so a sequence keeps its full extent whatever its
    length; this is the usual way to give variable-length trials one shape for a CNN.
    """
    pos = positions(offsets, lengths, steps)  # (S, steps)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, (offsets + lengths - 1)[:, None])
    w = (pos - lo).astype(np.float32).reshape(*pos.shape, *[1] * (data.ndim - 1))  # (S, steps, 1...)
    return data[lo].astype(np.float32) * (1 - w) + data[hi].astype(np.float32) * w


def window_starts(lengths: np.ndarray, window: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Every full window of `window` rows, every `step` rows, within each sequence.

    Returns (start row relative to the sequence, sequence index) per window; sequences
    shorter than `window` contribute none.
    """
    counts = np.maximum((lengths - window) // step + 1, 0)  # windows per sequence
    return ramp(counts) * step, np.repeat(np.arange(len(lengths)), counts)


def ramp(counts: np.ndarray) -> np.ndarray:
    """0, 1, ..., counts[i] - 1 for every i, concatenated: a position within each sequence."""
    return np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)


def majority(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Most frequent label along the last axis (ties go to the lower class index)."""
    counts = (labels[..., None] == np.arange(num_classes)).sum(axis=-2)  # (..., K)
    return counts.argmax(axis=-1)


def subject_splits(
    subjects: np.ndarray, test_subjects: Sequence[int], val_subjects: Sequence[int], dataset: str
) -> dict[str, Tensor]:
    """Subject-disjoint train/val/test index splits: no subject's samples straddle two splits."""
    known = set(np.unique(subjects).tolist())
    test, val = {int(s) for s in test_subjects}, {int(s) for s in val_subjects}
    unknown = sorted((test | val) - known)
    if unknown:
        raise MMRobustError(f"{dataset}: unknown subjects {unknown} (subjects are {sorted(known)})")
    if test & val:
        raise MMRobustError(f"{dataset}: subjects {sorted(test & val)} are in both val_subjects and test_subjects")
    if not known - test - val or not test:  # no val subject: final models of a fixed-budget recipe
        raise MMRobustError(f"{dataset}: train and test each need at least one subject")
    in_test, in_val = np.isin(subjects, list(test)), np.isin(subjects, list(val))
    parts = {"train": ~in_test & ~in_val, "val": in_val, "test": in_test}
    return {name: torch.from_numpy(np.flatnonzero(mask)) for name, mask in parts.items()}
