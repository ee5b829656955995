"""The one training loop: AdamW, warm-up + cosine schedule, early stopping on validation.

Model selection reads only the `train` and `val` splits; the test split is never touched
here (a test proves it). A run is a pure function of (method, data, seed): parameters are
initialised under `torch.manual_seed(seed)` and every shuffle and augmentation draws from
one explicit generator seeded by `seed`.
"""

from __future__ import annotations

import copy
import math
import sys
from dataclasses import dataclass, field

import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from .audit.metrics import LOWER_IS_BETTER, PRIMARY, compute_metrics
from .data.dataset import MultimodalData
from .errors import MMRobustError
from .methods.base import Method
from .methods.supervised import task_loss


@dataclass
class FitResult:
    best_epoch: int
    epochs_run: int
    val_metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MMRobustError("CUDA was requested but is not available; use --device cpu")
    return torch.device(device)


@torch.no_grad()
def predict(method: Method, data: MultimodalData, batch_size: int = 512) -> torch.Tensor:
    """Outputs of `method` on every sample of `data`, in order."""
    device = next(method.modules().parameters()).device
    outs = [method.predict(b.to(device)).cpu() for b in data.batches(batch_size)]
    return torch.cat(outs)


def evaluate(method: Method, data: MultimodalData, batch_size: int = 512) -> dict[str, float]:
    """Clean metrics plus the task loss on `data`."""
    spec = method.spec
    output = predict(method, data, batch_size)
    metrics = compute_metrics(output, data.target, spec.task, spec.num_classes)
    metrics["loss"] = float(task_loss(output, data.target, spec.task))
    return metrics


def fit(
    method: Method,
    data: MultimodalData,
    *,
    seed: int = 0,
    epochs: int = 100,
    batch_size: int = 32,
    lr: float = 1e-3,
    weight_decay: float = 1e-2,
    patience: int = 20,
    select: str = "loss",
    device: str = "auto",
    progress: bool | None = None,
) -> FitResult:
    """Train `method` on `data`'s train split, selecting the epoch on its val split.

    `select` is the validation metric used for early stopping and checkpoint selection
    ("loss", or any metric name such as "accuracy"/"mae"). Progress is shown when stderr is a
    terminal unless `progress` says otherwise.
    """
    train, val = data.split("train"), data.split("val")
    if len(train) == 0 or len(val) == 0:
        raise MMRobustError("the train and val splits must both be non-empty")
    torch.manual_seed(seed)
    method.build(data.spec)
    method.seed = seed
    module = method.modules().to(resolve_device(device))
    dev = next(module.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    # foreach: multi-tensor updates, bitwise equal to the per-parameter loop CPU defaults to
    optimizer = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=weight_decay, foreach=True)
    steps_per_epoch = math.ceil(len(train) / batch_size)
    schedule = _warmup_cosine(optimizer, warmup=steps_per_epoch, total=steps_per_epoch * epochs)
    sign = 1.0 if (select in LOWER_IS_BETTER) else -1.0
    best_score, best_epoch, best_state = math.inf, -1, copy.deepcopy(module.state_dict())
    best_metrics: dict[str, float] = {}
    history: list[dict[str, float]] = []
    show = sys.stderr.isatty() if progress is None else progress
    with Progress(
        TextColumn(f"[bold]{method.name}[/] seed {seed}"), BarColumn(), TextColumn("{task.description}"),
        TimeElapsedColumn(), disable=not show, transient=True,
    ) as bar:
        task = bar.add_task("", total=epochs)
        for epoch in range(epochs):
            module.train()
            total, count = 0.0, 0
            for batch in train.batches(batch_size, generator):
                loss = method.loss(batch.to(dev), generator)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                total, count = total + float(loss.detach()) * len(batch), count + len(batch)
            metrics = evaluate(method, val)
            if select not in metrics:
                raise MMRobustError(f"cannot select on '{select}': valid are {sorted(metrics)}")
            history.append({"epoch": epoch, "train_loss": total / count, **{f"val_{k}": v for k, v in metrics.items()}})
            score = sign * metrics[select]
            if score < best_score:
                best_score, best_epoch, best_metrics = score, epoch, metrics
                best_state = copy.deepcopy(module.state_dict())
            primary = PRIMARY[data.spec.task]
            bar.update(task, advance=1, description=f"val {primary} {metrics[primary]:.3f}")
            if epoch - best_epoch >= patience:
                break
    module.load_state_dict(best_state)
    module.eval()
    return FitResult(best_epoch, len(history), best_metrics, history)


def _warmup_cosine(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over `warmup` steps, then cosine decay to zero at `total`."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
