"""Experiment trackers: flat metric keys, config validation, and TensorBoard / MLflow receiving
per-epoch training metrics and per-scenario audit metrics from `mmrobust run`."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

import mmrobust
from mmrobust import MMRobustError
from mmrobust.config import load_config
from mmrobust.run import run_experiment, run_hash
from mmrobust.trackers import epoch_metrics, mlflow_key, require, scenario_key

CONFIG = """
name: tracked
data: {name: synthetic, options: {n_samples: 120}}
models:
  - {method: joint, params: {fusion: sum}}
train: {epochs: 3, batch_size: 16, patience: 10}
audit: {scenarios: ["rates[m0=0.5,m1=0.2]"]}
seeds: [0]
"""


class Recorder:
    """A Tracker that keeps what it is given."""

    def __init__(self) -> None:
        self.logged: list[tuple[int, dict[str, float]]] = []
        self.closed = False

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self.logged.append((step, dict(metrics)))

    def close(self) -> None:
        self.closed = True


# --- keys -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("scenario", "key"),
    [
        ("clean", "clean"),
        ("subset[audio+image]", "subset=audio+image"),
        ("missing[gyro@0.3]", "missing=gyro@0.3"),
        ("rates[m0=0.5,m1=0.2]", "rates=m0=0.5,m1=0.2"),
    ],
)
def test_scenario_names_flatten_to_key_suffixes(scenario: str, key: str) -> None:
    assert scenario_key(scenario) == key


def test_mlflow_spelling_uses_only_allowed_characters() -> None:
    assert mlflow_key("test/accuracy@subset=audio+image") == "test/accuracy at subset:audio and image"
    assert mlflow_key("test/mae@rates=m0=0.5,m1=0.2") == "test/mae at rates:m0:0.5 m1:0.2"
    assert mlflow_key("val/x[y]") == "val/x_y_"


def test_epoch_metrics_name_the_stage_only_when_asked() -> None:
    row = {"epoch": 3, "train_loss": 0.5, "val_accuracy": 0.9, "val_loss": 0.4}
    assert epoch_metrics(row) == {"train/loss": 0.5, "val/accuracy": 0.9, "val/loss": 0.4}
    assert epoch_metrics({"epoch": 0, "train_loss": 1.0}, "pretrain") == {"train/loss@stage=pretrain": 1.0}


# --- what fit logs ----------------------------------------------------------------------
def test_fit_logs_every_epoch(small_data) -> None:
    recorder = Recorder()
    m = mmrobust.create_method("joint", fusion="sum")
    result = mmrobust.fit(m, small_data, seed=0, epochs=3, progress=False, trackers=[recorder])
    assert [step for step, _ in recorder.logged] == [0, 1, 2]
    for (_, metrics), row in zip(recorder.logged, result.history, strict=True):
        assert metrics["train/loss"] == row["train_loss"] and metrics["val/accuracy"] == row["val_accuracy"]
        assert set(metrics) == {"train/loss", "val/accuracy", "val/macro_f1", "val/loss"}


def test_multi_stage_fit_logs_the_stage(small_data) -> None:
    from test_stages import TwoStage

    recorder = Recorder()
    mmrobust.fit(TwoStage(), small_data, seed=0, epochs=2, progress=False, trackers=[recorder])
    keys = [set(metrics) for _, metrics in recorder.logged]
    assert keys[0] == {"train/loss@stage=pretrain"}  # pretraining does not validate
    assert "val/accuracy@stage=finetune" in keys[-1] and "train/loss@stage=finetune" in keys[-1]


# --- config -----------------------------------------------------------------------------
def test_unknown_logger_is_one_line_naming_the_valid_ones(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(CONFIG)
    with pytest.raises(MMRobustError, match=r"unknown logger 'tensorbord'.*Valid: mlflow, tensorboard"):
        load_config(tmp_path / "c.yaml", ["train.loggers=[tensorbord]"])


def test_loggers_do_not_change_the_run_hash(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(CONFIG)
    plain = load_config(tmp_path / "c.yaml")
    logged = load_config(tmp_path / "c.yaml", ["train.loggers=[tensorboard]"])
    assert run_hash(plain, plain.models[0], 0) == run_hash(logged, logged.models[0], 0)


@pytest.mark.parametrize("name", ["tensorboard", "mlflow"])
def test_missing_package_says_what_to_install(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, name, None)  # makes `import name` fail
    with pytest.raises(MMRobustError, match=rf"pip install 'mmrobust\[{name}\]'"):
        require(name)


# --- the real trackers, fed by `mmrobust run` --------------------------------------------
EXPECTED = {"train/loss", "val/accuracy", "val/loss", "test/accuracy@clean", "test/accuracy@subset=m0+m1"}
EXPECTED |= {"test/accuracy@missing=m2@0.3", "test/macro_f1@rates=m0=0.5,m1=0.2"}


def test_tensorboard_receives_training_and_audit_metrics(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="tensorboard not installed: pip install 'mmrobust[tensorboard]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (tmp_path / "c.yaml").write_text(CONFIG)
    run_experiment(load_config(tmp_path / "c.yaml", ["train.loggers=[tensorboard]"]), tmp_path / "out")
    events = EventAccumulator(str(tmp_path / "out" / "joint" / "seed-0" / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert tags >= EXPECTED
    assert [e.step for e in events.Scalars("train/loss")] == [0, 1, 2]
    results = mmrobust.AuditResult.read(tmp_path / "out" / "joint" / "seed-0" / "results.json").table
    clean = results[(results.scenario == "clean") & (results.metric == "accuracy")].value.item()
    assert events.Scalars("test/accuracy@clean")[0].value == pytest.approx(clean)


def test_mlflow_receives_training_and_audit_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mlflow", reason="mlflow not installed: pip install 'mmrobust[mlflow]'")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    (tmp_path / "c.yaml").write_text(CONFIG)
    run_experiment(load_config(tmp_path / "c.yaml", ["train.loggers=[mlflow]", "seeds=[0,1]"]), tmp_path / "out")
    client = MlflowClient(tracking_uri=(tmp_path / "out" / "mlruns").resolve().as_uri())
    experiment = client.get_experiment_by_name("tracked")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["joint/seed-0", "joint/seed-1"]
    for run in runs:
        assert run.info.status == "FINISHED"
        assert set(run.data.metrics) >= {mlflow_key(k) for k in EXPECTED}
        assert run.data.params["method"] == "joint" and run.data.params["train.epochs"] == "3"
        history = client.get_metric_history(run.info.run_id, "train/loss")
        assert [m.step for m in history] == [0, 1, 2]


@pytest.fixture
def mlflow_store(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A reader of the MLflow file store at a given folder (the tracking URI unset)."""
    pytest.importorskip("mlflow", reason="mlflow not installed: pip install 'mmrobust[mlflow]'")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return lambda store: MlflowClient(tracking_uri=store.resolve().as_uri())


def test_an_interrupted_run_goes_on_in_its_mlflow_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mlflow_store
) -> None:
    """Before, the resumed training made a second MLflow run; the first stayed RUNNING forever with
    half the curve."""
    from mmrobust.train.loop import Loop

    (tmp_path / "c.yaml").write_text(CONFIG)
    config = load_config(tmp_path / "c.yaml", ["train.loggers=[mlflow]"])
    real_save, saves = Loop.save_state, []

    def save_then_die(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        real_save(self, *args, **kwargs)
        saves.append(1)
        if len(saves) == 2:  # killed after epoch 2 of 3, its state saved
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(Loop, "save_state", save_then_die)
        with pytest.raises(KeyboardInterrupt):
            run_experiment(config, tmp_path / "out", state_every=0)
    run_experiment(config, tmp_path / "out", state_every=0)
    client = mlflow_store(tmp_path / "out" / "mlruns")
    (run,) = client.search_runs([client.get_experiment_by_name("tracked").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "joint/seed-0"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [0, 1, 2]
    assert mlflow_key("test/accuracy@clean") in run.data.metrics

    # trained again from scratch (a changed setting): a new MLflow run, not the finished one
    run_experiment(load_config(tmp_path / "c.yaml", ["train.loggers=[mlflow]", "train.lr=0.002"]), tmp_path / "out")
    assert len(client.search_runs([run.info.experiment_id])) == 2

    def interrupted(overrides: list[str]) -> None:
        saves.clear()
        with monkeypatch.context() as patch:
            patch.setattr(Loop, "save_state", save_then_die)
            with pytest.raises(KeyboardInterrupt):
                run_experiment(load_config(tmp_path / "c.yaml", overrides), tmp_path / "again", state_every=0)

    # interrupted, then run with another setting: its saved state is not taken, training starts over in
    # a new MLflow run with the new params, and the interrupted one is ended as KILLED
    interrupted(["train.loggers=[mlflow]"])
    run_experiment(load_config(tmp_path / "c.yaml", ["train.loggers=[mlflow]", "train.lr=0.002"]), tmp_path / "again")
    store = mlflow_store(tmp_path / "again" / "mlruns")
    runs = store.search_runs([store.get_experiment_by_name("tracked").experiment_id])
    assert sorted(r.info.status for r in runs) == ["FINISHED", "KILLED"]
    (new,) = [r for r in runs if r.info.status == "FINISHED"]
    assert new.data.params["train.lr"] == "0.002"
    assert [m.step for m in store.get_metric_history(new.info.run_id, "train/loss")] == [0, 1, 2]

    # interrupted, its MLflow run deleted in the UI meanwhile: the resumed training opens a new one
    interrupted(["train.loggers=[mlflow]", "train.lr=0.003"])
    run_id = (tmp_path / "again" / "joint" / "seed-0" / "mlflow-run-id").read_text()
    store.delete_run(run_id)
    run_experiment(load_config(tmp_path / "c.yaml", ["train.loggers=[mlflow]", "train.lr=0.003"]), tmp_path / "again")
    (resumed,) = store.search_runs([runs[0].info.experiment_id], "params.`train.lr` = '0.003'")
    assert resumed.info.run_id != run_id and resumed.info.status == "FINISHED"
    assert [m.step for m in store.get_metric_history(resumed.info.run_id, "train/loss")] == [2]


def test_a_sweep_logs_every_combination_to_one_mlflow_store(tmp_path: Path, mlflow_store) -> None:
    """Before, each combination had its own store (OUT/<combination>/mlruns): `mlflow ui` on the
    sweep's OUT showed nothing, and runs of two combinations could not be compared in it."""
    from mmrobust.sweep import plan_sweep, read_sweep, run_sweep

    base = CONFIG.replace("name: tracked\n", "").replace("\n", "\n  ")
    base = base.replace("train: {", "train: {loggers: [mlflow], ")
    (tmp_path / "s.yaml").write_text(f"name: lrs\nbase:\n  {base}\ngrid:\n  train.lr: [0.001, 0.002]\n")
    run_sweep(plan_sweep(read_sweep(tmp_path / "s.yaml"), tmp_path / "out"), workers=2)  # both make the experiment
    assert not list((tmp_path / "out").glob("*/mlruns"))
    client = mlflow_store(tmp_path / "out" / "mlruns")
    assert [e.name for e in client.search_experiments()].count("lrs") == 1  # made once by two workers
    runs = client.search_runs([client.get_experiment_by_name("lrs").experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["train.lr=0.001/joint/seed-0", "train.lr=0.002/joint/seed-0"]
    assert sorted(r.data.params["grid.train.lr"] for r in runs) == ["0.001", "0.002"]
    assert all(r.info.status == "FINISHED" for r in runs)
