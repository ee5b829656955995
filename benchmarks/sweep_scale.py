"""A 100-run local sweep: does it complete, and does the comparison report list all 100 runs?

The sweep is 20 models x 5 seeds on a tiny synthetic dataset (3 `mlp` modalities, 300 samples,
2 epochs per run): the grid axis `models.0` takes 20 labelled models, {joint, dropout, perturb,
actionmae, mma} x {sum, concat, transformer, late} fusion, so every (model, seed) has its own label,
as `mmrobust report` requires when it reads runs from several combinations. Steps, each timed:

1. `run_sweep(workers=W, threads=1)`: planning, the 100 runs (fit, audit, run record), one
   combined report per combination and OUT/results.csv;
2. checks: every run finished (none failed), 100 manifests with status "done", results.csv
   holds 100 distinct (model, seed) pairs;
3. `load_runs(OUT)` and `write_comparison` (the report of `mmrobust report`; HTML with figures,
   1,000 bootstrap resamples per paired difference): the report's overview must read "100 runs";
4. the sweep again on the same folder: every run is skipped as finished (resume), nothing re-run.

    python benchmarks/sweep_scale.py [--workers 2] [--quick]    # --quick: 2 models x 2 seeds
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pandas as pd
from _common import parse_args, print_table, record, row, setup

from mmrobust.audit.compare import load_runs
from mmrobust.audit.compare_report import write_comparison
from mmrobust.sweep import SweepSpec, plan_sweep, run_sweep

METHODS = ("joint", "dropout", "perturb", "actionmae", "mma")
FUSIONS = ("sum", "concat", "transformer", "late")


def spec(quick: bool) -> SweepSpec:
    models = [
        {"method": m, "label": f"{m}-{f}", "params": {"fusion": f}}
        for m in (METHODS[:1] if quick else METHODS)
        for f in (FUSIONS[:2] if quick else FUSIONS)
    ]
    base = {
        "name": "scale",
        "data": {"name": "synthetic", "options": {"n_samples": 300}},
        "models": [models[0]],
        "train": {"epochs": 2, "patience": 20, "device": "cpu"},
    }
    return SweepSpec("scale", base, {"models.0": models, "seeds": list(range(2 if quick else 5))})


def main() -> None:
    def extra(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--workers", type=int, default=2, help="processes of the local pool")
        parser.add_argument("--out", default=None, help="sweep folder (default: a fresh temporary one)")

    args = parse_args(__doc__.splitlines()[0], extra)
    setup(args)
    out = Path(args.out or tempfile.mkdtemp(prefix="sweep-scale-"))
    sweep_spec = spec(args.quick)
    times: dict[str, float] = {}

    start = time.perf_counter()
    plan = plan_sweep(sweep_spec, out)
    times["plan"] = time.perf_counter() - start
    expected = len(plan.units)
    print(f"{expected} runs in {len(plan.combinations)} combinations | pool of {args.workers} x {args.threads} "
          f"thread(s) | output {out}", flush=True)

    start = time.perf_counter()
    result = run_sweep(plan, workers=args.workers, threads=args.threads)
    times["sweep (runs + combination reports)"] = time.perf_counter() - start
    times["  of which combination reports"] = result.report_seconds

    manifests = [json.loads(p.read_text()) for p in sorted(out.rglob("manifest.json"))]
    table = pd.read_csv(out / "results.csv")
    pairs = len(table[["model", "seed"]].drop_duplicates())
    checks = {
        "runs done, none failed": result.progress.done == expected and not result.failed,
        "manifests with status done": sum(m.get("status") == "done" for m in manifests) == expected,
        f"results.csv has {expected} (model, seed) pairs": pairs == expected,
    }

    start = time.perf_counter()
    runs = load_runs([out])
    report = write_comparison(runs, out / "comparison.html", n_boot=1_000)[0]
    times["comparison report (load_runs + write_comparison)"] = time.perf_counter() - start
    checks[f"load_runs found {expected} runs"] = len(runs.run_dirs) == expected
    checks[f"the report lists {expected} runs"] = f"{expected} runs under" in report.read_text()

    start = time.perf_counter()
    again = run_sweep(plan_sweep(sweep_spec, out), workers=args.workers, threads=args.threads)
    times["sweep again (all skipped as finished)"] = time.perf_counter() - start
    checks["second sweep re-ran nothing"] = again.progress.finished_before == expected and again.progress.executed == 0

    print(f"mean run time in the workers: {result.progress.run_seconds / max(result.progress.executed, 1):.2f} s; "
          f"summed run times / (wall x workers) = "
          f"{result.progress.run_seconds / (times['sweep (runs + combination reports)'] * args.workers):.2f}")
    print_table(["step", "wall s"], [[k, round(v, 2)] for k, v in times.items()])
    print()
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    record(args, [row(
        f"a {expected}-run local sweep ({len(plan.combinations)} models x {expected // len(plan.combinations)} seeds, "
        f"pool of {args.workers}) completes, its "
        "report lists every run, and a second sweep re-runs none",
        f"all {expected}", f"{sum(checks.values())} / {len(checks)} checks; {pairs} / {expected} runs in "
        f"{times['sweep (runs + combination reports)']:.0f} s", all(checks.values()),
    )])  # fmt: skip
    if not all(checks.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
