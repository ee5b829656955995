"""Per-sample paired comparisons of two models: the test behind every "a beats b" claim.

Run folders hold each scenario's per-sample predictions (`predictions.pt`, written by
`mmrobust run`). Two models audited on the same test set under the same masks (equal mask
hashes) are compared sample by sample: per sample i, d_i = mean over the seeds both have of
score_a(i, s) − score_b(i, s), where the score is correctness (accuracy) or absolute error (MAE);
the mean of d over the test samples is exactly metric(a) − metric(b) averaged over seeds, and a
percentile bootstrap over test samples gives its interval. A difference counts only when its
interval excludes 0. This resamples what varies most on small test sets (which samples were
drawn), instead of 2-5 seed-level scores; variation between training seeds enters only through the
per-sample average over seeds. `resample_seeds` (`seed_and_sample_interval`) resamples the seeds as
well: a robustness check of a verdict against the particular training runs (it counts the
seed-by-sample noise in both levels and, with few seeds, understates the seed spread, so it is not a
calibrated interval either).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..atomic import atomic_write, save_tensors
from ..checkpoint import load_tensors, with_checksum
from ..errors import MMRobustError
from ..metrics import LOWER_IS_BETTER
from ..runfolder import PREDICTIONS

FORMAT = "mmrobust-predictions/1"
PER_SAMPLE = {"accuracy": "classification", "mae": "regression"}  # metrics that are means of per-sample scores
BOOT_CHUNK = 256  # resamples drawn at a time: memory O(BOOT_CHUNK x samples)
DECIMALS = 12  # means are rounded to this: see `exact`


@dataclass(frozen=True)
class Predictions:
    """One run's test targets (N,) and each scenario's per-sample predictions (N,): the class for
    classification, the value for regression; `excluded`: per scenario that left samples with no
    modality (and does not allow it), which (N,) samples its metric leaves out."""

    target: torch.Tensor
    scenarios: dict[str, torch.Tensor]
    excluded: dict[str, torch.Tensor] = field(default_factory=dict)

    def scores(self, scenario: str, metric: str) -> np.ndarray:
        """Per-sample correctness (accuracy) or absolute error (MAE) under `scenario`, over the samples
        its metric scores (equal masks exclude the same samples, so two runs' scores stay paired)."""
        pred, target = self.scenarios[scenario], self.target
        if scenario in self.excluded:
            pred, target = pred[~self.excluded[scenario]], target[~self.excluded[scenario]]
        if metric == "accuracy":
            return (pred == target).double().numpy()
        return (pred.double() - target.double()).abs().numpy()


def write_predictions(predictions: Predictions, path: Path) -> None:
    payload = {
        "format": FORMAT,
        "target": predictions.target,
        "names": list(predictions.scenarios),
        "predictions": torch.stack(list(predictions.scenarios.values())),
    }
    if predictions.excluded:  # only data with missing modalities has any
        payload["excluded_names"] = list(predictions.excluded)
        payload["excluded"] = torch.stack(list(predictions.excluded.values()))
    atomic_write(path, lambda p: save_tensors(with_checksum(payload), p))


def read_predictions(path: Path) -> Predictions:
    saved = load_tensors(path, FORMAT, "predictions file", unreadable="is not a readable predictions file",
                         advice="re-run it with `mmrobust run`")  # fmt: skip
    names, values = saved["names"], saved["predictions"]
    if len(names) != len(values) or values.shape[1:] != saved["target"].shape:
        raise MMRobustError(f"{path}: predictions do not match its targets; re-run it with `mmrobust run`")
    excluded = dict(zip(saved.get("excluded_names", []), saved.get("excluded", []), strict=True))
    return Predictions(saved["target"], dict(zip(names, values, strict=True)), excluded)


def exact(means: np.ndarray) -> np.ndarray:
    """`means` without the float rounding of the sums that made them. A resample whose differences
    cancel (0.2 + 0.4 - 0.6) sums to ±1e-19 rather than 0, and an interval bound of -1e-19 would
    pass as excluding 0; real means are multiples of 1/(seeds x samples) (accuracy) or are
    meaningful far above 1e-12 (MAE), so rounding to `DECIMALS` keeps every one of them."""
    return np.round(means, DECIMALS) + 0.0  # + 0.0: -0.0 prints as 0


def bootstrap_means(values: np.ndarray, *, n_boot: int, level: float, seed: int) -> tuple[np.ndarray, ...]:
    """(mean, low, high) of each row's mean over its last axis, by a percentile bootstrap over that
    axis with resamples shared by all rows, drawn `BOOT_CHUNK` at a time (memory stays bounded
    for large test sets)."""
    rows, n = values.shape
    rng = np.random.default_rng(seed)
    means = np.empty((rows, n_boot))
    for start in range(0, n_boot, BOOT_CHUNK):
        size = min(BOOT_CHUNK, n_boot - start)
        counts = rng.multinomial(n, np.full(n, 1 / n), size=size)  # (size, n)
        means[:, start : start + size] = values @ (counts.T / n)
    tail = (1 - level) / 2
    low, high = np.quantile(exact(means), [tail, 1 - tail], axis=1)
    return exact(values.mean(axis=1)), low, high


def seed_and_sample_interval(
    diffs: np.ndarray, *, n_boot: int = 2_000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """(mean, low, high) of the mean of `diffs` (training seeds x test samples: one row per seed of
    a − b's per-sample score), by a percentile bootstrap that resamples the seeds and, independently,
    the samples. The per-sample bootstrap averages the seeds first and so takes the trained models as
    given; this interval also covers how far the difference moves from one training run to the next,
    so a verdict that survives it does not rest on the particular seeds."""
    seeds, n = diffs.shape
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for start in range(0, n_boot, BOOT_CHUNK):
        size = min(BOOT_CHUNK, n_boot - start)
        seed_weights = rng.multinomial(seeds, np.full(seeds, 1 / seeds), size=size) / seeds  # (size, seeds)
        samples = rng.integers(0, n, size=(size, n))  # each resample's test samples, drawn with replacement
        means[start : start + size] = np.take_along_axis(seed_weights @ diffs, samples, axis=1).mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(exact(means), [tail, 1 - tail])
    return float(exact(diffs.mean(axis=0).mean())), float(low), float(high)  # as the pooled mean is summed


def seed_differences(
    runs: Mapping[tuple[str, int], Predictions], a: str, b: str, scenario: str, metric: str, seeds: Sequence[int]
) -> np.ndarray:
    """(seeds, samples) score of a minus score of b under `scenario`, one row per training seed."""
    return np.stack([runs[(a, s)].scores(scenario, metric) - runs[(b, s)].scores(scenario, metric) for s in seeds])


def shared_seeds(runs: Mapping[tuple[str, int], Predictions], a: str, b: str) -> list[int]:
    """The training seeds both models have runs of."""
    return sorted({s for m, s in runs if m == a} & {s for m, s in runs if m == b})


def sample_differences(
    runs: Mapping[tuple[str, int], Predictions],
    masks: Mapping[tuple[str, str], frozenset],
    metric: str,
    *,
    n_boot: int = 2_000,
    level: float = 0.95,
    seed: int = 0,
    resample_seeds: bool = False,
) -> pd.DataFrame:
    """Model a − model b per scenario from per-sample scores, for every pair of models in `runs`
    ((model, seed) -> predictions, one dataset) and every scenario both audited with the same
    masks (`masks`: (scenario, model) -> mask hashes); `verdict` reads the interval. With
    `resample_seeds`, the interval resamples the training seeds too (`seed_and_sample_interval`)."""
    if metric not in PER_SAMPLE:
        raise MMRobustError(f"per-sample differences need a per-sample metric ({sorted(PER_SAMPLE)}), not {metric}")
    models = list(dict.fromkeys(m for m, _ in runs))
    keys, rows = [], []
    for a, b in itertools.combinations(models, 2):
        seeds = shared_seeds(runs, a, b)
        if not seeds:
            continue
        first = runs[(a, seeds[0])]
        for scenario in first.scenarios:
            same = masks.get((scenario, a), frozenset()) | masks.get((scenario, b), frozenset())
            if len(same) != 1 or not all(scenario in runs[(m, s)].scenarios for m in (a, b) for s in seeds):
                continue  # different masks (or a scenario one side lacks): no per-sample pairing
            if any(not torch.equal(runs[(m, s)].target, first.target) for m in (a, b) for s in seeds):
                raise MMRobustError(f"models {a} and {b} were audited on different test sets; they cannot be paired")
            diffs = seed_differences(runs, a, b, scenario, metric, seeds)
            keys.append((a, b, scenario, len(seeds), diffs.shape[1]))
            rows.append(diffs)
    columns = ["model_a", "model_b", "scenario", "seeds", "samples", "mean", "low", "high"]
    if not rows:
        return pd.DataFrame(columns=columns)
    if resample_seeds:
        stats = [seed_and_sample_interval(d, n_boot=n_boot, level=level, seed=seed) for d in rows]
    else:
        stats = _sample_intervals([d.mean(axis=0) for d in rows], n_boot, level, seed)
    return pd.DataFrame([[*key, *s] for key, s in zip(keys, stats, strict=True)], columns=columns)


def _sample_intervals(
    diffs: list[np.ndarray], n_boot: int, level: float, seed: int
) -> list[tuple[float, float, float]]:
    """(mean, low, high) of each per-sample difference vector, bootstrapped together (vectorised) with
    the others of its length: on data with missing modalities, a scenario that leaves samples with no
    modality scores fewer of them than the others."""
    stats: list[tuple[float, float, float]] = [(0.0, 0.0, 0.0)] * len(diffs)
    for length in dict.fromkeys(len(d) for d in diffs):
        rows = [i for i, d in enumerate(diffs) if len(d) == length]
        mean, low, high = bootstrap_means(np.stack([diffs[i] for i in rows]), n_boot=n_boot, level=level, seed=seed)
        for j, i in enumerate(rows):
            stats[i] = (float(mean[j]), float(low[j]), float(high[j]))
    return stats


def verdict(low: float, high: float, metric: str) -> int:
    """+1 if the interval of a − b says model a is better, -1 if b is, 0 if it includes no difference."""
    sign = -1 if metric in LOWER_IS_BETTER else 1
    if low > 0:
        return sign
    if high < 0:
        return -sign
    return 0


def load_predictions(
    run_dirs: Sequence[tuple[str, int, Path]],
) -> tuple[dict[tuple[str, int], Predictions], list[tuple[str, int]]]:
    """(model, seed) -> predictions of each run that has a predictions file, and the (model, seed) of
    the runs without one (`mmrobust audit` folders keep none; a run of `mmrobust run` without it is
    incomplete, and `mmrobust run` redoes it)."""
    paths = {(model, seed): Path(d) / PREDICTIONS for model, seed, d in run_dirs}
    lacking = [key for key, p in paths.items() if not p.is_file()]
    return {key: read_predictions(p) for key, p in paths.items() if key not in lacking}, lacking
