"""Statistics for comparing models across finished runs (`mmrobust report`).

Pure functions on the audit's tidy table (one row per dataset, model, seed, scenario, metric)
and on numpy arrays:

- `load_runs`: every run folder `mmrobust run` wrote below some folders (runfolder.py), as one table;
- `scenario_stats`: mean ± std over seeds of a metric per (model, scenario);
- `bootstrap_ci` / `paired_differences`: model A − model B on the same masks, with a seeded,
  vectorised percentile bootstrap over *seeds*: seed s of A is paired with seed s of B (same audit
  masks, checked through their hashes). The report uses it only for pairs it cannot compare per
  test sample (a run without predictions); paired.py compares runs per test sample;
- `relative_robustness` / `effective_robustness`: area under the metric-vs-severity curve
  normalised by the severity range, and a model's area minus a reference model's;
- the modalities' Shapley values are in shapley.py.

Example:
    runs = load_runs(["runs/demo"])
    diffs = paired_differences(runs.table, "accuracy", seed=0)
"""

from __future__ import annotations

import contextlib
import itertools
import json
import warnings
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..atomic import file_sha256
from ..checkpoint import checkpoint_config
from ..corruption import GaussianNoise, Missing, corruption_from_name
from ..errors import MMRobustError, unknown_name
from ..metrics import LOWER_IS_BETTER, PRIMARY
from ..runfolder import CHECKPOINT, MANIFEST, RESULTS, find_run_dirs, read_manifest, training_settings
from ..safe_yaml import load_yaml
from .result import AuditResult, check_one_source
from .scenarios import CLEAN

REQUIRED_COLUMNS = ("dataset", "model", "seed", "scenario", "kind", "metric", "value")


# --- loading -----------------------------------------------------------------------------------
@dataclass
class Runs:
    """Every run found, as one tidy table, plus what the report needs per dataset."""

    table: pd.DataFrame  # the audit's columns + mask_hash and run_dir
    tasks: dict[str, str]  # dataset -> classification | regression
    num_classes: dict[str, int | None] = field(default_factory=dict)  # dataset -> classes, if recorded
    run_dirs: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)  # runs that did not finish (not read)

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys(self.table.model))

    @property
    def datasets(self) -> list[str]:
        return list(dict.fromkeys(self.table.dataset))


def _num_classes(run_dir: Path) -> int | None:
    """The class count stored in the run's checkpoint (the manifest does not record it)."""
    try:
        return int(checkpoint_config(run_dir / CHECKPOINT)["spec"]["num_classes"])
    except Exception:  # no or unreadable checkpoint: the report states its assumption instead
        return None


def _model_position(manifest: Mapping[str, Any]) -> int:
    """Where the run's model stands in its config, so reports list models in the config's order."""
    models = manifest.get("config", {}).get("models", [])
    model = manifest.get("model")
    return models.index(model) if model in models else len(models)


def _read_run(run_dir: Path, manifest: Mapping[str, Any]) -> tuple[AuditResult, dict[str, str | None]]:
    """The run's audit result (checked against the checksum its manifest lists) and the mask hash
    of each of its scenarios."""
    results = run_dir / RESULTS
    if not results.is_file():
        raise MMRobustError(f"{run_dir}: has a {MANIFEST} but no results.json; re-run it with `mmrobust run`")
    expected = (manifest.get("files") or {}).get(results.name)  # manifests of mmrobust 0.1 list none
    if expected is not None and file_sha256(results) != expected:
        raise MMRobustError(
            f"{results}: damaged (it does not match the checksum in {MANIFEST}: truncated, corrupted or replaced); "
            "re-run it with `mmrobust run`"
        )
    result = AuditResult.read(results)
    missing = [c for c in REQUIRED_COLUMNS if c not in result.table.columns]
    if missing:
        raise MMRobustError(f"{results}: not an mmrobust results file (no column {', '.join(missing)})")
    return result, {s["name"]: s.get("mask_hash") for s in result.scenarios}


def _dataset_facts(runs: list[tuple[str, str, Path]]) -> tuple[dict[str, str], dict[str, int | None]]:
    """Task and class count per dataset from (dataset, task, run_dir); one dataset, one task."""
    tasks: dict[str, str] = {}
    classes: dict[str, int | None] = {}
    for dataset, task, run_dir in runs:
        if tasks.setdefault(dataset, task) != task:
            raise MMRobustError(f"{run_dir}: dataset {dataset} is {task} here but {tasks[dataset]} elsewhere")
        if task == "classification" and classes.get(dataset) is None:
            classes[dataset] = _num_classes(run_dir)
    return tasks, classes


def load_runs(paths: Sequence[str | Path]) -> Runs:
    """Every finished run below `paths` as one tidy table (models in their configs' order)."""
    run_dirs, skipped = find_run_dirs(paths)
    loaded = []
    manifests: dict[Path, Mapping[str, Any]] = {}
    for found_at, run_dir in enumerate(run_dirs):
        # an audit folder (`mmrobust audit --out`) has no manifest: finished when its results read back
        manifest = read_manifest(run_dir) if (run_dir / MANIFEST).exists() else {"status": "done"}
        if manifest.get("status") != "done":
            skipped.append(run_dir)
            continue
        result, hashes = _read_run(run_dir, manifest)
        t = result.table.assign(mask_hash=result.table.scenario.map(hashes), run_dir=str(run_dir))
        loaded.append(((_model_position(manifest), found_at), t, result.task, run_dir))
        manifests[run_dir] = manifest
    if not loaded:
        raise MMRobustError(f"no finished runs under {', '.join(map(str, paths))} ({unfinished_note(skipped)})")
    loaded.sort(key=lambda item: item[0])
    settings = {d: training_settings(manifests[d]) for *_, d in loaded}
    named = [(str(t.dataset.iloc[0]), str(t.model.iloc[0]), d, settings[d]) for _, t, _, d in loaded]
    variants = dataset_variants(named)
    loaded = [(key, t.assign(dataset=variants[d]), task, d) for key, t, task, d in loaded]
    table = pd.concat([t for _, t, _, _ in loaded], ignore_index=True)
    check_one_source(table, "run_dir", "runs", "pass the folders of one experiment or give the models distinct labels")
    labelled = [(str(t.dataset.iloc[0]), str(t.model.iloc[0]), d) for _, t, _, d in loaded]
    check_alike([(dataset, label, d, settings[d]) for dataset, label, d in labelled])
    warn_stale([(label, d, manifests[d]) for _, label, d in labelled])
    tasks, classes = _dataset_facts([(str(t.dataset.iloc[0]), task, d) for _, t, task, d in loaded])
    return Runs(table, tasks, classes, [d for *_, d in loaded], skipped)


def dataset_variants(runs: Iterable[tuple[str, str, Path, Mapping[str, Any] | None]]) -> dict[Path, str]:
    """The name each run's dataset is reported under (from (dataset, label, run_dir, `training_settings`)):
    its own, unless one label ran on it with other data (settings, or content: `data.checksum`), e.g.
    two feature sets of CMU-MOSI, a subset of its modalities, or an npz rewritten between seeds. Then
    each is a dataset of its own, named by the settings that differ (else by the content's checksum):
    `mosi (modalities=text+audio)` and `mosi (modalities=default)`, compared side by side, not averaged
    as seeds of one model. Runs without recorded settings (`mmrobust audit` folders) keep the name."""
    by_name: dict[str, dict[Path, tuple[str, dict[str, Any]]]] = defaultdict(dict)
    names = {}
    for dataset, label, run_dir, settings in runs:
        names[run_dir] = dataset
        if settings is not None:
            by_name[dataset][run_dir] = (label, {k: v for k, v in settings.items() if k.startswith("data.")})
    for dataset, found in by_name.items():
        # (label, data settings) once each: runs are many, their distinct settings few
        seen = list({json.dumps(run, sort_keys=True, default=str): run for run in found.values()}.values())
        if not any(_differing(d, e) for a, d in seen for b, e in seen if a == b):
            continue
        differing = sorted({k for _, d in seen for _, e in seen for k in _differing(d, e)})
        keys = [k for k in differing if k != "data.checksum"]
        if any(a == b and _variant(d, keys) == _variant(e, keys) for a, d in seen for b, e in seen
               if _differing(d, e)):  # fmt: skip
            keys.append("data.checksum")  # one label on other data under the same settings
        for run_dir, (_, d) in found.items():
            names[run_dir] = f"{dataset} ({_variant(d, keys)})"
    return names


def _variant(settings: Mapping[str, Any], keys: list[str]) -> str:
    """`key=value, ...` for the data settings `keys` (a free-form option's name alone)."""
    return ", ".join(f"{k.removeprefix('data.options.').removeprefix('data.')}={_shown(settings.get(k, _UNSET), k)}"
                     for k in keys)  # fmt: skip


def _differing(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    return [k for k in {**a, **b} if _differs(k, a, b)]


def _shown(value: Any, key: str) -> str:
    if value is _UNSET or value is None:
        return "default"
    if key == "data.checksum":
        return str(value)[:8]
    return "+".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


def check_alike(runs: Iterable[tuple[str, str, Path, Mapping[str, Any] | None]]) -> None:
    """Refuse runs of one (dataset, label) trained with different settings apart from the seed (from
    (dataset, label, run_dir, `training_settings`)): averaged as seeds of one model, they would mix two
    models, e.g. a run left in OUT by an earlier config beside one of a changed config. Keys only one
    run records are compared as `_differs` says; audit folders record none."""
    first: dict[tuple[str, str], tuple[Path, Mapping[str, Any]]] = {}
    for dataset, label, run_dir, settings in runs:
        if settings is None:
            continue
        other, before = first.setdefault((dataset, label), (run_dir, settings))
        key = next((k for k in {**before, **settings} if _differs(k, before, settings)), None)
        if key is not None:
            shown = [repr(s[key]) if key in s else "unset" for s in (before, settings)]
            raise MMRobustError(
                f"model '{label}' on {dataset}: runs {other} and {run_dir} were trained differently "
                f"({key}={shown[0]} and {shown[1]}), so they are not seeds of one model; "
                "run each config into its own --out folder, or give the models distinct labels"
            )


def _differs(key: str, a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two runs' settings differ at `key`. A config field (`train.epochs`) that one run does not
    record is a field an older mmrobust did not have: not compared. A key below a free-form mapping
    (`model.params.dim`, `data.options.n_samples`) that one run lacks took the default there: compared."""
    if key.count(".") < 2 and (key not in a or key not in b):
        return False
    return a.get(key, _UNSET) != b.get(key, _UNSET)


_UNSET = object()


def warn_stale(runs: Iterable[tuple[str, Path, Mapping[str, Any]]]) -> None:
    """Warn of models (from (label, run_dir, manifest)) that the latest config run into their experiment
    folder no longer holds: runs left by an earlier config, reported beside the current ones."""
    runs = [(label, d, m["config"]) for label, d, m in runs if isinstance(m.get("config"), Mapping)]
    written: dict[Path, list[tuple[float, Any]]] = defaultdict(list)  # experiment folder -> (when, config)
    for _, run_dir, config in runs:
        written[run_dir.parent.parent].append(((run_dir / MANIFEST).stat().st_mtime, config))
    for root, configs in written.items():
        last = root / "config.yaml"  # what `mmrobust run` ran into `root` last, even when it trained nothing
        with contextlib.suppress(OSError, MMRobustError):  # unreadable: the manifests' configs tell
            configs.append((last.stat().st_mtime, load_yaml(last.read_text(), str(last))))
    latest = {root: _labels(max(configs, key=lambda c: c[0])[1]) for root, configs in written.items()}
    stale = {f"{label} ({d.parent})" for label, d, _ in runs if label not in (latest[d.parent.parent] or {label})}
    if stale:
        warnings.warn(
            f"{', '.join(sorted(stale))}: not in the latest config run into that folder (left by an earlier one); "
            "reported beside the others: delete these folders to leave them out",
            stacklevel=3,
        )


def _labels(config: Any) -> set[str]:
    """The model labels of a config (as a dict): its models' `label`, else their `method`."""
    models = config.get("models") if isinstance(config, Mapping) else None
    return {str(m.get("label") or m.get("method")) for m in models or [] if isinstance(m, Mapping)}


def unfinished_note(skipped: Sequence[Path], shown: int = 3) -> str:
    """"N unfinished skipped: a, b, c and M more", so that a run still training (or killed) is not
    mistaken for one that was never started."""
    names = ", ".join(map(str, skipped[:shown])) + (f" and {len(skipped) - shown} more" if len(skipped) > shown else "")
    return f"{len(skipped)} unfinished skipped: {names}"


def check_reference(reference: str, models: Iterable[str]) -> str:
    """The reference label must name a loaded model; suggest the closest one otherwise."""
    models = list(models)
    if reference not in models:
        raise unknown_name("reference model", reference, models)
    return reference


# --- per-scenario statistics -------------------------------------------------------------------
def primary_metric(task: str) -> str:
    return PRIMARY[task]


def scenario_stats(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean, std and count over seeds of `metric` per (model, scenario), in first-seen order."""
    t = table[table.metric == metric]
    stats = t.groupby(["model", "scenario"], sort=False).value.agg(["mean", "std", "count"])
    return stats.reset_index().rename(columns={"count": "seeds"})


def best_models(stats: pd.DataFrame, metric: str) -> dict[str, set[str]]:
    """The best model(s) per scenario by mean (ties all count), honouring lower-is-better metrics."""
    out: dict[str, set[str]] = {}
    for scenario, g in stats.groupby("scenario", sort=False):
        target = g["mean"].min() if metric in LOWER_IS_BETTER else g["mean"].max()
        out[str(scenario)] = set(g.model[np.isclose(g["mean"], target, rtol=0, atol=1e-12)])
    return out


# --- bootstrap and paired differences ----------------------------------------------------------
def bootstrap_ci(
    values: np.ndarray | Sequence[float], *, n_boot: int = 10_000, level: float = 0.95, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, low, high): percentile bootstrap CI of the mean over the last axis, every row at once.

    Resamples are drawn as multinomial counts (n_boot x n) shared by all rows, so each row's
    resampled means are one matrix product, memory stays O(rows x n_boot), and the same `seed`
    gives the same interval.
    """
    v = np.asarray(values, dtype=float)
    n = v.shape[-1]
    if n == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    counts = np.random.default_rng(seed).multinomial(n, np.full(n, 1 / n), size=n_boot)  # (n_boot, n)
    means = v @ (counts.T / n)  # (..., n_boot)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail], axis=-1)
    return v.mean(axis=-1), low, high


def same_masks(table: pd.DataFrame) -> dict[tuple[str, str], frozenset]:
    """(scenario, model) -> the mask hashes its runs used, to tell which comparisons are paired."""
    hashes = table.groupby(["scenario", "model"], sort=False).mask_hash.agg(lambda s: frozenset(s.fillna("?")))
    return {(str(s), str(m)): h for (s, m), h in hashes.items()}


def _differences(
    wide: pd.DataFrame, models: list[str], skip: Collection[frozenset[str]] = ()
) -> list[tuple[str, str, str, np.ndarray]]:
    """(a, b, scenario, per-seed a - b over the seeds both have) for every ordered pair a < b not in `skip`."""
    out = []
    for a, b in itertools.combinations(models, 2):
        if frozenset((a, b)) in skip:
            continue
        diff = (wide[a] - wide[b]).dropna()
        for scenario, d in diff.groupby(level="scenario", sort=False):
            out.append((a, b, str(scenario), d.to_numpy()))
    return out


def paired_differences(
    table: pd.DataFrame,
    metric: str,
    *,
    n_boot: int = 10_000,
    level: float = 0.95,
    seed: int = 0,
    skip: Collection[frozenset[str]] = (),
) -> pd.DataFrame:
    """Model a − model b per scenario: mean over shared seeds and a bootstrap CI over seeds, for every
    pair of models but those in `skip` (e.g. compared per sample instead).

    `paired` is True when both models' runs of the scenario used the same masks (equal hashes). With
    one shared seed there is no interval (low and high are NaN): a bootstrap of one value has zero width.
    """
    t = table[table.metric == metric]
    models = list(dict.fromkeys(t.model))
    wide = t.pivot_table(index=["scenario", "seed"], columns="model", values="value", sort=False)
    diffs = _differences(wide, [m for m in models if m in wide.columns], skip)
    masks = same_masks(t)
    columns = ["model_a", "model_b", "scenario", "seeds", "mean", "low", "high", "paired"]
    rows: list[dict[str, Any]] = []
    by_length: dict[int, list[int]] = defaultdict(list)
    for i, (_, _, _, d) in enumerate(diffs):
        by_length[len(d)].append(i)
    stats: dict[int, tuple[float, float, float]] = {}
    for indices in by_length.values():  # one vectorised bootstrap per number of shared seeds
        mean, low, high = bootstrap_ci(np.stack([diffs[i][3] for i in indices]), n_boot=n_boot, level=level, seed=seed)
        if len(diffs[indices[0]][3]) < 2:
            low[:], high[:] = np.nan, np.nan
        stats.update({i: (float(mean[k]), float(low[k]), float(high[k])) for k, i in enumerate(indices)})
    for i, (a, b, scenario, d) in enumerate(diffs):
        hashes = masks.get((scenario, a), frozenset()) | masks.get((scenario, b), frozenset())
        rows.append(dict(zip(columns, [a, b, scenario, len(d), *stats[i], len(hashes) == 1], strict=True)))
    return pd.DataFrame(rows, columns=columns)


# --- severity curves and robustness ------------------------------------------------------------
@dataclass(frozen=True)
class Family:
    """Scenarios that differ only in one severity parameter, e.g. missing[a@0.1], missing[a@0.3]."""

    name: str  # the scenario name with the varying parameter shown as `·`
    axis: str  # what the severity measures
    levels: dict[str, float]  # scenario -> severity (clean is severity 0)


def _severities(scenario: str) -> list[tuple[str, str, float]]:
    """(family, axis, severity) for each way `scenario` can sit on a severity axis."""
    try:
        c = corruption_from_name(scenario)
    except MMRobustError:
        return []
    if isinstance(c, Missing):
        return [(f"missing[{c.modality}@·]", "missing proportion", c.proportion)]
    if isinstance(c, GaussianNoise):
        at = "" if c.stage == "input" else "@token"
        return [
            (f"noise[{c.modality},sigma=·,p={c.proportion:g}]{at}", "noise σ", c.sigma),
            (f"noise[{c.modality},sigma={c.sigma:g},p=·]{at}", "noisy proportion", c.proportion),
        ]
    return []


def severity_families(scenarios: Iterable[str]) -> list[Family]:
    """Families with at least two non-zero severities, clean added as severity 0.

    Clean *is* severity 0 of every family (no sample missing, sigma 0), so a curve starts at the
    model's clean score. A single severity gives no curve and is left out.
    """
    levels: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    names = list(scenarios)
    for scenario in names:
        for family, axis, severity in _severities(scenario):
            levels[(family, axis)][scenario] = severity
    out = []
    for (family, axis), lv in levels.items():
        if len(set(lv.values()) - {0.0}) < 2:
            continue
        if CLEAN in names and 0.0 not in lv.values():
            lv = {CLEAN: 0.0, **lv}
        out.append(Family(family, axis, dict(sorted(lv.items(), key=lambda kv: kv[1]))))
    return out


def severity_curves(table: pd.DataFrame, metric: str, family: Family) -> pd.DataFrame:
    """Rows (model, seed), columns the family's severities (ascending): the metric's values."""
    t = table[(table.metric == metric) & table.scenario.isin(list(family.levels))]
    t = t.assign(severity=t.scenario.map(family.levels))
    wide = t.pivot_table(index=["model", "seed"], columns="severity", values="value", sort=False)
    return wide[sorted(wide.columns)]


def relative_robustness(severity: np.ndarray | Sequence[float], values: np.ndarray | Sequence[float]) -> np.ndarray:
    """Area under the metric-vs-severity curve over the last axis, divided by the severity range.

    The normalisation makes it the curve's mean height: in the metric's units, comparable
    between families whose severities span different ranges.
    """
    x = np.asarray(severity, dtype=float)
    y = np.asarray(values, dtype=float)
    if x.ndim != 1 or x.size < 2 or y.shape[-1] != x.size:
        raise ValueError("need at least two severities, one value per severity on the last axis")
    order = np.argsort(x)
    x, y = x[order], y[..., order]
    span = x[-1] - x[0]
    if span <= 0:
        raise ValueError("severities must not all be equal")
    area = ((y[..., 1:] + y[..., :-1]) / 2 * np.diff(x)).sum(axis=-1)  # trapezoid rule
    return area / span


def effective_robustness(
    severity: np.ndarray | Sequence[float],
    values: np.ndarray | Sequence[float],
    reference: np.ndarray | Sequence[float],
) -> np.ndarray:
    """The model's normalised area minus the reference model's, on the same severities."""
    return relative_robustness(severity, values) - relative_robustness(severity, reference)


def robustness_summary(table: pd.DataFrame, metric: str, families: Sequence[Family], reference: str) -> pd.DataFrame:
    """Per (family, model): relative robustness mean ± std over seeds, and effective robustness
    (mean area minus the reference's mean area; NaN when the reference has no complete curve). Models
    audited at different severities are compared over the severities they share."""
    rows = []
    for family in families:
        curves = severity_curves(table, metric, family)
        shared = curves.notna().groupby(level="model", sort=False).any().all(axis=0)  # severities every model has
        wide = curves.loc[:, shared].dropna()  # areas over one grid; a seed lacking one of its severities has none
        if wide.shape[1] < 2 or wide.empty:
            continue
        areas = pd.Series(relative_robustness(wide.columns.to_numpy(), wide.to_numpy()), index=wide.index)
        per_model = areas.groupby(level="model", sort=False).agg(["mean", "std", "count"])
        ref = per_model["mean"].get(reference, np.nan)
        for model, r in per_model.iterrows():
            rows.append(
                {
                    "family": family.name,
                    "axis": family.axis,
                    "model": model,
                    "rr_mean": r["mean"],
                    "rr_std": r["std"],
                    "seeds": int(r["count"]),
                    "er": r["mean"] - ref,
                }
            )
    return pd.DataFrame(rows, columns=["family", "axis", "model", "rr_mean", "rr_std", "seeds", "er"])
