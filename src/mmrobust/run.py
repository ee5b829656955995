"""`mmrobust run CONFIG`: train and audit every model x seed of an experiment config.

Each (model, seed) gets a run directory `OUT/<model>/seed-<s>/` holding the checkpoint, the
validation metrics, the audit files and a manifest: the resolved config and its hash, git
commit and dirty flag, package versions, a checksum of the data, seeds, the hash of every
audit mask set (identical across models: comparisons are paired), device, wall time and
peak memory, and the SHA-256 of every file of the run; the manifest also carries a checksum of
itself. A run whose manifest says it finished under the same run hash, and whose files match
their checksums, is skipped when the command is repeated; one whose manifest or files are
damaged (truncated, corrupted, missing) is run again, with a warning. While a run trains, its
directory holds `training-state.pt` (saved atomically every `state_every` seconds, deleted when
training ends): a run killed mid-training resumes from it and ends with the same numbers as one
that never stopped. The combined report is written to OUT/.

Crash safety: every file is written atomically; the manifest is removed before a run's files are
(re)written and written last, so a process killed at any point leaves each run either finished
(manifest and matching files) or unfinished (no manifest: it is redone or resumed), never a
half-written run read as finished. A run directory is locked (an flock on `.lock`, released when
the process dies) while a process decides about and works on it: two processes on the same OUT
(a repeated command while an orphaned sweep worker still runs) never work on one run at once.

Under `torchrun` every process runs the same loop: all train each run data-parallel (see
`distributed.py`), rank 0 alone decides which runs are finished and writes every file
(checkpoints, manifests, audit results, the report, tracker logs). With `train.loggers`,
each run logs to TensorBoard (`<run dir>/tensorboard/`) and/or MLflow (file store `OUT/mlruns`,
one MLflow run per model x seed in the experiment named after the config, resumed with its run;
`Tracking` says where): per-epoch training metrics and one `test/<metric>@<scenario>` value per
audit scenario (see `trackers.py`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import platform
import resource
import subprocess
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from . import distributed as _dist
from .atomic import atomic_write, file_sha256
from .audit import AuditResult, audit, write_report
from .audit.paired import PREDICTIONS, write_predictions
from .audit.report import FILES as REPORT_FILES
from .audit.scenarios import MAX_SUBSETS
from .checkpoint import load_checkpoint, save_checkpoint
from .config import DataConfig, ExperimentConfig, ModelConfig, TrainConfig, config_from_dict
from .corruption import corruption_from_name
from .data.augment import parse_augment
from .data.dataset import MultimodalData
from .data.tokens import Tokens
from .errors import MMRobustError
from .experiment import load_data
from .methods import Method, create_method
from .methods.external import EXTERNAL, wrap_external
from .runfolder import (
    CHECKPOINT,
    MANIFEST,
    RESULTS,
    TRAINING_STATE,
    clear_manifest,
    finished_manifest,
    read_manifest,
    run_lock,
    warn_damaged,
    write_manifest,
)
from .threads import set_threads
from .trackers import audit_metrics, create_trackers, require
from .train import check_fit_options, check_splits, fit, resolve_device
from .version import __version__

log = logging.getLogger(__name__)  # progress lines, which the CLI prints
RUN_FILES = (CHECKPOINT, PREDICTIONS, *REPORT_FILES)  # listed with their SHA-256 in the manifest


@dataclass(frozen=True)
class Tracking:
    """Where a run's MLflow run goes: `mmrobust run` puts every run of OUT in the store OUT/mlruns,
    experiment = the config's name, run = `<model>/seed-<s>`; a sweep puts all its combinations in
    one store (`sweep.plan.Unit.tracking`), with the grid's values as extra params."""

    store: Path
    experiment: str
    run_name: str
    params: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of_run(cls, config: ExperimentConfig, model: ModelConfig, seed: int, run_dir: Path) -> Tracking:
        return cls(run_dir.parent.parent / "mlruns", config.name, f"{model.name}/seed-{seed}")


def data_checksum(data: MultimodalData) -> str:
    """SHA-256 over every tensor of the dataset (inputs, mask, targets, splits)."""
    digest = hashlib.sha256()
    tensors = [*(data.inputs[m] for m in data.modalities), data.present, data.target]
    tensors += [data.splits[s] for s in sorted(data.splits)]
    for t in tensors:
        digest.update(t.contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


@functools.cache
def _git_state() -> dict[str, Any]:
    """The commit of the code this process runs: read once, at its first run's start (a checkout
    moving on while a sweep runs does not change the code its workers loaded)."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True)
        status = subprocess.run(["git", "status", "--porcelain"], cwd=here, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


def _versions() -> dict[str, str]:
    import numpy
    import pandas

    return {
        "mmrobust": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "pandas": pandas.__version__,
    }


def run_hash(config: ExperimentConfig, model: ModelConfig, seed: int, *, placed: bool = False) -> str:
    """What determines one run's numbers: data, model, training, audit and seed (not where
    metrics are logged: adding a logger does not rerun finished runs; nor where the data lie, unless
    `placed`: the hash of runs recorded before their place left it)."""
    audit = dataclasses.asdict(config.audit)
    if audit["max_subsets"] == MAX_SUBSETS:  # the default: runs from before the option keep their hash
        audit.pop("max_subsets")
    return _hash({**_training_key(config, model, seed, placed), "audit": audit})


def training_hash(config: ExperimentConfig, model: ModelConfig, seed: int) -> str:
    """What determines one run's trained weights: data, model, training and seed (not the audit)."""
    return _hash(_training_key(config, model, seed))


def _training_key(config: ExperimentConfig, model: ModelConfig, seed: int, placed: bool = False) -> dict[str, Any]:
    train = dataclasses.asdict(config.train)
    train.pop("loggers")
    train.pop("threads")  # how fast it ran (it can move the last bits of the weights: the manifest records it)
    data = dataclasses.asdict(config.data)
    if not placed:  # where the data lie, not what they are: their checksum says that (`finished_run`)
        data.pop("data_dir")
        data.pop("npz")
    return {"data": data, "model": dataclasses.asdict(model), "train": train, "seed": seed}


def _stored_hash(run_dir: Path, wanted: str) -> str:
    """The run hash stored in `run_dir`'s manifest when its recorded config hashes to `wanted` today and
    the stored hash is that config's under today's formula or the one before the data's place (folder,
    npz path) left it, else `wanted`: runs recorded before that change are still found finished, and a
    later change of the formula still reruns them. Unreadable manifests: `finished_manifest` reports."""
    try:
        record = read_manifest(run_dir)
        config, model, seed = config_from_dict(record["config"]), ModelConfig(**record["model"]), record["seed"]
    except (MMRobustError, KeyError, TypeError):
        return wanted
    stored, recorded = record.get("run_hash"), run_hash(config, model, seed)
    if recorded != wanted or stored not in (recorded, run_hash(config, model, seed, placed=True)):
        return wanted
    return str(stored)


def _hash(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def run_one(
    config: ExperimentConfig,
    model: ModelConfig,
    seed: int,
    data: MultimodalData,
    run_dir: Path,
    state_every: float = 10.0,
    tracking: Tracking | None = None,
) -> AuditResult:
    """Train, audit and record one (model, seed) in `run_dir`; under torchrun only rank 0
    audits and writes (other ranks return an empty result). `tracking`: where its MLflow run goes
    (default `Tracking.of_run`)."""
    start = time.perf_counter()
    _git_state()  # read before training, while the checkout is the code this process loaded
    if model.method == EXTERNAL:
        return _audit_external(config, model, seed, data, run_dir, start)
    method = create_method(model.method, **model.params)
    t = config.train
    tracking = tracking or Tracking.of_run(config, model, seed, run_dir)
    trackers = _trackers(config, model, seed, run_dir, tracking) if _dist.is_main() else []
    fitted = fit(
        method,
        data,
        seed=seed,
        epochs=t.epochs,
        batch_size=t.batch_size,
        lr=t.lr,
        weight_decay=t.weight_decay,
        patience=t.patience,
        select=t.select,
        augment=t.augment,
        device=t.device,
        progress=False,
        state_path=run_dir / TRAINING_STATE,  # resumes a run killed mid-training
        state_every=state_every,
        trackers=trackers,
        label=model.name,
    )
    train_seconds = time.perf_counter() - start
    if not _dist.is_main():
        return _empty(data)
    clear_manifest(run_dir)  # the run's files change from here on: unfinished until the new manifest is written
    save_checkpoint(method, run_dir / CHECKPOINT, {"label": model.name})
    seconds = round(train_seconds, 3)
    training = {
        "best_epoch": fitted.best_epoch, "val_metrics": fitted.val_metrics, "train_time_s": seconds,
        "curve": training_curve(fitted.history),
        "train_threads": torch.get_num_threads(),  # floating-point sums, hence the trained weights, depend on it
    }  # fmt: skip
    return _audit_and_record(config, model, seed, data, run_dir, method, training, trackers, start)


def training_curve(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each epoch's stage, training loss and validation metrics (4 decimals: a few kB), so
    a reader of the manifest can see whether training had flattened; choice rows are left out."""
    kept = [{"stage": "train", **row} for row in history if "train_loss" in row]  # one-stage rows carry no name
    return [
        {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()
         if k in ("stage", "epoch", "train_loss") or k.startswith("val_")}
        for row in kept
    ]  # fmt: skip


def model_seeds(config: ExperimentConfig, model: ModelConfig) -> list[int]:
    """The seeds `model` runs with: the config's, or its first alone for a model trained elsewhere, which
    nothing trains here (each seed would audit it again under the same masks, as copies of one run)."""
    return config.seeds[:1] if model.method == EXTERNAL else list(config.seeds)


def _audit_external(
    config: ExperimentConfig, model: ModelConfig, seed: int, data: MultimodalData, run_dir: Path, start: float
) -> AuditResult:
    """A model trained elsewhere (`method: external`): loaded, wrapped and audited; nothing trains,
    and the run folder holds no checkpoint (the user has the model)."""
    method = wrap_external(model.params, data)
    method.seed = seed  # the run's: paired in reports with the trained models' runs of that seed
    if not _dist.is_main():
        return _empty(data)
    clear_manifest(run_dir)
    return _audit_and_record(config, model, seed, data, run_dir, method, None, [], start)


def _audit_and_record(
    config: ExperimentConfig,
    model: ModelConfig,
    seed: int,
    data: MultimodalData,
    run_dir: Path,
    method: Method,
    trained: dict[str, Any] | None,
    trackers: list[Any],
    start: float,
) -> AuditResult:
    """Audit the run's model, write its predictions and report, then the manifest (last). `trained`
    is the training's record for the manifest (best_epoch, val_metrics, train_time_s, and
    trained_git when the audit is not the training's), None for a model trained elsewhere."""
    scenarios = [corruption_from_name(name) for name in config.audit.scenarios]
    result = audit(
        method, data, scenarios, defaults=config.audit.defaults, seed=config.audit.seed, label=model.name,
        keep_predictions=True, max_subsets=config.audit.max_subsets,
    )  # fmt: skip
    assert result.predictions is not None
    write_predictions(result.predictions, run_dir / PREDICTIONS)  # for per-sample paired comparisons
    result.predictions = None  # the combined report needs the scores only
    write_report(result, run_dir)
    for tracker in trackers:
        tracker.log_metrics(audit_metrics(result.table), 0)
        tracker.close()
    files = RUN_FILES if trained is not None else tuple(f for f in RUN_FILES if f != CHECKPOINT)
    trained = trained or {"best_epoch": None, "val_metrics": {}, "train_time_s": None}
    manifest = {
        "status": "done",
        "run_hash": run_hash(config, model, seed),
        "config_hash": config.hash(),
        "config": config.to_dict(),
        "model": dataclasses.asdict(model),
        "seed": seed,
        "best_epoch": trained["best_epoch"],
        "val_metrics": trained["val_metrics"] or {},
        "data_checksum": data_checksum(data),
        "mask_hashes": {s["name"]: s["mask_hash"] for s in result.scenarios},
        "git": _git_state(),
        **({"trained_git": trained["trained_git"]} if trained.get("trained_git") else {}),
        "versions": _versions(),
        "device": str(next(method.modules().parameters()).device),
        "wall_time_s": round(time.perf_counter() - start, 3),
        "train_time_s": trained["train_time_s"],
        "train_threads": trained.get("train_threads"),
        "curve": trained.get("curve") or [],
        "parameters": sum(p.numel() for p in method.modules().parameters()),
        "peak_memory_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "files": {name: file_sha256(run_dir / name) for name in files},  # as written, checked on reading
    }
    write_manifest(run_dir, manifest)  # last: the run is finished
    return result


def run_experiment(
    config: ExperimentConfig,
    out: str | Path,
    on_event: Callable[[str], None] = lambda _: None,
    *,
    state_every: float = 10.0,
) -> AuditResult:
    """Train and audit every model x seed (skipping finished runs, resuming interrupted ones);
    write the combined report. `state_every`: seconds between saves of a training run's state."""
    out = Path(out)
    set_threads(config.train.threads)
    _dist.setup(resolve_device(_dist.local_device(config.train.device)))  # joins torchrun's group, if any
    data = load_data(config.data.name, config.data.npz, config.data.data_dir, config.data.options)
    check_against_data(config, data)  # the whole config, before the first epoch and the first folder
    data_sum = data_checksum(data)  # a finished run made on other data is run again
    results = []
    runs = [(model, seed) for model in config.models for seed in model_seeds(config, model)]
    for k, (model, seed) in enumerate(runs, start=1):
        log.info("run %d/%d: %s seed %d", k, len(runs), model.name, seed)
        run_dir = out / model.name / f"seed-{seed}"
        result, skipped = run_or_skip(config, model, seed, lambda: data, run_dir, state_every, data_sum)
        results.append(result)
        if skipped:
            log.info("run %d/%d: %s seed %d had finished before; kept", k, len(runs), model.name, seed)
        on_event(f"skip {model.name} seed {seed} (finished)" if skipped else f"done {model.name} seed {seed}")
    combined = write_experiment_report(config, out, results) if _dist.is_main() else None
    if _dist.active():  # every rank returns rank 0's result (the CLI prints it)
        combined = _dist.broadcast_object(combined)
    assert combined is not None
    return combined


def check_against_data(config: ExperimentConfig, data: MultimodalData) -> None:
    """What the config can only be checked for with the data at hand: the selection metric of its
    task, the augmented modalities, every model built on it (on the meta device: no memory, no
    random draws) and every audit scenario applied to two samples. A problem in the last model or
    scenario thus stops the experiment before the first model trains, with nothing written."""
    for name in config.train.loggers:  # a missing optional package fails before any training (or sweep)
        require(name)
    check_fit_options({"select": config.train.select}, data.spec.task, name=lambda key: f"train.{key}")
    check_splits(data, config.train.select)
    parse_augment(data.spec, config.train.augment)
    for i, model in enumerate(config.models):
        where = f"models.{i} ({model.name})"
        if model.method == EXTERNAL:  # importable, and its weights fit (its outputs are checked when audited)
            try:
                wrap_external(model.params, data)
            except MMRobustError as e:
                raise MMRobustError(f"{where}: {e}") from None
            continue
        try:
            with torch.device("meta"):
                create_method(model.method, **model.params).build(data.spec)
        except (TypeError, ValueError) as e:  # MMRobustError too; TypeError: a parameter of the wrong type
            raise MMRobustError(f"{where} cannot be built on {data.spec.name}: {str(e).splitlines()[0]}") from None
    sample = data.batch(slice(0, 2))
    for i, name in enumerate(config.audit.scenarios):
        corruption = corruption_from_name(name)
        tokens = Tokens(torch.zeros(len(sample), len(data.modalities), 1), sample.present, data.modalities)
        try:
            if corruption.on_tokens:
                corruption(tokens, torch.Generator().manual_seed(0))
            else:
                corruption(sample, torch.Generator().manual_seed(0))
        except MMRobustError as e:
            raise MMRobustError(f"audit.scenarios.{i} ({name}) does not fit {data.spec.name}: {e}") from None


def run_or_skip(
    config: ExperimentConfig,
    model: ModelConfig,
    seed: int,
    data: Callable[[], MultimodalData],
    run_dir: Path,
    state_every: float = 10.0,
    data_sum: str | None = None,
    tracking: Tracking | None = None,
) -> tuple[AuditResult, bool]:
    """One run's result and whether it had finished before (then nothing is recomputed and
    `data()` is not called); an interrupted run resumes from its training state. With `data_sum`
    (the data's `data_checksum`), a run made on other data is not finished: its data file changed.
    `tracking`: where its MLflow run goes (default `Tracking.of_run`)."""
    with run_lock(run_dir) if _dist.is_main() else contextlib.nullcontext():
        done = finished_run(config, model, seed, run_dir, data_sum) if _dist.is_main() else None
        if _dist.active() and _dist.broadcast_flag(done is not None, _dist.device()):  # rank 0 decides
            return (done if done is not None else _empty(data())), True
        if done is not None:
            return done, True
        if _dist.is_main() and (record := trained_before(config, model, seed, run_dir, data_sum)) is not None:
            return reaudit(config, model, seed, data(), run_dir, record), False
        return run_one(config, model, seed, data(), run_dir, state_every, tracking), False


def finished_run(
    config: ExperimentConfig, model: ModelConfig, seed: int, run_dir: Path, data_sum: str | None = None
) -> AuditResult | None:
    """The result of the run in `run_dir` if it finished under the same run hash, on the same data
    (when `data_sum`, the data's `data_checksum`, is given) and is intact, else None (with a warning
    when a finished run is found damaged, or made on data that has changed since)."""
    record = finished_manifest(run_dir, _stored_hash(run_dir, run_hash(config, model, seed)))
    if record is None or not _same_data(record, data_sum, run_dir, warn=True):
        return None
    try:
        return AuditResult.read(run_dir / RESULTS)
    except MMRobustError as e:
        warn_damaged(run_dir, str(e))
        return None


def _same_data(record: dict[str, Any], data_sum: str | None, run_dir: Path, warn: bool = False) -> bool:
    """Whether a finished run's data is the data at hand (unknown: assumed so). The run hash covers
    the data's name, file and options, not their folder or content: an npz rewritten in place, or
    another copy of a dataset, would otherwise keep old results."""
    made_on = record.get("data_checksum")
    if data_sum is None or made_on is None or made_on == data_sum:
        return True
    if warn:
        warnings.warn(f"{run_dir}: the data changed since this run finished (checksum {made_on}, now {data_sum}); "
                      "running it again", stacklevel=3)  # fmt: skip
    return False


def trained_before(
    config: ExperimentConfig, model: ModelConfig, seed: int, run_dir: Path, data_sum: str | None = None
) -> dict[str, Any] | None:
    """The manifest of a finished, intact run in `run_dir` that trained exactly as this one would, on
    the same data, and differs only in its audit (e.g. a study added a scenario), else None."""
    if not (run_dir / MANIFEST).is_file():
        return None
    try:
        record = read_manifest(run_dir)
        before = config_from_dict(record["config"])
        old = training_hash(before, ModelConfig(**record["model"]), record["seed"])
        same = old == training_hash(config, model, seed)
    except (MMRobustError, KeyError, TypeError):
        return None  # another format: train again
    if not same or record.get("status") != "done" or not (run_dir / CHECKPOINT).is_file():
        return None
    # a run of this very identity was seen by finished_run, which has warned of its damage or new data
    reported = run_hash(before, ModelConfig(**record["model"]), record["seed"]) == run_hash(config, model, seed)
    if not _same_data(record, data_sum, run_dir, warn=not reported):
        return None
    return finished_manifest(run_dir, record["run_hash"], warn=not reported)  # None if its files are damaged


def reaudit(
    config: ExperimentConfig, model: ModelConfig, seed: int, data: MultimodalData, run_dir: Path, record: dict[str, Any]
) -> AuditResult:
    """Audit the trained model of a run whose training is unchanged under this config's audit
    (seconds, not a retraining); the manifest keeps the training's record and commit."""
    start = time.perf_counter()
    method, _ = load_checkpoint(run_dir / CHECKPOINT)
    clear_manifest(run_dir)
    training = {k: record.get(k) for k in ("best_epoch", "val_metrics", "train_time_s", "curve", "train_threads")}
    training["trained_git"] = record.get("trained_git") or record.get("git")  # the code that trained it
    return _audit_and_record(config, model, seed, data, run_dir, method, training, [], start)


def _trackers(
    config: ExperimentConfig, model: ModelConfig, seed: int, run_dir: Path, tracking: Tracking
) -> list[Any]:
    train = {f"train.{k}": v for k, v in dataclasses.asdict(config.train).items() if k != "loggers"}
    params = {"model": model.name, "method": model.method, "seed": seed, "params": json.dumps(model.params), **train}
    return create_trackers(
        config.train.loggers,
        run_dir,
        store=tracking.store,
        experiment=tracking.experiment,
        run_name=tracking.run_name,
        params={**params, **tracking.params},
    )


def _empty(data: MultimodalData) -> AuditResult:
    """What a rank other than 0 returns: it audits and writes nothing."""
    return AuditResult(pd.DataFrame(), data.spec.task)


def write_experiment_report(config: ExperimentConfig, out: Path, results: list[AuditResult]) -> AuditResult:
    """The combined report of an experiment's runs, and its resolved config, in `out`."""
    combined = AuditResult.concat(results)
    write_report(combined, out, {"config": config.to_dict(), "config_hash": config.hash()})
    atomic_write(out / "config.yaml", lambda p: p.write_text(config.to_yaml()))
    return combined


def demo_config(seeds: int = 3, epochs: int = 60) -> ExperimentConfig:
    """{sum, concat, transformer} x {joint, dropout} on BasicMotions (`mmrobust demo`)."""
    models = [
        ModelConfig(method=m, label=f"{m}-{f}", params={"fusion": f})
        for m in ("joint", "dropout")
        for f in ("sum", "concat", "transformer")
    ]
    return ExperimentConfig(
        name="demo",
        data=DataConfig(name="basicmotions"),
        models=models,
        train=TrainConfig(epochs=epochs),
        seeds=list(range(seeds)),
    )


