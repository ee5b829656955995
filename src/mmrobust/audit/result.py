"""`audit()` and its result: a tidy long table plus the summaries people ask for.

One row per (dataset, method, fusion, seed, scenario, metric) with the value and its delta
vs. the clean scenario of the same model. Summaries: clean score, mean |delta| over the
proper subsets, the worst subset, and the mean delta under missing and noisy proportions,
each as mean ± std over seeds.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from ..atomic import seal_ok
from ..corruption import Corruption
from ..data.dataset import ChunkedData, DataSpec, MultimodalData
from ..errors import MMRobustError, wrong_argument
from ..methods.base import Method, check_method_argument, inputs_as_trained
from ..methods.external import CHECK_ROWS, WrappedModel
from ..metrics import LOWER_IS_BETTER, PRIMARY, accumulator
from .engine import DEFAULT_CHUNK, ScenarioStream
from .paired import Predictions
from .scenarios import (
    CLEAN,
    MAX_SUBSETS,
    Scenario,
    check_audit_options,
    clean_scenario,
    custom_scenarios,
    default_scenarios,
)

KEYS = ["dataset", "model", "method", "fusion", "seed"]
MODEL_KEYS = KEYS[:-1]  # one trained configuration, over seeds
RUN_KEYS = ["dataset", "model", "seed"]  # what names one run in tables and reports: its label, not its settings


def check_one_source(table: pd.DataFrame, source: str, sources: str, advice: str) -> None:
    """Refuse a (dataset, model label, seed) that two `sources` (runs, audit results; the `source`
    column says which row comes from which) both hold: its rows would be silently merged or averaged."""
    owners = table.groupby(RUN_KEYS, sort=False, dropna=False)[source].unique()
    clashes = owners[owners.map(len) > 1]
    if len(clashes):
        (dataset, model, seed), found = next(iter(clashes.items()))
        raise MMRobustError(
            f"model '{model}' seed {seed} on {dataset} comes from two {sources} ({found[0]} and {found[1]}); {advice}"
        )


@dataclass
class AuditResult:
    table: pd.DataFrame  # tidy: KEYS + scenario, kind, metric, value, delta
    task: str
    scenarios: list[dict[str, Any]] = field(default_factory=list)
    models: list[dict[str, Any]] = field(default_factory=list)
    predictions: Predictions | None = None  # per-sample, with `keep_predictions` (one model, one seed)

    def __repr__(self) -> str:
        """What was audited, in one line: the dataclass default would print the whole table."""
        t = self.table
        labels = ", ".join(dict.fromkeys(t.model)) if len(t) else "none"
        datasets = ", ".join(dict.fromkeys(t.dataset)) if len(t) else "no data"
        return (
            f"AuditResult({datasets}: models {labels}; {t.seed.nunique() if len(t) else 0} seed(s), "
            f"{len(self.scenarios)} scenarios, {self.task}; see .table, .summary(), .per_scenario())"
        )

    @property
    def primary_metric(self) -> str:
        return PRIMARY[self.task]

    @classmethod
    def read(cls, results_json: str | Path) -> AuditResult:
        """Load a result written by `write_report` (its results.json), checking its checksum: a
        truncated or damaged file is a one-line error, never read as valid."""
        path = Path(results_json)
        rerun = "re-run the command that wrote it (`mmrobust run` redoes a damaged run)"
        try:
            record = json.loads(path.read_text())
        except FileNotFoundError:
            raise MMRobustError(f"{path}: no such results file") from None
        except (OSError, ValueError) as e:
            raise MMRobustError(
                f"{path}: not a readable mmrobust results file, truncated or corrupt ({e}); {rerun}"
            ) from None
        if seal_ok(record) is False:
            raise MMRobustError(
                f"{path}: damaged results file (its content does not match its checksum: corrupted or edited); {rerun}"
            )
        try:
            return cls(pd.DataFrame(record["results"]), record["task"], record["scenarios"], record["models"])
        except (KeyError, TypeError, ValueError) as e:
            raise MMRobustError(f"{path}: not an mmrobust results file (no {e}); {rerun}") from None

    @classmethod
    def concat(cls, results: Sequence[AuditResult]) -> AuditResult:
        """The audits of several models as one result; two audits of one (dataset, label, seed) are an
        error (the summary would show one of them and the per-scenario table their average)."""
        if not results:
            raise MMRobustError("nothing to combine: no audit results")
        numbered = [r.table.assign(position=f"#{i}") for i, r in enumerate(results) if len(r.table)]
        if numbered:
            advice = "give the models distinct labels: audit(..., label='...')"
            check_one_source(pd.concat(numbered), "position", "audit results in the list", advice)
        scen = {s["name"]: s for r in results for s in r.scenarios}
        return cls(
            pd.concat([r.table for r in results], ignore_index=True),
            results[0].task,
            list(scen.values()),
            [m for r in results for m in r.models],
        )

    def summary(self, metric: str | None = None) -> pd.DataFrame:
        """Per model (dataset, model, method, fusion): mean and std over seeds of the headline numbers.
        `worst_subset` is the subset with the worst Δ, which may be no loss at all (`worst_delta` >= 0 on
        a higher-is-better metric): the reports then print "none"."""
        metric = metric or self.primary_metric
        t = self.table[self.table.metric == metric]
        per_seed = []
        for key, g in t.groupby(KEYS, sort=False, dropna=False):
            subsets = g[g.kind == "subset"].dropna(subset=["delta"])
            worst = None
            if len(subsets):
                worst_at = subsets.delta.idxmax() if metric in LOWER_IS_BETTER else subsets.delta.idxmin()
                worst = subsets.loc[worst_at]
            clean = g[g.kind == "clean"].value
            per_seed.append(
                {
                    **dict(zip(KEYS, key, strict=True)),
                    "clean": float(clean.iloc[0]) if len(clean) else float("nan"),
                    "mean_abs_delta_subsets": float(subsets.delta.abs().mean()) if len(subsets) else float("nan"),
                    "worst_subset": worst.scenario if worst is not None else "",
                    "worst_delta": float(worst.delta) if worst is not None else float("nan"),  # none audited
                    "delta_missing": float(g[g.kind == "missing"].delta.mean()),
                    "delta_noise": float(g[g.kind == "noise"].delta.mean()),
                }
            )
        df = pd.DataFrame(per_seed)
        numeric = ["clean", "mean_abs_delta_subsets", "worst_delta", "delta_missing", "delta_noise"]
        groups = df.groupby(MODEL_KEYS, sort=False, dropna=False)
        out = groups[numeric].agg(["mean", "std"])
        out.columns = [f"{a}_{b}" for a, b in out.columns]
        stds = [c for c in out.columns if c.endswith("_std")]
        out[stds] = out[stds].fillna(0.0)  # one seed: no spread
        out["worst_subset"] = groups.worst_subset.agg(lambda s: s.mode().iloc[0])
        out["seeds"] = groups.seed.nunique()
        return out.reset_index().merge(self._dominant(metric), on=MODEL_KEYS, how="left").fillna({"relies_on": ""})

    def reliance(self, metric: str | None = None) -> pd.DataFrame:
        """Per model and modality: the mean change (over seeds) when that modality alone is removed
        (its leave-one-out subset). Empty without leave-one-out subsets in the audit."""
        metric = metric or self.primary_metric
        t = self.table[(self.table.metric == metric) & (self.table.kind == "subset")]
        rows = []
        for key, g in t.groupby(MODEL_KEYS, sort=False, dropna=False):
            kept = {str(name): set(str(name)[len("subset[") : -1].split("+")) for name in g.scenario.unique()}
            every: set[str] = set().union(*kept.values())
            for name, k in kept.items():
                if len(every - k) == 1:
                    delta = float(g.delta[g.scenario == name].mean())
                    rows.append(
                        {**dict(zip(MODEL_KEYS, key, strict=True)), "modality": (every - k).pop(), "delta": delta}
                    )
        return pd.DataFrame(rows, columns=[*MODEL_KEYS, "modality", "delta"])

    def _dominant(self, metric: str) -> pd.DataFrame:
        """The dominance diagnostic: per model, the modality whose removal hurts the most ('' if none hurts)."""
        reliance = self.reliance(metric)
        harm = reliance.delta * (1.0 if metric in LOWER_IS_BETTER else -1.0)  # > 0: worse without it
        worst = reliance.loc[harm.groupby([reliance[k] for k in MODEL_KEYS], sort=False, dropna=False).idxmax()]
        worst = worst.assign(modality=worst.modality.where(harm.loc[worst.index] > 0, ""))
        return worst.rename(columns={"modality": "relies_on", "delta": "relies_on_delta"})

    def chance(self, metric: str | None = None) -> dict[str, float]:
        """Dataset -> chance level of `metric` (audit's `chance_level`), where the audit recorded it."""
        metric = metric or self.primary_metric
        return {m["dataset"]: m["chance"][metric] for m in self.models if metric in (m.get("chance") or {})}

    def per_scenario(self, metric: str | None = None) -> pd.DataFrame:
        """Mean over seeds of `metric` for every (model, scenario): rows models, columns scenarios."""
        metric = metric or self.primary_metric
        t = self.table[self.table.metric == metric]
        wide = t.pivot_table(index=MODEL_KEYS, columns="scenario", values="value", aggfunc="mean", sort=False)
        return wide.reindex(columns=list(dict.fromkeys(t.scenario)))  # a scenario that scored no sample: NaN


def audit(
    method: Method,
    data: MultimodalData | ChunkedData,
    scenarios: Corruption | str | Iterable[Corruption | str | Mapping[str, Any]] | None = None,
    *,
    defaults: bool = True,
    seed: int = 0,
    split: str | None = "test",
    fast: bool = True,
    label: str | None = None,
    chunk: int = DEFAULT_CHUNK,
    progress: bool = False,
    keep_predictions: bool = False,
    mask_check: bool = True,
    max_subsets: int | None = MAX_SUBSETS,
) -> AuditResult:
    """Evaluate a trained `method` under every scenario on `data` (its `split`, by default test).

    `scenarios` adds user corruptions (or their names, e.g. "missing[audio@0.3]"; one alone needs no
    list) to the defaults (all subsets, 30% missing and 30% sigma-1 noise per modality), or with `defaults=False` to the
    clean reference alone (every delta is taken against it, so it is always measured). `seed` fixes the
    scenario masks: the same seed gives every model the same masks. `label` names the model
    in the results (default: the method's name). The model is fed inputs scaled as its training
    data were (`fit` records how), whatever statistics `data` were standardised with.

    The test set is streamed `chunk` samples at a time (rounded up to whole draw blocks of
    `scenarios.DRAW_BLOCK` samples) and the metrics are folded in chunk by chunk, so memory does
    not grow with the test set; the results do not depend on `chunk`.
    `data` may also be any `ChunkedData` (e.g. `SyntheticStream`), which has no splits: all of
    it is audited. `progress=True` shows a progress bar with an ETA on the terminal (off by default:
    `mmrobust run` shows its own). `fast=False` runs the reference path instead (every scenario
    through the whole model, chunk by chunk); models without a token stage (`wrap`) always take it.
    A wrapped model must react to masking (`WrappedModel.check_masks_matter`) unless `mask_check=False`.
    Above `max_subsets` proper subsets (8+ modalities) the defaults audit every single modality, every
    leave-one-out subset and a fixed sample of the rest, with a warning; `max_subsets=None` audits all.
    `keep_predictions=True` also keeps every scenario's per-sample predictions (`result.predictions`,
    for per-sample paired comparisons: audit/paired.py); they take O(samples x scenarios) memory.
    On data with missing modalities a scenario can leave a sample with none (a subset it has none of):
    such samples are not scored, unless the scenario allows it (`if_all_missing="allow"`); each
    scenario's `excluded` count is in `result.scenarios` and the audit warns. NaN or infinite
    outputs are an error.
    """
    check_method_argument(method, "audit")
    check_audit_options(seed, max_subsets)
    if not isinstance(getattr(data, "spec", None), DataSpec):  # a ChunkedData is known by its spec
        hint = "load one with mmrobust.load_dataset(name) or load_npz(path)"
        raise wrong_argument("audit", "a MultimodalData", data, hint)
    problem = method.spec.compatibility_problem(data.spec)
    if problem:
        raise MMRobustError(f"the model was trained for other data ({problem})")
    test = data.split(split) if split and isinstance(data, MultimodalData) else data
    if len(test) == 0:
        where = f"the '{split}' split of '{data.spec.name}' is empty" if split and test is not data else "no samples"
        raise MMRobustError(f"nothing to audit: {where}")
    if isinstance(test, MultimodalData):
        test = inputs_as_trained(method, test)
    elif method.input_scaling:
        warnings.warn(
            "the model was trained on standardised data, and a stream is audited as it comes: make its chunks on "
            "the training data's scale (the statistics are in method.input_scaling)",
            stacklevel=2,
        )
    modalities = data.modalities
    chosen = default_scenarios(modalities, max_subsets=max_subsets) if defaults else clean_scenario(modalities)
    chosen += custom_scenarios(() if scenarios is None else scenarios)
    names = [s.name for s in chosen]
    if len(set(names)) != len(names):
        raise MMRobustError(f"duplicate scenarios: {sorted({n for n in names if names.count(n) > 1})}")
    spec = test.spec
    if not method.tags.has_tokens:
        on_tokens = [sc.name for sc in chosen if sc.corruption.on_tokens]
        if on_tokens:
            raise MMRobustError(
                f"{method.describe()} has no token stage: scenario {on_tokens[0]} corrupts tokens; "
                "use input-stage scenarios (stage='input')"
            )
        if mask_check and isinstance(method, WrappedModel):
            method.check_masks_matter(next(iter(test.batches(CHECK_ROWS))))
    if isinstance(test, MultimodalData) and (absent := [m for m, any_ in zip(test.modalities, test.present.any(dim=0),
                                                                           strict=True) if not any_]):  # fmt: skip
        warnings.warn(
            f"{', '.join(absent)}: absent from every test sample, so its subset scores none of them (no value) and "
            "missing or noise on it changes nothing (Δ 0)",
            stacklevel=2,
        )
    per_scenario = not fast or not method.tags.has_tokens
    stream = ScenarioStream(method, test, chosen, seed, chunk, progress=progress, per_scenario=per_scenario)
    metrics, references, excluded, target, predictions = _score(stream, chosen, spec, keep_predictions)
    if any(excluded.values()):
        listed = ", ".join(f"{name} {n}" for name, n in excluded.items() if n)
        warnings.warn(
            f"samples left with no modality at all are not scored (the model would answer nothing): {listed} "
            f"of the {len(target)} test samples (each scenario's 'excluded' in the results)",
            stacklevel=2,
        )
    default_label = method.name if method.tags.has_tokens else method.describe()  # wrapped: with its policy
    result = _tidy(method, spec, chosen, metrics, references, stream.hashes(), excluded, seed, label or default_label)
    result.models[0]["chance"] = chance_level(target, spec.task)
    result.predictions = predictions
    return result


Metrics = dict[str, dict[str, float]]  # scenario -> metric -> value


def _score(
    stream: ScenarioStream, scenarios: list[Scenario], spec: DataSpec, keep_predictions: bool
) -> tuple[Metrics, Metrics, dict[str, int], Tensor, Predictions | None]:
    """Fold the stream's outputs into each scenario's metrics, chunk by chunk, over the samples that
    keep a modality (all of them under a scenario that `allows_all_missing`); also, for a scenario
    that left samples out, the clean metrics over the samples it scored (its delta's reference: like
    for like), how many each scenario left out, the targets, and the per-sample predictions when kept."""
    folds = {sc.name: accumulator(spec.task, spec.num_classes) for sc in scenarios}
    references: dict[str, Any] = {}  # scenario -> clean outputs folded over the rows it scored
    scores_empty = {sc.name for sc in scenarios if sc.corruption.allows_all_missing}
    excluded = dict.fromkeys(folds, 0)
    kept: dict[str, list[Tensor]] = {name: [] for name in folds}
    left_out: dict[str, list[Tensor]] = {name: [] for name in folds}
    targets: list[Tensor] = []
    start = 0
    for target, outputs, empty in stream:
        for name, output in outputs.items():
            out = empty[name] if name not in scores_empty else torch.zeros_like(empty[name])
            excluded[name] += int(out.sum())
            scored, truth = (output[~out], target[~out]) if out.any() else (output, target)
            _check_finite(scored, name, range(start, start + len(target)))
            folds[name].update(scored, truth)
            if out.any() and CLEAN in outputs:
                fold = references.setdefault(name, accumulator(spec.task, spec.num_classes))
                fold.update(outputs[CLEAN][~out], truth)
            if keep_predictions:
                kept[name].append(_decision(output, spec.task))
                left_out[name].append(out)
        targets.append(target.cpu())  # small (N,): for chance level, and the predictions when kept
        start += len(target)
    target = torch.cat(targets)
    predictions = None
    if keep_predictions:
        predictions = Predictions(
            target,
            {name: torch.cat(p) for name, p in kept.items()},
            {name: torch.cat(left_out[name]) for name, n in excluded.items() if n},
        )
    results = {name: fold.result() for name, fold in folds.items()}
    return results, {name: fold.result() for name, fold in references.items()}, excluded, target, predictions


def _check_finite(output: Tensor, scenario: str, rows: range) -> None:
    """Refuse NaN or infinite outputs (one check per chunk): argmax reads NaN logits as class 0, so a
    metric over them would look like a score."""
    if not torch.isfinite(output).all():
        bad = int((~torch.isfinite(output.reshape(len(output), -1)).all(dim=1)).sum())
        raise MMRobustError(
            f"under scenario {scenario} the model's outputs are NaN or infinite for {bad} of the {len(output)} "
            f"samples scored in test rows {rows.start}..{rows.stop - 1}: no metric can be read from them; check "
            "the model (a wrapped one: what it returns for these inputs and its missing-value policy)"
        )


def chance_level(target: Tensor, task: str) -> dict[str, float]:
    """What a model that ignores its inputs scores on this test set at best: the accuracy of always
    answering the most frequent class, or the MAE of always answering the median."""
    if task == "classification":
        return {"accuracy": float(torch.bincount(target.long()).max()) / len(target)}
    values = target.double()
    return {"mae": float((values - values.median()).abs().mean())}


def _decision(output: Tensor, task: str) -> Tensor:
    """What a per-sample score needs from a model output: the class, or the predicted value."""
    return output.argmax(dim=-1).cpu() if task == "classification" else output.reshape(len(output)).float().cpu()


def _tidy(
    method: Method,
    spec: DataSpec,
    scenarios: list[Scenario],
    metrics: Metrics,
    references: Metrics,
    hashes: dict,
    excluded: dict[str, int],
    audit_seed: int,
    label: str,
) -> AuditResult:
    params = method.get_params()
    base = {
        "dataset": spec.name,
        "model": label,
        "method": method.name,
        "fusion": params.get("fusion", ""),
        "seed": method.seed,
    }
    rows = []
    clean_metrics = metrics[scenarios[0].name]
    has_clean = scenarios[0].name == CLEAN
    for sc in scenarios:
        reference = references.get(sc.name, clean_metrics)  # clean on the samples the scenario scored
        for metric, value in metrics[sc.name].items():
            delta = value - reference[metric] if has_clean else float("nan")
            rows.append(
                {
                    **base,
                    "scenario": sc.name,
                    "kind": sc.kind,
                    "metric": metric,
                    "value": value,
                    "delta": delta,
                }
            )
    scen_info = [
        {
            "name": s.name,
            "kind": s.kind,
            "corruption": s.corruption.to_dict(),
            "mask_hash": hashes.get(s.name),
            "audit_seed": audit_seed,
            "excluded": excluded[s.name],  # samples left with no modality, not scored
        }
        for s in scenarios
    ]
    model_info = [{**base, "params": params}]
    return AuditResult(pd.DataFrame(rows), spec.task, scen_info, model_info)
