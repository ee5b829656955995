"""Documented numbers come from committed results: collect a study's results, and regenerate (or
check) every generated table in the documentation.

    python scripts/doc_tables.py collect runs/baselines/utd_mhad --study baselines_utd_mhad
    python scripts/doc_tables.py write     # regenerate every marked table in README.md and docs/
    python scripts/doc_tables.py check     # exit 1 naming every table that differs (a test runs this)

`collect` reads every finished run folder below a `mmrobust run` output (results.csv + manifest)
and writes docs/reproductions/results/<study>.csv: one row per (model, seed, scenario, metric) with
the run's config hash and git commit, so each table can be traced to the code that made it.

A generated table sits between two markers in a Markdown file; the first names its source and
options, and everything up to the closing marker is replaced by the regenerated table:

    <!-- table: runs baselines_utd_mhad metric=accuracy kinds=clean,subset -->
    | model | clean | ... |
    <!-- /table -->

Kinds: `runs STUDY` (models x scenarios, mean ± std over seeds, options as scripts/tables.py:
`metric`, `kinds` or `scenarios` (`;`-separated), `models`, `delta`), `recipe SEARCH` (a recipe
search summary from configs/recipes/search/SEARCH.yaml's results).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import recipe_search
import tables

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "reproductions" / "results"
DOCUMENTS = ("README.md", "docs/**/*.md")
MARKER = re.compile(r"(<!-- table: (?P<spec>[^>]*?) -->\n)(?P<body>.*?)(<!-- /table -->)", re.DOTALL)
KEEP_METRICS = ("accuracy", "macro_f1", "mae", "corr", "acc2", "f1", "acc5", "acc7")  # the ones docs cite


def collect(run_root: Path, study: str) -> Path:
    """Every finished run below `run_root` as one tidy CSV in the results folder."""
    frames = []
    for manifest in sorted(run_root.glob("**/manifest.json")):
        record = json.loads(manifest.read_text())
        if record.get("status") != "done" or not (manifest.parent / "results.csv").is_file():
            continue
        t = pd.read_csv(manifest.parent / "results.csv")
        t = t[t.metric.isin(KEEP_METRICS)]
        frames.append(t.assign(config_hash=record.get("config_hash"), commit=(record.get("git") or {}).get("commit")))
    if not frames:
        raise SystemExit(f"no finished runs under {run_root}")
    out = RESULTS / f"{study}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.concat(frames, ignore_index=True).to_csv(out, index=False, float_format="%.6g")
    return out


def render(spec: str) -> str:
    """The table a marker's spec asks for."""
    kind, source, *options = spec.split()
    opts = dict(o.split("=", 1) for o in options)
    if kind == "recipe":
        search = REPO / "configs" / "recipes" / "search" / f"{source}.yaml"
        results = search.parent / recipe_search.read_yaml_mapping(search)["results"]
        return recipe_search.summary(recipe_search.read_results(results))
    if kind != "runs":
        raise SystemExit(f"unknown table kind '{kind}' in <!-- table: {spec} -->")
    t = pd.read_csv(RESULTS / f"{source}.csv")
    if "scenarios" in opts:
        scenarios = opts["scenarios"].split(";")
    else:
        scenarios = [
            s for k in opts.get("kinds", "clean,subset").split(",") for s in dict.fromkeys(t[t.kind == k].scenario)
        ]
    models = opts["models"].split(",") if "models" in opts else list(dict.fromkeys(t.model))
    return tables.table(t, opts.get("metric", "accuracy"), scenarios, opts.get("delta") == "true", models)


def documents() -> list[Path]:
    return sorted({p for pattern in DOCUMENTS for p in REPO.glob(pattern)})


def regenerate(text: str) -> str:
    return MARKER.sub(lambda m: m.group(1) + render(m.group("spec")) + "\n" + m.group(4), text)


def stale(paths: Sequence[Path] | None = None) -> list[str]:
    """`file: spec` of every generated table (in `paths`, default the documentation) whose text
    differs from its regeneration."""
    found = []
    for path in documents() if paths is None else paths:
        text = path.read_text()
        for m in MARKER.finditer(text):
            if m.group("body") != render(m.group("spec")) + "\n":
                shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path
                found.append(f"{shown}: <!-- table: {m.group('spec')} -->")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect", help="a study's run folders -> docs/reproductions/results/<study>.csv")
    c.add_argument("runs", type=Path)
    c.add_argument("--study", required=True)
    sub.add_parser("write", help="regenerate every marked table")
    sub.add_parser("check", help="exit 1 if any marked table differs from its regeneration")
    args = parser.parse_args()
    if args.command == "collect":
        print(collect(args.runs, args.study))
    elif args.command == "write":
        for path in documents():
            text = path.read_text()
            if MARKER.search(text) and regenerate(text) != text:
                path.write_text(regenerate(text))
                print(f"updated {path.relative_to(REPO)}")
    else:
        differ = stale()
        print("\n".join(differ) or "every generated table is current")
        sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
