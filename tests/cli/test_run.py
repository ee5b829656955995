"""`mmrobust run`: per-run manifests, paired masks across models, finished runs skipped."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_npz_arrays, write_npz

from mmrobust.config import load_config
from mmrobust.run import run_experiment, run_hash
from mmrobust.runfolder import read_manifest, write_manifest
from mmrobust.sweep import plan_sweep, read_sweep, run_sweep
from mmrobust.sweep.backends import execute

CONFIG = """
name: tiny
data: {name: synthetic, options: {n_samples: 120}}
models:
  - {method: joint, params: {fusion: sum}}
  - {method: dropout, label: drop, params: {fusion: transformer}}
train: {epochs: 2, batch_size: 16}
audit: {scenarios: ["rates[m0=0.5,m1=0.2]"]}
seeds: [0, 1]
"""


def test_run_writes_manifests_and_skips_finished_runs(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(CONFIG)
    config = load_config(tmp_path / "c.yaml")
    events: list[str] = []
    first = run_experiment(config, tmp_path / "out", events.append)
    assert events == [f"done {m} seed {s}" for m in ("joint", "drop") for s in (0, 1)]

    manifests = sorted((tmp_path / "out").glob("*/seed-*/manifest.json"))
    assert len(manifests) == 4
    records = [json.loads(p.read_text()) for p in manifests]
    for record in records:
        assert record["status"] == "done" and record["config_hash"] == config.hash()
        for key in ("git", "versions", "data_checksum", "device", "wall_time_s", "peak_memory_mb", "mask_hashes"):
            assert key in record
    # paired comparisons: every model and seed was audited under the very same masks
    assert len({json.dumps(r["mask_hashes"], sort_keys=True) for r in records}) == 1
    assert "rates[m0=0.5,m1=0.2]" in records[0]["mask_hashes"]
    for record in records:  # the training curve, so convergence can be read without the checkpoint
        assert [row["epoch"] for row in record["curve"]] == [0, 1]
        assert all(row["train_loss"] > 0 and 0 <= row["val_accuracy"] <= 1 for row in record["curve"])

    stamps = [p.stat().st_mtime_ns for p in manifests]
    events.clear()
    second = run_experiment(config, tmp_path / "out", events.append)
    assert all(e.startswith("skip") for e in events) and len(events) == 4
    assert [p.stat().st_mtime_ns for p in manifests] == stamps
    pd.testing.assert_frame_equal(
        first.table.reset_index(drop=True), second.table.reset_index(drop=True), check_dtype=False
    )
    combined = pd.read_csv(tmp_path / "out" / "results.csv")
    assert set(combined.model) == {"joint", "drop"} and set(combined.seed) == {0, 1}


def test_changed_training_settings_rerun(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(CONFIG)
    run_experiment(load_config(tmp_path / "c.yaml", ["seeds=[0]"]), tmp_path / "out")
    events: list[str] = []
    run_experiment(load_config(tmp_path / "c.yaml", ["seeds=[0]", "train.epochs=3"]), tmp_path / "out", events.append)
    assert all(e.startswith("done") for e in events) and len(events) == 2


def test_a_data_file_rewritten_in_place_reruns_its_finished_runs(tmp_path: Path) -> None:
    """The run hash covers the config (the file's name), not the data: before, `run` kept the results
    of the old data, and so did a sweep."""
    write_npz(tmp_path / "d.npz", **make_npz_arrays(n=60, seed=0))
    config = load_config(None, ["data.npz=" + str(tmp_path / "d.npz"), "models=[{method: joint}]", "seeds=[0]",
                                "train.epochs=1"])  # fmt: skip
    run_experiment(config, tmp_path / "out")
    events: list[str] = []
    run_experiment(config, tmp_path / "out", events.append)
    assert events == ["skip joint seed 0 (finished)"]  # same data: kept
    write_npz(tmp_path / "d.npz", **make_npz_arrays(n=60, seed=1))  # same name and shapes, other values
    events.clear()
    with pytest.warns(UserWarning, match=r"joint/seed-0: the data changed since this run finished \(checksum "):
        run_experiment(config, tmp_path / "out", events.append)
    assert events == ["done joint seed 0"]
    write_npz(tmp_path / "d.npz", **make_npz_arrays(n=60, seed=2))
    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"base: {{data: {{npz: {tmp_path / 'd.npz'}}}, models: [{{method: joint}}], seeds: [0], "
                     "train: {epochs: 1}}\ngrid: {train.lr: [0.001]}\n")  # fmt: skip
    plan = plan_sweep(read_sweep(sweep), tmp_path / "sweep")
    assert [execute(u).status for u in plan.units] == ["done"]
    assert [execute(u).status for u in plan_sweep(read_sweep(sweep), tmp_path / "sweep").units] == ["finished"]
    write_npz(tmp_path / "d.npz", **make_npz_arrays(n=60, seed=3))
    with pytest.warns(UserWarning, match="the data changed since this run finished"):
        assert [execute(u).status for u in plan_sweep(read_sweep(sweep), tmp_path / "sweep").units] == ["done"]


def test_a_changed_audit_reaudits_the_trained_model_without_retraining(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(CONFIG)
    run_experiment(load_config(tmp_path / "c.yaml", ["seeds=[0]"]), tmp_path / "out")
    run_dir = tmp_path / "out" / "joint" / "seed-0"
    before = json.loads((run_dir / "manifest.json").read_text())
    checkpoint = (run_dir / "checkpoint.pt").read_bytes()

    wider = ["seeds=[0]", 'audit.scenarios=["rates[m0=0.5,m1=0.2]","missing[m1@0.5]"]']
    events: list[str] = []
    result = run_experiment(load_config(tmp_path / "c.yaml", wider), tmp_path / "out", events.append)
    after = json.loads((run_dir / "manifest.json").read_text())
    assert (run_dir / "checkpoint.pt").read_bytes() == checkpoint  # the same trained weights, not retrained
    assert after["run_hash"] != before["run_hash"] and "missing[m1@0.5]" in after["mask_hashes"]
    assert after["train_time_s"] == before["train_time_s"] and after["best_epoch"] == before["best_epoch"]
    assert after["curve"] == before["curve"]
    assert before["train_threads"] >= 1 and after["train_threads"] == before["train_threads"]  # the training's
    assert after["trained_git"] == before["git"]
    assert "missing[m1@0.5]" in set(result.table.scenario)
    assert events == ["done joint seed 0", "done drop seed 0"]
    # the old scenarios' numbers are unchanged: same weights, same masks
    old = pd.DataFrame(before["mask_hashes"].items())
    assert all(after["mask_hashes"][name] == mask for name, mask in old.itertuples(index=False))

    events.clear()  # and the re-audited run is now finished under the new config
    run_experiment(load_config(tmp_path / "c.yaml", wider), tmp_path / "out", events.append)
    assert all(e.startswith("skip") for e in events)


def _write_basicmotions(folder: Path, seed: int) -> None:
    """A small dataset in the UEA BasicMotions layout (6 channels x 100 steps, 4 classes), at `folder`."""
    rng = np.random.default_rng(seed)
    (folder / "basic_motions").mkdir(parents=True)
    for part in ("TRAIN", "TEST"):
        lines = ["@problemName BasicMotions", "@data"]
        for i in range(16):
            channels = [",".join(f"{v:.4f}" for v in rng.normal(i % 4, 1.0, 100)) for _ in range(6)]
            lines.append(":".join([*channels, ("Standing", "Running", "Walking", "Badminton")[i % 4]]))
        (folder / "basic_motions" / f"BasicMotions_{part}.ts").write_text("\n".join(lines) + "\n")


def test_where_the_data_lie_is_not_part_of_a_runs_identity(tmp_path: Path) -> None:
    """Before, the run hash covered `data.data_dir` as spelled: a study re-run with the folder spelled
    otherwise (`../data`, an absolute path, a moved copy) retrained every run. Now the data's checksum
    decides, in `run` and in a sweep's planner alike."""
    _write_basicmotions(tmp_path / "data", seed=0)
    shutil.copytree(tmp_path / "data", tmp_path / "copy")
    _write_basicmotions(tmp_path / "other", seed=1)
    (tmp_path / "sub").mkdir()

    def config(data_dir: Path | str) -> list[str]:
        return [f"data.data_dir={data_dir}", "data.name=basicmotions", "models=[{method: joint}]", "seeds=[0]",
                "train.epochs=1"]  # fmt: skip

    first = load_config(None, config(tmp_path / "data"))
    run_experiment(first, tmp_path / "out")
    run_dir = tmp_path / "out" / "joint" / "seed-0"
    record = read_manifest(run_dir)
    write_manifest(run_dir, {**record, "run_hash": "made-by-another-formula"})  # e.g. a future change of it
    events: list[str] = []
    run_experiment(first, tmp_path / "out", events.append)
    assert events == ["done joint seed 0"]  # such a run is not taken as finished
    legacy = run_hash(first, first.models[0], 0, placed=True)  # as written before: the hash covered the folder
    write_manifest(run_dir, {**read_manifest(run_dir), "run_hash": legacy})
    events.clear()
    for spelling in (tmp_path / "sub" / ".." / "data", tmp_path / "copy"):
        run_experiment(load_config(None, config(spelling)), tmp_path / "out", events.append)
    assert events == ["skip joint seed 0 (finished)"] * 2
    with pytest.warns(UserWarning, match=r"the data changed since this run finished"):
        run_experiment(load_config(None, config(tmp_path / "other")), tmp_path / "out", events.append)
    assert events[-1] == "done joint seed 0"

    sweep = tmp_path / "s.yaml"
    sweep.write_text("base: {data: {name: basicmotions}, models: [{method: joint}], seeds: [0], train: {epochs: 1}}\n"
                     "grid: {train.lr: [0.001]}\n")  # fmt: skip
    statuses = []
    for folder in ("data", "copy", "other", "other"):
        plan = plan_sweep(read_sweep(sweep, [f"data.data_dir={tmp_path / folder}"]), tmp_path / "sweep")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = run_sweep(plan, workers=1)
        statuses.append((result.progress.finished_before, [str(w.message) for w in caught]))
    assert [s[0] for s in statuses] == [0, 1, 0, 1]  # the copy holds the same data; `other` does not
    assert any("the data changed since this run finished" in m for m in statuses[2][1])


def test_an_npz_moved_or_copied_keeps_its_finished_runs(tmp_path: Path) -> None:
    """Before, the npz path was part of the run hash: the same file read from another folder (a
    config run from elsewhere, a copy) retrained every run."""
    write_npz(tmp_path / "d.npz", **make_npz_arrays(n=60, seed=0))
    shutil.copy(tmp_path / "d.npz", tmp_path / "copy.npz")
    common = ["models=[{method: joint}]", "seeds=[0]", "train.epochs=1"]
    run_experiment(load_config(None, [f"data.npz={tmp_path / 'd.npz'}", *common]), tmp_path / "out")
    events: list[str] = []
    run_experiment(load_config(None, [f"data.npz={tmp_path / 'copy.npz'}", *common]), tmp_path / "out", events.append)
    assert events == ["skip joint seed 0 (finished)"]
