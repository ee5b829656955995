"""Per model: mean score over the modality subsets, the worst shortfall vs. the subset specialists,
and scores under balanced / imbalanced test missing rates (docs/reproductions/ume_redcore.md).

    python scripts/specialist_summary.py runs/ume_redcore/mosi [--metric macro_f1]

Specialists are the models labelled `specialist-<a+b>`; the balanced rate scenario is the one
whose rates are all equal.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

import mmrobust
from mmrobust.audit.specialists import specialist_gaps

PREFIX = "specialist-"


def mean_std(per_seed: pd.Series) -> str:
    return f"{per_seed.mean():.3f} ± {per_seed.std(ddof=1):.3f}"


def per_seed(table: pd.DataFrame, rows: pd.Series) -> pd.Series:
    return table[rows].groupby("seed").value.mean()


def main(run_root: Path, metric: str | None = None) -> None:
    """`metric` defaults to the task's primary one; any metric works, higher or lower is better
    as `specialist_gaps` knows it."""
    result = mmrobust.AuditResult.read(run_root / "results.json")
    metric = metric or result.primary_metric
    labels = [str(m) for m in result.table.model.unique() if str(m).startswith(PREFIX)]
    gaps = specialist_gaps(result, metric, specialists={label: label[len(PREFIX) :].split("+") for label in labels})
    gaps = gaps[~gaps.model.str.startswith(PREFIX)]
    t = result.table[result.table.metric == metric]
    rates = [str(s) for s in t.scenario.unique() if str(s).startswith("rates[")]
    balanced = [s for s in rates if len({v.split("=")[1] for v in s[6:-1].split(",")}) == 1]
    rate_columns = f" | {metric}, balanced test rates | {metric}, imbalanced test rates (mean)" if rates else ""
    print(f"| model | mean {metric} over the subsets | worst shortfall vs. specialist (subset){rate_columns} |")
    print("|---" * (5 if rates else 3) + "|")
    for model, g in gaps.groupby("model", sort=False):
        worst = g.loc[g.shortfall.idxmax()]
        tm = t[t.model == model]
        subsets = per_seed(tm, (tm.kind == "subset") | (tm.scenario == "clean"))
        row = f"| {model} | {mean_std(subsets)} | {worst.shortfall:+.3f} ({worst.subset})"
        if rates:  # experiments without rate scenarios (e.g. AV-MNIST's Miss-V / Miss-A) have no such columns
            even = per_seed(tm, tm.scenario.isin(balanced))
            uneven = per_seed(tm, tm.scenario.isin(rates) & ~tm.scenario.isin(balanced))
            row += f" | {mean_std(even)} | {mean_std(uneven)}"
        print(row + " |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_root", type=Path, nargs="?", default=Path("runs/ume_redcore/mosi"))
    parser.add_argument("--metric", help="default: the task's primary metric")
    args = parser.parse_args()
    try:
        main(args.run_root, args.metric)
    except mmrobust.MMRobustError as e:  # a missing or damaged run folder: one line, no traceback
        raise SystemExit(f"error: {e}") from None
