"""Search a dataset's training recipe on validation only, by leave-one-subject-out over the
training subjects (docs/recipes.md).

    python scripts/recipe_search.py configs/recipes/search/utd_mhad.yaml --data-dir DIR [--shard 0/2]
    python scripts/recipe_search.py configs/recipes/search/utd_mhad.yaml --summary

A search file names the dataset, the folds (each a list of validation subjects, drawn from the
training subjects only; or, with `fold_option`, the values of another data option that draws the
validation split, e.g. AV-MNIST's `split_seed`), the models (method parameters, e.g. a specialist's `modalities`;
a model may name another method, e.g. the `features` floor as a reference, which gets the shared parameters
it takes), the seeds, and the candidate recipes: data options, `fit` options and method parameters layered on a
shared `base` (a candidate's `models` list limits it to the models it can change). Every
(candidate, model, fold, seed) trains on a fixed budget (`select: none`) and records its
validation curve; the test split is never read. Results go to one JSON line per run in the
search's `results` file (resumable: finished runs are skipped; `--shard i/n` splits the runs
between n processes, each appending to its own file). `--summary` prints, per candidate and
model, the mean validation score of the last epoch over folds and seeds (the search's `metric`,
default accuracy; e.g. `mae` or `corr` for a regression dataset), with its standard
error over folds (`--subsets`: averaged over the full set and every modality subset, which each run
also records by auditing its validation split).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
import torch

import mmrobust
from mmrobust.config import layered, params_taken, read_yaml_mapping
from mmrobust.errors import MMRobustError, unknown_name
from mmrobust.train import fit


def plan(search: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(key, run description) of every run, in a fixed order."""
    base = search.get("base", {})
    for (name, candidate), (label, model), fold, seed in product(
        search["candidates"].items(), search["models"].items(), search["folds"], search["seeds"]
    ):
        recipe = layered(base, candidate or {})
        if label not in recipe.pop("models", search["models"]):  # a candidate that changes one modality
            continue
        key = f"{name}|{label}|val={fold_name(fold)}|seed={seed}"
        yield key, {"candidate": name, "model": label, "fold": fold, "seed": seed, "recipe": recipe, "params": model}


def fold_name(fold: Any) -> str:
    """A fold's label: its validation subjects joined by '+', or the option's value."""
    return "+".join(map(str, fold)) if isinstance(fold, list) else str(fold)


def finished(results: Path) -> set[str]:
    keys = set()
    for path in sorted(results.parent.glob(results.name + "*")):
        for line in path.read_text().splitlines():
            if line.strip():
                keys.add(json.loads(line)["key"])
    return keys


def run_one(search: dict[str, Any], data_dir: str | None, key: str, run: dict[str, Any]) -> dict[str, Any]:
    recipe = run["recipe"]
    options = {**recipe.get("data", {}), search.get("fold_option", "val_subjects"): run["fold"]}
    dataset = search["dataset"]
    where = {"data_dir": data_dir} if data_dir else {}  # a generated dataset (synthetic) reads no files
    data = mmrobust.load_dataset(dataset, **where, **options)
    own = dict(run["params"])
    name = own.pop("method", recipe.get("params", {}).get("method", "joint"))
    shared = {k: v for k, v in recipe.get("params", {}).items() if k != "method"}
    method = mmrobust.create_method(name, **{**params_taken(name, shared), **own})
    metric = search.get("metric", "accuracy")
    start = time.perf_counter()
    result = fit(method, data, seed=run["seed"], select="none", progress=False, **recipe.get("train", {}))
    curve = [round(row[f"val_{metric}"], 4) for row in result.history if f"val_{metric}" in row]
    audited = mmrobust.audit(method, data, split="val", defaults=True)  # every subset, on validation
    t = audited.table[(audited.table.metric == metric) & audited.table.kind.isin(["clean", "subset"])]
    return {
        "key": key,
        **{k: run[k] for k in ("candidate", "model", "fold", "seed")},
        "metric": metric,
        "score": result.val_metrics[metric],
        "val_metrics": {k: round(v, 4) for k, v in result.val_metrics.items()},
        "curve": curve,
        "val_subsets": {str(r.scenario): round(float(r.value), 4) for r in t.itertuples()},
        "seconds": round(time.perf_counter() - start, 1),
        "commit": _commit(),
    }


def _commit() -> str:
    import subprocess

    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    return out.stdout.strip()


def read_results(results: Path) -> list[dict[str, Any]]:
    """Every finished run of a search, from all its shard files."""
    rows = [
        json.loads(line)
        for p in sorted(results.parent.glob(results.name + "*"))
        for line in p.read_text().splitlines()
        if line.strip()
    ]
    rows = list({row["key"]: row for row in reversed(rows)}.values())[::-1]  # a run done twice counts once
    if not rows:
        raise MMRobustError(f"no results in {results}*: run the search first")
    return rows


def score(row: dict[str, Any]) -> float:
    """A run's validation score in the search's metric (older results recorded accuracy only)."""
    return float(row["score"] if "score" in row else row["val_accuracy"])


def summary(rows: list[dict[str, Any]], order: list[str] | None = None, subsets: bool = False) -> str:
    """Candidates x models: mean validation accuracy of the last epoch over folds (seeds averaged
    within a fold) ± its standard error over folds, and the number of runs; with `subsets`, the
    accuracy averaged over the full set and every subset (runs that recorded them)."""
    table: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        table.setdefault((row["candidate"], row["model"]), []).append(row)
    models = list(dict.fromkeys(r["model"] for r in rows))
    lines = ["| candidate | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    found = list(dict.fromkeys(r["candidate"] for r in rows))
    for candidate in [c for c in order or [] if c in found] + [c for c in found if c not in (order or [])]:
        cells = []
        for model in models:
            per_fold: dict[str, list[float]] = {}
            for r in table.get((candidate, model), []):
                if subsets and "val_subsets" not in r:
                    continue
                value = float(np.mean(list(r["val_subsets"].values()))) if subsets else score(r)
                per_fold.setdefault(fold_name(r["fold"]), []).append(value)
            means = np.array([np.mean(v) for v in per_fold.values()])
            sem = means.std(ddof=1) / np.sqrt(len(means)) if len(means) > 1 else float("nan")
            runs = sum(len(v) for v in per_fold.values())
            cells.append(f"{means.mean():.3f} ± {sem:.3f} ({runs})" if len(means) else "—")
        lines.append(f"| {candidate} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def chosen_candidates(search: dict[str, Any], names: str | None) -> set[str] | None:
    """The candidates `--candidates` names (None: all); a misspelt one is an error, not a search that
    silently plans nothing."""
    if names is None:
        return None
    chosen = {name.strip() for name in names.split(",") if name.strip()}
    for name in sorted(chosen):
        if name not in search["candidates"]:
            raise unknown_name("candidate", name, search["candidates"])
    return chosen


def parse_shard(text: str) -> tuple[int, int]:
    """`--shard i/n` as (i, n), with 0 <= i < n."""
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        raise MMRobustError(f"--shard must be i/n, e.g. 0/2, got {text!r}") from None
    if not 0 <= index < count:
        raise MMRobustError(f"--shard i/n needs 0 <= i < n, got {text!r}")
    return index, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("search", type=Path)
    parser.add_argument("--data-dir")
    parser.add_argument("--shard", default="0/1", help="i/n: run every n-th planned run from the i-th")
    parser.add_argument("--summary", action="store_true")
    parser.add_argument("--candidates", help="only these candidates (comma-separated)")
    parser.add_argument("--subsets", action="store_true", help="summarise the mean over every subset")
    args = parser.parse_args()
    search = read_yaml_mapping(args.search)
    results = args.search.parent / search["results"]
    if args.summary:
        print(summary(read_results(results), list(search["candidates"]), subsets=args.subsets))
        return
    index, count = parse_shard(args.shard)
    wanted = chosen_candidates(search, args.candidates)
    torch.set_num_threads(1)
    done = finished(results)
    planned = [(k, r) for k, r in plan(search) if wanted is None or r["candidate"] in wanted]
    todo = [(k, r) for i, (k, r) in enumerate(planned) if i % count == index and k not in done]
    out = results.with_name(f"{results.name}.{index}-of-{count}")
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"{len(todo)} runs to do in shard {args.shard}", file=sys.stderr)
    for n, (key, run) in enumerate(todo, 1):
        row = run_one(search, args.data_dir, key, run)
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"[{n}/{len(todo)}] {key}: val {row['metric']} {row['score']:.3f} ({row['seconds']} s)", file=sys.stderr)


if __name__ == "__main__":
    try:
        main()
    except MMRobustError as e:
        sys.exit(f"error: {e}")
