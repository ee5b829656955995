"""scripts/crossl_collapse.py --runs: the embedding spread of trained fixed CroSSL runs, read back
from their run folders as `mmrobust run` wrote them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import load_script

from mmrobust.config import load_config
from mmrobust.errors import MMRobustError
from mmrobust.run import run_experiment

CONFIG = """
name: spread
data: {name: synthetic, options: {n_samples: 120, kinds: [conv1d, conv1d, conv1d], seed: 3}}
models:
  - {method: crossl, label: fixed, params: {mode: fixed, pretrain_epochs: 2, embed_dim: 8, proj_dim: 16}}
  - {method: crossl, label: tuned, params: {mode: finetune, pretrain_epochs: 2, freeze_epochs: 1, embed_dim: 8,
                                            proj_dim: 16}}
train: {epochs: 2, batch_size: 32}
seeds: [0]
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("spread")
    (root / "c.yaml").write_text(CONFIG)
    run_experiment(load_config(root / "c.yaml"), root / "out")
    return root / "out"


def test_measures_each_fixed_run_once_on_its_training_split(runs: Path, tmp_path: Path) -> None:
    script, out = load_script("crossl_collapse"), tmp_path / "spread.jsonl"
    script.measure_runs([runs / "fixed" / "seed-0"], out)
    script.measure_runs([runs / "fixed" / "seed-0"], out)  # already measured: skipped
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 1
    assert rows[0]["model"] == "fixed" and rows[0]["seed"] == 0 and rows[0]["cov_coeff"] == 100.0
    assert 0 < rows[0]["std"] < 10


def test_refuses_a_run_whose_encoders_were_fine_tuned(runs: Path, tmp_path: Path) -> None:
    with pytest.raises(MMRobustError, match="not a fixed CroSSL run"):
        load_script("crossl_collapse").measure_runs([runs / "tuned" / "seed-0"], tmp_path / "spread.jsonl")


def test_a_list_option_that_is_not_numbers_is_a_usage_error(monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    monkeypatch.setattr("sys.argv", ["crossl_collapse.py", "--cov", "1,x"])
    with pytest.raises(SystemExit) as exit_:
        load_script("crossl_collapse").main()
    assert exit_.value.code == 2 and "argument --cov: invalid floats value: '1,x'" in capsys.readouterr().err
