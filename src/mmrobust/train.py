"""The one training loop: AdamW, warm-up + cosine schedule, early stopping on validation.

Model selection reads only the `train` and `val` splits; the test split is never touched
here (a test proves it). A run is a pure function of (method, data, seed): parameters are
initialised under `torch.manual_seed(seed)` and every shuffle and augmentation draws from
one explicit generator seeded by `seed`.

Resuming (ARCHITECTURE.md invariant 5): given `state_path`, `fit` saves the whole training
state there (atomically) at the end of an epoch at most every `state_every` seconds: weights,
optimizer, schedule, both random generators, the best epoch so far and the history. A later
`fit` with the same arguments finds the file, restores all of it and continues with the next
epoch, so a run killed mid-training ends with the same weights and `FitResult`, bit for bit,
as one that never stopped. The file names what wrote it (method, parameters, data, fit options,
torch version); a file written by a different run is discarded and training starts over. The
file is deleted when training ends.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from .atomic import atomic_write
from .audit.metrics import LOWER_IS_BETTER, PRIMARY, compute_metrics
from .data.dataset import MultimodalData
from .errors import MMRobustError
from .methods.base import Method
from .methods.supervised import task_loss

STATE_FORMAT = "mmrobust-training-state/1"


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
    state_path: str | Path | None = None,
    state_every: float = 10.0,
) -> FitResult:
    """Train `method` on `data`'s train split, selecting the epoch on its val split.

    `select` is the validation metric used for early stopping and checkpoint selection
    ("loss", or any metric name such as "accuracy"/"mae"). Progress is shown when stderr is a
    terminal unless `progress` says otherwise. With `state_path`, training resumes from the state
    saved there by an interrupted `fit` with the same arguments, and saves its own state there
    at the end of an epoch once `state_every` seconds have passed since the last save (0: every
    epoch); the file is removed when training ends.
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
    stateful = {"model": module, "optimizer": optimizer, "schedule": schedule}
    state_path = None if state_path is None else Path(state_path)
    if state_path is not None:
        options = dict(seed=seed, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                       patience=patience, select=select, device=dev.type)
        fingerprint = _fingerprint(method, train, val, options)
        saved = _load_state(state_path, fingerprint)
        if saved is not None:  # an interrupted run: continue after its last saved epoch
            _restore_state(saved, stateful, generator, dev)
            best_score, best_epoch, best_metrics = saved["best_score"], saved["best_epoch"], saved["best_metrics"]
            best_state, history = saved["best_state"], saved["history"]
    last_save = time.monotonic()
    show = sys.stderr.isatty() if progress is None else progress
    with Progress(
        TextColumn(f"[bold]{method.name}[/] seed {seed}"), BarColumn(), TextColumn("{task.description}"),
        TimeElapsedColumn(), disable=not show, transient=True,
    ) as bar:
        task = bar.add_task("", total=epochs, completed=len(history))
        for epoch in range(len(history), epochs):
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
            if state_path is not None and time.monotonic() - last_save >= state_every:
                _save_state(state_path, fingerprint, stateful, generator, dev, best_score=best_score,
                            best_epoch=best_epoch, best_metrics=best_metrics, best_state=best_state, history=history)
                last_save = time.monotonic()
    module.load_state_dict(best_state)
    module.eval()
    if state_path is not None:
        state_path.unlink(missing_ok=True)  # done: run.py saves the final checkpoint
    return FitResult(best_epoch, len(history), best_metrics, history)


# --- the training state, for resuming an interrupted fit --------------------------------------
def _fingerprint(method: Method, train: MultimodalData, val: MultimodalData, options: dict[str, Any]) -> str:
    """What determines the rest of a run: method and parameters, the data fit reads, fit options."""
    digest = hashlib.sha256()
    key = {"method": method.name, "params": method.get_params(), "spec": train.spec.to_dict(),
           "options": options, "torch": torch.__version__}
    digest.update(json.dumps(key, sort_keys=True, default=str).encode())
    for part in (train, val):
        for t in (*(part.inputs[m] for m in part.modalities), part.present, part.target):
            digest.update(t.contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _save_state(
    path: Path,
    fingerprint: str,
    stateful: dict[str, Any],
    generator: torch.Generator,
    dev: torch.device,
    **progress: Any,
) -> None:
    """Everything the next epoch depends on; tensors and plain containers only (no pickled code)."""
    state = {
        "format": STATE_FORMAT,
        "fingerprint": fingerprint,
        **{name: obj.state_dict() for name, obj in stateful.items()},  # model, optimizer, schedule
        "generator": generator.get_state(),  # shuffling and augmentation
        "torch_rng": torch.get_rng_state(),  # dropout layers draw from the global generator
        "cuda_rng": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None,
        **progress,
    }
    atomic_write(path, lambda p: torch.save(state, p))


def _load_state(path: Path, fingerprint: str) -> dict[str, Any] | None:
    """The state saved at `path` by the same run, or None (no file, or another run's: start over)."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise MMRobustError(
            f"{path} is not a readable training state ({type(e).__name__}); delete it to start over"
        ) from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise MMRobustError(f"{path} is not an mmrobust training state; delete it to start over")
    if state["fingerprint"] != fingerprint:
        warnings.warn(f"{path} was saved by a run with other settings or data; training starts over", stacklevel=3)
        return None
    return state


def _restore_state(
    state: dict[str, Any], stateful: dict[str, Any], generator: torch.Generator, dev: torch.device
) -> None:
    for name, obj in stateful.items():
        obj.load_state_dict(state[name])
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] is not None and dev.type == "cuda":
        torch.cuda.set_rng_state(state["cuda_rng"], dev)


def _warmup_cosine(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over `warmup` steps, then cosine decay to zero at `total`."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
