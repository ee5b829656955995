"""The audit: the cached-token fast path equals the naive path, paired masks, tables, reports."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_npz_arrays, run_cli, write_npz

import mmrobust
from mmrobust import Compose, GaussianNoise, Missing, MissingRates, MMRobustError, Subset
from mmrobust.audit.engine import naive_outputs, scenario_outputs
from mmrobust.audit.paired import read_predictions, write_predictions
from mmrobust.audit.report import FILES, summary_rows
from mmrobust.audit.scenarios import custom_scenarios, default_scenarios
from mmrobust.models import FUSIONS

FUSION_NAMES = FUSIONS.names()
PNG = b"\x89PNG\r\n\x1a\n"


def custom(modalities: tuple[str, ...]) -> list[mmrobust.Corruption]:
    a, b, c = modalities
    return [
        MissingRates({a: 0.5, b: 0.3, c: 0.7}),
        MissingRates({a: 0.9, b: 0.9, c: 0.9}, if_all_missing="allow"),
        GaussianNoise(b, sigma=1.0, proportion=0.5, stage="token"),
        Compose((Missing(a, 0.4), GaussianNoise(c, sigma=1.0, proportion=0.5))),
        Compose((GaussianNoise(a, 2.0, 1.0), Missing(a, 0.5))),  # noised rows partly dropped after
        Compose((Missing(c, 0.5, stage="token"), GaussianNoise(a, 1.0, 0.7, stage="token"))),
    ]


def all_scenarios(data: mmrobust.MultimodalData):  # type: ignore[no-untyped-def]
    return default_scenarios(data.modalities) + custom_scenarios(custom(data.modalities))


@pytest.mark.parametrize("fusion", FUSION_NAMES)
@pytest.mark.parametrize("method", ["joint", "dropout", "actionmae"])
def test_fast_path_equals_naive_path(kinds_data, fit_small, method: str, fusion: str) -> None:
    model = fit_small(kinds_data, method, fusion)
    test = kinds_data.split("test")
    scenarios = all_scenarios(kinds_data)
    fast, hashes = scenario_outputs(model, test, scenarios, seed=0)
    naive = naive_outputs(model, test, scenarios, seed=0)
    assert list(fast) == list(naive) or set(fast) == set(naive)
    assert set(fast) == {s.name for s in scenarios} == set(hashes)
    for name in naive:
        assert fast[name].shape == naive[name].shape == (len(test), kinds_data.spec.num_classes)
        assert torch.isfinite(fast[name]).all(), name
        torch.testing.assert_close(fast[name], naive[name], atol=1e-5, rtol=0, msg=name)
    # not vacuous: every non-clean scenario changes the outputs of some sample
    for name in naive:
        if name != "clean":
            assert not torch.allclose(naive[name], naive["clean"], atol=1e-4), name


def test_fast_path_with_small_chunks_equals_naive(kinds_data, fit_small) -> None:
    """Streaming in chunks and batching model calls (several chunks per scenario, several batches
    per chunk and scenarios per call) changes nothing."""
    model = fit_small(kinds_data, "dropout", "transformer")
    test = kinds_data.split("test")
    scenarios = all_scenarios(kinds_data)
    fast, _ = scenario_outputs(model, test, scenarios, seed=3, chunk=14, batch_size=5, draw_block=7)
    naive = naive_outputs(model, test, scenarios, seed=3, batch_size=13, draw_block=7)
    for name in naive:
        torch.testing.assert_close(fast[name], naive[name], atol=1e-5, rtol=0, msg=name)


def test_regression_fast_path_equals_naive_path(regression_data, fit_small) -> None:
    model = fit_small(regression_data, "dropout", "concat")
    test = regression_data.split("test")
    scenarios = all_scenarios(regression_data)
    fast, _ = scenario_outputs(model, test, scenarios, seed=0)
    naive = naive_outputs(model, test, scenarios, seed=0)
    for name in naive:
        assert fast[name].shape == (len(test),)
        torch.testing.assert_close(fast[name], naive[name], atol=1e-5, rtol=0, msg=name)


def test_audit_fast_and_naive_give_the_same_table(kinds_data, fit_small) -> None:
    model = fit_small(kinds_data, "dropout", "late")
    extra = custom(kinds_data.modalities)
    fast = mmrobust.audit(model, kinds_data, extra, seed=1)
    slow = mmrobust.audit(model, kinds_data, extra, seed=1, fast=False)
    cols = ["scenario", "kind", "metric"]
    pd.testing.assert_frame_equal(fast.table[cols], slow.table[cols])
    assert (fast.table.value - slow.table.value).abs().max() < 1e-5
    assert [s["name"] for s in fast.scenarios] == [s["name"] for s in slow.scenarios]


# --- paired masks -----------------------------------------------------------------------------
def test_masks_are_paired_across_models_and_change_with_the_seed(kinds_data, fit_small) -> None:
    extra = [MissingRates({"m0": 0.5, "m1": 0.5})]
    a = mmrobust.audit(fit_small(kinds_data, "joint", "sum"), kinds_data, extra, seed=0)
    b = mmrobust.audit(fit_small(kinds_data, "dropout", "transformer"), kinds_data, extra, seed=0)
    c = mmrobust.audit(fit_small(kinds_data, "joint", "sum"), kinds_data, extra, seed=1)
    names = [s["name"] for s in a.scenarios]
    assert names == [s["name"] for s in b.scenarios] == [s["name"] for s in c.scenarios]
    for sa, sb, sc in zip(a.scenarios, b.scenarios, c.scenarios, strict=True):
        assert isinstance(sa["mask_hash"], str) and sa["mask_hash"]
        assert sa["mask_hash"] == sb["mask_hash"], sa["name"]  # same seed: same masks
        if sa["kind"] in ("clean", "subset"):
            assert sa["mask_hash"] == sc["mask_hash"]  # deterministic scenarios
        if sa["kind"] == "missing" or sa["name"].startswith("rates["):
            assert sa["mask_hash"] != sc["mask_hash"], sa["name"]  # another seed: other masks
        assert sa["audit_seed"] == 0 and sc["audit_seed"] == 1


def test_mask_hash_is_the_hash_of_the_mask_actually_used(kinds_data, fit_small) -> None:
    from mmrobust.audit.engine import mask_hash

    model = fit_small(kinds_data, "joint", "sum")
    test = kinds_data.split("test")
    scen = custom_scenarios([Missing("m1", 0.5)])
    _, hashes = scenario_outputs(model, test, scen, seed=2)
    present = scen[0].apply(test.batch(slice(None)), seed=2).present
    assert hashes[scen[0].name] == mask_hash(present)
    assert hashes[scen[0].name] != mask_hash(test.present)


# --- samples left with no modality ----------------------------------------------------------
def test_samples_left_with_no_modality_are_counted_not_scored(tmp_path, fit_small) -> None:
    """On data with missing modalities, subset[b] leaves the samples without b with nothing: they were
    scored as the model's constant answer to no input; now they are left out, counted and warned of.
    A scenario that allows empty samples (`,allow`) still scores them."""
    arrays = make_npz_arrays(n=120, seed=1)
    present_b = np.random.default_rng(0).random(120) < 0.5
    data = mmrobust.load_npz(write_npz(tmp_path / "d.npz", **arrays, present_b=present_b))
    model = fit_small(data, "joint", "sum")
    test = data.split("test")
    lacks_b = ~test.present[:, 1]
    allow = custom_scenarios("rates[a=0.9,b=0.9,allow]")[0]
    assert (~allow.apply(test.batch(slice(None)), seed=0).present.any(dim=1)).any()  # it empties samples
    warning = rf"^samples left with no modality at all are not scored .*: subset\[b\] {int(lacks_b.sum())} of the "
    with pytest.warns(UserWarning, match=warning + rf"{len(test)} test samples \(each scenario's 'excluded' .*\)$"):
        result = mmrobust.audit(model, data, allow.name, keep_predictions=True)
    excluded = {s["name"]: s["excluded"] for s in result.scenarios}
    assert excluded["subset[b]"] == int(lacks_b.sum()) > 0
    assert sum(excluded.values()) == excluded["subset[b]"]  # allow, and every other scenario, scores all
    predictions = result.predictions
    assert predictions is not None and set(predictions.excluded) == {"subset[b]"}
    accuracy = result.table[result.table.metric == "accuracy"].set_index("scenario").value
    on_b = predictions.scenarios["subset[b]"][~lacks_b] == test.target[~lacks_b]
    assert accuracy["subset[b]"] == pytest.approx(float(on_b.double().mean()))
    clean_on_b = predictions.scenarios["clean"][~lacks_b] == test.target[~lacks_b]  # like for like
    delta = result.table[result.table.metric == "accuracy"].set_index("scenario").delta
    assert delta["subset[b]"] == pytest.approx(float(on_b.double().mean() - clean_on_b.double().mean()))
    assert delta["subset[a]"] == pytest.approx(accuracy["subset[a]"] - accuracy["clean"])  # none left out
    report = mmrobust.write_report(result, tmp_path / "report") / "report.md"
    assert f"not scored (per model and seed): `subset[b]` {excluded['subset[b]']}; their" in report.read_text()
    write_predictions(predictions, tmp_path / "p.pt")  # run folders keep the exclusions for paired tests
    assert torch.equal(read_predictions(tmp_path / "p.pt").excluded["subset[b]"], lacks_b)


def test_a_modality_absent_from_every_test_sample_is_reported_not_a_crash(tmp_path, fit_small, capsys) -> None:
    """A sensor that died in the test period: its subset scores no sample. Before, `write_report` (and so
    `mmrobust audit` and `report`) failed with `KeyError: ['subset[a]'] not in index`, silently."""
    arrays = make_npz_arrays(n=90, seed=2)
    split = np.array(["train"] * 54 + ["val"] * 18 + ["test"] * 18)
    data = mmrobust.load_npz(write_npz(tmp_path / "d.npz", **arrays, split=split, present_a=split != "test"))
    model = fit_small(data, "joint", "sum")
    with pytest.warns(UserWarning, match=r"^a: absent from every test sample, so its subset scores none of them"):
        result = mmrobust.audit(model, data)
    report = mmrobust.write_report(result, tmp_path / "audit")
    assert "n/a (no sample scored)" in (report / "report.md").read_text() and (report / "heatmap.png").is_file()
    code, _, err = run_cli(["report", str(report), "--out", str(tmp_path / "cmp.md")], capsys)
    assert code == 0, err


def test_on_complete_data_every_sample_is_scored_as_before(small_data, fit_small) -> None:
    """Nothing changes where every scenario leaves every sample a modality: all rows scored, no warning."""
    model = fit_small(small_data, "joint", "sum")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = mmrobust.audit(model, small_data, "rates[m0=0.9,m1=0.9,m2=0.9]")
    chosen = default_scenarios(small_data.modalities) + custom_scenarios("rates[m0=0.9,m1=0.9,m2=0.9]")
    outputs, hashes = scenario_outputs(model, small_data.split("test"), chosen, seed=0)
    target = small_data.split("test").target
    accuracy = result.table[result.table.metric == "accuracy"].set_index("scenario").value
    for s in result.scenarios:
        assert s["excluded"] == 0 and s["mask_hash"] == hashes[s["name"]]
        assert accuracy[s["name"]] == float((outputs[s["name"]].argmax(dim=-1) == target).double().mean())


# --- the table and its summaries -------------------------------------------------------------
@pytest.mark.parametrize("n_modalities", [1, 2, 3, 4])
def test_default_scenarios_cover_every_subset(n_modalities: int) -> None:
    mods = tuple(f"x{i}" for i in range(n_modalities))
    scen = default_scenarios(mods)
    subsets = [s for s in scen if s.kind in ("clean", "subset")]
    assert len(subsets) == 2**n_modalities - 1
    assert subsets[0].name == "clean" and subsets[0].kind == "clean"
    kept = {frozenset(s.corruption.keep) for s in subsets}
    assert len(kept) == 2**n_modalities - 1 and frozenset(mods) in kept
    assert [s.kind for s in scen].count("missing") == n_modalities
    assert [s.kind for s in scen].count("noise") == n_modalities
    names = [s.name for s in scen]
    assert len(set(names)) == len(names)


@pytest.fixture(scope="module")
def two_model_result(kinds_data, fit_small) -> mmrobust.AuditResult:
    """joint/sum and dropout/transformer, two training seeds each."""
    return mmrobust.AuditResult.concat(
        [
            mmrobust.audit(fit_small(kinds_data, method, fusion, seed=s), kinds_data)
            for method, fusion in (("joint", "sum"), ("dropout", "transformer"))
            for s in (0, 1)
        ]
    )


def test_table_is_tidy_and_deltas_are_relative_to_clean(two_model_result) -> None:
    t = two_model_result.table
    for col in ("dataset", "method", "fusion", "seed", "scenario", "kind", "metric", "value", "delta"):
        assert col in t.columns
    assert set(t.metric) == {"accuracy", "macro_f1"}
    assert set(t.dataset) == {"synthetic"}
    assert (t[t.scenario == "clean"].delta == 0).all()
    scored_all = {s["name"] for s in two_model_result.scenarios if s["excluded"] == 0}  # kinds_data has gaps
    assert len(scored_all) < len(two_model_result.scenarios)
    for _, g in t.groupby(["method", "fusion", "seed", "metric"]):
        clean = float(g[g.scenario == "clean"].value.iloc[0])
        like_clean = g[g.scenario.isin(scored_all)]  # the others: against clean on the samples they scored
        assert (like_clean.delta - (like_clean.value - clean)).abs().max() < 1e-12
    # 7 subset scenarios (2^3 - 1) per model
    per_model = t[t.kind.isin(["clean", "subset"])].groupby(["method", "fusion", "seed"]).scenario.nunique()
    assert (per_model == 7).all()
    assert len(t) == len(t.drop_duplicates(["method", "fusion", "seed", "scenario", "metric"]))


def test_repr_says_what_was_audited_in_one_line(two_model_result) -> None:
    text = repr(two_model_result)
    models = ", ".join(dict.fromkeys(two_model_result.table.model))
    assert "\n" not in text and f"models {models};" in text
    assert f"2 seed(s), {len(two_model_result.scenarios)} scenarios, classification" in text


def test_summary_columns_and_values(two_model_result) -> None:
    s = two_model_result.summary()
    for col in (
        "dataset",
        "method",
        "fusion",
        "clean_mean",
        "clean_std",
        "mean_abs_delta_subsets_mean",
        "worst_subset",
        "worst_delta_mean",
        "delta_missing_mean",
        "delta_noise_mean",
        "seeds",
    ):
        assert col in s.columns, col
    assert len(s) == 2
    joint = s[s.method == "joint"].iloc[0]
    assert (s.seeds == 2).all()
    t = two_model_result.table
    acc = t[(t.method == "joint") & (t.metric == "accuracy")]
    assert joint.clean_mean == pytest.approx(acc[acc.scenario == "clean"].value.mean())
    per_seed = acc[acc.kind == "subset"].groupby("seed").delta.apply(lambda d: d.abs().mean())
    assert joint.mean_abs_delta_subsets_mean == pytest.approx(per_seed.mean())
    assert joint.worst_delta_mean == pytest.approx(
        acc[acc.kind == "subset"].groupby("seed").delta.min().mean()
    )
    assert joint.worst_subset.startswith("subset[")
    wide = two_model_result.per_scenario()
    assert wide.columns[0] == "clean"


def test_reliance_and_dominance_diagnostic(two_model_result) -> None:
    """Leave-one-out deltas per modality, and the modality whose removal hurts most (m0 carries
    most of the synthetic label signal)."""
    reliance = two_model_result.reliance()
    assert set(reliance.modality) == {"m0", "m1", "m2"} and len(reliance) == 2 * 3
    t = two_model_result.table
    acc = t[(t.method == "joint") & (t.metric == "accuracy")]
    without_m0 = reliance[(reliance.method == "joint") & (reliance.modality == "m0")].delta.iloc[0]
    assert without_m0 == pytest.approx(acc[acc.scenario == "subset[m1+m2]"].delta.mean())
    summary = two_model_result.summary()
    assert (summary.relies_on == "m0").all()
    joint = summary[summary.method == "joint"].iloc[0]
    assert joint.relies_on_delta == pytest.approx(without_m0) and joint.relies_on_delta < 0
    header, rows = summary_rows(two_model_result)  # the terminal and report.md show it
    column = header.index("relies on (Δ without it)")
    assert all(row[column].startswith("m0 (-") for row in rows)


def test_regression_audit_uses_mae(regression_data, fit_small) -> None:
    result = mmrobust.audit(fit_small(regression_data, "dropout", "sum"), regression_data)
    assert result.primary_metric == "mae"
    t = result.table
    assert {"mae", "corr", "acc2", "f1", "acc2_has0", "f1_has0", "acc5", "acc7"} == set(t.metric)
    assert (t[t.scenario == "clean"].delta == 0).all()
    s = result.summary()
    mae = t[(t.metric == "mae") & (t.kind == "subset")]
    assert s.worst_delta_mean.iloc[0] == pytest.approx(mae.delta.max())  # worst = largest MAE increase


# --- reports ----------------------------------------------------------------------------------
def test_write_report(two_model_result, tmp_path) -> None:
    out = mmrobust.write_report(two_model_result, tmp_path / "report", {"note": "hello"})
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)  # no temporary leftovers
    csv = pd.read_csv(out / "results.csv")
    for col in ("dataset", "method", "fusion", "seed", "scenario", "metric", "value"):
        assert col in csv.columns
    assert len(csv) == len(two_model_result.table)
    assert set(csv.scenario) == set(two_model_result.table.scenario)
    assert (csv.value - two_model_result.table.value).abs().max() < 1e-9
    j = json.loads((out / "results.json").read_text())
    assert j["primary_metric"] == "accuracy" and j["note"] == "hello"
    assert len(j["results"]) == len(csv) and len(j["summary"]) == 2
    assert [s["name"] for s in j["scenarios"]] == [s["name"] for s in two_model_result.scenarios]
    md = (out / "report.md").read_text()
    assert md.startswith("# ")
    for needle in ("joint", "dropout", "transformer", "subset[m1+m2]", "heatmap.png"):
        assert needle in md
    for s in two_model_result.scenarios:
        assert s["mask_hash"] in md
    for table in re.findall(r"(?:^\|.*\|\n)+", md, flags=re.M):  # GitHub renders a table only when
        cells = {len(re.split(r"(?<!\\)\|", line)) for line in table.splitlines()}  # every row has the
        assert len(cells) == 1, table  # header's cell count: "mean |Δ|" must not add columns
    png = (out / "heatmap.png").read_bytes()
    assert png.startswith(PNG) and len(png) > 1000


def test_write_report_of_something_else_is_a_one_line_error(tmp_path, two_model_result) -> None:
    with pytest.raises(MMRobustError, match=r"takes the AuditResult that mmrobust\.audit returns, not a NoneType"):
        mmrobust.write_report(None, tmp_path / "out")  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()
    with pytest.raises(MMRobustError, match=r"write_report takes a folder \(str or Path\), not a int"):
        mmrobust.write_report(two_model_result, 123)  # type: ignore[arg-type]  # before: a TypeError from pathlib
    (tmp_path / "a_file").write_text("mine")
    with pytest.raises(MMRobustError, match=r"a_file is a file: write_report writes a folder"):  # before: File exists
        mmrobust.write_report(two_model_result, tmp_path / "a_file")
    assert (tmp_path / "a_file").read_text() == "mine"


def test_write_report_with_unequal_seed_counts(kinds_data, fit_small, tmp_path) -> None:
    result = mmrobust.AuditResult.concat(
        [
            mmrobust.audit(fit_small(kinds_data, "joint", "sum", seed=0), kinds_data),
            mmrobust.audit(fit_small(kinds_data, "joint", "sum", seed=1), kinds_data),
            mmrobust.audit(fit_small(kinds_data, "dropout", "transformer", seed=0), kinds_data),
        ]
    )
    out = mmrobust.write_report(result, tmp_path)
    md = (out / "report.md").read_text()
    assert "joint" in md and "transformer" in md


def test_concat_refuses_two_models_under_one_label_and_seed(kinds_data, fit_small) -> None:
    """Two different models both labelled 'joint', seed 0: the summary would show the first and the
    per-scenario table their average, so concat refuses them, as `mmrobust report` refuses two runs."""
    audits = [mmrobust.audit(fit_small(kinds_data, "joint", fusion), kinds_data) for fusion in ("sum", "concat")]
    with pytest.raises(
        MMRobustError,
        match=r"^model 'joint' seed 0 on synthetic comes from two audit results in the list \(#0 and #1\); "
        r"give the models distinct labels: audit\(\.\.\., label='\.\.\.'\)$",
    ):
        mmrobust.AuditResult.concat(audits)
    fusions = ("sum", "concat")
    labelled = [mmrobust.audit(fit_small(kinds_data, "joint", f), kinds_data, label=f"joint-{f}") for f in fusions]
    clean = mmrobust.AuditResult.concat(labelled).summary().set_index("model").clean_mean
    alone = {f"joint-{f}": r.summary().clean_mean.iloc[0] for f, r in zip(fusions, audits, strict=True)}
    assert clean.to_dict() == alone


def test_write_report_regression(regression_data, fit_small, tmp_path) -> None:
    result = mmrobust.audit(fit_small(regression_data, "joint", "sum"), regression_data)
    out = mmrobust.write_report(result, tmp_path)
    assert (out / "heatmap.png").read_bytes().startswith(PNG)
    assert "mae" in (out / "report.md").read_text()


# --- errors -----------------------------------------------------------------------------------
def test_audit_rejects_a_model_for_other_data(kinds_data, small_data, fit_small) -> None:
    with pytest.raises(MMRobustError, match="trained for other data"):
        mmrobust.audit(fit_small(small_data, "joint", "sum"), kinds_data)


def test_audit_rejects_duplicate_scenarios_and_always_measures_clean(kinds_data, fit_small) -> None:
    model = fit_small(kinds_data, "joint", "sum")
    with pytest.raises(MMRobustError, match="duplicate"):
        mmrobust.audit(model, kinds_data, [Missing("m0", 0.3)])  # also a default scenario
    clean_only = mmrobust.audit(model, kinds_data, defaults=False)
    assert [s["name"] for s in clean_only.scenarios] == ["clean"]


def test_scenarios_given_by_name_audit_as_their_corruptions(kinds_data, fit_small) -> None:
    model = fit_small(kinds_data, "joint", "sum")
    by_name = mmrobust.audit(model, kinds_data, ["missing[m0@0.2]", "rates[m1=0.5,m2=0.1]"], defaults=False)
    by_object = mmrobust.audit(
        model, kinds_data, [Missing("m0", 0.2), MissingRates({"m1": 0.5, "m2": 0.1})], defaults=False
    )
    pd.testing.assert_frame_equal(by_name.table, by_object.table)
    with pytest.raises(MMRobustError, match="cannot parse scenario 'missing m0'"):
        mmrobust.audit(model, kinds_data, ["missing m0"])
    with pytest.raises(MMRobustError, match=r"a scenario is a corruption .* not a float"):
        mmrobust.audit(model, kinds_data, [0.3])  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("option", "value", "needle"),
    [
        ("seed", 0.0, r"seed must be an integer in 0\.\.9223372036854775807, got 0\.0$"),  # masks unlike seed 0's
        ("seed", False, r"seed must be an integer in 0\.\.\d+, got False$"),
        ("seed", -1, r"seed must be an integer in 0\.\.\d+, got -1$"),
        ("seed", "x", r"seed must be an integer in 0\.\.\d+, got 'x'$"),
        ("max_subsets", 0, r"max_subsets must be an integer >= 1, got 0$"),
        ("max_subsets", -1, r"max_subsets must be an integer >= 1, got -1$"),
    ],
)
def test_audit_checks_its_seed_and_subset_cap_as_configs_do(kinds_data, fit_small, option, value, needle) -> None:
    model = fit_small(kinds_data, "joint", "sum")
    with pytest.raises(MMRobustError, match=needle):
        mmrobust.audit(model, kinds_data, defaults=False, **{option: value})
    assert mmrobust.audit(model, kinds_data, seed=0, max_subsets=6).scenarios[0]["audit_seed"] == 0  # 6: all


def test_one_scenario_alone_is_a_one_element_list(kinds_data, fit_small) -> None:
    """A name alone was read letter by letter ("cannot parse scenario 'm'"), a corruption alone was a
    bare TypeError; both now mean the one scenario, as Subset("m0") means one modality."""
    model = fit_small(kinds_data, "joint", "sum")
    listed = mmrobust.audit(model, kinds_data, ["missing[m0@0.5]"], defaults=False)
    for alone in ("missing[m0@0.5]", Missing("m0", 0.5), {"type": "Missing", "modality": "m0", "proportion": 0.5}):
        result = mmrobust.audit(model, kinds_data, alone, defaults=False)
        pd.testing.assert_frame_equal(result.table, listed.table)
        assert [s["name"] for s in result.scenarios] == ["clean", "missing[m0@0.5]"]
    with pytest.raises(MMRobustError, match=r"^a scenario is a corruption .* not a float$"):
        mmrobust.audit(model, kinds_data, 0.5)  # type: ignore[arg-type]


def test_compose_takes_its_parts_as_objects_dicts_or_names_like_every_corruption_parameter() -> None:
    as_names = mmrobust.Compose(["missing[m0@0.5]", "noise[m1,sigma=1,p=0.3]"])
    as_dicts = mmrobust.Compose([Missing("m0", 0.5).to_dict(), mmrobust.GaussianNoise("m1", 1.0, 0.3).to_dict()])
    assert as_names == as_dicts and as_names.name == "missing[m0@0.5]+noise[m1,sigma=1,p=0.3]"


def test_headline_numbers_of_scenarios_not_audited_are_dashes_not_zeros(small_data, fit_small) -> None:
    """Before: with defaults=False the summary said "mean |Δ| subsets 0.000", worst "none", Δ missing nan."""
    from mmrobust.audit.report import summary_rows

    model = fit_small(small_data, "joint", "sum")
    result = mmrobust.audit(model, small_data, "rates[m0=0.5,m1=0.5]", defaults=False)
    header, (row,) = summary_rows(result)
    cells = dict(zip(header, row, strict=True))
    assert [cells[h] for h in ("mean |Δ| subsets", "worst subset (Δ)", "Δ missing", "Δ noise")] == ["—"] * 4
    assert cells["clean accuracy"] != "—"
    header, rows = summary_rows(mmrobust.audit(model, small_data))  # the defaults: numbers
    assert all(row[header.index("mean |Δ| subsets")] != "—" for row in rows)


def test_audit_of_an_unfitted_method_is_a_user_error(kinds_data) -> None:
    with pytest.raises(MMRobustError, match="not trained"):
        mmrobust.audit(mmrobust.create_method("joint"), kinds_data)


def test_audit_custom_scenarios_only(kinds_data, fit_small) -> None:
    model = fit_small(kinds_data, "joint", "sum")
    result = mmrobust.audit(
        model, kinds_data, [Subset(("m0", "m1", "m2")), Missing("m0", 0.3)], defaults=False
    )
    assert [s["name"] for s in result.scenarios] == ["clean", "subset[m0+m1+m2]", "missing[m0@0.3]"]
    assert set(result.table.kind) == {"clean", "custom"}


def test_summary_and_report_without_default_scenarios(kinds_data, fit_small, tmp_path) -> None:
    model = fit_small(kinds_data, "joint", "sum")
    result = mmrobust.audit(model, kinds_data, [Missing("m0", 0.3)], defaults=False)
    assert len(result.summary()) == 1
    mmrobust.write_report(result, tmp_path)
    assert (tmp_path / "report.md").is_file()


def test_summary_of_a_method_without_a_seed(kinds_data, fit_small) -> None:
    trained = fit_small(kinds_data, "joint", "sum")
    m = mmrobust.create_method("joint", fusion="sum")
    m.build(kinds_data.spec)
    m.modules().load_state_dict(trained.modules().state_dict())
    assert m.seed is None
    result = mmrobust.audit(m, kinds_data)
    assert len(result.summary()) == 1
