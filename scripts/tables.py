"""Markdown tables for the reproduction documents, from the per-run results of `mmrobust run`.

    python scripts/tables.py runs/actionmae/utd_mhad --metric accuracy --kinds clean,subset
    python scripts/tables.py runs/perturbation/mosi --metric corr --delta \
        --scenario clean --scenario 'missing[text@0.3]'

Rows are models (in config order), columns scenarios; cells are mean ± std over seeds of the
value, or with `--delta` of the change vs. clean (the clean column keeps its value). With
subsets among the columns, a last column gives the mean |Δ| over the subsets (per seed, then
mean ± std), the paper-style robustness summary.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import yaml


def load(run_root: Path) -> pd.DataFrame:
    files = sorted(run_root.glob("*/seed-*/results.csv"))
    if not files:
        raise SystemExit(f"no runs under {run_root} (expected <model>/seed-<s>/results.csv)")
    return pd.concat([pd.read_csv(f) for f in files], ignore_index=True)


def config_order(run_root: Path, t: pd.DataFrame) -> list[str]:
    """Models in the order of the experiment config written beside the runs, else as found."""
    config = run_root / "config.yaml"
    found = list(dict.fromkeys(t.model))
    if not config.is_file():
        return found
    labels = [m.get("label") or m["method"] for m in yaml.safe_load(config.read_text())["models"]]
    return [m for m in labels if m in found] + [m for m in found if m not in labels]


def cell(values: pd.Series) -> str:
    spread = values.std(ddof=1) if len(values) > 1 else 0.0
    return f"{values.mean():.3f} ± {spread:.3f}"


def table(t: pd.DataFrame, metric: str, scenarios: list[str], delta: bool, models: list[str]) -> str:
    t = t[t.metric == metric]
    subsets = [s for s in scenarios if s.startswith("subset[")]
    head = ["model", *scenarios] + (["mean \\|Δ\\| subsets"] if subsets else []) + ["seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for model in models:
        g = t[t.model == model]
        cells = [
            cell(g[g.scenario == s].value if s == "clean" or not delta else g[g.scenario == s].delta) for s in scenarios
        ]
        if subsets:
            cells.append(cell(g[g.scenario.isin(subsets)].groupby("seed").delta.apply(lambda d: d.abs().mean())))
        lines.append(f"| {model} | " + " | ".join(cells) + f" | {g.seed.nunique()} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", type=Path, help="the --out folder of `mmrobust run`")
    parser.add_argument("--metric", default="accuracy")
    parser.add_argument("--kinds", default="clean,subset", help="scenario kinds to show, in this order")
    parser.add_argument("--scenario", action="append", help="a scenario to show (repeatable; overrides --kinds)")
    parser.add_argument("--models", help="models to show, in this order (default: all, config order)")
    parser.add_argument("--delta", action="store_true", help="show changes vs. clean instead of values")
    args = parser.parse_args()
    t = load(args.runs)
    if args.scenario:
        scenarios = args.scenario
    else:
        kinds = args.kinds.split(",")
        scenarios = [s for k in kinds for s in dict.fromkeys(t[t.kind == k].scenario)]
    missing = sorted(set(scenarios) - set(t.scenario))
    if missing:
        raise SystemExit(f"no such scenario in {args.runs}: {', '.join(missing)}")
    models = args.models.split(",") if args.models else config_order(args.runs, t)
    print(table(t, args.metric, scenarios, args.delta, models))


if __name__ == "__main__":
    main()
