"""Experiment trackers: TensorBoard and MLflow receive training and audit metrics.

Both are optional extras (`pip install 'mmrobust[tensorboard]'`, `'mmrobust[mlflow]'`),
chosen in a config with `train: {loggers: [tensorboard, mlflow]}`. Keys are flat strings:

- per epoch, from `fit`: `train/loss` and `val/<metric>` (e.g. `val/accuracy`); a method with
  several stages adds the stage: `train/loss@stage=pretrain`, `val/loss@stage=finetune`;
- per audit scenario, from `mmrobust run`: `test/<metric>@<scenario>` (see `scenario_key`),
  e.g. `test/accuracy@clean`, `test/accuracy@subset=audio+image`.

    tracker = TensorBoardTracker("runs/x/tensorboard")
    tracker.log_metrics({"train/loss": 0.3}, step=0)
    tracker.close()
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from .atomic import atomic_write
from .errors import MMRobustError, unknown_name
from .filelock import exclusive_lock

LOGGERS = ("mlflow", "tensorboard")
MLFLOW_RUN_ID = "mlflow-run-id"  # in a run folder: the MLflow run it logs to


class Tracker(Protocol):
    """Anything that takes flat `key -> value` metrics at a step (an epoch) and can be closed."""

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...

    def close(self) -> None: ...


def scenario_key(scenario: str) -> str:
    """A scenario name as a flat key suffix: `name[args]` becomes `name=args`, anything else is
    kept: `subset[audio+image]` -> `subset=audio+image`, `missing[gyro@0.3]` -> `missing=gyro@0.3`,
    `clean` -> `clean`."""
    match = re.fullmatch(r"([^\[\]]+)\[(.*)\]", scenario)
    return f"{match[1]}={match[2]}" if match else scenario


def audit_metrics(table: Any) -> dict[str, float]:
    """`test/<metric>@<scenario key>` -> value, from an audit's tidy table (one model and seed)."""
    return {
        f"test/{row.metric}@{scenario_key(str(row.scenario))}": float(row.value)
        for row in table.itertuples(index=False)
    }


def epoch_metrics(row: Mapping[str, Any], stage: str | None = None) -> dict[str, float]:
    """`train/loss` and `val/<metric>` from one epoch's history row (`@stage=<name>` appended
    when `stage` is given, i.e. for methods with several stages)."""
    suffix = f"@stage={stage}" if stage is not None else ""
    # a choice stage trains nothing: its rows have no training loss
    metrics = {f"train/loss{suffix}": float(row["train_loss"])} if "train_loss" in row else {}
    metrics.update({f"val/{k[4:]}{suffix}": float(v) for k, v in row.items() if k.startswith("val_")})
    return metrics


def check_loggers(names: Iterable[str]) -> None:
    """Fail in one line on an unknown logger name."""
    for name in names:
        if name not in LOGGERS:
            raise unknown_name("logger", name, LOGGERS)


def require(name: str) -> None:
    """Fail in one line when the optional package behind logger `name` is not installed."""
    check_loggers([name])
    module = {"tensorboard": "tensorboard", "mlflow": "mlflow"}[name]
    try:
        __import__(module)
    except ImportError:
        raise MMRobustError(f"logger '{name}' needs the {module} package: pip install 'mmrobust[{name}]'") from None


_MLFLOW_SPELLING = {"@": " at ", "=": ":", "+": " and ", ",": " "}


def mlflow_key(key: str) -> str:
    """MLflow allows only letters, digits and `_-. :/` in a metric name, so its keys are spelled
    `@` -> ` at `, `=` -> `:`, `+` -> ` and `, `,` -> ` `, anything else not allowed -> `_`:
    `test/accuracy@subset=audio+image` -> `test/accuracy at subset:audio and image`."""
    spelled = "".join(_MLFLOW_SPELLING.get(c, c) for c in key)
    return re.sub(r"[^\w.\- :/]", "_", spelled)


class TensorBoardTracker:
    """Event files in `log_dir` (`tensorboard --logdir OUT` shows every run below OUT)."""

    def __init__(self, log_dir: str | Path) -> None:
        require("tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir))

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()


class MLflowTracker:
    """One MLflow run, in the tracking server or database named by MLFLOW_TRACKING_URI if set,
    else in a file store at `store` (`mlflow ui --backend-store-uri OUT/mlruns`). MLflow 3 keeps
    file stores only behind MLFLOW_ALLOW_FILE_STORE=true, which is set for this process unless
    you set it. Metric names are spelled as `mlflow_key` says. The MLflow run is made when the
    first metric comes, and its id kept in `id_file`: when `fit` goes on from a saved training state
    (it calls `resume()` first), the metrics go on in that run if it is still there, not ended; when
    training starts over instead, that run is ended as KILLED and a new one made."""

    def __init__(
        self,
        store: str | Path,
        experiment: str,
        run_name: str,
        params: Mapping[str, Any] | None = None,
        *,
        id_file: Path | None = None,
    ) -> None:
        require("mlflow")
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            Path(store).mkdir(parents=True, exist_ok=True)
            uri = Path(store).resolve().as_uri()
        self.client = MlflowClient(tracking_uri=uri)
        lock = Path(store) / ".experiments.lock" if not os.environ.get("MLFLOW_TRACKING_URI") else None
        self.experiment_id = _experiment(self.client, experiment, lock)
        self.run_name, self.params, self.id_file = run_name, dict(params or {}), id_file
        self.run_id: str | None = None
        self.resuming = False

    def resume(self) -> None:
        """Training goes on from a saved state: log to the MLflow run it logged to before."""
        self.resuming = True

    def _run(self) -> str:
        if self.run_id is not None:
            return self.run_id
        earlier = self._unfinished_run()
        if earlier is not None and self.resuming:
            self.client.update_run(earlier, status="RUNNING")
            self.run_id = earlier
            return earlier
        if earlier is not None:  # interrupted, and its training starts over (its state was not taken)
            self.client.set_terminated(earlier, status="KILLED")
        from mlflow.entities import Param

        run_id = self.client.create_run(self.experiment_id, run_name=self.run_name).info.run_id
        if self.id_file is not None:
            atomic_write(self.id_file, lambda p: p.write_text(run_id))
        params = [Param(key, _param_value(value)) for key, value in self.params.items()]
        for start in range(0, len(params), 100):  # MLflow's limit per call
            self.client.log_batch(run_id, params=params[start : start + 100])
        self.run_id = run_id
        return run_id

    def _unfinished_run(self) -> str | None:
        """The MLflow run of `id_file`, if it is in this experiment, active (not deleted) and not
        ended; else None (a new run is made)."""
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(self.id_file.read_text().strip()) if self.id_file is not None else None
        except (OSError, MlflowException):
            return None
        if run is None or run.info.experiment_id != self.experiment_id or run.info.lifecycle_stage != "active":
            return None
        return None if run.info.status == "FINISHED" else str(run.info.run_id)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        run_id, stamp = self._run(), _now_ms()
        batch = [Metric(mlflow_key(key), float(value), stamp, step) for key, value in metrics.items()]
        for start in range(0, len(batch), 1000):  # MLflow's limit per call
            self.client.log_batch(run_id, metrics=batch[start : start + 1000])

    def close(self) -> None:
        self.client.set_terminated(self._run())


def _experiment(client: Any, name: str, lock: Path | None) -> str:
    """The id of MLflow experiment `name`, made if new. Parallel runs (a sweep's workers) would each
    make it: a file store is locked meanwhile; a server refuses all but one, and the others read it."""
    from mlflow.exceptions import MlflowException

    with exclusive_lock(lock, None) if lock is not None else contextlib.nullcontext():
        found = client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        try:
            return str(client.create_experiment(name))
        except MlflowException:
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
            return str(found.experiment_id)


def _param_value(value: Any) -> str:
    """A param as MLflow keeps it: text (JSON for lists and mappings, as in results.csv), at most
    6,000 characters (MLflow's limit), cut with `…` beyond."""
    text = value if isinstance(value, str) else json.dumps(value) if isinstance(value, list | dict) else str(value)
    return text if len(text) <= 6000 else text[:5999] + "…"


def announce_resume(trackers: Iterable[Any]) -> None:
    """Tell the trackers that can continue a run (`MLflowTracker.resume`) that training goes on from a
    saved state, before its first metric."""
    for tracker in trackers:
        if hasattr(tracker, "resume"):
            tracker.resume()


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


def create_trackers(
    names: Iterable[str],
    run_dir: Path,
    *,
    store: Path,
    experiment: str,
    run_name: str,
    params: Mapping[str, Any] | None = None,
) -> list[Tracker]:
    """The trackers named in `names` for one run: TensorBoard in `run_dir/tensorboard`, MLflow
    as run `run_name` of `experiment` in the file store `store` (its id kept in `run_dir/MLFLOW_RUN_ID`,
    so that an interrupted training, resumed, goes on in the same MLflow run)."""
    trackers: list[Tracker] = []
    for name in names:
        check_loggers([name])
        if name == "tensorboard":
            trackers.append(TensorBoardTracker(run_dir / "tensorboard"))
        else:
            trackers.append(MLflowTracker(store, experiment, run_name, params, id_file=run_dir / MLFLOW_RUN_ID))
    return trackers
