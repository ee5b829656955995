"""CroSSL's Figure 2 / Figure 3 from run folders: a metric against one method parameter.

    python scripts/crossl_curves.py runs/spsw_har --x label_fraction --out spsw_har_labels

Every CroSSL run folder (`.../<model>/seed-<s>/`) under the given roots is one point: its x is the model's
`--x` parameter (read from the run's manifest; the method's default when the config leaves it
out), its curve is (mode, masking, and the masking ratio unless that is x) — supervised runs have
no masking — and its y is `--metric` on clean test data; curves with one x only are dropped.
Writes OUT.png (mean ± std over seeds) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

DEFAULTS = {"label_fraction": 1.0, "mask_ratio": 0.1, "masking": "spatial", "mode": "finetune"}


def curve_name(params: dict, x: str) -> str:
    """(mode, masking), plus the masking ratio unless it is x: label curves at two ratios stay apart."""
    mode = params["mode"]
    if mode == "supervised":
        return mode
    return f"{mode}-{params['masking']}" + ("" if x == "mask_ratio" else f"-r{float(params['mask_ratio']):g}")


def points(roots: list[Path], x: str, metric: str) -> pd.DataFrame:
    rows = []
    for root in roots:
        for manifest in sorted(root.glob("**/seed-*/manifest.json")):
            model = json.loads(manifest.read_text())["model"]
            if model["method"] != "crossl":  # a shared run folder also holds the baselines
                continue
            params = {**DEFAULTS, **model["params"]}
            results = pd.read_csv(manifest.parent / "results.csv")
            value = results[(results.scenario == "clean") & (results.metric == metric)].value
            if value.empty:
                continue
            curve = curve_name(params, x)
            seed = manifest.parent.name
            rows.append({"curve": curve, "x": float(params[x]), "seed": seed, "y": float(value.iloc[0])})
    if not rows:
        raise SystemExit(f"no finished runs with a clean '{metric}' under {', '.join(map(str, roots))}")
    return pd.DataFrame(rows)


def summarise(t: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over seeds per (curve, x); curves with a single x (e.g. the supervised reference
    in a masking-ratio study) are left out: they are no curve."""
    s = t.groupby(["curve", "x"]).y.agg(["mean", "std", "count"]).reset_index().fillna({"std": 0.0})
    return s[s.groupby("curve").x.transform("nunique") > 1]


def plot(s: pd.DataFrame, x: str, metric: str, out: Path) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=120)
    for curve, g in s.groupby("curve", sort=True):
        ax.errorbar(g.x, g["mean"], yerr=g["std"], marker="o", capsize=3, label=curve)
    if x == "label_fraction":
        ax.set_xscale("log")
    ax.set_xlabel(x.replace("_", " "))
    ax.set_ylabel(f"{metric} (clean test)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out.with_suffix(".png"))


def markdown(s: pd.DataFrame, x: str) -> str:
    xs = sorted(s.x.unique())
    lines = [f"| model \\ {x} | " + " | ".join(f"{v:g}" for v in xs) + " |", "|---" * (len(xs) + 1) + "|"]
    for curve, g in s.groupby("curve", sort=True):
        cells = {
            row.x: f"{row.mean:.3f} ± {row.std:.3f}" + ("" if row.count >= 3 else f" (n={row.count})")
            for row in g.itertuples()
        }
        lines.append(f"| {curve} | " + " | ".join(cells.get(v, "–") for v in xs) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("roots", nargs="+", type=Path)
    parser.add_argument("--x", required=True, choices=["label_fraction", "mask_ratio"])
    parser.add_argument("--metric", default="macro_f1")
    parser.add_argument("--out", type=Path, required=True, help="PNG path (the suffix is replaced by .png)")
    args = parser.parse_args()
    s = summarise(points(args.roots, args.x, args.metric))
    plot(s, args.x, args.metric, args.out)
    print(markdown(s, args.x))


if __name__ == "__main__":
    main()
