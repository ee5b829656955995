"""Sweeps: a grid over config keys, planned into runs, run locally or on a Ray cluster.

A sweep file is a base experiment config (inline, or a path relative to the sweep file) and a
grid of dotted config keys, each with the list of values to try:

    name: dropout_vs_joint
    base: configs/demo.yaml             # or a mapping: {data: {name: synthetic}, models: [...]}
    grid:
      models.0.method: [joint, dropout]
      data.options.missing_rate: [0.0, 0.3]
      train.epochs: [20, 60]
      seeds: [0, 1, 2]                  # not an axis: the runs of every combination

Every combination of values (their product) becomes one `ExperimentConfig`, built with the same
dotted overrides as `mmrobust run CONFIG key=value`, so keys are validated (with suggestions)
exactly as there. A (combination, model) whose method cannot work on the combination's data, by
the method's capability tags (`MethodTags`: task, complete training data, per-sample masks), is
skipped with a message; a sweep with nothing left is an error. Each (combination, model, seed) is
one run, `OUT/<combination>/<model>/seed-<s>/`, executed by `run.run_or_skip`: finished runs are
skipped and interrupted ones resume, per run. Backends: `local` (in this process, or a pool of
`workers` processes) and `ray` (tasks on a Ray cluster; its nodes need mmrobust installed and OUT
on a shared file system). Pool and Ray workers import mmrobust afresh: a method registered only
in the calling script is not known there (use `workers=1`). Afterwards each combination gets the
combined report of `mmrobust run` in its folder, and OUT/results.csv holds every run's tidy rows
with one column per grid key.

The package: `spec.py` reads the sweep file, `plan.py` expands it into runs, `backends.py` runs
them (in this process, a process pool or Ray), `runner.py` schedules them and writes the reports.

    mmrobust sweep sweep.yaml --workers 2 --out runs/sweep
    mmrobust sweep configs/demo.yaml --grid train.epochs=10,20 --grid seeds=0,1 --backend ray --address 10.0.0.1:6379
"""

from .plan import SweepPlan, Unit, plan_sweep, why_impossible
from .runner import SweepProgress, SweepResult, run_sweep
from .spec import SweepSpec, parse_grid_option, read_sweep

__all__ = [
    "SweepPlan",
    "SweepProgress",
    "SweepResult",
    "SweepSpec",
    "Unit",
    "parse_grid_option",
    "plan_sweep",
    "read_sweep",
    "run_sweep",
    "why_impossible",
]
