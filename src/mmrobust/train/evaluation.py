"""Outputs and clean metrics of a method on a split: what validation scores during training."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..data.batch import Batch
from ..data.dataset import MultimodalData
from ..errors import MMRobustError, check_int, wrong_argument
from ..methods.base import Method, check_method_argument, inputs_as_trained
from ..methods.losses import task_loss
from ..metrics import compute_metrics


@torch.no_grad()
def predict(
    method: Method,
    data: MultimodalData,
    *,
    split: str | None = None,
    batch_size: int = 512,
    predict_fn: Callable[[Batch], Tensor] | None = None,
) -> torch.Tensor:
    """Outputs of `method` (or of `predict_fn`) on every sample of `data` (of its `split`, if
    given, as `audit` takes it), in order, with inputs scaled as its training data were
    (`methods.base.inputs_as_trained`)."""
    data = _checked("predict", method, data, split, batch_size)
    device = next(method.modules().parameters()).device
    method.modules().eval()
    fn = predict_fn or method.predict
    outs = [fn(b.to(device)).cpu() for b in data.batches(batch_size)]
    return torch.cat(outs)


def evaluate(
    method: Method,
    data: MultimodalData,
    *,
    split: str | None = None,
    batch_size: int = 512,
    predict_fn: Callable[[Batch], Tensor] | None = None,
) -> dict[str, float]:
    """Clean metrics plus the task loss on `data` (or its `split`), of `predict_fn` (default: the
    method's prediction)."""
    data = _checked("evaluate", method, data, split, batch_size)
    spec = method.spec
    output = predict(method, data, batch_size=batch_size, predict_fn=predict_fn)
    metrics = compute_metrics(output, data.target, spec.task, spec.num_classes)
    metrics["loss"] = float(task_loss(output, data.target, spec.task))
    return metrics


def _checked(caller: str, method: Method, data: object, split: str | None, batch_size: int) -> MultimodalData:
    """`data` (its `split`) after the arguments are checked: a one-line error here, not a torch
    traceback from an empty list of batches."""
    check_method_argument(method, caller)
    if not isinstance(data, MultimodalData):
        raise wrong_argument(caller, "a MultimodalData", data, "load one with mmrobust.load_dataset(name)")
    check_int(batch_size, "batch_size", 1)
    data = data if split is None else data.split(split)
    if len(data) == 0:
        raise MMRobustError(f"{caller}: no samples{f' in the {split!r} split' if split else ''}")
    return inputs_as_trained(method, data)
