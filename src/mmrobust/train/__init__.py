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
torch version); a file written by a different run is discarded and training starts over. It
carries a checksum of its content: a damaged file (flipped bytes, which `torch.load` does not
notice) stops `fit` with an error rather than resuming from wrong weights. The file is deleted
when training ends.

Stage reuse (`Stage.reuse_key`): a stage's trained weights are cached (`stage_cache.py`).

The package: `fit` (here) sets a run up and runs its stages through `loop.Loop`; `state.py`
saves and restores the resumable state, `stage_cache.py` reuses trained stages, `optim.py`
holds the optimizer and schedule, `evaluation.py` scores a split, `options.py` checks options.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from .. import distributed as _dist
from ..data.augment import parse_augment
from ..data.dataset import MultimodalData
from ..errors import MMRobustError, wrong_argument
from ..methods.base import Method, check_method_argument
from ..trackers import Tracker, announce_resume
from .evaluation import evaluate, predict
from .loop import FitResult, Loop
from .options import MAX_SEED, check_fit_options, check_splits, resolve_device
from .state import STATE_FORMAT, StateFile, fingerprint

__all__ = [
    "MAX_SEED",
    "STATE_FORMAT",
    "FitResult",
    "check_fit_options",
    "check_splits",
    "evaluate",
    "fit",
    "predict",
    "resolve_device",
]


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
    augment: Mapping[str, Mapping[str, float]] | None = None,
    device: str = "auto",
    progress: bool | None = None,
    state_path: str | Path | None = None,
    state_every: float = 10.0,
    trackers: Sequence[Tracker] = (),
    label: str | None = None,
) -> FitResult:
    """Train `method` on `data`'s train split, selecting each stage's epoch on its val split.

    `select` is the validation metric used for early stopping and checkpoint selection
    ("loss", or any metric name such as "accuracy"/"mae"), or "none": a fixed budget of `epochs`
    whose last epoch is kept (the budget itself chosen on validation beforehand), so the val
    split may be empty and final models can train on train + val. A stage that chooses between
    candidates (`Stage.choices`, e.g. `ume_mma`) needs a val split; on a fixed budget it chooses
    on the task's primary metric (accuracy, MAE). `augment` maps modalities to
    `data.augment.Augment` options, applied to every training batch. Progress is shown when stderr is a
    terminal unless `progress` says otherwise. With `state_path`, training resumes from the state
    saved there by an interrupted `fit` with the same arguments, and saves its own state there
    at the end of an epoch once `state_every` seconds have passed since the last save (0: every
    epoch); the file is removed when training ends. Multi-stage methods (`Method.stages`) run
    their stages in order; the result describes the last stage that selects on validation.
    `trackers` receive per-epoch `train/loss` and `val/<metric>` (see `trackers.epoch_metrics`).
    `label`: what progress lines call the model (`mmrobust run` passes its label, so two models of
    one method are told apart); default: the method's name.

    Under `torchrun` (WORLD_SIZE > 1) every process calls `fit` and trains data-parallel
    (`distributed.py` has the sharding rule); only rank 0 writes the state file and logs.
    """
    check_method_argument(method, "fit")
    if not isinstance(data, MultimodalData):
        hint = "load one with mmrobust.load_dataset(name) or load_npz(path)"
        raise wrong_argument("fit", "a MultimodalData", data, hint)
    if state_path is not None and Path(state_path).is_dir():
        example = Path(state_path) / "state.pt"
        raise MMRobustError(f"state_path {state_path} is a folder; give a file in it, e.g. {example}")
    checked = dict(seed=seed, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, patience=patience)
    check_fit_options(dict(checked, select=select), data.spec.task)
    check_splits(data, select)
    train = data.split("train")
    val = data.split("val") if "val" in data.splits else data.subset(torch.arange(0))
    augments = parse_augment(data.spec, augment or {})
    target = resolve_device(_dist.local_device(device))
    world = _dist.world_size() if _dist.setup(target) else 1
    if world > 1:
        _dist.check_batch_size(batch_size, world)
    torch.manual_seed(seed)
    method.build(data.spec)
    stages = method.stages(seed)
    choosing = [s.name for s in stages if s.chooses]
    if choosing and len(val) == 0:
        raise MMRobustError(
            f"{method.name} chooses on validation (stage {choosing[0]}): give it a non-empty val split "
            "(on a fixed budget, select=none, the choice is made on the task's primary metric)"
        )
    method.seed = seed  # a record of what trained it (checkpoints and audits show it)
    method.input_scaling = dict(data.scaling)  # what its inputs must look like: audits and checkpoints keep to it
    module = method.modules().to(target)
    dev = next(module.parameters()).device
    if world > 1:
        _dist.broadcast_module(module)
    options = dict(
        seed=seed,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        patience=patience,
        select=select,
        device=dev.type,
    )
    if augments:  # absent, the state and stage-cache keys of runs without augmentation stay as they were
        options["augment"] = {m: dataclasses.asdict(a) for m, a in augments.items()}
    if world > 1:  # a single process's state file and stage cache keys stay as they were
        options["world_size"] = world
    show = (sys.stderr.isatty() if progress is None else progress) and _dist.is_main()
    loop = Loop(method, train, val, options, dev, show, augments)
    loop.trackers = list(trackers) if _dist.is_main() else []
    loop.label = label or method.name
    loop.multi_stage = len(stages) > 1
    if state_path is not None:
        loop.state = StateFile(Path(state_path), fingerprint(method, train, val, options), state_every)
    saved = loop.state.load() if loop.state is not None else None
    first = saved["stage"] if saved is not None else 0
    if saved is not None:
        announce_resume(loop.trackers)  # e.g. MLflow goes on in the run it logged to before
        loop.history, loop.result = saved["history"], FitResult(**saved["result"])
        if saved["within"] is None:  # killed between stages: the finished ones are in the weights
            module.load_state_dict(saved["model"])
    for index, stage in enumerate(stages):
        if index >= first:
            resume = saved if index == first and saved is not None and saved["within"] is not None else None
            loop.run_stage(index, stage, resume, last=index == len(stages) - 1)
    module.eval()
    if loop.state is not None and _dist.is_main():
        loop.state.path.unlink(missing_ok=True)  # done: run.py saves the final checkpoint
    return loop.result
