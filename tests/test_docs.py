"""Every generated table in the documentation equals what scripts/doc_tables.py regenerates from
the committed results: no documented number is typed by hand or left stale."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import sys
from pathlib import Path

import pytest
from conftest import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "doc_tables.py"


def test_every_generated_table_matches_the_committed_results() -> None:
    doc_tables = load_script("doc_tables")
    assert any(doc_tables.MARKER.search(p.read_text()) for p in doc_tables.documents())  # the check checks something
    assert doc_tables.stale() == [], "run `python scripts/doc_tables.py write` after committing new results"


def test_committed_paired_differences_are_what_the_committed_predictions_give(tmp_path: Path) -> None:
    doc_tables = load_script("doc_tables")
    written = doc_tables.pair_archived(tmp_path)
    assert written, "no archived study to check"
    for path in written:
        committed = doc_tables.RESULTS / path.name
        assert path.read_text() == committed.read_text(), f"run `python scripts/doc_tables.py pair`: {path.name}"


def test_a_hand_edited_table_is_caught(tmp_path: Path) -> None:
    doc_tables = load_script("doc_tables")
    source = next(p for p in doc_tables.documents() if doc_tables.MARKER.search(p.read_text()))
    edited = tmp_path / "edited.md"
    typed = doc_tables.MARKER.sub(lambda m: m.group(1) + "| typed | 0.999 |\n" + m.group(4), source.read_text())
    edited.write_text(typed)
    found = doc_tables.stale([edited])
    assert found and "edited.md" in found[0]
    edited.write_text(doc_tables.regenerate(typed))  # `write` puts the regenerated table back
    assert doc_tables.stale([edited]) == []


def test_a_quoted_value_is_generated_and_a_hand_edited_one_caught(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    doc_tables = load_script("doc_tables")
    monkeypatch.setattr(doc_tables, "RESULTS", tmp_path)
    rows = "model,seed,scenario,kind,metric,value\n" + "".join(
        f"joint,{seed},clean,clean,accuracy,{v}\njoint,{seed},clean,clean,macro_f1,0.5\n"
        for seed, v in enumerate((0.9, 0.8))
    )
    (tmp_path / "s.csv").write_text(rows)
    (tmp_path / "s_paired.csv").write_text(
        "model_a,model_b,scenario,metric,mean,low,high\ndropout,joint,clean,accuracy,0.02,-0.01,0.05\n"
    )
    typed = (
        "Joint reaches <!-- value: mean s model=joint -->0.999<!-- /value --> (macro-F1 <!-- value: mean s "
        "model=joint metric=macro_f1 digits=2 -->0.50<!-- /value -->); joint − dropout is "
        "<!-- value: gap s claim=joint:dropout@clean -->+0.020 [-0.010, +0.050]<!-- /value -->.\n"
    )
    edited = tmp_path / "edited.md"
    edited.write_text(typed)
    assert doc_tables.stale([edited]) == [  # a wrong mean and a sign slip; the right macro-F1 passes
        f"{edited}: <!-- value: mean s model=joint -->",
        f"{edited}: <!-- value: gap s claim=joint:dropout@clean -->",
    ]
    regenerated = doc_tables.regenerate(typed)
    assert "-->0.850<!--" in regenerated and "-->0.50<!--" in regenerated
    assert "-->-0.020 [-0.050, +0.010]<!--" in regenerated  # the stored pair read the other way round
    edited.write_text(regenerated)
    assert doc_tables.stale([edited]) == []
    for spec, error in (
        ("mean s model=nobody", "no accuracy of nobody"),
        ("median s model=joint", "mean or gap"),
        ("gap s claim=joint:dropout@clean;dropout:joint@clean", "one claim"),
    ):
        with pytest.raises(SystemExit, match=error):
            doc_tables.render_value(spec)


def test_claim_verdicts_follow_the_paired_interval(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    doc_tables = load_script("doc_tables")
    monkeypatch.setattr(doc_tables, "RESULTS", tmp_path)
    rows = "model_a,model_b,scenario,seeds,samples,mean,low,high,metric\n"
    rows += "a,b,clean,5,100,0.05,0.02,0.08,accuracy\n"  # a clearly better
    rows += "a,b,subset[x],5,100,0.01,-0.02,0.04,accuracy\n"  # no clear difference
    (tmp_path / "s_paired.csv").write_text(rows)
    table = doc_tables.claims_table("s", "a:b@clean;b:a@clean;a:b@subset[x]")
    verdicts = [line.rsplit("|", 2)[-2].strip() for line in table.splitlines()[2:]]
    assert verdicts == ["holds", "does not hold", "inconclusive"]
    assert "-0.050 [-0.080, -0.020]" in table  # b − a: the stored a − b, negated
    (tmp_path / "m_paired.csv").write_text(rows.replace("accuracy", "mae"))  # lower is better
    assert "does not hold" in doc_tables.claims_table("m", "a:b@clean")
    # non-inferiority: a within 0.01 of b or better
    assert doc_tables.claims_table("s", "b:a@subset[x]", 0.05).splitlines()[2].endswith("| holds |")
    assert doc_tables.claims_table("s", "b:a@clean", 0.01).splitlines()[2].endswith("| does not hold |")


def test_a_bound_at_minus_the_tolerance_is_within_it_and_scenarios_may_hold_at_signs() -> None:
    doc_tables = load_script("doc_tables")
    assert doc_tables.verdict_word(-0.010000000000000002, 0.02, 0.01, False) == "holds"  # -0.01 up to rounding
    assert doc_tables.verdict_word(-0.011, 0.02, 0.01, False) == "inconclusive"
    assert doc_tables.verdict_word(0.0, 0.02, 0.0, False) == "inconclusive"  # "better" needs the interval above 0
    assert doc_tables.verdict_word(-0.03, -0.011, 0.01, False) == "does not hold"
    assert doc_tables.verdict_word(-0.03, -0.01, 0.0, True) == "holds"  # MAE: lower is better
    parsed = doc_tables.parse_claims("a:b@noise[t,sigma=1,p=0.3]@token; c:d@clean;")
    assert parsed == [("a", "b", "noise[t,sigma=1,p=0.3]@token"), ("c", "d", "clean")]
    with pytest.raises(SystemExit, match="is not A:B@SCENARIO"):
        doc_tables.parse_claims("a-b@clean")


def test_seed_checks_flag_a_verdict_that_rests_on_the_training_seeds(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A gap that two lucky seeds of five make is "holds" per sample (the seeds averaged) and
    inconclusive once the seeds are resampled; a gap every seed shows holds under both."""
    import numpy as np
    import torch

    from mmrobust.audit.paired import Predictions, sample_differences

    doc_tables = load_script("doc_tables")
    monkeypatch.setattr(doc_tables, "RESULTS", tmp_path)
    rng = np.random.default_rng(0)
    target = torch.from_numpy(rng.integers(0, 4, 500))
    wrong = (target + 1) % 4

    def run(accuracy: float) -> torch.Tensor:
        return torch.where(torch.from_numpy(rng.random(500) < accuracy), target, wrong)

    predictions = {}
    for seed, lucky in enumerate([0.95, 0.95, 0.55, 0.55, 0.55]):  # "a" is better only at seeds 0 and 1
        predictions[("b", seed)] = Predictions(target, {"clean": run(0.6), "subset[x]": run(0.6)})
        predictions[("a", seed)] = Predictions(target, {"clean": run(lucky), "subset[x]": run(0.8)})
    masks = {(m, s, c): "h" for m, s in predictions for c in ("clean", "subset[x]")}
    doc_tables.write_archive(tmp_path / "s_predictions.npz", predictions, masks)
    pairing = {(c, m): frozenset({"h"}) for c in ("clean", "subset[x]") for m in ("a", "b")}
    paired = sample_differences(predictions, pairing, "accuracy").assign(metric="accuracy")
    paired.to_csv(tmp_path / "s_paired.csv", index=False)
    paired.to_csv(tmp_path / "unarchived_paired.csv", index=False)
    claims = [doc_tables.Claim("doc.md", "s", "a", "b", "clean", 0.0),
              doc_tables.Claim("doc.md", "s", "a", "b", "subset[x]", 0.0),
              doc_tables.Claim("doc.md", "unarchived", "a", "b", "clean", 0.0)]  # fmt: skip
    checks = doc_tables.seed_checks(claims)
    assert list(checks.verdict) == ["holds", "holds", "holds"]
    assert list(checks.seed_verdict) == ["inconclusive", "holds", "not checked"]
    assert (checks.seed_high - checks.seed_low)[0] > 2 * (checks.high - checks.low)[0]


def test_collect_keeps_only_the_study_models_in_their_order(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Studies on one recipe share a run folder; a study's results hold its config's models only."""
    import pandas as pd

    from mmrobust.config import config_from_dict
    from mmrobust.run import run_experiment

    doc_tables = load_script("doc_tables")
    monkeypatch.setattr(doc_tables, "RESULTS", tmp_path / "results")
    models = [{"method": m, "params": {"fusion": "sum"}} for m in ("joint", "dropout", "actionmae")]
    config = {"data": {"name": "synthetic", "options": {"n_samples": 120}}, "models": models, "train": {"epochs": 2}}
    run_experiment(config_from_dict({**config, "seeds": [0]}), tmp_path / "runs")
    doc_tables.collect([tmp_path / "runs"], "study", ["dropout", "joint"])
    results = pd.read_csv(tmp_path / "results" / "study.csv")
    assert list(dict.fromkeys(results.model)) == ["dropout", "joint"]
    paired = pd.read_csv(tmp_path / "results" / "study_paired.csv")
    assert set(paired.model_a) | set(paired.model_b) == {"dropout", "joint"}
    costs = pd.read_csv(tmp_path / "results" / "study_runs.csv")
    assert list(costs.model) == ["dropout", "joint"] and (costs.train_threads >= 1).all()  # for a reader who retrains
    curves = pd.read_csv(tmp_path / "results" / "study_curves.csv")  # from the manifests: convergence
    assert list(dict.fromkeys(curves.model)) == ["dropout", "joint"] and list(curves.epoch) == [0, 1, 0, 1]
    rows = doc_tables.render("curves study").splitlines()[2:]
    last = curves[curves.epoch == 1].set_index("model").train_loss
    first = curves[curves.epoch == 0].set_index("model").train_loss
    for row, model in zip(rows, ["dropout", "joint"], strict=True):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[0] == model and cells[-1] == "1"
        assert float(cells[5]) == round(last[model], 3)  # the end of the budget
        assert float(cells[6]) == round(last[model] - first[model], 3)  # last tenth − the one before
    with pytest.raises(SystemExit, match="has no curve no_such_curve; its runs recorded train_loss"):
        doc_tables.render("curves study curve=no_such_curve")  # a clear error, not a KeyError
    best = {m: json.loads((tmp_path / "runs" / m / "seed-0" / "manifest.json").read_text())["best_epoch"]
            for m in ("dropout", "joint")}  # fmt: skip
    assert doc_tables.render("record study field=best_epoch models=joint,dropout").splitlines()[2:] == [
        f"| joint | {best['joint']} |", f"| dropout | {best['dropout']} |"]  # fmt: skip


def test_an_archived_study_grows_by_seeds_without_its_old_run_folders(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """`collect --archive` keeps the per-sample predictions, so seeds collected in a later session
    (the earlier run folders gone) pair with the committed ones exactly as if collected together."""
    import pandas as pd

    from mmrobust.config import config_from_dict
    from mmrobust.run import run_experiment

    doc_tables = load_script("doc_tables")
    models = [{"method": m, "params": {"fusion": "sum"}} for m in ("joint", "dropout")]
    config = {"data": {"name": "synthetic", "options": {"n_samples": 120}}, "models": models, "train": {"epochs": 1}}
    for seed in (0, 1):  # two sessions, two run folders
        run_experiment(config_from_dict({**config, "seeds": [seed]}), tmp_path / f"session-{seed}")
    monkeypatch.setattr(doc_tables, "RESULTS", tmp_path / "together")
    doc_tables.collect([tmp_path / "session-0", tmp_path / "session-1"], "study", ["joint", "dropout"])
    monkeypatch.setattr(doc_tables, "RESULTS", tmp_path / "archived")
    for seed in (0, 1):
        doc_tables.collect([tmp_path / f"session-{seed}"], "study", ["joint", "dropout"], archive=True)
    for suffix in ("", "_paired", "_runs"):
        together = pd.read_csv(tmp_path / "together" / f"study{suffix}.csv")
        archived = pd.read_csv(tmp_path / "archived" / f"study{suffix}.csv")
        pd.testing.assert_frame_equal(together, archived)
    assert set(pd.read_csv(tmp_path / "archived" / "study_paired.csv").seeds) == {2}
    with pytest.raises(SystemExit, match="study is archived"):  # would drop seed 0, and leave a stale archive
        doc_tables.collect([tmp_path / "session-1"], "study", ["joint", "dropout"])
    # a later session on another recipe: its runs must not join the committed ones
    other = {**config, "train": {"epochs": 1, "lr": 0.01}, "seeds": [2]}
    run_experiment(config_from_dict(other), tmp_path / "session-2")
    with pytest.raises(SystemExit, match="committed runs were made on another recipe"):
        doc_tables.collect([tmp_path / "session-2"], "study", ["joint", "dropout"], archive=True)
    # nor a model's parameters changed for its new seeds
    changed = {**config, "models": [{"method": "joint", "params": {"fusion": "concat"}}], "seeds": [2]}
    run_experiment(config_from_dict(changed), tmp_path / "session-3")
    with pytest.raises(SystemExit, match="runs of joint differ in their settings across seeds"):
        doc_tables.collect([tmp_path / "session-3"], "study", ["joint", "dropout"], archive=True)
    # nor, without an archive, runs collected together (before: checked only when merging an archive)
    monkeypatch.setattr(doc_tables, "RESULTS", tmp_path / "fresh")
    with pytest.raises(SystemExit, match="trained on 2 different recipes"):
        doc_tables.collect([tmp_path / "session-0", tmp_path / "session-2"], "study", ["joint", "dropout"])
    with pytest.raises(SystemExit, match="runs of joint differ in their settings across seeds"):
        doc_tables.collect([tmp_path / "session-0", tmp_path / "session-3"], "study", ["joint", "dropout"])
    shutil.copytree(tmp_path / "session-0", tmp_path / "copy-0")  # one run folder twice (before: a traceback)
    with pytest.raises(SystemExit, match=r"two run folders hold (joint|dropout) seed 0"):
        doc_tables.collect([tmp_path / "session-0", tmp_path / "copy-0"], "study", ["joint", "dropout"])
    assert not (tmp_path / "fresh").exists()  # refused before anything is written


def test_grid_table_lays_a_swept_setting_out_by_row_suffix(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    doc_tables = load_script("doc_tables")
    monkeypatch.setattr(doc_tables, "RESULTS", tmp_path)
    rows = "model,seed,scenario,kind,metric,value\n"
    for model, values in {"sup-f0.1": (0.2, 0.4), "ssl-f0.1": (0.5, 0.7), "sup": (0.8, 0.9), "ssl": (0.9, 0.9)}.items():
        rows += "".join(f"{model},{seed},clean,clean,macro_f1,{v}\n" for seed, v in enumerate(values))
        rows += f"{model},0,clean,clean,accuracy,0.0\n"  # another metric: not shown
    (tmp_path / "s.csv").write_text(rows)
    table = doc_tables.render("grid s metric=macro_f1 columns=sup,ssl,none rows=0.1:-f0.1,1: name=fraction")
    assert table.splitlines()[0] == "| fraction | sup | ssl | none |"
    assert table.splitlines()[2:] == [
        "| 0.1 | 0.300 ± 0.141 | 0.600 ± 0.141 | — |",
        "| 1 | 0.850 ± 0.071 | 0.900 ± 0.000 | — |",
    ]


def test_collapse_table_reads_the_std_after_each_asked_epoch(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    doc_tables = load_script("doc_tables")
    monkeypatch.setattr(doc_tables, "RESULTS", tmp_path)
    lines = ['{"cov_coeff": 1.0, "seed": 0, "std": [0.5, 0.6, 0.7]}', '{"cov_coeff": 100, "seed": 0, "std": [0.1]}']
    (tmp_path / "c.jsonl").write_text("\n".join(lines) + "\n")
    rows = doc_tables.render("collapse c epochs=1,3").splitlines()[2:]
    assert rows == ["| 100 | 0 | 0.100 | — |", "| 1 | 0 | 0.500 | 0.700 |"]  # the paper's weight first


def test_spread_table_gives_each_trained_model_its_std_over_seeds(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    doc_tables = load_script("doc_tables")
    monkeypatch.setattr(doc_tables, "RESULTS", tmp_path)
    lines = [
        '{"model": "fixed-spatial", "seed": 0, "cov_coeff": 100.0, "std": 0.2}',
        '{"model": "fixed-spatial", "seed": 1, "cov_coeff": 100.0, "std": 0.4}',
        '{"model": "fixed-random", "seed": 0, "cov_coeff": 1.0, "std": 0.6}',
    ]
    (tmp_path / "s.jsonl").write_text("\n".join(lines) + "\n")
    rows = doc_tables.render("spread s").splitlines()[2:]
    assert rows == ["| fixed-spatial | 100 | 2 | 0.300 ± 0.141 |", "| fixed-random | 1 | 1 | 0.600 ± 0.000 |"]


def test_means_table_groups_rows_in_order_of_appearance(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    doc_tables = load_script("doc_tables")
    monkeypatch.setattr(doc_tables, "RESULTS", tmp_path)
    (tmp_path / "m.csv").write_text("fold,model,accuracy\n1,zeta,0.8\n1,alpha,0.5\n2,zeta,0.6\n")
    rows = doc_tables.render("means m by=model values=accuracy").splitlines()
    assert rows[0] == "| model | accuracy | rows |"
    assert rows[2:] == ["| zeta | 0.700 ± 0.141 | 2 |", "| alpha | 0.500 ± 0.000 | 1 |"]


def test_reliance_table_gives_each_modalitys_removal_cost_per_fold() -> None:
    doc_tables = load_script("doc_tables")
    subsets = {"clean": 0.9, "subset[a+b]": 0.5, "subset[a+c]": 0.8, "subset[b+c]": 0.9, "subset[a]": 0.4}
    rows = [{"model": "joint", "fold": [1], "val_subsets": subsets},
            {"model": "joint", "fold": [3], "val_subsets": {**subsets, "clean": 1.0}}]  # fmt: skip
    table = doc_tables.reliance_table([*rows, {"model": "other", "val_subsets": subsets}], "joint").splitlines()
    assert table[0] == "| without | val 1 | val 3 | mean cost |"
    assert table[2:] == ["| a | +0.000 | +0.100 | +0.050 |", "| b | +0.100 | +0.200 | +0.150 |",
                         "| c | +0.400 | +0.500 | +0.450 |"]  # fmt: skip


def test_the_benchmark_table_shows_what_a_full_benchmark_run_recorded(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The README's benchmark figures come from the files the benchmarks write, never typed; a quick
    (smoke) run records nothing."""
    import argparse

    bench = SCRIPT.parents[1] / "benchmarks"
    monkeypatch.syspath_prepend(str(bench))
    spec = importlib.util.spec_from_file_location("_common", bench / "_common.py")
    assert spec is not None and spec.loader is not None
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    monkeypatch.setattr(sys, "argv", [str(bench / "dropout_cost.py"), "--repeats", "3"])
    rows = [common.row("epoch ratio | dropout", "≤ 0.8", "0.74", common.meets(0.74, 0.8, False)),
            common.row("reference", "(reference)", "1.9", None)]  # fmt: skip
    common.record(argparse.Namespace(quick=True), rows)
    assert not list(tmp_path.iterdir())
    common.record(argparse.Namespace(quick=False), rows)
    recorded = json.loads((tmp_path / "dropout_cost.json").read_text())
    assert recorded["command"] == "python benchmarks/dropout_cost.py --repeats 3"
    doc_tables = load_script("doc_tables")
    monkeypatch.setattr(doc_tables, "BENCHMARKS", tmp_path)
    lines = doc_tables.render("benchmarks dropout_cost").splitlines()
    columns = [len(re.findall(r"(?<!\\)\|", line)) for line in lines]
    assert len(lines) == 4 and columns == [8] * 4 and "ratio \\| dropout" in lines[2]  # the cell's pipe escaped
    assert "**0.74** | pass |" in lines[2] and "**1.9** |  |" in lines[3]
    assert recorded["commit"].split("+")[0] in lines[2]


def test_recheck_reruns_a_committed_run_and_shows_how_far_its_values_moved(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Numbers committed from runs at an older commit are re-checked by re-running them with this
    checkout: the same code gives the same values, and a changed value shows as a difference."""
    import pandas as pd

    from mmrobust.config import load_config
    from mmrobust.run import run_experiment

    doc_tables = load_script("doc_tables")
    monkeypatch.setattr(doc_tables, "RESULTS", tmp_path / "results")
    config = tmp_path / "study.yaml"
    config.write_text(
        "data: {name: synthetic, options: {n_samples: 120}}\ntrain: {epochs: 2}\nseeds: [0]\n"
        "models:\n  - {method: joint, params: {fusion: sum}}\n  - {method: dropout, params: {fusion: sum}}\n"
    )
    run_experiment(load_config(config), tmp_path / "runs")
    committed = doc_tables.collect([tmp_path / "runs"], "study")
    table = doc_tables.recheck("study", config, ["joint"], 0, [], tmp_path / "again")
    assert list(table.model) == ["joint"] and table.compared[0] > 5 and table.max_abs_difference[0] == 0
    results = pd.read_csv(committed)
    results.loc[(results.model == "joint") & (results.metric == "accuracy"), "value"] += 0.25  # as if the code changed
    results.to_csv(committed, index=False)
    with pytest.raises(SystemExit, match="fresh --out"):  # its run would be skipped, not re-run
        doc_tables.recheck("study", config, ["joint"], 0, [], tmp_path / "again")
    run_experiment(load_config(tmp_path / "study.yaml"), tmp_path / "more" / "other")  # unrelated runs beside it
    again = doc_tables.recheck("study", config, ["joint"], 0, [], tmp_path / "more")
    assert again.max_abs_difference.tolist() == [0.25]  # replaces the earlier recheck of the same run
    assert "| study | joint | 0 |" in doc_tables.render("rechecks rechecks")
    with pytest.raises(SystemExit, match="not among"):
        doc_tables.recheck("study", config, ["ume"], 0, [], tmp_path / "again")


def test_recheck_trains_every_stage_again_instead_of_reusing_cached_ones(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A stage cached by the committed run (UME's members) was trained by the older code: the recheck
    must train it again, or it would check only the stages after it."""
    import mmrobust.train.stage_cache as stage_cache
    from mmrobust.config import load_config
    from mmrobust.run import run_experiment

    doc_tables = load_script("doc_tables")
    monkeypatch.setattr(doc_tables, "RESULTS", tmp_path / "results")
    monkeypatch.setenv("MMROBUST_CACHE", str(tmp_path / "cache"))
    config = tmp_path / "study.yaml"
    config.write_text(
        "data: {name: synthetic, options: {n_samples: 120}}\ntrain: {epochs: 2}\nseeds: [0]\n"
        "models:\n  - {method: ume}\n"
    )
    run_experiment(load_config(config), tmp_path / "runs")
    cached = sorted((tmp_path / "cache" / "stages").glob("*.pt"))
    assert cached  # the members, for later runs to reuse
    doc_tables.collect([tmp_path / "runs"], "study")
    reused: list[object] = []
    load_entry = stage_cache.load_entry
    monkeypatch.setattr(stage_cache, "load_entry", lambda path, module: reused.append(load_entry(path, module)))
    table = doc_tables.recheck("study", config, ["ume"], 0, [], tmp_path / "again")
    assert reused and not any(reused)  # asked for every member, found none
    assert table.max_abs_difference.tolist() == [0]  # trained again, the same numbers
    assert sorted((tmp_path / "cache" / "stages").glob("*.pt")) == cached  # and the user's cache untouched


def test_commit_and_hash_columns_read_as_text(tmp_path: Path) -> None:
    """A short hash that looks like a number (3e59924 is 3 x 10^59924) stays the hash it is."""

    doc_tables = load_script("doc_tables")
    path = tmp_path / "results.csv"
    path.write_text("model,value,commit,config_hash\njoint,0.5,3e59924,1234567890123456\n")
    table = doc_tables.read_table(path)
    assert table.commit.tolist() == ["3e59924"] and table.config_hash.tolist() == ["1234567890123456"]
    assert table.value.tolist() == [0.5]
    with pytest.raises(SystemExit, match="collect the study first"):  # one line, not a pandas traceback
        doc_tables.render("grid uncollected metric=accuracy scenario=clean columns=joint rows=a:")


def test_a_runs_table_naming_a_kind_or_scenario_the_study_lacks_fails() -> None:
    """`kinds=clean,rates` once rendered only the clean column: rate scenarios are of kind `custom`."""

    doc_tables = load_script("doc_tables")
    assert "| clean |" in doc_tables.render("runs ume_redcore_utd_mhad metric=accuracy kinds=clean models=joint")
    with pytest.raises(SystemExit, match="no scenario of ume_redcore_utd_mhad is of kind rates"):
        doc_tables.render("runs ume_redcore_utd_mhad metric=accuracy kinds=clean,rates models=joint")
    with pytest.raises(SystemExit, match=r"has no scenario rates\[inertial=0.9\]"):
        doc_tables.render("runs ume_redcore_utd_mhad metric=accuracy scenarios=clean;rates[inertial=0.9] models=joint")


def test_collect_records_the_commit_that_trained_a_re_audited_run(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A run re-audited at a later commit (a scenario added) keeps its weights: its row in _runs.csv
    must name the commit that trained them, or a recheck compares against the wrong code; `provenance`
    lists that commit (here one this clone does not have)."""
    import pandas as pd

    import mmrobust.run
    from mmrobust.config import config_from_dict
    from mmrobust.run import run_experiment

    doc_tables = load_script("doc_tables")
    monkeypatch.setattr(doc_tables, "RESULTS", tmp_path / "results")
    config = {"data": {"name": "synthetic", "options": {"n_samples": 120}}, "train": {"epochs": 2}, "seeds": [0],
              "models": [{"method": "joint", "params": {"fusion": "sum"}}]}  # fmt: skip
    monkeypatch.setattr(mmrobust.run, "_git_state", lambda: {"commit": "a" * 40, "dirty": False})
    run_experiment(config_from_dict(config), tmp_path / "runs")
    monkeypatch.setattr(mmrobust.run, "_git_state", lambda: {"commit": "b" * 40, "dirty": False})
    wider = {**config, "audit": {"scenarios": ["missing[m0@0.5]"]}}
    run_experiment(config_from_dict(wider), tmp_path / "runs")  # re-audited, not retrained
    doc_tables.collect([tmp_path / "runs"], "study")
    results = pd.read_csv(tmp_path / "results" / "study.csv")
    runs = pd.read_csv(tmp_path / "results" / "study_runs.csv", dtype={"commit": str})
    assert "missing[m0@0.5]" in set(results.scenario) and "commit" not in results  # written once per run
    assert runs.commit.tolist() == ["a" * 40] and runs.config_hash.tolist() == [config_from_dict(wider).hash()]
    assert doc_tables.provenance() == ["study:", "  aaaaaaa (1 runs): (commit not in this clone)"]


def test_collect_compares_runs_collected_again_with_the_committed_ones(tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    """A study re-run in full must say whether its numbers came out as committed, and which runs moved."""
    import pandas as pd

    from mmrobust.config import config_from_dict
    from mmrobust.run import run_experiment

    doc_tables = load_script("doc_tables")
    monkeypatch.setattr(doc_tables, "RESULTS", tmp_path / "results")
    config = {"data": {"name": "synthetic", "options": {"n_samples": 120}}, "train": {"epochs": 2}, "seeds": [0, 1],
              "models": [{"method": "joint", "params": {"fusion": "sum"}}]}  # fmt: skip
    run_experiment(config_from_dict(config), tmp_path / "runs")
    doc_tables.collect([tmp_path / "runs"], "study")
    assert "collected again" not in capsys.readouterr().out  # a new study: nothing to compare with
    committed = tmp_path / "results" / "study.csv"
    doc_tables.collect([tmp_path / "runs"], "study")
    values = len(pd.read_csv(committed))
    said = capsys.readouterr().out
    assert f"2 run(s) collected again: {values} committed values compared, {values} identical, max |difference| 0" \
        in said
    table = pd.read_csv(committed)
    table.loc[(table.seed == 1) & (table.scenario == "clean") & (table.metric == "accuracy"), "value"] += 0.25
    table.to_csv(committed, index=False)
    doc_tables.collect([tmp_path / "runs"], "study")
    said = capsys.readouterr().out
    assert f"{values - 1} identical, max |difference| 0.25; runs that moved: joint seed 1 (0.25)" in said


def test_convergence_table_lists_the_models_that_train_along_a_budget(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    doc_tables = load_script("doc_tables")
    monkeypatch.setattr(doc_tables, "REPO", tmp_path)
    search = tmp_path / "configs" / "recipes" / "search"
    search.mkdir(parents=True)
    (search / "s.yaml").write_text("results: r.jsonl\n")
    runs = [("deep", [0.5, 0.6, 0.7, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8]), ("floor", [0.9])]  # fitted at once
    lines = [{"key": f"c|{m}|0", "candidate": "c", "model": m, "fold": [0], "seed": 0, "score": c[-1], "curve": c}
             for m, c in runs]  # fmt: skip
    (search / "r.jsonl.0-of-1").write_text("".join(json.dumps(line) + "\n" for line in lines))
    rows = doc_tables.convergence_table("s", "c").splitlines()[2:]
    assert rows == ["| deep | 0.600 | 0.800 | 0.800 | 0.800 | +0.000 |"]
