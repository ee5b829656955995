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

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from .errors import MMRobustError, unknown_name

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
    you set it. Metric names are spelled as `mlflow_key` says."""

    def __init__(
        self,
        store: str | Path,
        experiment: str,
        run_name: str,
        params: Mapping[str, Any] | None = None,
        *,
        id_file: Path | None = None,
        resume: bool = False,
    ) -> None:
        require("mlflow")
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            Path(store).mkdir(parents=True, exist_ok=True)
            uri = Path(store).resolve().as_uri()
        self.client = MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found is not None else self.client.create_experiment(experiment)
        earlier = self._unfinished_run(id_file, experiment_id) if resume else None
        if earlier is not None:  # an interrupted training goes on: one MLflow run, one unbroken curve
            self.run_id = earlier
            self.client.update_run(earlier, status="RUNNING")
            return
        self.run_id = self.client.create_run(experiment_id, run_name=run_name).info.run_id
        if id_file is not None:
            id_file.write_text(self.run_id)
        for key, value in (params or {}).items():
            self.client.log_param(self.run_id, key, value)

    def _unfinished_run(self, id_file: Path | None, experiment_id: str) -> str | None:
        """The MLflow run an interrupted training logged to (its id in `id_file`), if it is still in
        this store and experiment and was not ended; else None (a new run is made)."""
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(id_file.read_text().strip()) if id_file is not None else None
        except (OSError, MlflowException):
            return None
        if run is None or run.info.experiment_id != experiment_id or run.info.status == "FINISHED":
            return None
        return str(run.info.run_id)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        stamp = _now_ms()
        batch = [Metric(mlflow_key(key), float(value), stamp, step) for key, value in metrics.items()]
        for start in range(0, len(batch), 1000):  # MLflow's limit per call
            self.client.log_batch(self.run_id, metrics=batch[start : start + 1000])

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


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
    resume: bool = False,
) -> list[Tracker]:
    """The trackers named in `names` for one run: TensorBoard in `run_dir/tensorboard`, MLflow
    as run `run_name` of `experiment` in the file store `store` (its id kept in `run_dir/MLFLOW_RUN_ID`,
    so that with `resume`, an interrupted training resuming, it goes on in the same MLflow run)."""
    trackers: list[Tracker] = []
    for name in names:
        check_loggers([name])
        if name == "tensorboard":
            trackers.append(TensorBoardTracker(run_dir / "tensorboard"))
        else:
            trackers.append(MLflowTracker(store, experiment, run_name, params, id_file=run_dir / MLFLOW_RUN_ID,
                                          resume=resume))  # fmt: skip
    return trackers
