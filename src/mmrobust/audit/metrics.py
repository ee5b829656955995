"""Metrics, computed in torch over a whole split at once.

Classification: accuracy and macro-F1. Sentiment-style regression (labels in [-3, 3]),
as defined in METHODS.md §3.5: MAE, Pearson correlation, Acc-2 and weighted F1 in both
conventions (`acc2`/`f1`: non-zero labels, negative vs positive; `acc2_has0`/`f1_has0`:
all samples, negative vs non-negative), and Acc-7 (clip to [-3, 3], round, exact match).
"""

from __future__ import annotations

import torch
from torch import Tensor

PRIMARY = {"classification": "accuracy", "regression": "mae"}
LOWER_IS_BETTER = {"mae", "loss"}


def classification_metrics(logits: Tensor, target: Tensor, num_classes: int) -> dict[str, float]:
    pred = logits.argmax(dim=-1)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    confusion.index_put_((target, pred), torch.ones_like(target), accumulate=True)
    tp = confusion.diag().float()
    support, predicted = confusion.sum(dim=1).float(), confusion.sum(dim=0).float()
    f1 = 2 * tp / (support + predicted).clamp_min(1)
    seen = (support + predicted) > 0  # classes absent from both count as undefined, not 0
    return {
        "accuracy": float((pred == target).float().mean()),
        "macro_f1": float(f1[seen].mean()) if seen.any() else 0.0,
    }


def _weighted_binary_f1(pred: Tensor, truth: Tensor) -> float:
    """sklearn's f1_score(average="weighted") for two classes."""
    total, score = len(truth), 0.0
    for cls in (False, True):
        tp = float(((pred == cls) & (truth == cls)).sum())
        denom = float((pred == cls).sum() + (truth == cls).sum())
        score += (2 * tp / denom if denom else 0.0) * float((truth == cls).sum()) / max(total, 1)
    return score


def regression_metrics(pred: Tensor, target: Tensor) -> dict[str, float]:
    pred, target = pred.double().flatten(), target.double().flatten()
    centred_p, centred_t = pred - pred.mean(), target - target.mean()
    denom = (centred_p.norm() * centred_t.norm()).item()
    nonzero = target != 0
    return {
        "mae": float((pred - target).abs().mean()),
        "corr": float((centred_p * centred_t).sum() / denom) if denom > 0 else 0.0,
        "acc2": float(((pred[nonzero] > 0) == (target[nonzero] > 0)).double().mean()),
        "f1": _weighted_binary_f1(pred[nonzero] > 0, target[nonzero] > 0),
        "acc2_has0": float(((pred >= 0) == (target >= 0)).double().mean()),
        "f1_has0": _weighted_binary_f1(pred >= 0, target >= 0),
        "acc7": float((pred.clamp(-3, 3).round() == target.clamp(-3, 3).round()).double().mean()),
    }


def compute_metrics(output: Tensor, target: Tensor, task: str, num_classes: int) -> dict[str, float]:
    if task == "classification":
        return classification_metrics(output, target, num_classes)
    return regression_metrics(output, target)
