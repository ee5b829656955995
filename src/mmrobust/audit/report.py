"""Reports people read and machines parse: results.csv, results.json, report.md, heatmap.png.

Every file is written to a temporary name and renamed into place, so an interrupted write
never leaves a half-written report that looks valid; results.json also carries a SHA-256 of its
content (`sha256`), checked by `AuditResult.read`, so damage after writing is noticed too.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..atomic import atomic_write, seal_json
from ..errors import MMRobustError, wrong_argument
from ..metrics import LOWER_IS_BETTER
from .document import Table, table_markdown
from .result import MODEL_KEYS, AuditResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FILES = ("results.csv", "results.json", "report.md", "heatmap.png")

MAX_COLUMNS = 40  # heatmap columns shown one per subset; beyond, grouped by subset size


NOT_AUDITED = "—"  # a headline number without scenarios of its kind (e.g. defaults=False): not 0


def mean_std(mean: float, std: float, seeds: int) -> str:
    """`mean ± std`, or the mean alone for one seed (whose std is undefined, not zero)."""
    if math.isnan(mean):
        return NOT_AUDITED
    return f"{mean:.3f} ± {std:.3f}" if seeds > 1 else f"{mean:.3f}"


def _signed(delta: float) -> str:
    return NOT_AUDITED if math.isnan(delta) else f"{delta:+.3f}"


def _worst(scenario: str, delta: float, metric: str) -> str:
    if math.isnan(delta):
        return NOT_AUDITED
    hurt = delta > 0 if metric in LOWER_IS_BETTER else delta < 0
    label = scenario.removeprefix("subset[").removesuffix("]")
    return f"{label} ({delta:+.3f})" if hurt else "none"


def summary_rows(result: AuditResult) -> tuple[list[str], list[list[str]]]:
    """The headline table as strings (shared by the terminal and the Markdown report)."""
    s = result.summary()
    m = result.primary_metric
    header = [
        "model",
        "fusion",
        f"clean {m}",
        "mean |Δ| subsets",
        "worst subset (Δ)",
        "relies on (Δ without it)",
        "Δ missing",
        "Δ noise",
        "seeds",
    ]
    rows = []
    for r in s.itertuples():
        n = int(r.seeds)
        rows.append(
            [
                r.model,
                r.fusion,
                mean_std(r.clean_mean, r.clean_std, n),
                mean_std(r.mean_abs_delta_subsets_mean, r.mean_abs_delta_subsets_std, n),
                _worst(r.worst_subset, r.worst_delta_mean, m),
                f"{r.relies_on} ({r.relies_on_delta:+.3f})" if r.relies_on else "none",
                _signed(r.delta_missing_mean),
                _signed(r.delta_noise_mean),
                str(n),
            ]
        )
    return header, rows


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    return table_markdown(Table(header, rows))


def summary_markdown(result: AuditResult) -> str:
    """The headline table in Markdown (the report's, and the README's demo table)."""
    return _markdown_table(*summary_rows(result))


def markdown(result: AuditResult, title: str = "Robustness audit", settings: Mapping[str, Any] | None = None) -> str:
    """The report as Markdown; `settings` (what `write_report` records beside the results: the command,
    the checkpoint, what the model was fed, the split audited) are listed under the title, plain values only."""
    m = result.primary_metric
    direction = "lower is better" if m in LOWER_IS_BETTER else "higher is better"
    wide = result.per_scenario()
    table = result.table[result.table.metric == m]
    stds = table.pivot_table(index=MODEL_KEYS, columns="scenario", values="value", aggfunc="std", sort=False).reindex(
        index=wide.index, columns=wide.columns
    )  # single-seed models: NaN, shown without ±
    scen_rows = []
    for idx, row in wide.iterrows():
        cells = [
            "n/a (no sample scored)" if pd.isna(row[c])
            else f"{row[c]:.3f}" + (f" ± {stds.loc[idx, c]:.3f}" if pd.notna(stds.loc[idx, c]) else "")
            for c in wide.columns
        ]
        scen_rows.append([idx[1], idx[3], *cells])  # (dataset, model, method, fusion)
    dataset = ", ".join(sorted(result.table.dataset.unique()))
    hashes = [
        f"| `{s['name']}` | {s['kind']} | `{json.dumps(s['corruption'])}` | `{s['mask_hash']}` |"
        for s in result.scenarios
    ]
    chance = result.chance()
    chance_line = (
        "Chance level (the best a model that ignores its inputs can score: always the most frequent test "
        f"class, or the median): {', '.join(f'{v:.3f} ({d})' for d, v in chance.items())}; heatmap cells "
        "at or past it are marked *."
        if chance
        else ""
    )
    return "\n".join(
        [
            f"# {title}",
            "",
            f"Dataset: **{dataset}**. Metric: **{m}** ({direction}); values are mean ± std over seeds.",
            *_settings_line(settings),
            "Δ is the change vs. the same model on clean test data (as given: complete, unless the data",
            "lack some modalities themselves; then a scenario's values are over the samples it leaves a",
            "modality, and its Δ is against clean on those same samples). *mean |Δ| subsets*: over",
            "every proper non-empty modality subset; *Δ missing* / *Δ noise*: mean over modalities of the",
            "change when that modality is missing / noised for a proportion of the test samples;",
            "*relies on*: the modality whose removal alone (its leave-one-out subset) hurts the most.",
            *([chance_line] if chance_line else []),
            "",
            "## Summary",
            "",
            summary_markdown(result),
            "",
            "## Every scenario",
            "",
            _markdown_table(["model", "fusion", *wide.columns], scen_rows),
            "",
            "![accuracy per modality subset](heatmap.png)",
            "",
            "## Scenarios (exactly what was applied)",
            "",
            "| scenario | kind | corruption | mask hash |",
            "|---|---|---|---|",
            *hashes,
            "",
            "A scenario's hash covers what it drew: its mask and, for noise, which inputs it changed and to what.",
            "Hashes are identical across models audited with the same seed: comparisons are paired.",
            *_excluded_line(result),
            "",
        ]
    )


def _excluded_line(result: AuditResult) -> list[str]:
    """On data with missing modalities: which scenarios left samples with no modality (not scored)."""
    counts = {s["name"]: s["excluded"] for s in result.scenarios if s.get("excluded")}
    if not counts:
        return []
    listed = ", ".join(f"`{name}` {n}" for name, n in counts.items())
    return ["", f"Samples left with no modality at all are not scored (per model and seed): {listed}; "
                "their scenarios' deltas are against clean on the samples they scored."]


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend, so reports render without a display (CI, servers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def heatmap_figure(result: AuditResult) -> Figure:
    """Models x modality subsets (mean over seeds), shared by the audit and the comparison reports."""
    plt = pyplot()
    m = result.primary_metric
    table = result.table[result.table.metric == m]
    if table.kind.isin(["clean", "subset"]).any():  # columns: subsets; else every scenario
        table = table[table.kind.isin(["clean", "subset"])]
    wide = table.pivot_table(index=["model", "fusion"], columns="scenario", values="value", aggfunc="mean", sort=False)
    wide = wide.reindex(columns=list(dict.fromkeys(table.scenario)))  # a subset that scored no sample: NaN
    labels = [c.removeprefix("subset[").removesuffix("]") if c != "clean" else "all (clean)" for c in wide.columns]
    if len(labels) > MAX_COLUMNS:  # too many subsets to read one by one: the mean per subset size
        wide, labels = _by_size(wide)
    label_room = 0.07 * max(len(label) for label in labels)  # the 45-degree subset names hang below
    fig, ax = plt.subplots(figsize=(max(5.0, 2.5 + 0.8 * len(labels)), 1.8 + label_room + 0.45 * len(wide)))
    cmap = "viridis_r" if m in LOWER_IS_BETTER else "viridis"
    values = wide.to_numpy(dtype=float)
    low, high = float(np.nanmin(values)), float(np.nanmax(values))
    if high - low < 1e-9:  # every cell equal: give the colour scale some room
        low, high = low - 0.5, high + 0.5
    im = ax.imshow(values, cmap=cmap, aspect="auto", vmin=low, vmax=high)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(wide)), [f"{a} / {b}" for a, b in wide.index])
    dark = np.asarray(im.norm(values)) < 0.5
    chance = result.chance(m)
    level = [chance.get(dataset, np.nan) for dataset in _datasets(table, wide.index)]
    for i, j in np.ndindex(values.shape):
        shade = "white" if dark[i, j] else "black"
        at_chance = values[i, j] >= level[i] - 1e-9 if m in LOWER_IS_BETTER else values[i, j] <= level[i] + 1e-9
        mark = "*" if at_chance else ""
        text = "n/a" if np.isnan(values[i, j]) else f"{values[i, j]:.2f}{mark}"  # no sample scored
        ax.text(j, i, text, ha="center", va="center", color=shade, fontsize=8)
    ax.set_xlabel("modalities present at test time")
    fig.colorbar(im, ax=ax, label=m)
    note = f"; * at or past chance ({', '.join(f'{v:.2f}' for v in dict.fromkeys(chance.values()))})" if chance else ""
    ax.set_title(f"{m} by modalities present\n(mean over seeds{note})", fontsize=10)
    fig.tight_layout()
    return fig


def _datasets(table: pd.DataFrame, rows: pd.Index) -> list[str]:
    """The dataset of each heatmap row (model, fusion)."""
    first = table.drop_duplicates(["model", "fusion"]).set_index(["model", "fusion"]).dataset
    return [str(first.loc[row]) for row in rows]


def _by_size(wide: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Subset columns grouped by how many modalities they keep (mean over the subsets of each size)."""
    sizes = {c: (c.removeprefix("subset[").removesuffix("]").count("+") + 1 if c != "clean" else 0) for c in wide}
    full = max(sizes.values()) + 1
    order = sorted(set(sizes.values()) - {0}, reverse=True)
    groups = {size: [c for c in wide if sizes[c] == size] for size in ([0] if 0 in sizes.values() else []) + order}
    grouped = pd.DataFrame({size: wide[cols].mean(axis=1) for size, cols in groups.items()})
    labels = [f"all {full} (clean)" if s == 0 else f"{s} of {full} (mean of {len(groups[s])})" for s in groups]
    return grouped, labels


def heatmap(result: AuditResult, path: Path) -> None:
    fig = heatmap_figure(result)
    fig.savefig(path, dpi=120)
    pyplot().close(fig)


def to_json(result: AuditResult, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "task": result.task,
        "primary_metric": result.primary_metric,
        "scenarios": result.scenarios,
        "models": result.models,
        "summary": result.summary().to_dict(orient="records"),
        "results": result.table.to_dict(orient="records"),
        **(extra or {}),
    }


def _settings_line(settings: Mapping[str, Any] | None) -> list[str]:
    shown = [f"{k}: `{v}`" for k, v in (settings or {}).items() if isinstance(v, str | int | float | bool)]
    return [f"Settings: {'; '.join(shown)}."] if shown else []


def write_report(result: AuditResult, out_dir: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write the four report files into `out_dir` (created if needed) and return it."""
    if not isinstance(result, AuditResult):
        raise wrong_argument("write_report", "the AuditResult that mmrobust.audit returns", result, "audit first")
    if not isinstance(out_dir, str | Path):
        raise wrong_argument("write_report", "a folder (str or Path)", out_dir, "e.g. write_report(result, 'out')")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise MMRobustError(f"{out} is a file: write_report writes a folder of four files there; give a folder")
    atomic_write(out / "results.csv", lambda p: result.table.to_csv(p, index=False))
    sealed = seal_json(to_json(result, extra))  # carries its own checksum, verified by AuditResult.read
    atomic_write(out / "results.json", lambda p: p.write_text(sealed))
    atomic_write(out / "report.md", lambda p: p.write_text(markdown(result, settings=extra)))
    atomic_write(out / "heatmap.png", lambda p: heatmap(result, p))
    return out
