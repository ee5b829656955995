"""Documented numbers come from committed results: collect a study's results, and regenerate (or
check) every generated table in the documentation.

    python scripts/doc_tables.py collect runs/mosi --config configs/subsets/mosi.yaml --study subsets_mosi
    python scripts/doc_tables.py collect runs/avmnist --config configs/actionmae/avmnist.yaml \
        --study actionmae_avmnist --archive  # a study grown by seeds over several sessions
    python scripts/doc_tables.py write     # regenerate every marked table in README.md and docs/
    python scripts/doc_tables.py check     # exit 1 naming every table that differs (a test runs this)
    python scripts/doc_tables.py provenance  # each study's run commits, and the src/ files changed since
    python scripts/doc_tables.py pair      # every archived study's paired differences, from its predictions
    python scripts/doc_tables.py recheck --study subsets_spsw_har --config configs/subsets/spsw_har.yaml \
        --models joint,dropout --seed 0 data.data_dir=$MMROBUST_DATA  # do old runs' numbers hold at HEAD?

`collect` reads every finished run folder below a `mmrobust run` output (results.csv + manifest)
and writes docs/reproductions/results/<study>.csv: one row per (model, seed, scenario, metric). With
`--config`, only that config's models are collected, in its order: several studies on one recipe
share one run folder, so a model two studies compare against trains once. <study>_runs.csv has
one row per run: its cost (training and total seconds, parameters), its recipe and config hashes and
the git commit of the code that trained it (a run re-audited later keeps its training's commit), so
each table can be traced to the code that made it. When the
runs hold per-sample predictions it also writes <study>_paired.csv: every pair of models' per-sample
paired difference per scenario with its 95% bootstrap interval (audit/paired.py), so documented
intervals regenerate without the run folders.

A generated table sits between two markers in a Markdown file; the first names its source and
options, and everything up to the closing marker is replaced by the regenerated table:

    <!-- table: runs baselines_utd_mhad metric=accuracy kinds=clean,subset -->
    | model | clean | ... |
    <!-- /table -->

Kinds: `runs STUDY` (models x scenarios, mean ± std over seeds, options as scripts/tables.py:
`metric`, `kinds` or `scenarios` (`;`-separated), `models`, `delta`), `recipe SEARCH` (a recipe
search summary from configs/recipes/search/SEARCH.yaml's results; `subsets=true`: the validation
accuracy averaged over the full set and every subset), `subsets STUDY model=M` (per
subset: its specialist, M, the paired gap M − specialist and whether it is within `tolerance`, then
the `others` models; options `full` (the full set's specialist, default joint), `others`, `tolerance`),
`cost STUDY models=...` (parameters and training seconds against all the specialists together;
`plus=A:B` adds A's seconds with B's, for a model whose shared stages runs may reuse from the cache),
`convergence SEARCH candidate=C` (validation accuracy along the budget, per model), `curves STUDY`
(each model's training curve, loss or `curve=val_accuracy`, along its budget, from the runs' manifests), `record STUDY
field=F models=...` (one manifest field per model and seed, e.g. the candidate `ume_mma` chose), `collapse FILE
epochs=1,10,...` (CroSSL's embedding std along pretraining per covariance weight and seed, from
scripts/crossl_collapse.py's results FILE.jsonl), `spread FILE` (the same std for trained fixed
CroSSL models, mean ± std over seeds, from `crossl_collapse.py --runs`), `means FILE by=COLUMN
values=A,B` (FILE.csv's rows grouped by COLUMN, in order of appearance: mean ± std of each value
column and the row count), `reliance SEARCH model=M` (per modality, what removing it alone costs model M
on each validation fold of a recipe search, from the runs' `val_subsets`: the paper's dominance
diagnostic read on validation), `summary FILE` (an audit's headline table, from
the results.json of `mmrobust run` / `mmrobust demo` committed as FILE.json), `benchmarks A,B,...` (the
headline rows benchmarks/A.py, ... recorded in benchmarks/results/, with load and commit), `rechecks FILE` (the
runs `recheck` re-ran with a later checkout, and how far their values moved), `claims STUDY
list=A:B@SCENARIO;...` (each claim "A is better than B under SCENARIO" with the paired per-sample
difference, its 95% interval and the verdict: holds when the interval lies on the claimed side of 0,
does not hold when it lies on the other, else inconclusive; "better" is higher accuracy, lower MAE;
option `tolerance=t`: "A at least as good as B up to t", holding when the interval lies at or above −t), `grid STUDY
columns=A,B rows=NAME:SUFFIX,... scenario=S metric=M name=N` (a swept setting: model A+SUFFIX per row and column),
`seeds all` (per document, how many of its `claims` and `subsets` verdicts stay the same when the
training seeds are resampled as well as the test samples, from the studies' per-sample archives;
`changed=true`: each verdict that moves).

A number quoted in prose is generated too, between inline markers on one line:
`<!-- value: mean STUDY model=M -->0.917<!-- /value -->` (the mean over seeds; options `scenario`,
default clean, `metric`, default accuracy, `digits`, default 3) and
`<!-- value: gap STUDY claim=A:B@SCENARIO -->+0.040 [+0.013, +0.066]<!-- /value -->` (A − B with its
paired 95% interval, as a `claims` table shows it; `digits`).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import cast
from unittest import mock

import numpy as np
import pandas as pd
import torch

from mmrobust.audit.compare import load_runs
from mmrobust.audit.document import Table, table_markdown
from mmrobust.audit.paired import (
    Predictions,
    load_predictions,
    sample_differences,
    seed_and_sample_interval,
    seed_differences,
    shared_seeds,
)
from mmrobust.audit.report import summary_markdown
from mmrobust.audit.result import AuditResult
from mmrobust.config import load_config
from mmrobust.errors import MMRobustError
from mmrobust.metrics import LOWER_IS_BETTER
from mmrobust.run import run_experiment
from mmrobust.runfolder import read_manifest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import recipe_search
import tables

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "reproductions" / "results"
BENCHMARKS = REPO / "benchmarks" / "results"
DOCUMENTS = ("README.md", "docs/**/*.md")
MARKER = re.compile(r"(<!-- table: (?P<spec>[^>]*?) -->\n)(?P<body>.*?)(<!-- /table -->)", re.DOTALL)
VALUE = re.compile(r"(<!-- value: (?P<spec>[^>]*?) -->)(?P<body>[^<\n]*)(<!-- /value -->)")  # a number in prose
KEEP_METRICS = ("accuracy", "macro_f1", "mae", "corr", "acc2", "f1", "acc5", "acc7")  # the ones docs cite


IDENTIFIERS = {"commit": str, "committed_at": str, "rerun_at": str, "config_hash": str, "recipe_hash": str,
               "setting_hash": str}


def read_table(path: Path, **options: object) -> pd.DataFrame:
    """A results CSV with its commit and hash columns as text: pandas would read a short hash such as
    3e59924 as the number 3 x 10^59924 (inf), and 1234567 as an integer."""
    if not path.is_file():  # e.g. a document's table names a study not collected yet
        raise SystemExit(f"error: no results file {path}: collect the study first (see this script's usage)")
    return pd.read_csv(path, dtype=IDENTIFIERS, **options)  # type: ignore[call-overload]


def collect(
    run_roots: Sequence[Path], study: str, models: Sequence[str] | None = None, archive: bool = False
) -> Path:
    """Every finished run below the `run_roots` (only those of `models`, in that order, if given) as
    one tidy CSV in the results folder (several roots: one study made of runs of several configs on
    the same recipe, paired per sample with each other). With `archive`, the runs' per-sample
    predictions are kept in <study>_predictions.npz and the runs committed before are kept beside
    the new ones (a run folder's (model, seed) replaces the committed one): a study can grow by
    seeds across sessions whose run folders are gone."""
    if not archive and (RESULTS / f"{study}_predictions.npz").is_file():
        raise SystemExit(f"error: {study} is archived (its committed seeds may have no run folder here): collect it "
                         "with --archive, which keeps them, or delete its files in the results folder to start over")
    frames, costs, curves = [], [], []
    for manifest, record, name in finished_runs(run_roots, models):
        trained_by = record.get("trained_git") or record.get("git") or {}  # a re-audited run keeps its training's
        costs.append({
            "model": name, "seed": record.get("seed"),
            **{k: record.get(k) for k in ("train_time_s", "wall_time_s", "parameters", "best_epoch", "train_threads")},
            "recipe_hash": recipe_hash(record), "setting_hash": setting_hash(record),
            "config_hash": record.get("config_hash"), "commit": trained_by.get("commit"),
        })  # fmt: skip
        curves += [{"model": name, "seed": record.get("seed"), **row} for row in record.get("curve") or []]
        t = read_table(manifest.parent / "results.csv")
        frames.append(t[t.metric.isin(KEEP_METRICS)])
    if not frames:
        raise SystemExit(f"no finished runs under {', '.join(map(str, run_roots))}")
    tables = {"": pd.concat(frames, ignore_index=True), "_runs": pd.DataFrame(costs), "_curves": pd.DataFrame(curves)}
    fresh = set(zip(tables["_runs"].model, tables["_runs"].seed, strict=True))
    merge = archive and (RESULTS / f"{study}_predictions.npz").is_file()  # committed runs pair only when archived
    kept = pd.DataFrame(columns=tables["_runs"].columns)  # the committed runs kept beside the fresh ones
    if merge and (RESULTS / f"{study}_runs.csv").is_file():
        kept = _committed(RESULTS / f"{study}_runs.csv", fresh, models)
    _check_same_settings(study, kept, tables["_runs"])  # before anything is written
    if (RESULTS / f"{study}.csv").is_file():
        print(against_committed(read_table(RESULTS / f"{study}.csv"), tables[""]))
    for suffix, table in tables.items():
        if merge and (RESULTS / f"{study}{suffix}.csv").is_file():
            table = pd.concat([_committed(RESULTS / f"{study}{suffix}.csv", fresh, models), table], ignore_index=True)
        if models is not None and len(table):
            order = {m: i for i, m in enumerate(models)}
            table = table.sort_values(["model", "seed"], key=lambda c: c.map(order) if c.name == "model" else c,
                                      kind="stable")  # fmt: skip
        if len(table):
            RESULTS.mkdir(parents=True, exist_ok=True)
            digits = "%.4g" if suffix == "_curves" else "%.6g"
            table.to_csv(RESULTS / f"{study}{suffix}.csv", index=False, float_format=digits)
        else:  # no such records this time (e.g. runs older than training curves): none stale left behind
            (RESULTS / f"{study}{suffix}.csv").unlink(missing_ok=True)
    paired = paired_per_sample(run_roots, models, RESULTS / f"{study}_predictions.npz" if archive else None)
    if paired is not None:
        write_paired(paired, study)
    return RESULTS / f"{study}.csv"


def as_written(values: pd.Series) -> pd.Series:
    """`values` as collect writes them (six significant digits), so fresh runs compare with committed ones."""
    return values.map(lambda v: float(f"{v:.6g}"))


def against_committed(committed: pd.DataFrame, fresh: pd.DataFrame) -> str:
    """How the runs collected now compare with the committed runs of the same model and seed, value for
    value (as written: six digits): a study re-run in full says at once whether it came out the same."""
    keys = ["model", "seed", "scenario", "metric"]
    both = committed.merge(fresh.assign(value=as_written(fresh.value)), on=keys, suffixes=("_committed", "_now"))
    if both.empty:
        return "none of the runs collected now was committed before"
    both["difference"] = (both.value_now - both.value_committed).abs()
    runs = both.groupby(["model", "seed"]).difference.max()
    moved = runs[runs > 0]
    identical = int((both.difference == 0).sum())
    summary = (f"{len(runs)} run(s) collected again: {len(both)} committed values compared, {identical} identical, "
               f"max |difference| {both.difference.max():.3g}")  # fmt: skip
    if moved.empty:
        return summary
    listed = ", ".join(f"{m} seed {s} ({d:.3g})" for (m, s), d in moved.sort_values(ascending=False).items())
    return f"{summary}; runs that moved: {listed}"


def finished_runs(
    run_roots: Sequence[Path], models: Sequence[str] | None = None
) -> list[tuple[Path, dict, str]]:
    """(manifest path, manifest, model label) of every finished run below `run_roots` (of `models` only,
    if given)."""
    found = []
    for manifest in sorted(m for root in run_roots for m in root.glob("**/manifest.json")):
        record = json.loads(manifest.read_text())
        if record.get("status") != "done" or not (manifest.parent / "results.csv").is_file():
            continue
        model = record.get("model") or {}
        name = model.get("label") or model.get("method")
        if models is None or name in models:
            found.append((manifest, record, name))
    return found


def recheck(study: str, config_path: Path, models: Sequence[str], seed: int, overrides: Sequence[str],
            out: Path) -> pd.DataFrame:  # fmt: skip
    """Re-run `models` at `seed` of a committed study with the code checked out now and compare every
    committed scenario x metric value of those runs: whether numbers documented from runs made at an
    older commit still come out of this one. The result rows are appended to rechecks.csv."""
    config = load_config(config_path, list(overrides))
    unknown = sorted(set(models) - {m.name for m in config.models})
    if unknown:
        raise SystemExit(f"error: {', '.join(unknown)} not among {config_path}'s models")
    if not (RESULTS / f"{study}.csv").is_file():
        raise SystemExit(f"error: no committed study {study} ({RESULTS / study}.csv)")
    committed = read_table(RESULTS / f"{study}.csv")
    committed = committed[committed.seed == seed]
    trained_at = read_table(RESULTS / f"{study}_runs.csv").query("seed == @seed").set_index("model").commit
    absent = sorted(set(models) - set(committed.model))
    if absent:  # checked before training, not after
        raise SystemExit(f"error: {study} has no committed run of {', '.join(absent)} at seed {seed}")
    runs = {name: out / name / f"seed-{seed}" for name in models}  # where run_experiment puts them
    held = [str(run) for run in runs.values() if run.exists()]
    if held:  # a finished run there would be skipped, not re-run: nothing would be rechecked
        raise SystemExit(f"error: {', '.join(held)} already exist; recheck re-runs, give it a fresh --out")
    config = dataclasses.replace(config, models=[m for m in config.models if m.name in models], seeds=[seed])
    with tempfile.TemporaryDirectory(prefix="recheck-stages-") as stages, \
            mock.patch.dict(os.environ, {"MMROBUST_STAGE_CACHE": stages}):  # fmt: skip
        run_experiment(config, out)  # every stage trains with this code: none comes from the stage cache
    rows = []
    for name, run in runs.items():  # only the runs made now, whatever else `out` holds
        record = read_manifest(run)
        fresh = read_table(run / "results.csv")
        old = committed[committed.model == name]
        both = old.merge(fresh, on=["scenario", "metric"], suffixes=("_committed", "_now"))
        both["value_now"] = as_written(both.value_now)
        rows.append({
            "study": study, "model": name, "seed": seed, "compared": len(both),
            "max_abs_difference": float((both.value_committed - both.value_now).abs().max()),
            "committed_at": str(trained_at[name])[:7], "rerun_at": str((record.get("git") or {}).get("commit"))[:7],
        })  # fmt: skip
    table = pd.DataFrame(rows)
    path = RESULTS / "rechecks.csv"
    if path.is_file():  # a newer recheck of the same run replaces the older
        kept = read_table(path)
        again = kept.set_index(["study", "model", "seed"]).index.isin(table.set_index(["study", "model", "seed"]).index)
        table = pd.concat([kept[~again], table], ignore_index=True)
    table.to_csv(path, index=False, float_format="%.3g")
    return table


def recipe_hash(record: dict) -> str:
    """What every model of a study shares: the data, training and audit settings of a run's config
    (not where the data live, the device or loggers)."""
    config = record.get("config") or {}
    data = {k: v for k, v in (config.get("data") or {}).items() if k != "data_dir"}
    train = {k: v for k, v in (config.get("train") or {}).items() if k not in ("device", "loggers", "threads")}
    return _digest({"data": data, "train": train, "audit": config.get("audit")})


def setting_hash(record: dict) -> str:
    """Everything a run's numbers depend on but its seed: the recipe and the model's method and parameters."""
    model = {k: v for k, v in (record.get("model") or {}).items() if k != "label"}
    return _digest({"recipe": recipe_hash(record), "model": model})


def _digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _check_same_settings(study: str, kept: pd.DataFrame, fresh: pd.DataFrame) -> None:
    """Committed runs kept beside fresh ones must share their recipe (and, for a model re-run, its
    settings): a recipe changed between sessions would otherwise mix two recipes in one study."""
    start_over = "re-run every seed of every model on the new settings, or delete the study's results files"
    twice = fresh[fresh.duplicated(["model", "seed"])]
    if len(twice):
        model, seed = twice.model.iloc[0], twice.seed.iloc[0]
        raise SystemExit(f"error: {study}: two run folders hold {model} seed {seed}; collect the run folder of one")
    recipes = set(fresh.recipe_hash)
    if len(recipes) > 1:
        raise SystemExit(f"error: the runs collected for {study} were trained on {len(recipes)} different recipes")
    if len(kept) and ("recipe_hash" not in kept or not set(kept.recipe_hash) <= recipes):
        raise SystemExit(f"error: {study}'s committed runs were made on another recipe than the runs collected now "
                         f"(or record none): {start_over}")
    settings = fresh.groupby("model").setting_hash.agg(set)
    for model, own in settings.items():
        old = kept[kept.model == model]
        if len(own) > 1 or (len(old) and not set(old.setting_hash) <= own):
            raise SystemExit(f"error: {study}'s runs of {model} differ in their settings across seeds: {start_over}")


def _committed(path: Path, fresh: set[tuple[str, int]], models: Sequence[str] | None) -> pd.DataFrame:
    """A committed study table's rows of the runs not collected again (and of `models`, if given)."""
    table = read_table(path)
    pairs = zip(table.model, table.seed, strict=True)
    return table[[(m, s) not in fresh and (models is None or m in models) for m, s in pairs]]


def paired_per_sample(
    run_roots: Sequence[Path], models: Sequence[str] | None = None, archive: Path | None = None
) -> pd.DataFrame | None:
    """Every pair of models' per-sample paired difference per scenario (the primary per-sample
    metric: accuracy or MAE), from the runs' predictions (and the `archive`'s, which the runs'
    update), or None when a run has none. Committed beside the study's results, so documented
    intervals regenerate without the run folders."""
    runs = load_runs(list(run_roots))
    table = runs.table if models is None else runs.table[runs.table.model.isin(models)]
    metric = "accuracy" if "accuracy" in set(table.metric) else "mae"
    keys = table[["model", "seed", "run_dir"]].drop_duplicates()
    predictions, lacking = load_predictions(list(keys.itertuples(index=False, name=None)))
    if lacking:
        return None
    masks = {(m, int(s), str(c)): str(h) for m, s, c, h in table[["model", "seed", "scenario", "mask_hash"]]
             .drop_duplicates().itertuples(index=False, name=None)}  # fmt: skip
    if archive is not None:
        if archive.is_file():
            old_predictions, old_masks = read_archive(archive)
            keep = {k for k in old_predictions if k not in predictions and (models is None or k[0] in models)}
            predictions = {**{k: old_predictions[k] for k in keep}, **predictions}
            masks = {**{k: v for k, v in old_masks.items() if k[:2] in keep}, **masks}
        write_archive(archive, predictions, masks)
    return differences(predictions, masks, metric, models)


def differences(
    predictions: dict[tuple[str, int], Predictions], masks: dict[tuple[str, int, str], str], metric: str,
    models: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Every pair of models' paired per-sample differences (in `models`' order, if given), each
    scenario paired only where both models were audited under the same masks."""
    by_model: dict[tuple[str, str], set[str]] = {}
    for (model, _, scenario), mask in masks.items():
        by_model.setdefault((scenario, model), set()).add(mask)
    ordered = sorted(predictions, key=lambda k: (models.index(k[0]), k[1])) if models else list(predictions)
    return sample_differences(
        {k: predictions[k] for k in ordered}, {k: frozenset(v) for k, v in by_model.items()}, metric
    ).assign(metric=metric)


def pair_archived(out: Path | None = None) -> list[Path]:
    """Every archived study's <study>_paired.csv recomputed from its committed predictions, in its
    runs' model order, into `out` (default: beside it): after a change to the paired statistics,
    without any run folder."""
    written = []
    for archive in sorted(RESULTS.glob("*_predictions.npz")):
        study = archive.name.removesuffix("_predictions.npz")
        predictions, masks = read_archive(archive)
        metric = "accuracy" if "accuracy" in set(read_table(RESULTS / f"{study}.csv").metric) else "mae"
        models = list(dict.fromkeys(read_table(RESULTS / f"{study}_runs.csv").model))
        written.append(write_paired(differences(predictions, masks, metric, models), study, out))
    return written


def write_paired(paired: pd.DataFrame, study: str, out: Path | None = None) -> Path:
    path = (out or RESULTS) / f"{study}_paired.csv"
    paired.to_csv(path, index=False, float_format="%.6g")
    return path


def write_archive(
    path: Path, predictions: dict[tuple[str, int], Predictions], masks: dict[tuple[str, int, str], str]
) -> None:
    """Per-sample predictions of a study's runs in one compressed file: the targets once, each run's
    (scenario x sample) predictions (the smallest integer type for classes) and its masks' hashes."""
    keys = list(predictions)
    scenarios = list(predictions[keys[0]].scenarios)
    if any(list(predictions[k].scenarios) != scenarios for k in keys):
        raise SystemExit(f"{path.name}: the study's runs were audited under different scenarios; archive them apart")
    if any(predictions[k].excluded for k in keys):  # the archive has no field for them: never pair them wrongly
        raise SystemExit(f"{path.name}: the runs left samples with no modality unscored; the archive cannot hold that")
    stacked = np.stack([torch.stack([predictions[k].scenarios[c] for c in scenarios]).numpy() for k in keys])
    if not np.issubdtype(stacked.dtype, np.floating):
        stacked = stacked.astype(np.min_scalar_type(max(int(stacked.max()), 1)))
    np.savez_compressed(
        path, target=predictions[keys[0]].target.numpy(), predictions=stacked, scenarios=np.array(scenarios),
        models=np.array([m for m, _ in keys]), seeds=np.array([s for _, s in keys]),
        masks=np.array([[masks[(m, s, c)] for c in scenarios] for m, s in keys]),
    )  # fmt: skip


def read_archive(path: Path) -> tuple[dict[tuple[str, int], Predictions], dict[tuple[str, int, str], str]]:
    """What `write_archive` wrote: (model, seed) -> predictions, and (model, seed, scenario) -> mask hash."""
    with np.load(path) as saved:
        target = torch.from_numpy(saved["target"])
        scenarios = [str(c) for c in saved["scenarios"]]
        stacked, hashes = saved["predictions"].astype(saved["target"].dtype), saved["masks"]  # each read once
        predictions, masks = {}, {}
        for i, (model, seed) in enumerate(zip(saved["models"], saved["seeds"], strict=True)):
            key = (str(model), int(seed))
            predictions[key] = Predictions(target, dict(zip(scenarios, torch.from_numpy(stacked[i]), strict=True)))
            masks.update({(*key, c): str(h) for c, h in zip(scenarios, hashes[i], strict=True)})
    return predictions, masks


def parse_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """A marker's (kind, source, options)."""
    kind, source, *options = spec.split()
    return kind, source, dict(o.split("=", 1) for o in options)


def search_results(name: str) -> tuple[dict, list[dict]]:
    """A recipe search's spec (configs/recipes/search/NAME.yaml) and the rows of its results file."""
    path = REPO / "configs" / "recipes" / "search" / f"{name}.yaml"
    search = recipe_search.read_yaml_mapping(path)
    return search, recipe_search.read_results(path.parent / search["results"])


def render(spec: str) -> str:
    """The table a marker's spec asks for."""
    kind, source, opts = parse_spec(spec)
    if kind == "recipe":
        search, rows = search_results(source)
        return recipe_search.summary(rows, list(search["candidates"]), subsets=opts.get("subsets") == "true")
    if kind == "reliance":
        return reliance_table(search_results(source)[1], opts["model"])
    if kind == "convergence":
        return convergence_table(source, opts["candidate"])
    if kind == "subsets":
        return subsets_table(source, opts)
    if kind == "summary":
        return summary_markdown(AuditResult.read(RESULTS / f"{source}.json"))
    if kind == "record":
        return record_table(source, opts)
    if kind == "curves":
        return curves_table(source, opts)
    if kind == "collapse":
        return collapse_table(RESULTS / f"{source}.jsonl", [int(e) for e in opts["epochs"].split(",")])
    if kind == "spread":
        return spread_table(RESULTS / f"{source}.jsonl")
    if kind == "means":
        return means_table(read_table(RESULTS / f"{source}.csv"), opts["by"], opts["values"].split(","))
    if kind == "cost":
        return cost_table(source, opts)
    if kind == "benchmarks":
        return benchmarks_table(source.split(","))
    if kind == "rechecks":
        return rechecks_table(read_table(RESULTS / f"{source}.csv"))
    if kind == "claims":
        return claims_table(source, opts["list"], float(opts.get("tolerance", 0)))
    if kind == "grid":
        return grid_table(source, opts)
    if kind == "seeds":
        return seeds_table(changed=opts.get("changed") == "true")
    if kind != "runs":
        raise SystemExit(f"unknown table kind '{kind}' in <!-- table: {spec} -->")
    t = read_table(RESULTS / f"{source}.csv")
    if "scenarios" in opts:
        scenarios = opts["scenarios"].split(";")
        if missing := [s for s in scenarios if s not in set(t.scenario)]:
            raise SystemExit(f"<!-- table: {spec} -->: {source} has no scenario {', '.join(missing)}")
    else:
        kinds = opts.get("kinds", "clean,subset").split(",")
        if missing := [k for k in kinds if k not in set(t.kind)]:  # a kind no scenario has: a silently empty column
            kinds_present = ", ".join(dict.fromkeys(t.kind))
            raise SystemExit(
                f"<!-- table: {spec} -->: no scenario of {source} is of kind {', '.join(missing)} ({kinds_present})"
            )
        scenarios = [s for k in kinds for s in dict.fromkeys(t[t.kind == k].scenario)]
    models = opts["models"].split(",") if "models" in opts else list(dict.fromkeys(t.model))
    return tables.table(t, opts.get("metric", "accuracy"), scenarios, opts.get("delta") == "true", models)


def subsets_table(study: str, opts: dict[str, str]) -> str:
    """Per subset: its specialist, `model`, the gap model − specialist with its per-sample paired 95%
    interval, whether the gap is within `tolerance` (default 0.01: met when the interval's low end is
    above −tolerance, not met when its high end is below it, else inconclusive), then `others`.
    A subset's specialist is the model labelled `specialist-<subset>`; the full set's is `full`."""
    t = read_table(RESULTS / f"{study}.csv")
    paired = read_table(RESULTS / f"{study}_paired.csv")
    metric = paired.metric.iloc[0]
    if metric != "accuracy":
        raise SystemExit(f"subsets tables compare accuracy (higher is better); {study} has {metric}")
    model, tolerance = opts["model"], float(opts.get("tolerance", 0.01))
    others = [m for m in opts.get("others", "").split(",") if m]
    t = t[(t.metric == metric) & t.kind.isin(["clean", "subset"])]
    header = ["subset", "specialist", model, f"{model} − specialist [95% CI]", f"within {tolerance:g}", *others]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for scenario, specialist in subset_specialists(t, opts):
        subset = scenario.removeprefix("subset[").removesuffix("]") if scenario != "clean" else None
        values = {m: t[(t.scenario == scenario) & (t.model == m)].value for m in [specialist, model, *others]}
        gap = _gap(paired, model, specialist, scenario)
        _, low, high = gap if gap is not None else (float("nan"),) * 3
        met = {"holds": "yes", "does not hold": "no"}.get(verdict_word(low, high, tolerance, False), "inconclusive")
        shown = gap_text(gap) if gap is not None else "—"
        cells = [subset or "all (clean)", tables.cell(values[specialist]), tables.cell(values[model]), shown,
                 met if gap is not None else "—", *(tables.cell(values[m]) if len(values[m]) else "—" for m in others)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def subset_specialists(t: pd.DataFrame, opts: dict[str, str]) -> list[tuple[str, str]]:
    """(scenario, its specialist's label) of every clean or subset scenario of a study's table `t`
    where both the specialist and `opts["model"]` have runs, in the table's order."""
    pairs = []
    for scenario in dict.fromkeys(t[t.kind.isin(["clean", "subset"])].scenario):
        subset = scenario.removeprefix("subset[").removesuffix("]") if scenario != "clean" else None
        specialist = opts.get("full", "joint") if subset is None else f"specialist-{subset}"
        present = set(t[t.scenario == scenario].model)
        if specialist in present and opts["model"] in present:
            pairs.append((scenario, specialist))
    return pairs


def parse_claims(claims: str) -> list[tuple[str, str, str]]:
    """(A, B, SCENARIO) of each `A:B@SCENARIO` in a `;`-separated list (a scenario may hold `@`)."""
    parsed = []
    for claim in filter(None, (c.strip() for c in claims.split(";"))):
        match = re.fullmatch(r"(?P<a>[^:@]+):(?P<b>[^:@]+)@(?P<scenario>.+)", claim)
        if match is None:
            raise SystemExit(f"claim '{claim}' is not A:B@SCENARIO (A better than B under SCENARIO)")
        parsed.append((match["a"], match["b"], match["scenario"]))
    return parsed


def verdict_word(low: float, high: float, tolerance: float, lower_is_better: bool) -> str:
    """A − B's interval read as a claim "A better than B" (`tolerance` t > 0: "A at least as good as B
    up to t"): holds when it lies on the claimed side (above 0; at or above −t), does not hold when it
    lies on the other, else inconclusive. The slack at −t keeps a bound that is −t in exact arithmetic
    (accuracy differences are fractions) from failing by a rounding error."""
    worst, best = sorted((-high, -low) if lower_is_better else (low, high))  # in "higher is better" terms
    holds = worst >= -tolerance - 1e-9 if tolerance > 0 else worst > 0
    return "holds" if holds else "does not hold" if best < -tolerance else "inconclusive"


def grid_table(study: str, opts: dict[str, str]) -> str:
    """A swept setting's table (CroSSL's label fraction, masking ratio): row r and column c show model
    `c` + the row's suffix under one `scenario` (mean ± std over seeds); `rows` is `NAME:SUFFIX,...`
    (an empty suffix is the column's model itself, e.g. the full label set), `name` heads the rows."""
    t = read_table(RESULTS / f"{study}.csv")
    t = t[(t.metric == opts.get("metric", "accuracy")) & (t.scenario == opts.get("scenario", "clean"))]
    columns = opts["columns"].split(",")
    lines = [f"| {opts.get('name', 'setting')} | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for row in opts["rows"].split(","):
        name, _, suffix = row.partition(":")
        cells = [t[t.model == c + suffix].value for c in columns]
        lines.append(f"| {name} | " + " | ".join(tables.cell(v) if len(v) else "—" for v in cells) + " |")
    return "\n".join(lines)


def claims_table(study: str, claims: str, tolerance: float = 0.0) -> str:
    """One row per claim `A:B@SCENARIO`, A better than B (with a `tolerance` t > 0: A at least as
    good as B up to t, a non-inferiority claim): A − B in the study's paired metric, its 95% interval,
    and the verdict."""
    paired = read_table(RESULTS / f"{study}_paired.csv")
    metric = paired.metric.iloc[0]
    lower_is_better = metric in LOWER_IS_BETTER
    lines = [f"| claim | {metric}: A − B [95% CI] | verdict |", "|---|---|---|"]
    for a, b, scenario in parse_claims(claims):
        gap = claimed_gap(study, paired, a, b, scenario)
        verdict = verdict_word(gap[1], gap[2], tolerance, lower_is_better)
        shown = scenario if scenario != "clean" else "all modalities"
        relation = f"at least as good as {b} (within {tolerance:g})" if tolerance else f"better than {b}"
        lines.append(f"| {a} {relation}, {shown} | {gap_text(gap)} | {verdict} |")
    return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class Claim:
    """One verdict a document states: A better than B under `scenario` (or, with a tolerance, at
    least as good up to it), from a `claims` table's list or a `subsets` table's row."""

    document: str
    study: str
    a: str
    b: str
    scenario: str
    tolerance: float


def documented_claims() -> list[Claim]:
    """Every claim of every `claims` and `subsets` table in the documentation, in document order."""
    found = []
    for path in documents():
        document = str(path.relative_to(REPO))
        for m in MARKER.finditer(path.read_text()):
            kind, study, opts = parse_spec(m.group("spec"))
            if kind == "claims":
                for a, b, scenario in parse_claims(opts["list"]):
                    found.append(Claim(document, study, a, b, scenario, float(opts.get("tolerance", 0))))
            elif kind == "subsets":
                t = read_table(RESULTS / f"{study}.csv")
                for scenario, specialist in subset_specialists(t[t.metric == "accuracy"], opts):
                    tolerance = float(opts.get("tolerance", 0.01))
                    found.append(Claim(document, study, opts["model"], specialist, scenario, tolerance))
    return found


def seed_checks(claims: Sequence[Claim]) -> pd.DataFrame:
    """Each claim's documented interval and verdict (the per-sample bootstrap, seeds averaged) beside
    the interval and verdict when the training seeds are resampled too; NaN where the study keeps no
    per-sample archive."""
    archives: dict[str, tuple[dict[tuple[str, int], Predictions], dict[tuple[str, int, str], str]] | None] = {}
    paired_tables: dict[str, pd.DataFrame] = {}
    rows = []
    for c in claims:
        if c.study not in archives:
            path = RESULTS / f"{c.study}_predictions.npz"
            archives[c.study] = read_archive(path) if path.is_file() else None
            paired_tables[c.study] = read_table(RESULTS / f"{c.study}_paired.csv")
        paired = paired_tables[c.study]
        metric = paired.metric.iloc[0]
        if (gap := _gap(paired, c.a, c.b, c.scenario)) is None:
            continue  # a subsets row without a paired interval states no verdict ("—")
        _, low, high = gap
        seed_low = seed_high = float("nan")
        if (archive := archives[c.study]) is not None:
            predictions, _ = archive
            diffs = seed_differences(predictions, c.a, c.b, c.scenario, metric, shared_seeds(predictions, c.a, c.b))
            _, seed_low, seed_high = seed_and_sample_interval(diffs)
        lower = metric in LOWER_IS_BETTER
        rows.append({**dataclasses.asdict(c), "low": low, "high": high,
                     "verdict": verdict_word(low, high, c.tolerance, lower), "seed_low": seed_low,
                     "seed_high": seed_high, "seed_verdict": verdict_word(seed_low, seed_high, c.tolerance, lower)
                     if archive is not None else "not checked"})  # fmt: skip
    return pd.DataFrame(rows)


def documented_seed_checks() -> pd.DataFrame:
    """`seed_checks` of every documented claim, computed once per results folder (two tables read it)."""
    return _seed_checks_of(RESULTS)


@functools.cache
def _seed_checks_of(results: Path) -> pd.DataFrame:
    """Cached by the results folder the module reads (tests point it elsewhere)."""
    return seed_checks(documented_claims())


def seeds_table(changed: bool = False) -> str:
    """Per document: how many of its verdicts stay the same when the training seeds are resampled
    too (`seed_checks`), and how the others move; `changed`: one row per verdict that moves."""
    checks = documented_seed_checks()
    if changed:
        moved = checks[(checks.verdict != checks.seed_verdict) & (checks.seed_verdict != "not checked")]
        lines = ["| document | claim | per-sample 95% CI | verdict | seeds and samples 95% CI | verdict |",
                 "|---|---|---|---|---|---|"]  # fmt: skip
        for r in moved.itertuples():
            relation = f"within {r.tolerance:g} of" if r.tolerance else "better than"
            lines.append(f"| {Path(r.document).stem} | {r.a} {relation} {r.b}, {r.scenario} | "
                         f"[{r.low:+.3f}, {r.high:+.3f}] | {r.verdict} | [{r.seed_low:+.3f}, {r.seed_high:+.3f}] | "
                         f"{r.seed_verdict} |")  # fmt: skip
        return "\n".join(lines)
    lines = ["| document | verdicts | unchanged | holds → inconclusive | does not hold → inconclusive | other moves "
             "| no per-sample archive |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for document, group in checks.groupby("document", sort=False):
        checked = group[group.seed_verdict != "not checked"]
        moves = list(zip(checked.verdict, checked.seed_verdict, strict=True))
        counts = [len(group), sum(a == b for a, b in moves), moves.count(("holds", "inconclusive")),
                  moves.count(("does not hold", "inconclusive"))]  # fmt: skip
        other = len(moves) - counts[1] - counts[2] - counts[3]
        lines.append(f"| {document} | " + " | ".join(map(str, [*counts, other, len(group) - len(checked)])) + " |")
    return "\n".join(lines)


def convergence_table(search_name: str, candidate: str) -> str:
    """Validation accuracy at a quarter, half, three quarters and the end of the budget (mean over
    folds) per model of one recipe-search candidate: whether the curves have flattened."""
    rows = [r for r in search_results(search_name)[1] if r["candidate"] == candidate]
    lines = ["| model | 25% | 50% | 75% | 100% | last 10% − previous 10% |", "|---|---|---|---|---|---|"]
    for model in dict.fromkeys(r["model"] for r in rows):
        curves = [r["curve"] for r in rows if r["model"] == model]
        if min(map(len, curves)) > 1:  # a model fitted at once (`features`) has no curve
            lines.append(f"| {model} | {_flattening(curves)} |")
    return "\n".join(lines)


def curves_table(study: str, opts: dict[str, str]) -> str:
    """Per model of a study (option `models`, default all) and training stage, the `curve` column
    (default train_loss; e.g. val_accuracy) at a quarter, half, three quarters and the end of the
    budget, mean over seeds, from <study>_curves.csv (the runs' manifests): whether training flattened."""
    table = read_table(RESULTS / f"{study}_curves.csv")
    column = opts.get("curve", "train_loss")
    if column not in table.columns:  # e.g. val_accuracy of a recipe that trains without validation
        recorded = ", ".join(c for c in table.columns if c not in ("model", "seed", "stage", "epoch"))
        raise SystemExit(f"error: {study}_curves.csv has no curve {column}; its runs recorded {recorded}")
    models = opts["models"].split(",") if "models" in opts else list(dict.fromkeys(table.model))
    lines = [f"| model | stage | {column}: 25% | 50% | 75% | 100% | last 10% − previous 10% | seeds |"]
    lines.append("|---|---|---|---|---|---|---|---|")
    shown = set()  # a stage reused from another model's run (Stage.reuse_key) is shown once
    for model in models:
        runs = table[table.model == model]
        for stage in dict.fromkeys(runs.stage):  # every stage that trains (a choice or ensemble row is one epoch)
            curves = [g.sort_values("epoch")[column].tolist() for _, g in runs[runs.stage == stage].groupby("seed")]
            key = (stage, str(curves))
            if min(map(len, curves)) > 1 and not all(pd.isna(c).all() for c in curves) and key not in shown:
                shown.add(key)
                lines.append(f"| {model} | {stage} | {_flattening(curves)} | {len(curves)} |")
    return "\n".join(lines)


def record_table(study: str, opts: dict[str, str]) -> str:
    """One field of each run's record (<study>_runs.csv, option `field`, e.g. best_epoch: the
    candidate `ume_mma` chose on validation) per model (option `models`) and seed."""
    runs = read_table(RESULTS / f"{study}_runs.csv")
    runs = runs[runs.model.isin(opts["models"].split(","))]
    wide = runs.pivot(index="model", columns="seed", values=opts["field"]).reindex(opts["models"].split(","))
    lines = ["| model | " + " | ".join(f"seed {s}" for s in wide.columns) + " |", "|---|" + "---|" * len(wide.columns)]
    for model, row in wide.iterrows():
        lines.append(f"| {model} | " + " | ".join("—" if pd.isna(v) else f"{v:g}" for v in row) + " |")
    return "\n".join(lines)


def _flattening(curves: Sequence[Sequence[float]]) -> str:
    """Cells of the mean curve at 25/50/75/100% of its length, then its last tenth's mean minus the
    tenth before: near 0 when the curve has flattened."""
    n = min(len(c) for c in curves)
    mean = [sum(c[i] for c in curves) / len(curves) for i in range(n)]
    at = [mean[max(0, round(n * q) - 1)] for q in (0.25, 0.5, 0.75, 1.0)]
    tenth = max(1, n // 10)
    drift = sum(mean[-tenth:]) / tenth - sum(mean[-2 * tenth : -tenth]) / tenth
    return " | ".join(f"{v:.3f}" for v in at) + f" | {drift:+.3f}"


def collapse_table(path: Path, epochs: Sequence[int]) -> str:
    """Per covariance weight and seed, the mean per-dimension std of the pretrained embedding after the
    given epochs (1-based), from scripts/crossl_collapse.py's JSON lines."""
    rows = sorted((json.loads(line) for line in path.read_text().splitlines() if line.strip()),
                  key=lambda r: (-r["cov_coeff"], r["seed"]))  # fmt: skip
    lines = ["| covariance weight | seed | " + " | ".join(f"epoch {e}" for e in epochs) + " |"]
    lines.append("|---|---|" + "---|" * len(epochs))
    for r in rows:
        cells = [f"{r['std'][e - 1]:.3f}" if e <= len(r["std"]) else "—" for e in epochs]
        lines.append(f"| {r['cov_coeff']:g} | {r['seed']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def spread_table(path: Path) -> str:
    """Per trained model, the embedding std over its seeds, from `crossl_collapse.py --runs` lines."""
    by_model: dict[tuple[str, float], list[float]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            by_model.setdefault((r["model"], r["cov_coeff"]), []).append(r["std"])
    lines = ["| model | covariance weight | seeds | embedding std |", "|---|---|---|---|"]
    for (model, cov), stds in by_model.items():
        lines.append(f"| {model} | {cov:g} | {len(stds)} | {tables.cell(pd.Series(stds))} |")
    return "\n".join(lines)


def reliance_table(rows: Sequence[dict[str, object]], model: str) -> str:
    """Per modality: validation accuracy with every modality minus that without it alone, per fold
    and their mean (the largest cost names the modality `model` relies on most)."""
    runs = [r for r in rows if r["model"] == model and r.get("val_subsets")]
    if not runs:
        raise SystemExit(f"error: no runs of '{model}' with per-subset validation results")
    folds = [cast(dict[str, float], r["val_subsets"]) for r in runs]
    subsets = [name[len("subset[") : -1].split("+") for name in folds[0] if name.startswith("subset[")]
    modalities = list(dict.fromkeys(m for subset in subsets for m in subset))  # the full set, in order
    names = ["val " + "+".join(str(s) for s in cast(list[object], r["fold"])) for r in runs]
    lines = ["| without | " + " | ".join(names) + " | mean cost |"]
    lines.append("|---|" + "---|" * (len(folds) + 1))
    for m in modalities:
        rest = "subset[" + "+".join(x for x in modalities if x != m) + "]"
        costs = [f["clean"] - f[rest] for f in folds]
        lines.append(f"| {m} | " + " | ".join(f"{c:+.3f}" for c in costs) + f" | {sum(costs) / len(costs):+.3f} |")
    return "\n".join(lines)


def means_table(rows: pd.DataFrame, by: str, values: Sequence[str]) -> str:
    """Mean ± std of each of `values` per group of `by` (groups in order of appearance)."""
    lines = [f"| {by} | " + " | ".join(values) + " | rows |", "|---|" + "---|" * (len(values) + 1)]
    for name, group in rows.groupby(by, sort=False):
        lines.append(f"| {name} | " + " | ".join(tables.cell(group[v]) for v in values) + f" | {len(group)} |")
    return "\n".join(lines)


def cost_table(study: str, opts: dict[str, str]) -> str:
    """Parameters and training seconds (mean over the runs that recorded them, one thread each) of
    each of `models`, and of all `specialist-*` models plus `full` together: what one model for
    every subset saves over training a specialist per subset. With <study>_inference.csv
    (scripts/inference_cost.py), also each model's clean prediction time; for the specialists, their
    mean, since each sample is served by the one specialist of its subset."""
    runs = read_table(RESULTS / f"{study}_runs.csv")
    timing = RESULTS / f"{study}_inference.csv"
    inference = read_table(timing).set_index("model").ms_per_1000 if timing.is_file() else None
    full = opts.get("full", "joint")
    specialists = [m for m in dict.fromkeys(runs.model) if m.startswith("specialist-")] + [full]
    header = ["model", "parameters", "training seconds"]
    header += ["inference ms / 1,000 samples"] if inference is not None else []
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]

    def row(name: str, members: list[str]) -> str:
        g = runs[runs.model.isin(members)].dropna(subset=["train_time_s"]).groupby("model")
        cells = [name, "—", "—"]
        if g.ngroups == len(members):  # every model recorded its costs: a total to show
            cells[1:] = [f"{g.parameters.first().sum():,.0f}", f"{g.train_time_s.mean().sum():.0f}"]
        if inference is not None:
            known = [inference[m] for m in members if m in inference.index]
            cells.append(f"{sum(known) / len(known):.0f}" if len(known) == len(members) else "—")
        return "| " + " | ".join(cells) + " |"

    for model in opts["models"].split(","):
        lines.append(row(model, [model]))
    if "plus" in opts:  # A:B, A trains stages B also trains, which runs may have reused from the stage cache
        a, b = opts["plus"].split(":")
        g = runs[runs.model.isin([a, b])].dropna(subset=["train_time_s"]).groupby("model").train_time_s.mean()
        if len(g) == 2:
            cells = [f"{a} with its {b} stages trained (at most)", "", f"{g.sum():.0f}"]
            lines.append("| " + " | ".join(cells + ([""] if inference is not None else [])) + " |")
    lines.append(row(f"the {len(specialists)} specialists together", specialists))
    return "\n".join(lines)


def rechecks_table(table: pd.DataFrame) -> str:
    """`recheck`'s comparisons: per re-run model and seed, how far its values moved from the committed ones."""
    header = ["study", "model", "seed", "values compared", "max |re-run − committed|", "committed run at", "re-run at"]
    rows = [[r.study, r.model, str(r.seed), str(r.compared), f"{r.max_abs_difference:.2g}", r.committed_at, r.rerun_at]
            for r in table.itertuples()]  # fmt: skip
    return table_markdown(Table(header, rows))


def benchmarks_table(names: Sequence[str]) -> str:
    """The benchmarks' headline rows, each with the load and commit it was measured at (from the
    benchmarks/results/NAME.json a full benchmark run writes)."""
    rows = []
    for name in names:
        result = json.loads((BENCHMARKS / f"{name}.json").read_text())
        load = result["load_avg_1_5_15_at_end"][1]
        rows += [[f"`{name}`", row["what"], row["goal"], f"**{row['measured']}**", row["verdict"], f"{load:.1f}",
                  f"{result['commit']} ({result['date']})"] for row in result["rows"]]  # fmt: skip
    header = ["benchmark", "what is measured", "goal", "measured", "verdict", "load", "commit"]
    return table_markdown(Table(header, rows))


def _gap(paired: pd.DataFrame, a: str, b: str, scenario: str) -> tuple[float, float, float] | None:
    """a − b under `scenario` from the committed paired differences (stored in either order)."""
    for first, second, sign in ((a, b, 1.0), (b, a, -1.0)):
        row = paired[(paired.model_a == first) & (paired.model_b == second) & (paired.scenario == scenario)]
        if len(row):
            r = row.iloc[0]
            ends = sorted((sign * r["low"] + 0.0, sign * r["high"] + 0.0))  # + 0.0: no "-0.000"
            return sign * r["mean"] + 0.0, ends[0], ends[1]
    return None


def claimed_gap(study: str, paired: pd.DataFrame, a: str, b: str, scenario: str) -> tuple[float, float, float]:
    """`_gap`, or a clear error naming the study when its paired differences lack the pair."""
    gap = _gap(paired, a, b, scenario)
    if gap is None:
        raise SystemExit(f"{study}_paired.csv has no {a} vs {b} under {scenario}")
    return gap


def gap_text(gap: tuple[float, float, float], digits: int = 3) -> str:
    """A − B and its interval as every document shows them: `+0.040 [+0.013, +0.066]`."""
    mean, low, high = gap
    return f"{mean:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]"


def documents() -> list[Path]:
    return sorted({p for pattern in DOCUMENTS for p in REPO.glob(pattern)})


def render_value(spec: str) -> str:
    """The number an inline `value` marker asks for: `mean` (over seeds) or `gap` (a claim's paired
    difference and interval), so prose that quotes a table cannot drift from it."""
    kind, study, opts = parse_spec(spec)
    digits = int(opts.get("digits", 3))
    if kind == "mean":
        t = read_table(RESULTS / f"{study}.csv")
        scenario, metric = opts.get("scenario", "clean"), opts.get("metric", "accuracy")
        values = t[(t.model == opts["model"]) & (t.scenario == scenario) & (t.metric == metric)].value
        if values.empty:
            raise SystemExit(f"<!-- value: {spec} -->: {study} has no {metric} of {opts['model']} under {scenario}")
        return f"{values.mean():.{digits}f}"
    if kind == "gap":
        claims = parse_claims(opts["claim"])
        if len(claims) != 1:
            raise SystemExit(f"<!-- value: {spec} -->: a gap quotes one claim A:B@SCENARIO, not {len(claims)}")
        return gap_text(claimed_gap(study, read_table(RESULTS / f"{study}_paired.csv"), *claims[0]), digits)
    raise SystemExit(f"unknown value kind '{kind}' in <!-- value: {spec} --> (mean or gap)")


def regenerate(text: str) -> str:
    text = MARKER.sub(lambda m: m.group(1) + render(m.group("spec")) + "\n" + m.group(4), text)
    return VALUE.sub(lambda m: m.group(1) + render_value(m.group("spec")) + m.group(4), text)


def stale(paths: Sequence[Path] | None = None) -> list[str]:
    """`file: spec` of every generated table and quoted value (in `paths`, default the documentation)
    whose text differs from its regeneration."""
    found = []
    for path in documents() if paths is None else paths:
        text = path.read_text()
        shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path
        for m in MARKER.finditer(text):
            if m.group("body") != render(m.group("spec")) + "\n":
                found.append(f"{shown}: <!-- table: {m.group('spec')} -->")
        for m in VALUE.finditer(text):
            if m.group("body") != render_value(m.group("spec")):
                found.append(f"{shown}: <!-- value: {m.group('spec')} -->")
    return found


def provenance() -> list[str]:
    """Per committed study: the commits its runs were made at and, for each, the library files
    (src/) that differ from HEAD, so "every number at one code version" can be checked with git."""
    lines = []
    for path in sorted(RESULTS.glob("*_runs.csv")):
        table = read_table(path, usecols=lambda c: c in ("commit",))
        if "commit" not in table:
            continue
        lines.append(f"{path.stem.removesuffix('_runs')}:")
        for commit, runs in table.groupby("commit").size().items():
            changed = subprocess.run(["git", "diff", "--name-only", str(commit), "HEAD", "--", "src/"],
                                     cwd=REPO, capture_output=True, text=True)  # fmt: skip
            files = changed.stdout.split() if changed.returncode == 0 else ["(commit not in this clone)"]
            lines.append(f"  {str(commit)[:7]} ({runs} runs): {', '.join(files) or 'src/ as at HEAD'}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect", help="a study's run folders -> docs/reproductions/results/<study>.csv")
    c.add_argument("runs", type=Path, nargs="+")
    c.add_argument("--study", required=True)
    c.add_argument("--config", type=Path, help="collect only this experiment config's models (a shared run folder)")
    archive_help = "keep predictions in <study>_predictions.npz, and committed runs not collected again"
    c.add_argument("--archive", action="store_true", help=archive_help)
    sub.add_parser("write", help="regenerate every marked table")
    sub.add_parser("check", help="exit 1 if any marked table differs from its regeneration")
    sub.add_parser("provenance", help="each study's run commits and the src/ files that differ from HEAD")
    sub.add_parser("pair", help="recompute every archived study's paired differences from its committed predictions")
    r = sub.add_parser("recheck", help="re-run a committed study's runs with this checkout and compare their values")
    r.add_argument("--study", required=True)
    r.add_argument("--config", type=Path, required=True, help="the study's experiment config")
    r.add_argument("--models", required=True, help="comma-separated model labels to re-run")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--out", type=Path, default=None, help="run folder (default: a fresh temporary one)")
    r.add_argument("overrides", nargs="*", help="config overrides, e.g. data.data_dir=/path")
    args = parser.parse_args()
    if args.command == "collect":
        try:
            models = [m.name for m in load_config(args.config).models] if args.config else None
        except MMRobustError as e:
            raise SystemExit(f"error: {e}") from None
        print(collect(args.runs, args.study, models, args.archive))
    elif args.command == "write":
        for path in documents():
            text = path.read_text()
            if (regenerated := regenerate(text)) != text:
                path.write_text(regenerated)
                print(f"updated {path.relative_to(REPO)}")
    elif args.command == "provenance":
        print("\n".join(provenance()))
    elif args.command == "pair":
        print("\n".join(str(p.relative_to(REPO)) for p in pair_archived()))
    elif args.command == "recheck":
        out = args.out or Path(tempfile.mkdtemp(prefix="recheck-"))
        try:
            table = recheck(args.study, args.config, args.models.split(","), args.seed, args.overrides, out)
        except MMRobustError as e:
            raise SystemExit(f"error: {e}") from None
        print(table.to_string(index=False))
    else:
        differ = stale()
        print("\n".join(differ) or "every generated table is current")
        sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
