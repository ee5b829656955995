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

Stage reuse (`Stage.reuse_key`): a stage's trained weights are cached under cache_dir()/stages,
with a checksum too. The cache only saves time: an entry that cannot be written (disk full,
read-only folder) or read back intact is a warning, and the stage is trained (again).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import math
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import Tensor, nn

from . import distributed as _dist
from .atomic import WriteError, atomic_write, save_tensors
from .checkpoint import load_tensors, with_checksum
from .data.augment import Augment, augment_batch, parse_augment
from .data.batch import Batch
from .data.cache import cache_dir
from .data.dataset import MultimodalData
from .errors import MMRobustError, check_int, check_number
from .methods.base import Method, Stage
from .methods.losses import task_loss
from .metrics import LOWER_IS_BETTER, PRIMARY, compute_metrics, metric_names
from .trackers import Tracker, epoch_metrics

log = logging.getLogger(__name__)  # progress without a terminal: the CLI prints these lines
PLAIN_EVERY = 30.0  # seconds between plain progress lines (the last epoch always has one)
STATE_FORMAT = "mmrobust-training-state/1"
MAX_SEED = 2**63 - 1  # what torch's generators accept
STAGE_FORMAT = "mmrobust-stage/1"


@dataclass
class FitResult:
    best_epoch: int
    epochs_run: int
    val_metrics: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MMRobustError("CUDA was requested but is not available; use --device cpu")
    return torch.device(device)


def check_fit_options(
    options: Mapping[str, Any], task: str | None = None, name: Callable[[str], str] = lambda key: key
) -> None:
    """Range-check `fit`'s numeric options and `select` (against `task`'s metrics; any task's when
    None), naming each as `name(key)` (a config key or a command-line option): an epoch budget of 0
    would audit an untrained model, a batch size of 0 divide by zero, a NaN learning rate train
    nothing. Keys absent from `options` are not checked."""
    ints = {"epochs": 1, "batch_size": 1, "patience": 0}
    for key, minimum in ints.items():
        if key in options:
            check_int(options[key], name(key), minimum)
    if "seed" in options:
        check_int(options["seed"], name("seed"), 0, MAX_SEED)
    if "lr" in options:
        check_number(options["lr"], name("lr"), 0.0, strict=True)
    if "weight_decay" in options:
        check_number(options["weight_decay"], name("weight_decay"), 0.0)
    if "select" in options:
        select = options["select"]
        tasks = [task] if task else ["classification", "regression"]
        valid = sorted({name for t in tasks for name in metric_names(t)})
        if select != "none" and select not in valid:
            raise MMRobustError(
                f"{name('select')} must be 'none' (a fixed budget) or a validation metric"
                f"{f' of {task}' if task else ''} ({', '.join(valid)}), got {select!r}"
            )


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
) -> FitResult:
    """Train `method` on `data`'s train split, selecting each stage's epoch on its val split.

    `select` is the validation metric used for early stopping and checkpoint selection
    ("loss", or any metric name such as "accuracy"/"mae"), or "none": a fixed budget of `epochs`
    whose last epoch is kept (the budget itself chosen on validation beforehand), so the val
    split may be empty and final models can train on train + val. `augment` maps modalities to
    `data.augment.Augment` options, applied to every training batch. Progress is shown when stderr is a
    terminal unless `progress` says otherwise. With `state_path`, training resumes from the state
    saved there by an interrupted `fit` with the same arguments, and saves its own state there
    at the end of an epoch once `state_every` seconds have passed since the last save (0: every
    epoch); the file is removed when training ends. Multi-stage methods (`Method.stages`) run
    their stages in order; the result describes the last stage that selects on validation.
    `trackers` receive per-epoch `train/loss` and `val/<metric>` (see `trackers.epoch_metrics`).

    Under `torchrun` (WORLD_SIZE > 1) every process calls `fit` and trains data-parallel
    (`distributed.py` has the sharding rule); only rank 0 writes the state file and logs.
    """
    checked = dict(seed=seed, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, patience=patience)
    check_fit_options(dict(checked, select=select), data.spec.task)
    train = data.split("train")
    fixed_budget = select == "none"
    val = data.split("val") if "val" in data.splits or not fixed_budget else data.subset(torch.arange(0))
    if len(train) == 0 or (len(val) == 0 and not fixed_budget):
        raise MMRobustError(
            "the train and val splits must both be non-empty (a fixed budget, train.select=none, needs no val)"
        )
    augments = parse_augment(data.spec, augment or {})
    target = resolve_device(_dist.local_device(device))
    world = _dist.world_size() if _dist.setup(target) else 1
    if world > 1:
        _dist.check_batch_size(batch_size, world)
    torch.manual_seed(seed)
    method.build(data.spec)
    choosing = [s.name for s in method.stages() if s.chooses]
    if fixed_budget and choosing:
        raise MMRobustError(
            f"{method.name} chooses on validation (stage {choosing[0]}): give it a val split and a "
            "train.select metric, not a fixed budget (select=none)"
        )
    method.seed = seed
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
    loop = _Loop(method, train, val, options, dev, show, augments)
    loop.trackers = list(trackers) if _dist.is_main() else []
    loop.multi_stage = len(method.stages()) > 1
    if state_path is not None:
        loop.state = _StateFile(Path(state_path), _fingerprint(method, train, val, options), state_every)
    saved = loop.state.load() if loop.state is not None else None
    first = saved["stage"] if saved is not None else 0
    if saved is not None:
        loop.history, loop.result = saved["history"], FitResult(**saved["result"])
        if saved["within"] is None:  # killed between stages: the finished ones are in the weights
            module.load_state_dict(saved["model"])
    stages = method.stages()
    for index, stage in enumerate(stages):
        if index >= first:
            resume = saved if index == first and saved is not None and saved["within"] is not None else None
            loop.run_stage(index, stage, resume, last=index == len(stages) - 1)
    module.eval()
    if loop.state is not None and _dist.is_main():
        loop.state.path.unlink(missing_ok=True)  # done: run.py saves the final checkpoint
    return loop.result


def _duration(seconds: float) -> str:
    """`95` -> "1m35s": an ETA a person reads at a glance."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _describe(row: dict[str, Any], task: str) -> str:
    primary = PRIMARY[task]
    return f"val {primary} {row[f'val_{primary}']:.3f}" if f"val_{primary}" in row else f"loss {row['train_loss']:.3f}"


class _Loop:
    """The epoch loop, shared by every stage: one optimizer and schedule per stage, early stopping
    and best-epoch restore when the stage selects on validation, periodic resumable state."""

    def __init__(
        self,
        method: Method,
        train: MultimodalData,
        val: MultimodalData,
        options: dict[str, Any],
        dev: torch.device,
        show: bool,
        augments: Mapping[str, Augment],
    ) -> None:
        self.method, self.train, self.val, self.options, self.dev, self.show = method, train, val, options, dev, show
        self.augments = augments
        self.kinds = {m.name: m.kind for m in train.spec.modalities}
        self.generator = torch.Generator().manual_seed(options["seed"])
        self.history: list[dict[str, Any]] = []
        self.result = FitResult(-1, 0, {}, self.history)
        self.state: _StateFile | None = None
        self.trackers: list[Tracker] = []
        self.multi_stage = False
        self.rank, self.world = _dist.rank(), options.get("world_size", 1)
        self.aug_generator = torch.Generator()  # distributed: per-rank augmentation stream

    def run_stage(self, index: int, stage: Stage, saved: dict[str, Any] | None, last: bool) -> None:
        method, opt = self.method, self.options
        if index > 0 and saved is None:  # each later stage starts from its own seed: reusable alone
            self._reseed(index)
        module = stage.module if stage.module is not None else method.modules()
        if stage.reuse_key is not None and self._reuse(index, stage, module):
            return
        if stage.fit_direct is not None:
            self._fit_direct(stage)
            self._end_stage(index, stage, module, last)
            return
        epochs = stage.epochs or opt["epochs"]
        steps_per_epoch = math.ceil(len(self.train) / opt["batch_size"])
        trainable = [p for p in module.parameters() if p.requires_grad]
        optimizer = _adamw(trainable, opt["lr"], opt["weight_decay"], self.dev)
        schedule = _warmup_cosine(optimizer, warmup=steps_per_epoch, total=steps_per_epoch * epochs)
        stateful = {"model": method.modules(), "optimizer": optimizer, "schedule": schedule}
        selects = stage.select and opt["select"] != "none"  # early stopping and best-epoch restore
        best: dict[str, Any] = {"score": math.inf, "epoch": -1, "metrics": {}, "state": None}
        if selects:
            best["state"] = copy.deepcopy(method.modules().state_dict())
        done = 0
        stage_name = "" if stage.name == "train" else f" {stage.name}"
        name = f"{method.name} seed {opt['seed']}{stage_name}"
        if saved is not None:  # an interrupted run: continue after its last saved epoch
            _restore_state(saved, stateful, self.generator, self.dev)
            best, done = saved["within"]["best"], saved["within"]["epochs_done"]
            log.info("%s: resuming after epoch %d of %d (from its saved training state)", name, done, epochs)
        last_save = last_line = started = time.monotonic()
        columns = (
            TextColumn(f"[bold]{method.name}[/] seed {opt['seed']}{stage_name}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, disable=not self.show, transient=True) as bar:
            task = bar.add_task("", total=epochs, completed=done)
            for epoch in range(done, epochs):
                train_loss = self._epoch(stage, optimizer, schedule, index, epoch)
                row: dict[str, Any] = {"epoch": epoch, "train_loss": train_loss}
                if stage.select and len(self.val):  # scored on val even on a fixed budget: the curves
                    self._select(stage, epoch, row, best, selects)
                elif stage.select:
                    best["epoch"] = epoch
                self.history.append(row if stage.name == "train" else {"stage": stage.name, **row})
                bar.update(task, advance=1, description=_describe(row, self.train.spec.task))
                now = time.monotonic()
                if not self.show and _dist.is_main() and (now - last_line >= PLAIN_EVERY or epoch + 1 == epochs):
                    eta = (now - started) / (epoch + 1 - done) * (epochs - epoch - 1)
                    description = _describe(row, self.train.spec.task)
                    log.info("%s: epoch %d/%d, %s, ETA %s", name, epoch + 1, epochs, description, _duration(eta))
                    last_line = now
                for tracker in self.trackers:
                    tracker.log_metrics(epoch_metrics(row, stage.name if self.multi_stage else None), epoch)
                stop = selects and epoch - best["epoch"] >= opt["patience"]
                if self.world > 1:  # every rank validates alike; rank 0's word makes it certain
                    stop = _dist.broadcast_flag(stop, self.dev)
                if stop:
                    best_epoch = best["epoch"] + 1
                    log.info("%s: early stop at epoch %d/%d (best: epoch %d)", name, epoch + 1, epochs, best_epoch)
                    break
                if self.state is not None and _dist.is_main() and self.state.due(last_save):
                    self.state.save(index, self, stateful, {"best": best, "epochs_done": epoch + 1})
                    last_save = time.monotonic()
        if selects:
            method.modules().load_state_dict(best["state"])
        if stage.select:
            self.result = FitResult(best["epoch"], len(self.history), best["metrics"], self.history)
        else:
            self.result = dataclasses.replace(self.result, epochs_run=len(self.history))
        self._end_stage(index, stage, module, last)

    def _end_stage(self, index: int, stage: Stage, module: nn.Module, last: bool) -> None:
        if self.state is not None and not last and _dist.is_main():  # a kill between stages resumes at the next
            self.state.save(index + 1, self, {"model": self.method.modules()}, None)
        if stage.reuse_key is not None and _dist.is_main():
            self._store(index, stage, module)

    @torch.no_grad()
    def _fit_direct(self, stage: Stage) -> None:
        """A stage without gradient (`Stage.fit_direct`): fitted once on the whole train split, then
        scored like one epoch (mean training loss; validation metrics when it selects)."""
        assert stage.fit_direct is not None
        stage.fit_direct(self.train, self.generator)
        self.method.modules().eval()
        size = self.options["batch_size"]
        total = sum(float(stage.loss(b.to(self.dev), self.generator)) * len(b) for b in self.train.batches(size))
        row: dict[str, Any] = {"epoch": 0, "train_loss": total / len(self.train)}
        best: dict[str, Any] = {"epoch": 0, "metrics": {}}
        if stage.select and len(self.val):
            self._select(stage, 0, row, best, choose=False)
        self.history.append(row if stage.name == "train" else {"stage": stage.name, **row})
        for tracker in self.trackers:
            tracker.log_metrics(epoch_metrics(row, stage.name if self.multi_stage else None), 0)
        if stage.select:
            self.result = FitResult(0, len(self.history), best["metrics"], self.history)
        else:
            self.result = dataclasses.replace(self.result, epochs_run=len(self.history))

    def _epoch(self, stage: Stage, optimizer: torch.optim.Optimizer, schedule: Any, index: int, epoch: int) -> float:
        if self.world > 1:
            return self._sharded_epoch(stage, optimizer, schedule, index, epoch)
        self.method.modules().train()
        total, count = 0.0, 0
        for batch in self.train.batches(self.options["batch_size"], self.generator):
            if self.augments:
                batch = augment_batch(batch, self.augments, self.kinds, self.generator)
            loss = stage.loss(batch.to(self.dev), self.generator)
            value = float(loss.detach())
            if not math.isfinite(value):  # stop before a NaN spreads into every weight
                raise MMRobustError(
                    f"{self.method.name}: the training loss became {value} in stage '{stage.name}', epoch {epoch} "
                    "(diverged); try a lower train.lr"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total, count = total + value * len(batch), count + len(batch)
        return total / count

    def _sharded_epoch(
        self, stage: Stage, optimizer: torch.optim.Optimizer, schedule: Any, index: int, epoch: int
    ) -> float:
        """One data-parallel epoch: this rank's slice of every global batch, gradients averaged
        over ranks by their share of the batch (see `distributed.py`)."""
        # augmentation and dropout: a stream per (seed, stage, epoch, rank), so a resumed run
        # draws what an uninterrupted one draws without saving every rank's generators
        stream = (((self.options["seed"] * 7919 + index) * 1_000_003 + epoch) * 4099 + self.rank) % 2**62
        self.aug_generator.manual_seed(stream)
        torch.manual_seed(stream)
        module = stage.module if stage.module is not None else self.method.modules()
        params = [p for p in module.parameters() if p.requires_grad]
        self.method.modules().train()
        total, count = 0.0, 0
        batches = _dist.shard_batches(self.train, self.options["batch_size"], self.generator, self.rank, self.world)
        for batch, mine, rows in batches:
            optimizer.zero_grad(set_to_none=True)
            if batch is not None:
                if self.augments:
                    batch = augment_batch(batch, self.augments, self.kinds, self.aug_generator)
                loss = stage.loss(batch.to(self.dev), self.aug_generator)
                loss.backward()
                total, count = total + float(loss.detach()) * mine, count + mine
            _dist.all_reduce_grads(params, mine / rows)
            optimizer.step()
            schedule.step()
        summed, seen = _dist.all_sum([total, count], self.dev)
        return summed / seen

    def _select(self, stage: Stage, epoch: int, row: dict[str, Any], best: dict[str, Any], choose: bool) -> None:
        """Score the epoch on validation; keep the weights if it is the best so far (with `choose`;
        on a fixed budget the last epoch is the one kept)."""
        select = self.options["select"]
        metrics = evaluate(self.method, self.val, predict_fn=stage.predict)
        row.update({f"val_{k}": v for k, v in metrics.items()})
        if not choose:
            best.update(epoch=epoch, metrics=metrics)
            return
        if select not in metrics:
            raise MMRobustError(f"cannot select on '{select}': valid are {sorted(metrics)}")
        score = (1.0 if select in LOWER_IS_BETTER else -1.0) * metrics[select]
        if score < best["score"]:
            state = copy.deepcopy(self.method.modules().state_dict())
            best.update(score=score, epoch=epoch, metrics=metrics, state=state)

    def _reseed(self, index: int) -> None:
        stage_seed = self.options["seed"] * 7919 + index
        self.generator.manual_seed(stage_seed)
        torch.manual_seed(stage_seed)

    # --- reusing a stage trained by an earlier run (e.g. UME's uni-modal members) -----------
    def _reuse_path(self, index: int, stage: Stage) -> Path:
        key = {
            "stage": dict(stage.reuse_key or {}),
            "index": index,
            "options": _options_read_by(stage, self.options),
            "data": _data_digest(self.train, self.val),
            "torch": torch.__version__,
        }
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:24]
        return cache_dir() / "stages" / f"{digest}.pt"

    def _reuse(self, index: int, stage: Stage, module: nn.Module) -> bool:
        path = self._reuse_path(index, stage)
        if not path.is_file():
            return False
        try:
            saved = load_tensors(path, STAGE_FORMAT, "stage cache entry",
                                 unreadable="is not a readable stage cache entry", advice="training the stage again")
            _check_fits(saved, module, path)
        except MMRobustError as e:  # damaged or foreign: train again and overwrite it
            warnings.warn(str(e), stacklevel=4)
            return False
        module.load_state_dict(saved["module"])
        self.history.extend(saved["history"])
        if stage.select:
            self.result = FitResult(saved["best_epoch"], len(self.history), saved["val_metrics"], self.history)
        return True

    def _store(self, index: int, stage: Stage, module: nn.Module) -> None:
        rows = [r for r in self.history if r.get("stage", "train") == stage.name]
        payload = {
            "format": STAGE_FORMAT,
            "module": module.state_dict(),
            "history": rows,
            "best_epoch": self.result.best_epoch,
            "val_metrics": self.result.val_metrics,
        }
        path = self._reuse_path(index, stage)
        try:
            atomic_write(path, lambda p: save_tensors(with_checksum(payload), p))
        except WriteError as e:  # the trained stage is in memory: the run goes on without the cache
            warnings.warn(f"stage '{stage.name}' not cached for reuse: {e}", stacklevel=4)


def _check_fits(saved: dict[str, Any], module: nn.Module, path: Path) -> None:
    """Fail unless `saved` is a whole stage entry whose weights fit `module` key for key and
    shape for shape (`load_state_dict` would change some weights before failing on others)."""
    own, weights = module.state_dict(), saved.get("module")
    if (
        not isinstance(weights, dict)
        or not {"history", "best_epoch", "val_metrics"} <= saved.keys()
        or weights.keys() != own.keys()
        or any(not isinstance(weights[k], Tensor) or weights[k].shape != v.shape for k, v in own.items())
    ):
        raise MMRobustError(
            f"{path} does not hold this stage's weights (written by other code?); training the stage again"
        )


def _options_read_by(stage: Stage, options: dict[str, Any]) -> dict[str, Any]:
    """The `fit` options a stage's training depends on: a stage that does not select ignores
    `select` and `patience`, one with its own `epochs` ignores `fit`'s. Keying the stage cache on
    these alone lets e.g. one label-free pretraining serve runs that select on different metrics."""
    unread = ({"select", "patience"} if not stage.select else set()) | ({"epochs"} if stage.epochs else set())
    return {k: v for k, v in options.items() if k not in unread}


def _data_digest(train: MultimodalData, val: MultimodalData) -> str:
    """The data's spec and every tensor's shape, dtype and bytes (bytes alone would let data of
    another layout, e.g. (1, 8) vs (8, 1) per sample, share a key)."""
    digest = hashlib.sha256(json.dumps(train.spec.to_dict(), sort_keys=True).encode())
    for part in (train, val):
        for t in (*(part.inputs[m] for m in part.modalities), part.present, part.target):
            digest.update(f"{tuple(t.shape)}{t.dtype}".encode())
            digest.update(t.contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


# --- the training state, for resuming an interrupted fit --------------------------------------
def _fingerprint(method: Method, train: MultimodalData, val: MultimodalData, options: dict[str, Any]) -> str:
    """What determines the rest of a run: method and parameters, the data fit reads, fit options."""
    key = {
        "method": method.name,
        "params": method.get_params(),
        "spec": train.spec.to_dict(),
        "options": options,
        "torch": torch.__version__,
        "data": _data_digest(train, val),
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class _StateFile:
    """Where an interrupted `fit` left off: saved atomically, at most every `every` seconds."""

    path: Path
    fingerprint: str
    every: float

    def due(self, last_save: float) -> bool:
        return time.monotonic() - last_save >= self.every

    def save(self, stage: int, loop: _Loop, stateful: dict[str, Any], within: dict[str, Any] | None) -> None:
        """Tensors and plain containers only (no pickled code); `within` is None between stages."""
        state = {
            "format": STATE_FORMAT,
            "fingerprint": self.fingerprint,
            "stage": stage,
            "within": within,
            "history": loop.history,
            "result": dataclasses.asdict(loop.result),
            **{name: obj.state_dict() for name, obj in stateful.items()},  # model, optimizer, schedule
            "generator": loop.generator.get_state(),  # shuffling and augmentation
            "torch_rng": torch.get_rng_state(),  # dropout layers draw from the global generator
            "cuda_rng": torch.cuda.get_rng_state(loop.dev) if loop.dev.type == "cuda" else None,
        }
        atomic_write(self.path, lambda p: save_tensors(with_checksum(state), p))

    def load(self) -> dict[str, Any] | None:
        """The state saved by the same run, or None (no file, or another run's: start over)."""
        if not self.path.is_file():
            return None
        state = load_tensors(self.path, STATE_FORMAT, "training state",
                             unreadable="is not a readable training state", advice="delete it to start over")
        if state["fingerprint"] != self.fingerprint:
            warnings.warn(
                f"{self.path} was saved by a run with other settings or data; training starts over", stacklevel=3
            )
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


def _adamw(params: list[nn.Parameter], lr: float, weight_decay: float, dev: torch.device) -> torch.optim.AdamW:
    """AdamW with the fused kernel where torch has one (float parameters on CPU or CUDA): one pass
    over all parameters, 3-4x faster than the multi-tensor (`foreach`) update on a CPU, which is
    ~10% of a small model's training step. Fused results differ from the foreach path in the last
    bits (another summation order), so runs are reproducible, and resume exactly, within one path."""
    fused = dev.type in ("cpu", "cuda") and all(p.is_floating_point() for p in params)
    if fused:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=True)


def _warmup_cosine(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over `warmup` steps, then cosine decay to zero at `total`."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
