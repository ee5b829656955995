"""The epoch loop every stage runs: one optimizer and schedule per stage, one epoch function (a
single process, or data-parallel ranks each taking a slice of every batch), early stopping and
best-epoch restore when the stage selects on validation, periodic resumable state."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn

from .. import distributed as _dist
from ..clock import duration
from ..data.augment import Augment, augment_batch
from ..data.batch import Batch
from ..data.dataset import MultimodalData
from ..errors import MMRobustError
from ..methods.base import Method, Stage
from ..metrics import LOWER_IS_BETTER, PRIMARY
from ..seeds import derive_seed
from ..trackers import Tracker, epoch_metrics
from . import evaluation, stage_cache
from .optim import adamw, warmup_cosine
from .state import StateFile, restore_state

log = logging.getLogger(__name__)  # progress without a terminal: the CLI prints these lines
PLAIN_EVERY = 30.0  # seconds between plain progress lines (the last epoch always has one)


@dataclass
class FitResult:
    """What `fit` returns. `best_epoch` counts from 0 (the progress bar's "epoch 3/10" is
    best_epoch 2), as recorded in every run's manifest; `epochs_run` is a count."""

    best_epoch: int
    epochs_run: int
    val_metrics: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)


def _describe(row: dict[str, Any], task: str) -> str:
    primary = PRIMARY[task]
    return f"val {primary} {row[f'val_{primary}']:.3f}" if f"val_{primary}" in row else f"loss {row['train_loss']:.3f}"


class Loop:
    """Runs a method's stages on one train/val split with fixed `fit` options."""

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
        self.state: StateFile | None = None
        self.trackers: list[Tracker] = []
        self.multi_stage = False
        self.label = method.name  # what progress lines call the model (`fit`'s label)
        self.rank, self.world = _dist.rank(), options.get("world_size", 1)
        self.rank_generator = torch.Generator()  # data-parallel: this rank's draws in an epoch

    def run_stage(self, index: int, stage: Stage, saved: dict[str, Any] | None, last: bool) -> None:
        method, opt = self.method, self.options
        if index > 0 and saved is None:  # each later stage starts from its own seed: reusable alone
            stage_seed = derive_seed(opt["seed"], "stage", index)
            self.generator.manual_seed(stage_seed)
            torch.manual_seed(stage_seed)
        module = stage.module if stage.module is not None else method.modules()
        if stage.reuse_key is None:
            self._train_stage(index, stage, module, saved, last, None)
            return
        path = stage_cache.entry_path(index, stage, opt, self.train, self.val)
        # data-parallel ranks train a stage together: none may wait on a claim the others skip
        with stage_cache.claimed(path, stage) if self.world == 1 else contextlib.nullcontext():
            if not self._reuse(path, stage, module):
                self._train_stage(index, stage, module, saved, last, path)

    def _train_stage(self, index: int, stage: Stage, module: nn.Module, saved: dict[str, Any] | None,
                     last: bool, entry: Path | None) -> None:  # fmt: skip
        """Train the stage; `entry` is where a reusable stage's weights go in the stage cache."""
        method, opt = self.method, self.options
        if stage.fit_direct is not None:
            self._fit_direct(stage)
            self._end_stage(index, stage, module, last, entry)
            return
        if stage.choices:
            self._choose(stage)
            self._end_stage(index, stage, module, last, entry)
            return
        epochs = stage.epochs or opt["epochs"]
        steps_per_epoch = math.ceil(len(self.train) / opt["batch_size"])
        trainable = [p for p in module.parameters() if p.requires_grad]
        optimizer = adamw(trainable, opt["lr"], opt["weight_decay"], self.dev)
        schedule = warmup_cosine(optimizer, warmup=steps_per_epoch, total=steps_per_epoch * epochs)
        stateful = {"model": method.modules(), "optimizer": optimizer, "schedule": schedule}
        selects = stage.select and opt["select"] != "none"  # early stopping and best-epoch restore
        best: dict[str, Any] = {"score": math.inf, "epoch": -1, "metrics": {}, "state": None}
        if selects:
            best["state"] = copy.deepcopy(method.modules().state_dict())
        done = 0
        stage_name = "" if stage.name == "train" else f" {stage.name}"
        name = f"{self.label} seed {opt['seed']}{stage_name}"
        if saved is not None:  # an interrupted run: continue after its last saved epoch
            restore_state(saved, stateful, self.generator, self.dev)
            best, done = saved["within"]["best"], saved["within"]["epochs_done"]
            log.info("%s: resuming after epoch %d of %d (from its saved training state)", name, done, epochs)
        last_save = last_line = started = time.monotonic()
        columns = (
            TextColumn(f"[bold]{self.label}[/] seed {opt['seed']}{stage_name}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, disable=not self.show, transient=True) as bar:
            task = bar.add_task("", total=epochs, completed=done)
            for epoch in range(done, epochs):
                train_loss = self._epoch(stage, module, optimizer, schedule, index, epoch)
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
                    log.info("%s: epoch %d/%d, %s, ETA %s", name, epoch + 1, epochs, description, duration(eta))
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
                    self.save_state(index, stateful, {"best": best, "epochs_done": epoch + 1})
                    last_save = time.monotonic()
        if selects:
            method.modules().load_state_dict(best["state"])
        if stage.select:
            self.result = FitResult(best["epoch"], len(self.history), best["metrics"], self.history)
        else:
            self.result = dataclasses.replace(self.result, epochs_run=len(self.history))
        self._end_stage(index, stage, module, last, entry)

    def save_state(self, stage: int, stateful: dict[str, Any], within: dict[str, Any] | None) -> None:
        assert self.state is not None
        self.state.save(stage, (self.history, self.result), stateful, self.generator, self.dev, within)

    def _end_stage(self, index: int, stage: Stage, module: nn.Module, last: bool, entry: Path | None) -> None:
        if self.state is not None and not last and _dist.is_main():  # a kill between stages resumes at the next
            self.save_state(index + 1, {"model": self.method.modules()}, None)
        if entry is not None and _dist.is_main():
            rows = [r for r in self.history if r.get("stage", "train") == stage.name]
            stage_cache.store_entry(entry, stage, module, rows, self.result.best_epoch, self.result.val_metrics)

    def _reuse(self, path: Path, stage: Stage, module: nn.Module) -> bool:
        saved = stage_cache.load_entry(path, module)
        if saved is None:
            return False
        log.info("%s seed %d: stage '%s' reused from the stage cache (%s)", self.label,
                 self.options["seed"], stage.name, path.name)  # fmt: skip
        self.history.extend(saved["history"])
        if stage.select:
            self.result = FitResult(saved["best_epoch"], len(self.history), saved["val_metrics"], self.history)
        return True

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

    @torch.no_grad()
    def _choose(self, stage: Stage) -> None:
        """A stage that trains nothing (`Stage.choices`): each candidate in turn is set, scored on
        validation (one history row each) and the best one's weights are kept."""
        assert stage.choose is not None
        best: dict[str, Any] = {"score": math.inf, "epoch": -1, "metrics": {}, "state": None}
        for i, candidate in enumerate(stage.choices):
            stage.choose(i)
            row: dict[str, Any] = {"epoch": i, "choice": candidate}
            self._select(stage, i, row, best, choose=True)
            self.history.append({"stage": stage.name, **row})
            for tracker in self.trackers:
                tracker.log_metrics(epoch_metrics(row, stage.name), i)
        self.method.modules().load_state_dict(best["state"])
        self.result = FitResult(best["epoch"], len(self.history), best["metrics"], self.history)

    def _batches(self, index: int, epoch: int) -> tuple[torch.Generator, Iterator[tuple[Batch | None, int, int]]]:
        """The generator this epoch's losses and augmentation draw from, and (this process's rows of
        each batch or None, their count, the whole batch's count). A single process draws from the
        run's generator; data-parallel ranks from a stream per (seed, stage, epoch, rank), so a
        resumed run draws what an uninterrupted one draws without saving every rank's generators
        (the shuffle still draws from the shared generator: every rank sees the same global batches)."""
        size = self.options["batch_size"]
        if self.world == 1:
            return self.generator, ((b, len(b), len(b)) for b in self.train.batches(size, self.generator))
        stream = derive_seed(self.options["seed"], "stage", index, "epoch", epoch, "rank", self.rank)
        self.rank_generator.manual_seed(stream)
        torch.manual_seed(stream)  # dropout layers
        return self.rank_generator, _dist.shard_batches(self.train, size, self.generator, self.rank, self.world)

    def _epoch(
        self, stage: Stage, module: nn.Module, optimizer: torch.optim.Optimizer, schedule: Any, index: int, epoch: int
    ) -> float:
        """One pass over the train split; the mean training loss. Data-parallel ranks average their
        gradients by each rank's share of the batch (see `distributed.py`) and stop together when
        any rank's loss diverges."""
        draws, batches = self._batches(index, epoch)
        params = [p for p in module.parameters() if p.requires_grad]
        self.method.modules().train()
        total, count = 0.0, 0
        for batch, mine, rows in batches:
            optimizer.zero_grad(set_to_none=True)
            value = 0.0
            if batch is not None:
                if stage.rows is not None:  # chosen on the raw samples, before augmentation alters them
                    batch = batch.rows(stage.rows(batch))
                if self.augments and len(batch):
                    batch = augment_batch(batch, self.augments, self.kinds, draws)
                loss = stage.loss(batch.to(self.dev), draws)
                value = float(loss.detach())
                if math.isfinite(value):
                    loss.backward()
                    total, count = total + value * mine, count + mine
            diverged = not math.isfinite(value)
            if self.world > 1:
                diverged = _dist.all_reduce_grads(params, mine / rows, diverged)
            if diverged:  # stop before a NaN spreads into every weight
                became = value if not math.isfinite(value) else "non-finite on another process"
                raise MMRobustError(
                    f"{self.label}: the training loss became {became} in stage '{stage.name}', epoch {epoch} "
                    "(diverged); try a lower train.lr"
                )
            optimizer.step()
            schedule.step()
        if self.world > 1:
            summed, seen = _dist.all_sum([total, count], self.dev)
            return summed / seen
        return total / count

    def _select(self, stage: Stage, epoch: int, row: dict[str, Any], best: dict[str, Any], choose: bool) -> None:
        """Score the epoch on validation; keep the weights if it is the best so far (with `choose`;
        on a fixed budget the last epoch is the one kept, and a choice between candidates, which is not
        an epoch, is made on the task's primary metric)."""
        select = self.options["select"]
        if select == "none":
            select = PRIMARY[self.val.spec.task]
        metrics = evaluation.evaluate(self.method, self.val, predict_fn=stage.predict)
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
