"""Sweep engine overhead: a 12-run sweep through the local backends vs the same runs one by one.

The sweep is {joint, dropout} x {sum, concat, transformer} fusion x 2 seeds on the synthetic
dataset (3 `mlp` modalities): 6 combinations of 2 runs. Sides, each writing into a fresh folder:

* `one by one`: each of the 12 runs launched on its own as `mmrobust run` does it, in this
  process: load the data, `run.run_one`, then the run's combined report
  (`run.write_experiment_report`); the time is the sum over the runs. `bare runs` is the part
  spent in `run_one` alone;
* `sweep, sequential`: `run_sweep(..., workers=1)`: planning (data loaded to check capability
  tags), the runs, one combined report per combination and OUT/results.csv.
  `sequential / one by one - 1` is the engine's own overhead (goal < 5%);
* `sweep, pool`: the same through a process pool of `--workers` (default 2) processes with
  `--threads` torch threads each, pool start-up included (the fork server that imports torch is
  started by the warm-up call; its first-call time is printed). Goal on 2 idle cores: close to 2x
  faster than one by one.

    python benchmarks/sweep_overhead.py [--quick] [--workers 2] [--threads 1]
"""

from __future__ import annotations

import dataclasses
import itertools
import tempfile
import time
from pathlib import Path

from _common import median, meets, paired_ratio, parse_args, print_table, record, row, setup, time_interleaved, verdict

from mmrobust.experiment import load_data
from mmrobust.run import run_one, write_experiment_report
from mmrobust.sweep import SweepSpec, plan_sweep, run_sweep

OVERHEAD_GOAL, SPEEDUP_GOAL = 0.05, 1.8  # the ideal speed-up on 2 idle cores is 2x


def spec(n_samples: int, epochs: int) -> SweepSpec:
    base = {
        "name": "bench",
        "data": {"name": "synthetic", "options": {"n_samples": n_samples}},
        "models": [{"method": "joint", "params": {"fusion": "sum"}}],
        "train": {"epochs": epochs, "patience": 10 * epochs, "device": "cpu"},
    }
    grid = {"models.0.method": ["joint", "dropout"], "models.0.params.fusion": ["sum", "concat", "transformer"]}
    return SweepSpec("bench", base, {**grid, "seeds": [0, 1]})


def main() -> None:
    def extra(parser):
        parser.add_argument("--workers", type=int, default=2, help="processes of the pool side")

    args = parse_args(__doc__.splitlines()[0], extra)
    setup(args)
    n_samples, epochs = (300, 2) if args.quick else (2_000, 8)
    repeats = args.repeats or (1 if args.quick else 3)
    root = Path(tempfile.mkdtemp(prefix="sweep-bench-"))
    fresh = (root / f"out-{i}" for i in itertools.count())
    sweep_spec = spec(n_samples, epochs)
    units = plan_sweep(sweep_spec, next(fresh)).units
    print(f"{len(units)} runs | synthetic n={n_samples} (3 mlp modalities) | {epochs} epochs | "
          f"pool: {args.workers} workers x {args.threads} threads | output under {root}")

    def one_by_one() -> None:
        out, total, bare = next(fresh), 0.0, 0.0
        for unit in units:  # as `mmrobust run` with a config of this one model and seed
            config = dataclasses.replace(unit.config, models=[unit.model], seeds=[unit.seed])
            start = time.perf_counter()
            data = load_data(config.data.name, config.data.npz, config.data.data_dir, config.data.options)
            run_start = time.perf_counter()
            result = run_one(config, unit.model, unit.seed, data, out / unit.name / unit.model.name / "seed-0")
            bare += time.perf_counter() - run_start
            write_experiment_report(config, out / unit.name, [result])
            total += time.perf_counter() - start
        sums.append(total)
        bares.append(bare)

    sums: list[float] = []
    bares: list[float] = []
    pool_calls: list[float] = []
    in_call: dict[str, list[tuple[float, float, float]]] = {"sequential": [], "pool": []}  # wall, runs, reports

    def sweep(kind: str, workers: int) -> None:
        start = time.perf_counter()
        result = run_sweep(plan_sweep(sweep_spec, next(fresh)), workers=workers, threads=args.threads)
        in_call[kind].append((time.perf_counter() - start, result.progress.run_seconds, result.report_seconds))

    def pool() -> None:
        start = time.perf_counter()
        sweep("pool", args.workers)
        pool_calls.append(time.perf_counter() - start)

    times = time_interleaved(
        {
            "one by one (wall)": one_by_one,
            "sweep, sequential": lambda: sweep("sequential", 1),
            f"sweep, pool of {args.workers}": pool,
        },
        repeats,
    )
    print(f"first pool call, starting the fork server (imports torch once): {pool_calls[0]:.1f} s")
    times["one by one (sum of runs)"] = sums[-repeats:]  # the warm-up call is not counted
    times["  of which bare runs"] = bares[-repeats:]
    print_table(
        ["side", "median s", "min s", "max s"], [[k, median(v), min(v), max(v)] for k, v in times.items()]
    )
    base = times["one by one (sum of runs)"]
    seq, pool = times["sweep, sequential"], times[f"sweep, pool of {args.workers}"]
    overhead = median(seq) / median(base) - 1
    speedup = median(base) / median(pool)
    print(f"engine overhead: sequential sweep / one by one - 1 = {overhead:+.1%} "
          f"(paired {paired_ratio(seq, base) - 1:+.1%})  {verdict(overhead, OVERHEAD_GOAL, False)}")
    print(f"sequential sweep / bare runs - 1 = {median(seq) / median(times['  of which bare runs']) - 1:+.1%} "
          "(what the 6 combination reports and the planning cost on top of run_one)")
    wall, runs, reports = (median(x) for x in zip(*in_call["sequential"][-repeats:], strict=True))
    scheduling, report_share = (wall - runs - reports) / runs, reports / runs
    print(f"within one sequential sweep (immune to load drift between sides): wall / summed run times - 1 = "
          f"{wall / runs - 1:+.1%}, of which the 6 combined reports {report_share:.1%} and planning + "
          f"scheduling {scheduling:+.1%}  {verdict(scheduling, OVERHEAD_GOAL, False)}")
    wall, runs, _ = (median(x) for x in zip(*in_call["pool"][-repeats:], strict=True))
    print(f"within the pool sweep: summed run times / (wall x {args.workers} workers) = "
          f"{runs / (wall * args.workers):.2f} (parallel efficiency; runs take longer when cores are shared)")
    print(f"pool speed-up: one by one / pool of {args.workers} = {speedup:.2f}x "
          f"(paired {1 / paired_ratio(pool, base):.2f}x; pool / one by one = {1 / speedup:.3f})  "
          f"{verdict(speedup, SPEEDUP_GOAL, True)}")
    pool_side = f"a local pool of {args.workers} workers x {args.threads} thread"
    record(args, [
        row(f"a 12-run sweep: the runs one by one / {pool_side}", f"≥ {SPEEDUP_GOAL:g}x (ideal 2x on 2 idle cores)",
            f"{speedup:.2f}x", meets(speedup, SPEEDUP_GOAL, True)),
        row("the sweep engine's planning + scheduling / summed run time, in one sequential sweep",
            f"< {OVERHEAD_GOAL:.0%}", f"{scheduling:.1%} (+ {report_share:.1%} for the 6 combined reports)",
            meets(scheduling, OVERHEAD_GOAL, False)),
    ])  # fmt: skip


if __name__ == "__main__":
    main()
