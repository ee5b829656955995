"""`mmrobust report`: the comparison statistics, the report files, bad inputs and a headless browser."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli

from mmrobust import MMRobustError
from mmrobust.audit.compare import (
    bootstrap_ci,
    effective_robustness,
    load_runs,
    paired_differences,
    relative_robustness,
    severity_families,
)
from mmrobust.audit.shapley import modality_contributions, shapley_values
from mmrobust.cli import main

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "runs" / "report-screenshot.png"

# configs/demo.yaml made cheap: two models, two seeds, one epoch, several missing / noise severities
DEMO_OVERRIDES = [
    "train.epochs=1",
    "seeds=[0,1]",
    "models=[{method: joint, label: joint-sum, params: {fusion: sum}},"
    " {method: dropout, label: dropout-sum, params: {fusion: sum}}]",
    'audit.scenarios=["missing[accelerometer@0.1]","missing[accelerometer@0.6]","missing[gyroscope@0.6]",'
    '"noise[gyroscope,sigma=2,p=0.3]"]',
]
REGRESSION_CONFIG = """
name: reg
data: {name: synthetic, options: {n_samples: 120, task: regression}}
models:
  - {method: joint, label: reg-joint, params: {fusion: sum}}
  - {method: dropout, label: reg-drop, params: {fusion: sum}}
train: {epochs: 1, batch_size: 32}
seeds: [0, 1]
"""


def one_line_error(code: int, err: str, expected: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("error:") and expected in lines[0], lines[0]


# --- Shapley values ----------------------------------------------------------------------------
def game(players: list[str], worth) -> dict[frozenset[str], float]:
    coalitions = [frozenset(p for i, p in enumerate(players) if mask >> i & 1) for mask in range(2 ** len(players))]
    return {c: worth(c) for c in coalitions}


def test_shapley_of_an_additive_game_is_each_players_own_contribution() -> None:
    weights = {"a": 0.3, "b": -0.1, "c": 0.55, "d": 0.0}
    phi = shapley_values(game(list(weights), lambda s: 0.25 + sum(weights[p] for p in s)), list(weights))
    assert phi == pytest.approx(weights)


def test_shapley_hand_computed_two_players() -> None:
    # v(∅)=0, v(a)=1, v(b)=2, v(ab)=5: phi_a = (1 - 0 + 5 - 2) / 2 = 2, phi_b = (2 - 0 + 5 - 1) / 2 = 3
    v = {frozenset(): 0.0, frozenset("a"): 1.0, frozenset("b"): 2.0, frozenset("ab"): 5.0}
    assert shapley_values(v, ["a", "b"]) == pytest.approx({"a": 2.0, "b": 3.0})


def test_shapley_efficiency_symmetry_and_dummy_on_a_random_game() -> None:
    rng = np.random.default_rng(0)
    players = ["m0", "m1", "m2", "m3", "m4"]
    base = {c: float(rng.normal()) for c in game(players[:4], lambda s: 0.0)}  # m4 is a dummy
    v = {c: base[c - {"m4"}] for c in game(players, lambda s: 0.0)}
    phi = shapley_values(v, players)
    assert sum(phi.values()) == pytest.approx(v[frozenset(players)] - v[frozenset()])
    assert phi["m4"] == pytest.approx(0.0)
    sym = game(["x", "y", "z"], lambda s: len(s) ** 2 + ("z" in s))  # x and y interchangeable
    phi = shapley_values(sym, ["x", "y", "z"])
    assert phi["x"] == pytest.approx(phi["y"])


def test_shapley_names_a_missing_coalition() -> None:
    with pytest.raises(ValueError, match="coalition"):
        shapley_values({frozenset(): 0.0, frozenset("a"): 1.0}, ["a", "b"])


# --- bootstrap ---------------------------------------------------------------------------------
def test_bootstrap_ci_covers_the_true_mean_about_as_often_as_promised() -> None:
    rng = np.random.default_rng(1)
    samples = rng.normal(loc=2.0, scale=1.5, size=(600, 40))  # 600 independent data sets at once
    mean, low, high = bootstrap_ci(samples, n_boot=2000, level=0.95, seed=0)
    assert mean.shape == low.shape == high.shape == (600,)
    assert np.all(low <= mean) and np.all(mean <= high)
    coverage = float(np.mean((low <= 2.0) & (high >= 2.0)))
    assert 0.88 <= coverage <= 0.99  # percentile bootstrap, n = 40: slightly under 0.95


def test_bootstrap_ci_is_reproducible_with_a_seed() -> None:
    values = np.random.default_rng(2).normal(size=25)
    first, again = bootstrap_ci(values, seed=7), bootstrap_ci(values, seed=7)
    assert [float(x) for x in first] == [float(x) for x in again]
    assert bootstrap_ci(values, seed=8)[1] != first[1]
    assert bootstrap_ci([0.1, 0.1, 0.1], seed=0) == pytest.approx((0.1, 0.1, 0.1))


# --- robustness over severities ----------------------------------------------------------------
def test_models_audited_at_different_severities_are_compared_over_the_shared_ones() -> None:
    """Before: the union grid had a hole in every row, so every area was dropped (a blank table)."""
    from mmrobust.audit.compare import robustness_summary, severity_families

    rows = []
    for model, levels in {"a": (0.1, 0.3, 0.6), "b": (0.1, 0.6)}.items():
        for seed in (0, 1):
            rows.append({"model": model, "seed": seed, "scenario": "clean", "metric": "accuracy", "value": 1.0})
            rows += [{"model": model, "seed": seed, "scenario": f"missing[m0@{p}]", "metric": "accuracy",
                      "value": 1.0 - p} for p in levels]  # fmt: skip
    table = pd.DataFrame(rows)
    summary = robustness_summary(table, "accuracy", severity_families(set(table.scenario)), reference="a")
    assert list(summary.model) == ["a", "b"] and list(summary.seeds) == [2, 2]
    expected = ((1.0 + 0.9) / 2 * 0.1 + (0.9 + 0.4) / 2 * 0.5) / 0.6  # over 0, 0.1, 0.6 for both
    assert summary.rr_mean.tolist() == pytest.approx([expected, expected]) and summary.er.tolist() == [0.0, 0.0]


def test_relative_and_effective_robustness_on_hand_computable_curves() -> None:
    # y = 1 - x on [0, 1]: area 0.5 over a range of 1; on [0, 0.5]: area 0.375 over 0.5 = 0.75
    assert relative_robustness([0, 0.5, 1], [1, 0.5, 0]) == pytest.approx(0.5)
    assert relative_robustness([0.5, 0], [0.5, 1]) == pytest.approx(0.75)  # unsorted severities are sorted
    curves = np.array([[0.9, 0.9, 0.9], [0.9, 0.6, 0.3]])
    assert relative_robustness([0, 0.3, 0.6], curves) == pytest.approx([0.9, 0.6])
    assert effective_robustness([0, 0.3, 0.6], curves[1], curves[0]) == pytest.approx(-0.3)
    with pytest.raises(ValueError):
        relative_robustness([0.3], [0.5])


def test_severity_families_need_two_severities_and_start_at_clean() -> None:
    names = ["clean", "subset[a]", "missing[a@0.3]", "missing[a@0.6]", "missing[b@0.3]", "noise[b,sigma=1,p=0.3]"]
    families = severity_families(names)
    assert [f.name for f in families] == ["missing[a@·]"]
    assert families[0].levels == {"clean": 0.0, "missing[a@0.3]": 0.3, "missing[a@0.6]": 0.6}
    noise = severity_families(["clean", "noise[b,sigma=0.5,p=0.3]", "noise[b,sigma=2,p=0.3]"])
    assert [(f.name, f.axis) for f in noise] == [("noise[b,sigma=·,p=0.3]", "noise σ")]


# --- paired differences and contributions on hand-made tables ------------------------------------
def tidy(rows: list[tuple[str, int, str, float]], metric: str = "accuracy", mask: str = "h") -> pd.DataFrame:
    kinds = {"clean": "clean"}
    columns = ["model", "seed", "scenario", "value"]
    table = pd.DataFrame(rows, columns=columns)
    kind = table.scenario.map(lambda sc: kinds.get(sc, "subset"))
    return table.assign(dataset="d", kind=kind, metric=metric, mask_hash=mask)


def test_paired_differences_of_a_constant_shift() -> None:
    rows = [(m, s, "clean", 0.5 + 0.01 * s + (0.1 if m == "a" else 0.0)) for m in "ab" for s in range(4)]
    diffs = paired_differences(tidy(rows), "accuracy", n_boot=500)
    r = diffs.iloc[0]
    assert (r.model_a, r.model_b, r.seeds, bool(r.paired)) == ("a", "b", 4, True)
    assert (r["mean"], r.low, r.high) == pytest.approx((0.1, 0.1, 0.1))
    other_masks = pd.concat([tidy(rows[:4]), tidy(rows[4:], mask="other")])
    assert not paired_differences(other_masks, "accuracy", n_boot=100).paired.iloc[0]


def test_one_shared_seed_gives_no_interval_and_skipped_pairs_are_left_out() -> None:
    """A bootstrap over one seed has zero width ([+0.100, +0.100]) and would declare a winner."""
    rows = [(m, 0, "clean", 0.5 + (0.1 if m == "a" else 0.0)) for m in "abc"]
    diffs = paired_differences(tidy(rows), "accuracy", n_boot=100, skip=[frozenset("bc")])
    assert list(zip(diffs.model_a, diffs.model_b, strict=True)) == [("a", "b"), ("a", "c")]
    assert diffs["mean"].tolist() == pytest.approx([0.1, 0.1]) and diffs.low.isna().all() and diffs.high.isna().all()


def test_modality_contributions_are_signed_so_that_helping_is_positive_for_mae() -> None:
    # MAE: without anything 1.0; `a` alone cuts it to 0.6, `b` alone to 0.9, both to 0.5
    rows = [("m", 0, "clean", 0.5), ("m", 0, "subset[a]", 0.6), ("m", 0, "subset[b]", 0.9)]
    contrib = modality_contributions(tidy(rows, "mae"), "mae", empty=1.0).set_index("modality")
    # phi_a = (0.4 + 0.4) / 2 = 0.4, phi_b = (0.1 + 0.1) / 2 = 0.1; they sum to 1.0 - 0.5
    assert contrib["mean"].to_dict() == pytest.approx({"a": 0.4, "b": 0.1})


# --- loading run folders -----------------------------------------------------------------------
def fake_run(root: Path, label: str = "m", seed: int = 0, **manifest) -> Path:
    """A run folder with a two-scenario results.json, as `mmrobust run` lays it out."""
    run = root / label / f"seed-{seed}"
    run.mkdir(parents=True)
    base = {"dataset": "d", "model": label, "method": "joint", "fusion": "sum", "seed": seed, "metric": "accuracy"}
    rows = [
        {**base, "scenario": sc, "kind": kind, "value": v, "delta": 0.0}
        for sc, kind, v in [("clean", "clean", 0.9), ("subset[a]", "subset", 0.7)]
    ]
    scen = [{"name": r["scenario"], "kind": r["kind"], "mask_hash": "h"} for r in rows]
    results = {"task": "classification", "scenarios": scen, "models": [], "results": rows}
    (run / "results.json").write_text(json.dumps(results))
    (run / "manifest.json").write_text(json.dumps({"status": "done", "versions": {"mmrobust": "0.1.0"}, **manifest}))
    return run


def test_load_runs_refuses_an_incompatible_format_or_version(tmp_path: Path) -> None:
    fake_run(tmp_path / "new", format="mmrobust-run/9")
    with pytest.raises(MMRobustError, match="run format 'mmrobust-run/9' is not supported"):
        load_runs([tmp_path / "new"])
    fake_run(tmp_path / "old", versions={"mmrobust": "7.0.0"})
    with pytest.raises(MMRobustError, match=r"written by mmrobust 7\.0\.0"):
        load_runs([tmp_path / "old"])


def test_load_runs_refuses_one_label_from_two_experiments_and_skips_unfinished(tmp_path: Path) -> None:
    fake_run(tmp_path / "x")
    fake_run(tmp_path / "y")
    with pytest.raises(MMRobustError, match="comes from two runs"):
        load_runs([tmp_path / "x", tmp_path / "y"])
    fake_run(tmp_path / "x", label="late", status="running")
    runs = load_runs([tmp_path / "x", tmp_path / "x" / "m"])  # a run named twice counts once
    assert runs.models == ["m"] and len(runs.run_dirs) == 1 and len(runs.skipped) == 1


def test_load_runs_compares_what_trained_each_seed_of_a_label(tmp_path: Path) -> None:
    """Seeds of one label must have trained alike: a model parameter set in one run only (the other took
    its default) counts as a difference; a config field an older manifest lacks, or the threads, do not."""
    config = {"data": {"name": "d", "options": {}}, "train": {"epochs": 2, "threads": 4}}
    fake_run(tmp_path, seed=0, config=config, model={"method": "joint", "label": "m", "params": {}})
    newer = {**config, "train": {"epochs": 2, "threads": 1, "new_field": 0}}
    fake_run(tmp_path, seed=1, config=newer, model={"method": "joint", "label": "m", "params": {}})
    assert sorted(load_runs([tmp_path]).table.seed.unique()) == [0, 1]
    fake_run(tmp_path, seed=2, config=config, model={"method": "joint", "label": "m", "params": {"dim": 8}})
    with pytest.raises(MMRobustError, match=r"seed-2 were trained differently \(model\.params\.dim=unset and 8\)"):
        load_runs([tmp_path])


def test_runs_that_read_a_dataset_with_other_data_settings_are_two_datasets(tmp_path: Path) -> None:
    """Before, `report` of one label on two feature sets of a dataset (e.g. runs/mosi and
    runs/mosi_released_video) aborted: `comes from two runs`. The data's folder is not a difference."""
    model = {"method": "joint", "label": "m", "params": {}}
    first = {"data": {"name": "d", "data_dir": "/a", "options": {"modalities": ["a", "b"]}}, "train": {}}
    fake_run(tmp_path / "x", config=first, model=model)
    fake_run(tmp_path / "x", seed=1, config={**first, "data": {**first["data"], "data_dir": "../a"}}, model=model)
    fake_run(tmp_path / "y", config={"data": {"name": "d", "options": {}}, "train": {}}, model=model)
    runs = load_runs([tmp_path / "x", tmp_path / "y"])
    assert runs.table.groupby("dataset").seed.unique().map(sorted).to_dict() == {
        "d (modalities=a+b)": [0, 1], "d (modalities=default)": [0]}  # fmt: skip
    assert set(runs.tasks) == {"d (modalities=a+b)", "d (modalities=default)"}
    shutil.rmtree(tmp_path / "y")  # other labels on other settings: compared in one section, as before
    fake_run(tmp_path / "y", label="other", config={"data": {"name": "d", "options": {}}, "train": {}}, model=model)
    assert set(load_runs([tmp_path / "x", tmp_path / "y"]).table.dataset) == {"d"}


def test_seeds_of_one_label_on_other_data_are_not_averaged(tmp_path: Path) -> None:
    """The data's folder left a run's settings, their content (the manifest's checksum) did not: seeds
    made on data rewritten between them are two datasets, named by the checksum's start."""
    config, model = {"data": {"name": "d", "options": {}}, "train": {}}, {"method": "joint", "label": "m"}
    fake_run(tmp_path, seed=0, config=config, model=model, data_checksum="aaaa1111bbbb")
    fake_run(tmp_path, seed=1, config=config, model=model, data_checksum="cccc2222dddd")
    fake_run(tmp_path, seed=2, config=config, model=model, data_checksum="cccc2222dddd")
    runs = load_runs([tmp_path])
    assert runs.table.groupby("dataset").seed.unique().map(sorted).to_dict() == {
        "d (checksum=aaaa1111)": [0], "d (checksum=cccc2222)": [1, 2]}  # fmt: skip


# --- end to end --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def experiments(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """configs/demo.yaml (cheapened) and a synthetic regression experiment, run through the CLI."""
    root = tmp_path_factory.mktemp("report")
    main(["run", str(REPO / "configs" / "demo.yaml"), *DEMO_OVERRIDES, "--out", str(root / "demo")])
    (root / "reg.yaml").write_text(REGRESSION_CONFIG)
    main(["run", str(root / "reg.yaml"), "--out", str(root / "reg")])
    return root


def embedded_pngs(page: str) -> list[np.ndarray]:
    import matplotlib.image

    found = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    return [matplotlib.image.imread(io.BytesIO(base64.b64decode(data)), format="png") for data in found]


def test_html_report_is_one_self_contained_file_with_every_section(experiments: Path, capsys) -> None:
    out = experiments / "out" / "report.html"
    args = ["report", str(experiments / "demo"), str(experiments / "reg"), "--out", str(out)]
    code, stdout, err = run_cli([*args, "--reference", "dropout-sum"], capsys)
    assert code == 0, err
    assert "Read 8 runs" in stdout and sorted(p.name for p in out.parent.iterdir()) == ["report.html"]
    page = out.read_text()
    for expected in (
        "Dataset basicmotions",
        "Dataset synthetic",
        "accuracy: mean ± std over seeds",
        "mae: mean ± std over seeds",
        "<th>scenario</th><th>joint-sum</th><th>dropout-sum</th>",
        'class="best"',
        "Robustness against the reference <code>dropout-sum</code>",
        "missing[accelerometer@·]",
        "chance accuracy 1/4 (4 classes",
        "Modality contributions (Shapley values)",
        "joint-sum − dropout-sum",
        "paired per test sample",
    ):
        assert expected in page, expected
    text = re.sub(r"data:image/png;base64,[^\"]+", "", page)
    assert not re.search(r"\bnan\b", text, re.IGNORECASE)
    assert "No curves: the audit has at most one severity" in text  # synthetic: default scenarios only
    images = embedded_pngs(page)
    assert len(images) == 3  # basicmotions: heatmap and curves; synthetic: heatmap
    assert all(img.ndim == 3 and img.shape[0] > 100 and img.std() > 0 for img in images)
    assert not re.search(r"""(src|href)=["']?(https?:)?//|url\(|@import""", page)  # nothing fetched from outside


def test_markdown_report_with_pngs_beside_it(experiments: Path, capsys) -> None:
    out = experiments / "md" / "cmp.md"
    code, _, err = run_cli(["report", str(experiments / "demo"), "--out", str(out)], capsys)  # md from the suffix
    assert code == 0, err
    text = out.read_text()
    assert "| scenario | joint-sum | dropout-sum |" in text
    assert re.search(r"\| clean \| .*\d ± \d", text)
    assert "Robustness against the reference `joint-sum`" in text  # default reference: the first model
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert pictures == ["cmp-basicmotions-heatmap.png", "cmp-basicmotions-curves.png"]
    assert all((out.parent / p).stat().st_size > 1000 for p in pictures)
    as_text = out.with_suffix(".txt")
    code, _, err = run_cli(["report", str(experiments / "demo"), "--out", str(as_text), "--format", "md"], capsys)
    assert code == 0 and as_text.read_text().startswith("# Model comparison"), err


def test_bad_inputs_are_one_line_errors(experiments: Path, tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(["report", str(tmp_path), "--out", str(tmp_path / "r.html")], capsys)
    one_line_error(code, err, "no runs found under")
    code, _, err = run_cli(["report", str(tmp_path / "nowhere")], capsys)
    one_line_error(code, err, "nowhere: no such directory")
    code, _, err = run_cli(["report", str(experiments / "demo"), "--reference", "joint-summ"], capsys)
    one_line_error(code, err, "unknown reference model 'joint-summ'. Did you mean 'joint-sum'?")
    assert not (tmp_path / "r.html").exists()


# --- headless browser --------------------------------------------------------------------------
def render_headless(page: Path, screenshot: Path, size: str = "1200,2000") -> list[str]:
    """Screenshot `page` with headless Chromium; returns the console messages it logged."""
    profile = screenshot.parent / f".chromium-{screenshot.stem}"
    quiet = ["--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
    command = [
        *(str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", *quiet, f"--user-data-dir={profile}"),
        *(f"--screenshot={screenshot}", f"--window-size={size}", "--enable-logging=stderr", "--v=0"),
        page.resolve().as_uri(),
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return [line for line in done.stderr.splitlines() if ":CONSOLE" in line]


def assert_drawn(png: Path) -> None:
    import matplotlib.image

    pixels = matplotlib.image.imread(png)
    assert pixels.ndim == 3 and pixels.shape[0] > 100
    assert len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 50  # not a blank page


needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs /usr/bin/chromium (apt-get install chromium; `make test` tries)"
)


@pytest.mark.browser
@needs_chromium
def test_the_console_check_catches_errors_and_blocked_requests(tmp_path: Path) -> None:
    """The check below is only worth something if it sees what it looks for."""
    page = tmp_path / "bad.html"
    page.write_text(
        '<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "img-src data:; style-src 'unsafe-inline'\"></head><body><h1>x</h1>"
        '<img src="https://example.invalid/x.png"></body></html>'
    )
    messages = render_headless(page, tmp_path / "bad.png", "400,300")
    assert any("Content Security Policy" in m for m in messages), messages


@pytest.mark.browser
@needs_chromium
def test_html_report_renders_in_a_headless_browser_without_console_errors(experiments: Path, capsys) -> None:
    out = experiments / "browser" / "report.html"
    code, _, err = run_cli(["report", str(experiments / "demo"), "--out", str(out)], capsys)
    assert code == 0, err
    screenshot = out.with_suffix(".png")
    assert render_headless(out, screenshot) == []
    assert_drawn(screenshot)
