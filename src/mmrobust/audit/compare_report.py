"""The comparison report of `mmrobust report`: what it shows for each dataset, as document blocks.

Per dataset: the primary metric's mean ± std per model and scenario (best in bold), the
per-subset heatmap, metric-vs-severity curves, robustness against a reference model,
Shapley values of the modalities and paired model differences with bootstrap CIs. The
statistics live in `compare`; the HTML / Markdown writing in `document`.

Example:
    write_comparison(load_runs(["runs/demo"]), Path("report.html"), reference="joint-sum")
"""

from __future__ import annotations

import io
import itertools
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..metrics import LOWER_IS_BETTER
from .compare import (
    Family,
    Runs,
    best_models,
    check_reference,
    paired_differences,
    primary_metric,
    robustness_summary,
    same_masks,
    scenario_stats,
    severity_curves,
    severity_families,
    unfinished_note,
)
from .document import Block, Figure, Heading, Paragraph, Table, slug, write_document
from .paired import PREDICTIONS, load_predictions, sample_differences, verdict
from .report import heatmap_figure, mean_std, pyplot
from .result import AuditResult
from .shapley import empty_coalition_value, modality_contributions

if TYPE_CHECKING:
    from matplotlib.figure import Figure as MplFigure

TITLE = "Model comparison"
LEVEL = 0.95


def _png(fig: MplFigure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    return buffer.getvalue()


def _direction(metric: str) -> str:
    return "lower is better" if metric in LOWER_IS_BETTER else "higher is better"


# --- 1. mean ± std table -----------------------------------------------------------------------
def _scores(table: pd.DataFrame, metric: str) -> list[Block]:
    """Scenarios x models (rows x columns: there are usually more scenarios), best per scenario in bold."""
    stats = scenario_stats(table, metric)
    scenarios = list(dict.fromkeys(stats.scenario))
    models = list(dict.fromkeys(stats.model))
    cell = {(r.model, r.scenario): mean_std(r.mean, r.std, r.seeds) for r in stats.itertuples()}
    best = best_models(stats, metric)
    rows = [[s, *(cell.get((m, s), "") for m in models)] for s in scenarios]
    bold = {(i, j + 1) for i, s in enumerate(scenarios) for j, m in enumerate(models) if m in best.get(s, ())}
    return [
        Heading(f"{metric}: mean ± std over seeds", 3),
        Paragraph(f"**{metric}** ({_direction(metric)}); the best model per scenario is in bold."),
        Table(["scenario", *models], rows, bold),
    ]


# --- 2. heatmap --------------------------------------------------------------------------------
def _heatmap(table: pd.DataFrame, task: str, dataset: str) -> list[Block]:
    """The per-subset heatmap the audit draws, over every loaded model."""
    if not table.kind.isin(["subset"]).any():
        return []
    png = _png(heatmap_figure(AuditResult(table, task)))
    return [Heading("By modality subset", 3), Figure(f"{slug(dataset)}-heatmap", png, f"{dataset}: per-subset scores")]


# --- 3. severity curves ------------------------------------------------------------------------
def curves_figure(table: pd.DataFrame, metric: str, families: list[Family]) -> MplFigure:
    """One panel per family: mean over seeds per model, a band of ± one std."""
    plt = pyplot()
    cols = min(3, len(families))
    nrows = -(-len(families) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.2 * nrows), squeeze=False)
    colours = dict(zip(dict.fromkeys(table.model), itertools.cycle(plt.get_cmap("tab10").colors), strict=False))
    for ax, family in zip(axes.flat, families, strict=False):
        wide = severity_curves(table, metric, family)
        x = wide.columns.to_numpy(dtype=float)
        for model, g in wide.groupby(level="model", sort=False):
            mean, std = g.mean().to_numpy(), g.std().fillna(0).to_numpy()
            ax.plot(x, mean, marker="o", ms=3, color=colours[model], label=str(model))
            ax.fill_between(x, mean - std, mean + std, color=colours[model], alpha=0.12, linewidth=0)
        ax.set_title(family.name, fontsize=9)
        ax.set_xlabel(family.axis, fontsize=8)
        ax.set_ylabel(metric, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(families) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def _curves(table: pd.DataFrame, metric: str, families: list[Family], dataset: str) -> list[Block]:
    head: list[Block] = [Heading("Metric vs severity", 3)]
    if not families:
        return [
            *head,
            Paragraph(
                "No curves: the audit has at most one severity per missing / noise family. Add severities "
                'to the config, e.g. `audit.scenarios=["missing[a@0.1]","missing[a@0.6]"]`.'
            ),
        ]
    png = _png(curves_figure(table, metric, families))
    note = "Clean is severity 0 of every family; bands: ± one std over seeds."
    return [*head, Paragraph(note), Figure(f"{slug(dataset)}-curves", png, f"{dataset}: {metric} vs severity")]


# --- 4. robustness vs reference ----------------------------------------------------------------
def _best_rr(summary: pd.DataFrame, metric: str) -> dict[str, set[str]]:
    """The most robust model(s) per family: `best_models` on the RR means."""
    return best_models(summary.rename(columns={"family": "scenario", "rr_mean": "mean"}), metric)


def _robustness_rows(
    summary: pd.DataFrame, models: list[str], families: list[Family], metric: str
) -> tuple[list[list[str]], set[tuple[int, int]]]:
    """One row per model, one cell per family: `RR mean ± std (ER ±x)`; the best RR in bold."""
    best = _best_rr(summary, metric)
    cells = {(r.model, r.family): r for r in summary.itertuples()}
    rows, bold = [], set()
    for i, m in enumerate(models):
        row = [m]
        for j, f in enumerate(families):
            c = cells.get((m, f.name))
            if c is None:
                row.append("")
                continue
            er = f" (ER {c.er:+.3f})" if np.isfinite(c.er) else ""
            row.append(f"{mean_std(c.rr_mean, c.rr_std, c.seeds)}{er}")
            if m in best.get(f.name, ()):
                bold.add((i, j + 1))
        rows.append(row)
    return rows, bold


def _robustness(table: pd.DataFrame, metric: str, families: list[Family], reference: str | None) -> list[Block]:
    """Relative robustness per family and its difference to the reference model."""
    if not families:
        return []
    models = list(dict.fromkeys(table.model))
    ref = reference if reference is not None else models[0]
    summary = robustness_summary(table, metric, families, ref)
    rows, bold = _robustness_rows(summary, models, families, metric)
    why = "given by `--reference`" if reference is not None else "the first model; choose one with `--reference`"
    missing = "" if ref in models else f" **{ref}** has no runs on this dataset, so ER is not available."
    return [
        Heading(f"Robustness against the reference `{ref}`", 3),
        Paragraph(
            f"**RR** (relative robustness): area under the {metric}-vs-severity curve divided by the severity "
            f"range, i.e. the curve's mean height (mean ± std over seeds; {_direction(metric)}). **ER** "
            f"(effective robustness): the model's mean RR minus the reference's. Reference: `{ref}`, {why}.{missing}"
        ),
        Table(["model", *(f.name for f in families)], rows, bold),
    ]


# --- 5. Shapley values -------------------------------------------------------------------------
def _shapley(table: pd.DataFrame, metric: str, num_classes: int | None) -> list[Block]:
    """Per-modality contributions from the all-subset scores (no extra training)."""
    empty, source = empty_coalition_value(table, metric, num_classes)
    contrib = modality_contributions(table, metric, empty)
    if contrib.empty:
        return []
    modalities = list(dict.fromkeys(contrib.modality))
    cells = {(r.model, r.modality): mean_std(r.mean, r.std, r.seeds) for r in contrib.itertuples()}
    totals = contrib.groupby("model", sort=False)["mean"].sum()
    rows = [[str(m), *(cells[(m, mod)] for mod in modalities), f"{totals[m]:.3f}"] for m in totals.index]
    sign = "reduction of" if metric in LOWER_IS_BETTER else "gain in"
    return [
        Heading("Modality contributions (Shapley values)", 3),
        Paragraph(
            f"Exact Shapley value of each modality: its {sign} {metric} averaged over every order of adding "
            "modalities, the value of a coalition S being the score under `subset[S]` (clean = all). "
            f"The empty coalition's value v(∅) is {source}. Values sum to the clean score's {sign} {metric} "
            "over v(∅); positive means the modality helps. Mean ± std over seeds."
        ),
        Table(["model", *modalities, "sum"], rows),
    ]


# --- 6. paired differences ---------------------------------------------------------------------
def _pair_summary(diffs: pd.DataFrame, metric: str) -> Table:
    """Per pair: how many scenarios say a is better, b is better, or include 0 (and, for seed-level
    rows with one seed, how many have no interval: no verdict without one)."""
    untestable = diffs.low.isna().any()
    rows = []
    for (a, b), g in diffs.groupby(["model_a", "model_b"], sort=False):
        tested = g.dropna(subset=["low", "high"])
        verdicts = [verdict(lo, hi, metric) for lo, hi in zip(tested.low, tested.high, strict=True)]
        counts = [str(verdicts.count(v)) for v in (1, -1, 0)] + ([str(len(g) - len(tested))] if untestable else [])
        rows.append([f"{a} − {b}", str(len(g)), *counts, f"{g['mean'].mean():+.3f}"])
    header = ["a − b", "scenarios", "a better", "b better", "CI includes 0"]
    return Table([*header, *(["no interval (1 seed)"] if untestable else []), "mean difference"], rows)


def _pair_details(diffs: pd.DataFrame) -> Table:
    per_sample = "samples" in diffs.columns  # every per-sample row pairs runs with the same masks
    rows = [
        [
            f"{r.model_a} − {r.model_b}",
            str(r.scenario),
            str(r.seeds),
            f"{r.mean:+.3f}",
            f"[{r.low:+.3f}, {r.high:+.3f}]" if np.isfinite(r.low) else "none (1 seed)",
            str(r.samples) if per_sample else ("same" if r.paired else "**differ**"),
        ]
        for r in diffs.itertuples()
    ]
    header = ["a − b", "scenario", "seeds", "mean difference", f"{LEVEL:.0%} CI", "samples" if per_sample else "masks"]
    return Table(header, rows, collapsed=f"Every pair and scenario ({len(rows)} rows)")


def _per_sample(
    table: pd.DataFrame, metric: str, n_boot: int, seed: int, resample_seeds: bool
) -> tuple[pd.DataFrame, list[tuple[str, int]]]:
    """Per-sample paired differences of every pair of models whose runs all recorded their predictions,
    and the (model, seed) of the runs that did not."""
    runs = table[["model", "seed", "run_dir"]].drop_duplicates()
    predictions, lacking = load_predictions(list(runs.itertuples(index=False, name=None)))
    incomplete = {model for model, _ in lacking}
    complete = {key: p for key, p in predictions.items() if key[0] not in incomplete}
    t = table[table.metric == metric]
    diffs = sample_differences(
        complete, same_masks(t), metric, n_boot=n_boot, level=LEVEL, seed=seed, resample_seeds=resample_seeds
    )
    return diffs, lacking


def _per_sample_blocks(diffs: pd.DataFrame, metric: str, n_boot: int, seed: int, resample_seeds: bool) -> list[Block]:
    if resample_seeds:
        pairing = "test sample and seed (seed s of a with seed s of b, the seeds both models have)"
        resampled = "the training seeds and, independently, the test samples"
        if (diffs.seeds < 2).any():
            resampled += " (rows with one seed: test samples only)"
    else:
        pairing = "test sample (each sample's score averaged over the seeds both models have)"
        resampled = "test samples"
    return [
        Paragraph(
            f"For every pair and scenario audited under the same masks: {metric}(a) − {metric}(b), paired per "
            f"{pairing}, with a {LEVEL:.0%} percentile bootstrap CI over {resampled} ({n_boot} resamples, "
            f"seed {seed}). A model is called better only when the interval excludes 0."
        ),
        _pair_summary(diffs, metric),
        _pair_details(diffs),
    ]


def _seed_level_blocks(
    diffs: pd.DataFrame, metric: str, n_boot: int, seed: int, lacking: list[tuple[str, int]], others: bool
) -> list[Block]:
    """The pairs that cannot be paired per sample, over seeds; `others`: after per-sample pairs."""
    shown = ", ".join(f"{model} seed {s}" for model, s in lacking[:5]) + (
        f" and {len(lacking) - 5} more" if len(lacking) > 5 else ""
    )
    why = (
        f"Runs without per-sample predictions ({PREDICTIONS}): {shown} (`mmrobust audit` folders keep none; a run "
        "of `mmrobust run` without them is incomplete, and `mmrobust run` redoes it)"
        if lacking
        else "These pairs were never audited under the same masks"
    )
    one_seed = " With one seed a pair has no interval and no verdict." if diffs.low.isna().any() else ""
    unpaired = "" if diffs.paired.all() else " Rows marked **differ** compare runs audited under different masks."
    return [
        Paragraph(
            f"For every {'other ' if others else ''}pair and scenario: mean over seeds of {metric}(a) − {metric}(b), "
            f"seed s of a paired with seed s of b (the same audit masks), with a {LEVEL:.0%} percentile bootstrap "
            f"CI ({n_boot} resamples, seed {seed}). {why}, so the bootstrap resamples **seeds**: with few seeds the "
            f"interval is coarse (with two it spans the two differences).{one_seed}{unpaired}"
        ),
        _pair_summary(diffs, metric),
        _pair_details(diffs),
    ]


def _paired(table: pd.DataFrame, metric: str, n_boot: int, seed: int, resample_seeds: bool) -> list[Block]:
    """Model a − model b on the same masks: per test sample for the pairs whose runs all hold their
    predictions (`resample_seeds`: resampling the training seeds too), the other pairs over seeds."""
    per_sample, lacking = _per_sample(table, metric, n_boot, seed, resample_seeds)
    blocks: list[Block] = []
    if not per_sample.empty:
        blocks += _per_sample_blocks(per_sample, metric, n_boot, seed, resample_seeds)
    done = {frozenset(pair) for pair in zip(per_sample.model_a, per_sample.model_b, strict=True)}
    by_seed = paired_differences(table, metric, n_boot=n_boot, level=LEVEL, seed=seed, skip=done)
    if not by_seed.empty:
        blocks += _seed_level_blocks(by_seed, metric, n_boot, seed, lacking, others=bool(blocks))
    return [Heading("Paired differences between models", 3), *blocks] if blocks else []


# --- the report --------------------------------------------------------------------------------
def _dataset_section(
    runs: Runs, dataset: str, reference: str | None, n_boot: int, seed: int, resample_seeds: bool
) -> list[Block]:
    table = runs.table[runs.table.dataset == dataset]
    task = runs.tasks[dataset]
    metric = primary_metric(task)
    families = severity_families(dict.fromkeys(table.scenario))
    models = list(dict.fromkeys(table.model))
    seeds = sorted(table.seed.unique())
    return [
        Heading(f"Dataset {dataset}"),
        Paragraph(
            f"{task}; {len(models)} models, seeds {', '.join(map(str, seeds))}; "
            f"{table.scenario.nunique()} audit scenarios."
        ),
        *_scores(table, metric),
        *_heatmap(table, task, dataset),
        *_curves(table, metric, families, dataset),
        *_robustness(table, metric, families, reference),
        *_shapley(table, metric, runs.num_classes.get(dataset)),
        *_paired(table, metric, n_boot, seed, resample_seeds),
    ]


def _overview(runs: Runs) -> Paragraph:
    dirs = [str(d) for d in runs.run_dirs]
    where = os.path.commonpath(dirs) if len(dirs) > 1 else dirs[0]
    skipped = f" ({unfinished_note(runs.skipped)})" if runs.skipped else ""
    return Paragraph(
        f"{len(runs.run_dirs)} runs under `{where}`{skipped}: {len(runs.models)} models on "
        f"{', '.join(runs.datasets)}. Written by `mmrobust report`."
    )


def build_report(
    runs: Runs, reference: str | None = None, *, n_boot: int = 10_000, seed: int = 0, resample_seeds: bool = False
) -> tuple[str, list[Block]]:
    """(title, blocks) of the comparison report; an unknown `reference` is a one-line error.
    `resample_seeds`: paired intervals that also resample the training seeds."""
    if reference is not None:
        check_reference(reference, runs.models)
    blocks: list[Block] = [_overview(runs)]
    for dataset in runs.datasets:
        blocks += _dataset_section(runs, dataset, reference, n_boot, seed, resample_seeds)
    return TITLE, blocks


def write_comparison(
    runs: Runs,
    out: Path,
    fmt: str = "html",
    reference: str | None = None,
    *,
    n_boot: int = 10_000,
    seed: int = 0,
    resample_seeds: bool = False,
) -> list[Path]:
    """Build and write the report; returns the files written (the report first)."""
    title, blocks = build_report(runs, reference, n_boot=n_boot, seed=seed, resample_seeds=resample_seeds)
    return write_document(title, blocks, out, fmt)
