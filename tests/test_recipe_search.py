"""scripts/recipe_search.py end to end on a small synthetic search: the shared parameters go to the
methods that take them (the `features` floor has no fusion), a model's own ones are checked."""

from __future__ import annotations

import json
import sys

import pytest
from conftest import load_script

from mmrobust.errors import MMRobustError

SEARCH = """
dataset: synthetic
fold_option: seed
results: results/s.jsonl
folds: [0, 1]
seeds: [0]
models:
  joint: {}
  floor: {method: features, trees: 5, copies: 1}
base:
  data: {n_samples: 200}
  train: {epochs: 2, batch_size: 32}
  params: {method: joint, fusion: sum, dim: 8, label_smoothing: 0.1}
candidates:
  only: {}
"""


def test_a_search_runs_a_reference_method_with_the_shared_params_it_takes(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "search.yaml").write_text(SEARCH)
    monkeypatch.setattr(sys, "argv", ["recipe_search.py", str(tmp_path / "search.yaml")])
    script = load_script("recipe_search")
    script.main()
    rows = [json.loads(line) for line in (tmp_path / "results" / "s.jsonl.0-of-1").read_text().splitlines()]
    assert sorted((r["model"], r["fold"]) for r in rows) == [("floor", 0), ("floor", 1), ("joint", 0), ("joint", 1)]
    assert all(0.0 <= r["score"] <= 1.0 and r["val_subsets"] for r in rows)
    summary = script.summary(script.read_results(tmp_path / "results" / "s.jsonl"), ["only"])
    assert summary.splitlines()[0] == "| candidate | joint | floor |" and "(2)" in summary


def test_a_models_own_unknown_parameter_is_an_error(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "search.yaml").write_text(SEARCH.replace("trees: 5", "fusion: sum"))
    monkeypatch.setattr(sys, "argv", ["recipe_search.py", str(tmp_path / "search.yaml")])
    with pytest.raises(MMRobustError, match="unknown option for method 'features' 'fusion'"):
        load_script("recipe_search").main()


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        (["--candidates", "onyl"], "unknown candidate 'onyl'. Did you mean 'only'?"),
        (["--shard", "2/2"], "needs 0 <= i < n"),
        (["--shard", "half"], "must be i/n"),
    ],
)
def test_a_misspelt_candidate_or_shard_is_an_error_before_any_run(tmp_path, monkeypatch, flag, message) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "search.yaml").write_text(SEARCH)
    monkeypatch.setattr(sys, "argv", ["recipe_search.py", str(tmp_path / "search.yaml"), *flag])
    with pytest.raises(MMRobustError, match=message.replace("?", r"\?").replace("(", r"\(")):
        load_script("recipe_search").main()
    assert not (tmp_path / "results").exists()
