"""Helpers shared by the wearable and sleep readers: resampling to a common rate, windows
that never straddle a label change, gap filling, and a seeded subject-disjoint val split.

Sliding-window arithmetic itself is `sequences.window_starts`; this module treats every run
of one constant label as a sequence in that concatenated layout.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..dataset import DataSpec, ModalitySpec, MultimodalData, standardize
from ..sequences import subject_splits, window_starts


def _bin_edges(n_out: int, ratio: float) -> np.ndarray:
    """Output bin k covers input rows [edges[k], edges[k + 1]) (`ratio` input rows per output row)."""
    return np.floor(np.arange(n_out + 1) * ratio + 1e-9).astype(np.int64)


def resample(x: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    """Resample (T, C) from `fs_in` to `fs_out` Hz: (T', C) float32 with T' = floor(T * fs_out / fs_in).

    Output sample k covers input time [k, k+1) / fs_out. Downsampling averages the input rows
    of that bin (one `reduceat`, so fractional ratios such as 700 -> 32 Hz need no loop and
    alias less than picking every n-th sample); upsampling interpolates linearly at the bin
    centre. NaNs propagate into the bins they touch.
    """
    ratio = fs_in / fs_out  # input samples per output sample
    n_out = int(np.floor(len(x) / ratio + 1e-9))
    if ratio > 1:
        edges = _bin_edges(n_out, ratio)
        sums = np.add.reduceat(x[: edges[-1]], edges[:-1], axis=0)  # (T', C)
        return (sums / np.diff(edges)[:, None]).astype(np.float32)
    centres = np.clip((np.arange(n_out) + 0.5) * ratio - 0.5, 0, len(x) - 1)
    lo = np.floor(centres).astype(np.int64)
    hi = np.minimum(lo + 1, len(x) - 1)
    w = (centres - lo)[:, None]
    return (x[lo] * (1 - w) + x[hi] * w).astype(np.float32)


def resample_labels(labels: np.ndarray, fs_in: float, fs_out: float, n_out: int) -> np.ndarray:
    """Label of each of `n_out` output bins (as `resample` cuts them); -1 where a bin holds a label change."""
    edges = np.minimum(_bin_edges(n_out, fs_in / fs_out), len(labels))
    first = np.minimum(edges[:-1], len(labels) - 1)
    last = np.maximum(edges[1:] - 1, first)
    changes = np.concatenate([[0], np.cumsum(labels[1:] != labels[:-1])])  # label changes up to each sample
    out = labels[first].astype(np.int64)
    out[changes[last] != changes[first]] = -1
    return out


def label_windows(labels: np.ndarray, window: int, step: int) -> np.ndarray:
    """Start rows of all windows lying inside one run of a single label >= 0 (labels < 0 are dropped)."""
    change = np.flatnonzero(np.diff(labels)) + 1
    offsets = np.concatenate([[0], change]).astype(np.int64)
    lengths = np.diff(np.concatenate([offsets, [len(labels)]]))
    keep = labels[offsets] >= 0
    offsets, lengths = offsets[keep], lengths[keep]
    rel, run = window_starts(lengths, window, step)
    return offsets[run] + rel


def cut(x: np.ndarray, starts: np.ndarray, window: int) -> np.ndarray:
    """Windows of (T, C) at `starts`: (N, C, window), the conv1d layout."""
    return x[starts[:, None] + np.arange(window)].transpose(0, 2, 1)  # (N, W, C) -> (N, C, W)


def fill_gaps(x: np.ndarray) -> np.ndarray:
    """Linearly interpolate NaNs in each column of (T, C) over time (constant at the ends).

    Columns without a single finite value stay NaN: the caller marks them absent.
    """
    out = x.copy()
    t = np.arange(len(x))
    for c in np.flatnonzero(np.isnan(x).any(axis=0)):  # per channel, not per sample
        ok = ~np.isnan(x[:, c])
        if ok.any():
            out[:, c] = np.interp(t, t[ok], x[ok, c])
    return out


def pick_val_subjects(subjects: np.ndarray, test_subjects: Sequence[int], fraction: float, seed: int) -> list[int]:
    """A seeded `fraction` (at least one) of the non-test subjects: val shares no subject with train."""
    rest = np.array(sorted(set(subjects.tolist()) - {int(s) for s in test_subjects}))
    order = torch.randperm(len(rest), generator=torch.Generator().manual_seed(seed)).numpy()
    return sorted(rest[order[: max(1, round(fraction * len(rest)))]].tolist())


def windowed_dataset(
    name: str,
    parts: dict[str, list[np.ndarray]],
    modalities: Sequence[str],
    classes: Sequence[str],
    test_subjects: Sequence[int],
    val_fraction: float,
    split_seed: int,
) -> MultimodalData:
    """Assemble per-subject window lists (`parts[m]`, `parts["y"]`, `parts["subject"]`) into a
    standardised, subject-split dataset of `conv1d` modalities, all present."""
    inputs = {m: torch.from_numpy(np.ascontiguousarray(np.concatenate(parts[m]))) for m in modalities}
    subjects = np.concatenate(parts["subject"])
    val_subjects = pick_val_subjects(subjects, test_subjects, val_fraction, split_seed)
    splits = subject_splits(subjects, test_subjects, val_subjects, name)
    spec = DataSpec(
        name,
        tuple(ModalitySpec(m, "conv1d", tuple(x.shape[1:])) for m, x in inputs.items()),
        "classification",
        len(classes),
        tuple(classes),
    )
    target = torch.from_numpy(np.concatenate(parts["y"]))
    present = torch.ones(len(target), len(inputs), dtype=torch.bool)
    return standardize(MultimodalData(spec, inputs, present, target, splits))
