"""Metrics, defined by sufficient statistics that fold in chunk by chunk, so the audit can stream a
test set of any size in bounded memory and training can score a whole split with the same code.

Classification: accuracy and macro-F1, from a running confusion matrix. Sentiment-style
regression (labels in [-3, 3]), as CMU-MOSI papers report it (e.g. Hazarika et al., "Analyzing Modality
Robustness in Multimodal Sentiment Analysis", NAACL 2022, arXiv 2205.15465): MAE, Pearson correlation, Acc-2
and weighted F1 in both conventions (`acc2`/`f1`: non-zero labels, negative vs positive;
`acc2_has0`/`f1_has0`: all samples, negative vs non-negative), Acc-5 and Acc-7 (clip to [-2, 2] or
[-3, 3], round, exact match); kept as the count, the sum of |pred - target|, the means and
co-moments of (pred, target) merged across chunks with Chan et al.'s pairwise update (float64),
two 2x2 sign tables and the Acc-5 and Acc-7 hit counts. Nothing per sample is kept.

Degenerate inputs give a number where one is defined and NaN where none is, never an error:
constant predictions or constant labels have `corr` 0 (no linear relation to measure);
`acc2`/`f1` are NaN when every label is 0 (no non-zero sample to score); every metric of zero
samples is NaN. A single class, or one sample, is scored as usual.

    acc = accumulator("classification", num_classes=4)
    for output, target in chunks:
        acc.update(output, target)
    acc.result()  # {"accuracy": ..., "macro_f1": ...}
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
from torch import Tensor

PRIMARY = {"classification": "accuracy", "regression": "mae"}
LOWER_IS_BETTER = {"mae", "loss"}


def compute_metrics(output: Tensor, target: Tensor, task: str, num_classes: int) -> dict[str, float]:
    """Every metric of `task` over one whole split."""
    acc = accumulator(task, num_classes)
    acc.update(output, target)
    return acc.result()


def classification_metrics(logits: Tensor, target: Tensor, num_classes: int) -> dict[str, float]:
    return compute_metrics(logits, target, "classification", num_classes)


def regression_metrics(pred: Tensor, target: Tensor) -> dict[str, float]:
    return compute_metrics(pred, target, "regression", 1)


def accumulator(task: str, num_classes: int) -> Accumulator:
    if task == "classification":
        return ClassificationAccumulator(num_classes)
    return RegressionAccumulator()


class Accumulator(Protocol):
    def update(self, output: Tensor, target: Tensor) -> None: ...

    def result(self) -> dict[str, float]: ...


class ClassificationAccumulator:
    """Accuracy and macro-F1 from a running confusion matrix (rows: target, columns: prediction)."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)

    def update(self, output: Tensor, target: Tensor) -> None:
        pred = output.argmax(dim=-1).cpu()  # (B,)
        cells = target.cpu().long() * self.num_classes + pred
        self.confusion += torch.bincount(cells, minlength=self.num_classes**2).view(self.num_classes, -1)

    def result(self) -> dict[str, float]:
        confusion = self.confusion
        total = int(confusion.sum())
        tp = confusion.diag().float()
        support, predicted = confusion.sum(dim=1).float(), confusion.sum(dim=0).float()
        f1 = 2 * tp / (support + predicted).clamp_min(1)
        seen = (support + predicted) > 0  # classes absent from both count as undefined, not 0
        return {
            "accuracy": int(confusion.diag().sum()) / total if total else math.nan,
            "macro_f1": float(f1[seen].mean()) if seen.any() else math.nan,  # nothing seen: no samples
        }


class RegressionAccumulator:
    """MAE, Pearson correlation, Acc-2 / weighted F1 (both conventions), Acc-5 and Acc-7."""

    def __init__(self) -> None:
        self.n = 0
        self.abs_error = 0.0
        self.mean_p = self.mean_t = 0.0
        self.m2_p = self.m2_t = self.c_pt = 0.0  # sums of squared / crossed deviations from the means
        self.nonzero = torch.zeros(2, 2, dtype=torch.long)  # target != 0: [target > 0, pred > 0]
        self.has0 = torch.zeros(2, 2, dtype=torch.long)  # all samples: [target >= 0, pred >= 0]
        self.acc5_hits = self.acc7_hits = 0

    def update(self, output: Tensor, target: Tensor) -> None:
        pred, target = output.detach().cpu().double().flatten(), target.cpu().double().flatten()
        n = len(pred)
        if n == 0:
            return
        self.abs_error += float((pred - target).abs().sum())
        mean_p, mean_t = float(pred.mean()), float(target.mean())
        dp, dt = pred - mean_p, target - mean_t
        m2_p, m2_t, c_pt = float(dp.square().sum()), float(dt.square().sum()), float((dp * dt).sum())
        total = self.n + n
        delta_p, delta_t = mean_p - self.mean_p, mean_t - self.mean_t
        weight = self.n * n / total
        self.m2_p += m2_p + delta_p * delta_p * weight
        self.m2_t += m2_t + delta_t * delta_t * weight
        self.c_pt += c_pt + delta_p * delta_t * weight
        self.mean_p += delta_p * n / total
        self.mean_t += delta_t * n / total
        self.n = total
        nonzero = target != 0
        self.nonzero += _sign_table(pred[nonzero] > 0, target[nonzero] > 0)
        self.has0 += _sign_table(pred >= 0, target >= 0)
        self.acc5_hits += int((pred.clamp(-2, 2).round() == target.clamp(-2, 2).round()).sum())
        self.acc7_hits += int((pred.clamp(-3, 3).round() == target.clamp(-3, 3).round()).sum())

    def result(self) -> dict[str, float]:
        n = self.n
        denom = math.sqrt(self.m2_p * self.m2_t)
        return {
            "mae": self.abs_error / n if n else math.nan,
            "corr": self.c_pt / denom if denom > 0 else 0.0,
            "acc2": _agreement(self.nonzero),
            "f1": _weighted_f1(self.nonzero),
            "acc2_has0": _agreement(self.has0),
            "f1_has0": _weighted_f1(self.has0),
            "acc5": self.acc5_hits / n if n else math.nan,
            "acc7": self.acc7_hits / n if n else math.nan,
        }


def _sign_table(pred: Tensor, truth: Tensor) -> Tensor:
    """(2, 2) counts indexed [truth, pred] of two boolean vectors."""
    return torch.bincount(truth.long() * 2 + pred.long(), minlength=4).view(2, 2)


def _agreement(table: Tensor) -> float:
    total = int(table.sum())
    return int(table.diag().sum()) / total if total else math.nan


def _weighted_f1(table: Tensor) -> float:
    """sklearn's f1_score(average="weighted") for two classes, from the [truth, pred] table
    ; NaN for no samples (sklearn raises)."""
    total, score = int(table.sum()), 0.0
    if total == 0:
        return math.nan
    for cls in (0, 1):
        tp, truth, pred = int(table[cls, cls]), int(table[cls].sum()), int(table[:, cls].sum())
        denom = pred + truth
        score += (2 * tp / denom if denom else 0.0) * truth / max(total, 1)
    return score


def metric_names(task: str) -> list[str]:
    """The validation metrics of `task` that training can select on, the task loss included."""
    return [*accumulator(task, 2).result(), "loss"]
