"""The task loss every method and the training loop's validation share: cross-entropy for
classification, L1 for regression (MAE is the headline sentiment metric)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def task_loss(output: Tensor, target: Tensor, task: str, label_smoothing: float = 0.0) -> Tensor:
    if task == "classification":
        return F.cross_entropy(output, target, label_smoothing=label_smoothing)
    return F.l1_loss(output, target.float())
