"""Per-sample paired comparisons: predictions kept by the audit and written by `mmrobust run`,
differences that equal the metric differences, intervals that see real differences and only those."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import mmrobust
from mmrobust.audit.compare import load_runs
from mmrobust.audit.compare_report import write_comparison
from mmrobust.audit.paired import (
    PREDICTIONS,
    Predictions,
    bootstrap_means,
    read_predictions,
    sample_differences,
    seed_and_sample_interval,
    verdict,
)
from mmrobust.config import config_from_dict
from mmrobust.run import run_experiment


def preds(target: list[int], **scenarios: list[int]) -> Predictions:
    return Predictions(torch.tensor(target), {k: torch.tensor(v) for k, v in scenarios.items()})


def same(*scenarios: str, models: tuple[str, ...] = ("a", "b")) -> dict[tuple[str, str], frozenset]:
    return {(s, m): frozenset({"h"}) for s in scenarios for m in models}


def test_difference_is_the_accuracy_difference_averaged_over_seeds_and_a_real_gap_is_found() -> None:
    rng = np.random.default_rng(0)
    target = rng.integers(0, 3, 400).tolist()
    wrong = [(t + 1) % 3 for t in target]
    runs = {
        ("a", 0): preds(target, clean=target),  # always right
        ("a", 1): preds(
            target, clean=[w if i % 10 == 0 else t for i, (t, w) in enumerate(zip(target, wrong, strict=True))]
        ),
        ("b", 0): preds(
            target, clean=[w if i % 2 else t for i, (t, w) in enumerate(zip(target, wrong, strict=True))]
        ),  # half
        ("b", 1): preds(target, clean=[w if i % 2 else t for i, (t, w) in enumerate(zip(target, wrong, strict=True))]),
    }
    d = sample_differences(runs, same("clean"), "accuracy", n_boot=500)
    (row,) = d.itertuples()
    assert (row.model_a, row.model_b, row.seeds, row.samples) == ("a", "b", 2, 400)
    assert row.mean == pytest.approx(((1.0 - 0.5) + (0.9 - 0.5)) / 2)
    assert row.low > 0.3 and verdict(row.low, row.high, "accuracy") == 1


def test_identical_models_are_never_called_different_and_mae_is_lower_is_better() -> None:
    target = torch.linspace(-3, 3, 200)
    same_run = Predictions(target, {"clean": target + 0.5})
    d = sample_differences({("a", 0): same_run, ("b", 0): same_run}, same("clean"), "mae", n_boot=200)
    assert d["mean"].item() == 0 and d["low"].item() == 0 and d["high"].item() == 0
    worse = Predictions(target, {"clean": target + 1.0})
    d = sample_differences({("a", 0): same_run, ("b", 0): worse}, same("clean"), "mae", n_boot=200)
    assert d["mean"].item() == pytest.approx(-0.5) and verdict(d["low"].item(), d["high"].item(), "mae") == 1


def test_scenarios_that_score_fewer_samples_are_paired_on_those_they_score() -> None:
    """On data with missing modalities a subset leaves some samples with nothing (not scored): its
    per-sample differences are shorter than the clean scenario's. Before, `mmrobust report` crashed
    stacking them (`all input arrays must have the same shape`)."""
    target = [0, 1, 0, 1, 0, 1, 0, 1]
    lacks_b = torch.tensor([True, False, True, False, False, False, False, False])  # two of class 0
    a = Predictions(torch.tensor(target), {"clean": torch.tensor(target), "subset[b]": torch.tensor(target)},
                    {"subset[b]": lacks_b})  # fmt: skip
    b = Predictions(torch.tensor(target), {"clean": torch.tensor([1] * 8), "subset[b]": torch.tensor([1] * 8)},
                    {"subset[b]": lacks_b})  # fmt: skip
    d = sample_differences({("a", 0): a, ("b", 0): b}, same("clean", "subset[b]"), "accuracy", n_boot=200)
    rows = d.set_index("scenario")
    assert rows.loc["clean", "samples"] == 8 and rows.loc["subset[b]", "samples"] == 6
    assert rows.loc["clean", "mean"] == pytest.approx(0.5) and rows.loc["subset[b]", "mean"] == pytest.approx(1 - 4 / 6)


def test_scenarios_audited_under_other_masks_are_not_paired() -> None:
    runs = {("a", 0): preds([0, 1], clean=[0, 1], x=[0, 0]), ("b", 0): preds([0, 1], clean=[1, 1], x=[0, 1])}
    masks = {**same("clean"), ("x", "a"): frozenset({"h1"}), ("x", "b"): frozenset({"h2"})}
    assert list(sample_differences(runs, masks, "accuracy", n_boot=50).scenario) == ["clean"]
    with pytest.raises(mmrobust.MMRobustError, match="per-sample metric"):
        sample_differences(runs, masks, "macro_f1")


def test_bootstrap_in_chunks_is_seeded_and_covers_the_mean() -> None:
    values = np.random.default_rng(1).normal(0.2, 1.0, size=(3, 500))
    a, b = (
        bootstrap_means(values, n_boot=700, level=0.9, seed=3),
        bootstrap_means(values, n_boot=700, level=0.9, seed=3),
    )
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    mean, low, high = a
    assert (low < mean).all() and (mean < high).all() and ((high - low) < 0.25).all()


def test_a_bound_that_is_exactly_zero_stays_zero_and_never_excludes_it() -> None:
    # Rare per-sample disagreements averaged over 5 seeds (multiples of 0.2): many resamples cancel
    # exactly (0.2 + 0.4 - 0.6), which float sums leave as +-1e-19, enough to flip a verdict.
    diffs = np.random.default_rng(0).choice([-1, 0, 1], p=[0.015, 0.97, 0.015], size=(60, 5, 460))
    pooled = np.concatenate(bootstrap_means(diffs.mean(axis=1), n_boot=2_000, level=0.95, seed=0))
    resampled = np.array([seed_and_sample_interval(d, n_boot=500) for d in diffs[:20]]).ravel()
    for values in (pooled, resampled):
        assert (values == 0).any() and not ((values != 0) & (np.abs(values) < 1e-12)).any()


def test_seed_resampling_widens_the_interval_only_when_the_seeds_disagree() -> None:
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.3, (5, 600))
    agree = 0.05 + noise  # every training seed sees the same gap
    disagree = np.array([0.3, -0.2, 0.25, -0.15, 0.05])[:, None] + noise  # the gap is the seeds' luck
    for diffs in (agree, disagree):
        pooled = bootstrap_means(diffs.mean(axis=0)[None], n_boot=2_000, level=0.95, seed=0)
        mean, low, high = seed_and_sample_interval(diffs, n_boot=2_000, seed=0)
        assert mean == pytest.approx(float(pooled[0][0]))
        assert seed_and_sample_interval(diffs, n_boot=2_000, seed=0) == (mean, low, high)  # seeded
        if diffs is agree:  # both exclude 0, and seed resampling costs little
            assert pooled[1][0] > 0 and low > 0 and high - low < 1.5 * (pooled[2][0] - pooled[1][0])
        else:  # the pooled interval excludes 0 though two seeds of five say the opposite; this one does not
            assert pooled[1][0] > 0 and low < 0 < high
    one_seed = seed_and_sample_interval(agree[:1], n_boot=2_000, seed=0)  # one seed: the sample bootstrap
    alone = bootstrap_means(agree[:1], n_boot=2_000, level=0.95, seed=1)
    assert one_seed[1] == pytest.approx(float(alone[1][0]), abs=0.01)
    assert one_seed[2] == pytest.approx(float(alone[2][0]), abs=0.01)


def test_sample_differences_resampling_seeds_keeps_the_mean_and_widens_the_interval() -> None:
    rng = np.random.default_rng(1)
    target = rng.integers(0, 3, 300).tolist()
    wrong = [(t + 1) % 3 for t in target]

    def run(accuracy: float) -> Predictions:
        return preds(target, clean=[t if rng.random() < accuracy else w for t, w in zip(target, wrong, strict=True)])

    runs = {("a", s): run(acc) for s, acc in enumerate([0.9, 0.6, 0.9, 0.6])}  # a's seeds disagree
    runs |= {("b", s): run(0.7) for s in range(4)}
    pooled = sample_differences(runs, same("clean"), "accuracy", n_boot=1_000)
    seeds = sample_differences(runs, same("clean"), "accuracy", n_boot=1_000, resample_seeds=True)
    assert seeds["mean"].iloc[0] == pytest.approx(pooled["mean"].iloc[0])
    assert seeds.high.iloc[0] - seeds.low.iloc[0] > 1.5 * (pooled.high.iloc[0] - pooled.low.iloc[0])


@pytest.mark.parametrize("fast", [True, False])
def test_audit_keeps_predictions_that_reproduce_its_metrics(kinds_data, fit_small, fast: bool) -> None:
    model = fit_small(kinds_data, "dropout", "transformer")
    result = mmrobust.audit(model, kinds_data, fast=fast, keep_predictions=True)
    assert result.predictions is not None
    table = result.table[result.table.metric == "accuracy"].set_index("scenario").value
    for scenario in result.predictions.scenarios:
        assert result.predictions.scores(scenario, "accuracy").mean() == pytest.approx(table[scenario])
    excluded = {s["name"]: s["excluded"] for s in result.scenarios if s["excluded"]}
    assert excluded and {k: int(v.sum()) for k, v in result.predictions.excluded.items()} == excluded  # kinds_data
    assert mmrobust.audit(model, kinds_data).predictions is None  # opt-in: memory grows with the test set


CONFIG = {
    "name": "paired",
    "data": {"name": "synthetic", "options": {"n_samples": 300}},
    "models": [{"method": "joint", "params": {"fusion": "sum"}}, {"method": "dropout", "params": {"fusion": "sum"}}],
    "train": {"epochs": 2},
    "seeds": [0, 1],
}


def test_run_writes_predictions_and_the_report_pairs_per_sample(tmp_path: Path) -> None:
    run_experiment(config_from_dict(CONFIG), tmp_path / "runs")
    saved = read_predictions(tmp_path / "runs" / "joint" / "seed-0" / PREDICTIONS)
    assert len(saved.target) == 60 and "clean" in saved.scenarios  # the test split of 300 samples
    runs = load_runs([tmp_path / "runs"])
    write_comparison(runs, tmp_path / "report.md", "md")
    assert "paired per test sample" in (tmp_path / "report.md").read_text()
    write_comparison(runs, tmp_path / "seeds.md", "md", resample_seeds=True)
    assert "resample" in (seeds_text := (tmp_path / "seeds.md").read_text()) and "the training seeds and" in seeds_text
    old = tmp_path / "old"  # runs of an earlier mmrobust have no predictions: the seed bootstrap remains
    shutil.copytree(tmp_path / "runs", old)
    for path in old.rglob(PREDICTIONS):
        path.unlink()
    write_comparison(load_runs([old]), tmp_path / "old.md", "md")
    assert "resamples **seeds**" in (tmp_path / "old.md").read_text()


def test_a_run_without_predictions_downgrades_only_its_own_pairs_and_one_seed_gives_no_verdict(tmp_path: Path) -> None:
    """One deleted predictions.pt sent every pair to the seed bootstrap, blamed 'runs written by mmrobust
    before they were recorded', and with one seed declared winners from zero-width intervals."""
    models = [{"method": "joint", "label": label, "params": {"fusion": fusion}} for label, fusion in
              (("joint-sum", "sum"), ("joint-concat", "concat"), ("joint-late", "late"))]  # fmt: skip
    run_experiment(config_from_dict({**CONFIG, "models": models, "seeds": [0]}), tmp_path / "runs")
    (tmp_path / "runs" / "joint-late" / "seed-0" / PREDICTIONS).unlink()
    runs = load_runs([tmp_path / "runs"])
    write_comparison(runs, tmp_path / "report.md", "md")
    n = runs.table.scenario.nunique()
    text = (tmp_path / "report.md").read_text()
    per_sample, by_seed = text.split("### Paired differences between models")[1].split("For every other pair")
    assert "paired per test sample" in per_sample and f"| joint-sum − joint-concat | {n} |" in per_sample
    assert "joint-late" not in per_sample
    assert "Runs without per-sample predictions (predictions.pt): joint-late seed 0 (" in by_seed
    assert "before they were recorded" not in text
    assert "With one seed a pair has no interval and no verdict." in by_seed
    for pair in ("joint-sum − joint-late", "joint-concat − joint-late"):  # no verdict, all untestable
        assert f"| {pair} | {n} | 0 | 0 | 0 | {n} |" in by_seed
    assert by_seed.count("none (1 seed)") == 2 * n and "[+" not in by_seed and "[-" not in by_seed
