"""scripts/inference_cost.py: every finished seed-0 run under the roots is timed on its test split."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import load_script

import mmrobust
from mmrobust.config import load_config
from mmrobust.errors import MMRobustError
from mmrobust.run import run_experiment

CONFIG = """
name: cost
data: {name: synthetic, options: {n_samples: 120}}
models:
  - {method: joint, params: {fusion: sum}}
  - {method: ume}
train: {epochs: 1, batch_size: 32}
seeds: [0, 1]
"""


def test_times_each_models_seed_0_checkpoint_on_the_test_split(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "c.yaml").write_text(CONFIG)
    config = load_config(tmp_path / "c.yaml")
    run_experiment(config, tmp_path / "out")
    script = load_script("inference_cost")
    monkeypatch.setattr(script, "REPEATS", 2)
    rows = script.measure([tmp_path / "out"], None).set_index("model")
    assert sorted(rows.index) == ["joint", "ume"]  # seed 1 is not timed again
    test_size = len(mmrobust.load_dataset("synthetic", n_samples=120).split("test"))
    assert (rows.samples == test_size).all()
    assert (rows.ms_per_1000 > 0).all()


def test_a_folder_without_finished_runs_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MMRobustError, match="no finished seed-0 runs"):
        load_script("inference_cost").measure([tmp_path], None)
