"""Outputs and clean metrics of a method on a split: what validation scores during training."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..data.batch import Batch
from ..data.dataset import MultimodalData
from ..methods.base import Method
from ..methods.losses import task_loss
from ..metrics import compute_metrics


@torch.no_grad()
def predict(
    method: Method, data: MultimodalData, batch_size: int = 512, predict_fn: Callable[[Batch], Tensor] | None = None
) -> torch.Tensor:
    """Outputs of `method` (or of `predict_fn`) on every sample of `data`, in order."""
    device = next(method.modules().parameters()).device
    method.modules().eval()
    fn = predict_fn or method.predict
    outs = [fn(b.to(device)).cpu() for b in data.batches(batch_size)]
    return torch.cat(outs)


def evaluate(
    method: Method, data: MultimodalData, batch_size: int = 512, predict_fn: Callable[[Batch], Tensor] | None = None
) -> dict[str, float]:
    """Clean metrics plus the task loss on `data` (of `predict_fn`, default the method's prediction)."""
    spec = method.spec
    output = predict(method, data, batch_size, predict_fn)
    metrics = compute_metrics(output, data.target, spec.task, spec.num_classes)
    metrics["loss"] = float(task_loss(output, data.target, spec.task))
    return metrics
