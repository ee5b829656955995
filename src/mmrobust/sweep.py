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

    mmrobust sweep sweep.yaml --workers 2 --out runs/sweep
    mmrobust sweep configs/demo.yaml --grid train.epochs=10,20 --grid seeds=0,1 --backend ray --address 10.0.0.1:6379
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import hashlib
import itertools
import json
import multiprocessing
import os
import re
import socket
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import torch
import yaml

from .atomic import atomic_write
from .audit import AuditResult
from .config import DataConfig, ExperimentConfig, ModelConfig, config_from_dict, read_yaml_mapping
from .data.dataset import MultimodalData
from .errors import MMRobustError, unknown_name
from .experiment import load_data
from .methods import METHODS, create_method
from .run import finished_run, run_or_skip, write_experiment_report

SWEEP_KEYS = ("name", "base", "grid")
SEEDS = "seeds"  # grid key that lists the seeds of every combination instead of being an axis
# imported once by the pool's fork server rather than on each worker's first run (~3 s each)
PRELOAD = [__name__, "torch._dynamo", "matplotlib.pyplot"]


# --- the sweep file and the grid ------------------------------------------------------------
@dataclass
class SweepSpec:
    name: str
    base: dict[str, Any]  # an experiment config as read from YAML
    grid: dict[str, list[Any]]  # dotted key -> values, in the order given
    overrides: list[str] = field(default_factory=list)  # `key=value` applied to the base


def read_sweep(path: str | Path, overrides: Sequence[str] = (), grid: Sequence[str] = ()) -> SweepSpec:
    """A sweep file (with `base` and/or `grid`) or a plain experiment config, plus `--grid` options
    (`key=v1,v2`; they replace the file's values of the same key)."""
    path = Path(path)
    tree = read_yaml_mapping(path)
    if not {"base", "grid"} & set(tree):  # a plain experiment config: sweep it with --grid only
        tree = {"base": tree}
    for key in tree:
        if key not in SWEEP_KEYS:
            raise MMRobustError(f"{path}: {unknown_name('sweep key', str(key), SWEEP_KEYS)}")
    base = tree.get("base") or {}
    if isinstance(base, str):
        base = read_yaml_mapping(path.parent / base)
    if not isinstance(base, dict):
        raise MMRobustError(f"{path}: 'base' must be an experiment config (a mapping) or the path of one")
    file_grid = tree.get("grid") or {}
    if not isinstance(file_grid, dict):
        raise MMRobustError(f"{path}: malformed grid: 'grid' must map dotted keys to lists of values")
    values = {str(k): _check_values(str(k), v) for k, v in file_grid.items()}
    for text in grid:
        key, vals = parse_grid_option(text)
        values[key] = _check_values(key, vals)
    name = tree.get("name") or base.get("name") or path.stem
    return SweepSpec(str(name), base, values, list(overrides))


def parse_grid_option(text: str) -> tuple[str, list[Any]]:
    """`train.epochs=10,20` -> ("train.epochs", [10, 20]); each value is read as YAML, and commas
    inside brackets or braces do not split (`audit.scenarios=[a],[a,b]` is two values)."""
    key, sep, raw = text.partition("=")
    malformed = f"malformed --grid '{text}': write key=v1,v2,..., e.g. train.epochs=10,20"
    if not sep or not key or not raw or any(not part for part in key.split(".")):
        raise MMRobustError(malformed)
    pieces, depth, start = [], 0, 0
    for i, ch in enumerate(raw):
        depth += ch in "[{"
        depth -= ch in "]}"
        if depth < 0:
            raise MMRobustError(malformed)
        if ch == "," and depth == 0:
            pieces.append(raw[start:i])
            start = i + 1
    pieces.append(raw[start:])
    if depth != 0 or any(not p.strip() for p in pieces):
        raise MMRobustError(malformed)
    try:
        return key, [yaml.safe_load(p) for p in pieces]
    except yaml.YAMLError as e:
        raise MMRobustError(f"{malformed} ({getattr(e, 'problem', e)})") from None


def _check_values(key: str, values: Any) -> list[Any]:
    if not key or any(not part for part in key.split(".")):
        raise MMRobustError(f"malformed grid key '{key}': write a dotted config key, e.g. train.epochs")
    if not isinstance(values, list) or not values:
        raise MMRobustError(f"malformed grid: key '{key}' must have a non-empty list of values, got {values!r}")
    seen = [json.dumps(v, sort_keys=True) for v in values]
    if len(set(seen)) != len(seen):
        raise MMRobustError(f"malformed grid: key '{key}' lists a value twice ({values!r})")
    if key == SEEDS and not all(isinstance(s, int) and not isinstance(s, bool) for s in values):
        raise MMRobustError(f"malformed grid: '{SEEDS}' takes a list of integer seeds, got {values!r}")
    return values


# --- planning -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Unit:
    """One run: a (combination, model, seed) and its run directory."""

    combination: str
    config: ExperimentConfig
    model: ModelConfig
    seed: int
    run_dir: Path

    @property
    def name(self) -> str:
        return f"{self.combination}/{self.model.name}/seed-{self.seed}"


@dataclass
class Combination:
    name: str  # its folder under OUT
    values: dict[str, Any]  # grid key -> value
    config: ExperimentConfig  # with only the models that can run


@dataclass
class SweepPlan:
    name: str
    out: Path
    grid: dict[str, list[Any]]
    combinations: list[Combination]
    units: list[Unit]
    skipped: list[str]  # one message per impossible (combination, model)


def plan_sweep(spec: SweepSpec, out: str | Path) -> SweepPlan:
    """Expand the grid into configs and runs; skip impossible (combination, model) pairs."""
    out = Path(out).resolve()  # workers may run elsewhere (Ray): absolute paths only
    axes = {k: v for k, v in spec.grid.items() if k != SEEDS}
    common = list(spec.overrides)
    if SEEDS in spec.grid:
        common.append(f"{SEEDS}={json.dumps(spec.grid[SEEDS])}")
    _build_config(spec.base, common, "the base config")
    for key, options in axes.items():  # an unknown key fails here, naming the grid key
        _build_config(spec.base, [*common, _override(key, options[0])], f"grid key '{key}'")
    combinations, units, skipped = [], [], []
    for combo in itertools.product(*axes.values()):
        values = dict(zip(axes, combo, strict=True))
        name = _combination_name(values)
        config = _build_config(spec.base, common + [_override(k, v) for k, v in values.items()], name)
        data = _dataset(config.data)
        models = []
        for model in config.models:
            reason = why_impossible(model, data)
            if reason is None:
                models.append(model)
            else:
                skipped.append(f"{name} / {model.name}: {reason}")
        if not models:
            continue
        config = dataclasses.replace(config, models=models)
        combinations.append(Combination(name, values, config))
        units += [
            Unit(name, config, m, s, out / name / m.name / f"seed-{s}") for m in config.models for s in config.seeds
        ]
    if not units:
        first = f" (first: {skipped[0]})" if skipped else ""
        raise MMRobustError(f"the sweep has no valid combination: all {len(skipped)} were skipped{first}")
    return SweepPlan(spec.name, out, dict(spec.grid), combinations, units, skipped)


def why_impossible(model: ModelConfig, data: MultimodalData) -> str | None:
    """Why `model` cannot be trained on `data` according to its method's tags, or None."""
    create_method(model.method, **model.params)  # unknown methods and parameters fail in one line
    tags = METHODS.get(model.method).tags
    task = data.spec.task
    if task not in tags.tasks:
        return f"method '{model.method}' does not support {task} (tasks: {', '.join(sorted(tags.tasks))})"
    present = data.split("train").present  # (N_train, M)
    if tags.needs_complete_training_data and not bool(present.all()):
        share = 1 - float(present.float().mean())
        return f"method '{model.method}' needs complete training data; {share:.1%} of the modality values are missing"
    if not tags.per_sample_masks and bool((present != present[:1]).any()):
        return f"method '{model.method}' does not support per-sample masks; the training data's missingness varies"
    return None


def _override(key: str, value: Any) -> str:
    return f"{key}={json.dumps(value)}"  # JSON is valid YAML: read back by parse_override


def _build_config(base: dict[str, Any], overrides: list[str], where: str) -> ExperimentConfig:
    try:
        return config_from_dict(json.loads(json.dumps(base)), overrides)  # a fresh copy of the tree
    except MMRobustError as e:
        raise MMRobustError(f"{where}: {e}") from None


def _combination_name(values: dict[str, Any]) -> str:
    """A folder name: `key=value,key=value`; a short hash is appended when characters had to be
    replaced or the name was shortened, so that distinct combinations never share a folder."""
    if not values:
        return "base"
    raw = ",".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in values.items())
    safe = re.sub(r"[^A-Za-z0-9._,=+@-]", "_", raw)[:100]
    if safe != raw:
        safe += "-" + hashlib.sha256(raw.encode()).hexdigest()[:8]
    return safe


_DATA: OrderedDict[str, MultimodalData] = OrderedDict()  # per process: the last datasets loaded


def _dataset(config: DataConfig) -> MultimodalData:
    key = json.dumps(dataclasses.asdict(config), sort_keys=True)
    if key not in _DATA:
        while len(_DATA) >= 2:
            _DATA.popitem(last=False)
        _DATA[key] = load_data(config.name, config.npz, config.data_dir, config.options)
    _DATA.move_to_end(key)
    return _DATA[key]


# --- executing one run (in a worker) -----------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    status: str  # "done", "finished" (done before) or "failed"
    seconds: float
    error: str | None = None


def execute(
    unit: Unit,
    threads: int | None = None,
    state_every: float = 10.0,
    cwd: str | None = None,
    env: dict[str, str] | None = None,
) -> Outcome:
    """Run (or skip, or resume) one unit; a failure is reported, never raised. `cwd` and `env`
    (the driver's MMROBUST_* variables: data and cache folders) are set first on a Ray worker."""
    if threads:
        torch.set_num_threads(threads)
    if cwd and os.getcwd() != cwd and os.path.isdir(cwd):
        os.chdir(cwd)  # relative data paths in the config mean the same as for the driver
    os.environ.update(env or {})
    start = time.perf_counter()
    try:
        _, skipped = run_or_skip(
            unit.config, unit.model, unit.seed, lambda: _dataset(unit.config.data), unit.run_dir, state_every
        )
    except Exception as e:  # one failed run must not stop the others
        return Outcome("failed", time.perf_counter() - start, f"{type(e).__name__}: {e}".splitlines()[0])
    return Outcome("finished" if skipped else "done", time.perf_counter() - start)


# --- progress ----------------------------------------------------------------------------------
@dataclass
class SweepProgress:
    """Counts over the whole sweep; `done` includes runs that had finished before."""

    total: int
    slots: int = 1
    done: int = 0
    finished_before: int = 0
    running: int = 0
    failed: int = 0
    start: float = field(default_factory=time.perf_counter)
    executed: int = 0  # runs done by this sweep (the basis of the ETA)
    run_seconds: float = 0.0  # their summed wall time (in the workers)

    @property
    def remaining(self) -> int:
        return self.total - self.done - self.running - self.failed

    def eta(self) -> float | None:
        """Seconds left, from the throughput so far (runs done by this sweep per second)."""
        if not self.executed:
            return None
        return (time.perf_counter() - self.start) / self.executed * (self.remaining + self.running)

    def line(self) -> str:
        eta = self.eta()
        before = f" ({self.finished_before} before)" if self.finished_before else ""
        return (
            f"{self.done}/{self.total} done{before}, {self.running} running, {self.failed} failed, "
            f"{self.remaining} remaining, ETA {'?' if eta is None else _duration(eta)}"
        )


def _duration(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


# --- backends ---------------------------------------------------------------------------------
class _Backend(Protocol):
    slots: int

    def submit(self, unit: Unit) -> Hashable: ...

    def wait(self, handles: list[Hashable]) -> list[tuple[Hashable, Outcome]]: ...

    def close(self) -> None: ...


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class _Sequential:
    """Runs one unit at a time in this process."""

    slots = 1

    def __init__(self, threads: int, state_every: float) -> None:
        self.threads, self.state_every = threads, state_every
        self.saved_threads = torch.get_num_threads()
        self.queue: dict[Hashable, Unit] = {}
        self.count = 0

    def submit(self, unit: Unit) -> Hashable:
        self.count += 1
        self.queue[self.count] = unit
        return self.count

    def wait(self, handles: list[Hashable]) -> list[tuple[Hashable, Outcome]]:
        handle = handles[0]
        return [(handle, execute(self.queue.pop(handle), self.threads, self.state_every))]

    def close(self) -> None:
        torch.set_num_threads(self.saved_threads)


class _Pool:
    """A pool of `workers` processes, each running one unit at a time. They are forked from a fork
    server that imported mmrobust once (fast start, and no fork of a process whose OpenMP threads
    are running); spawned where there is no fork server."""

    def __init__(self, workers: int, threads: int, state_every: float) -> None:
        self.slots, self.threads, self.state_every = workers, threads, state_every
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
        if "forkserver" in methods:
            context.set_forkserver_preload(PRELOAD)
        self.pool = cf.ProcessPoolExecutor(workers, mp_context=context)

    def submit(self, unit: Unit) -> Hashable:
        return self.pool.submit(execute, unit, self.threads, self.state_every, os.getcwd())

    def wait(self, handles: list[Hashable]) -> list[tuple[Hashable, Outcome]]:
        done, _ = cf.wait(handles, return_when=cf.FIRST_COMPLETED)  # type: ignore[arg-type]
        return [(f, _result(f.result)) for f in done]

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class _Ray:
    """Ray tasks of `threads` CPUs each on the cluster at `address` (default: RAY_ADDRESS, or a new
    local cluster); at most `workers` at once (default: the cluster's CPUs / threads)."""

    def __init__(self, address: str | None, workers: int | None, threads: int, state_every: float) -> None:
        try:
            import ray
        except ImportError:
            raise MMRobustError(
                "the ray backend needs Ray, which is not installed: pip install 'mmrobust[ray]'"
            ) from None
        self.ray, self.threads, self.state_every = ray, threads, state_every
        self.owner = not ray.is_initialized()
        if self.owner:
            if address not in (None, "auto", "local"):
                _check_reachable(address)
            try:
                ray.init(address=address, log_to_driver=False)
            except Exception as e:  # ConnectionError, TimeoutError, RuntimeError ... from Ray
                raise MMRobustError(f"cannot connect to the Ray cluster at {address}: {e}".splitlines()[0]) from None
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.slots = workers or max(1, cpus // threads)
        self.task: Any = ray.remote(num_cpus=threads, max_retries=0)(execute)

    def submit(self, unit: Unit) -> Hashable:
        env = {k: v for k, v in os.environ.items() if k.startswith("MMROBUST_")}
        return self.task.remote(unit, self.threads, self.state_every, os.getcwd(), env)

    def wait(self, handles: list[Hashable]) -> list[tuple[Hashable, Outcome]]:
        ready, _ = self.ray.wait(handles, num_returns=1)
        get: Callable[[Any], Outcome] = self.ray.get
        return [(r, _result(partial(get, r))) for r in ready]

    def close(self) -> None:
        if self.owner:
            self.ray.shutdown()


def _result(get: Callable[[], Outcome]) -> Outcome:
    try:
        return get()
    except Exception as e:  # the worker process died (killed, out of memory ...)
        return Outcome("failed", 0.0, f"{type(e).__name__}: {e}".splitlines()[0])


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast, in one line, when nothing listens at HOST:PORT (Ray itself retries for a minute)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise MMRobustError(f"malformed --address '{address}': write HOST:PORT, e.g. 127.0.0.1:6379")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise MMRobustError(
            f"cannot reach a Ray cluster at {address} ({e.strerror or e}); start one with `ray start --head`"
        ) from None


# --- the sweep ---------------------------------------------------------------------------------
@dataclass
class SweepResult:
    plan: SweepPlan
    progress: SweepProgress
    failed: dict[str, str]  # unit name -> error
    table: pd.DataFrame  # every finished run's tidy rows, with one column per grid key
    report_seconds: float = 0.0  # time spent writing the combined reports and tables


def run_sweep(
    plan: SweepPlan,
    backend: str = "local",
    workers: int | None = None,
    address: str | None = None,
    threads: int | None = None,
    on_event: Callable[[str, SweepProgress], None] = lambda *_: None,
    *,
    state_every: float = 10.0,
) -> SweepResult:
    """Execute every run of `plan` (skipping finished ones), then write each combination's report
    and OUT/results.csv. `workers`: local processes (1: in this process) or Ray tasks at once;
    `threads`: torch threads per run (default: cores / workers locally, 1 on Ray)."""
    if backend not in ("local", "ray"):
        raise MMRobustError(str(unknown_name("backend", backend, ("local", "ray"))))
    if address is not None and backend != "ray":
        raise MMRobustError("--address is only for --backend ray")
    progress = SweepProgress(total=len(plan.units))
    todo = []
    for unit in plan.units:  # finished runs are skipped here, without starting any worker
        if finished_run(unit.config, unit.model, unit.seed, unit.run_dir) is None:
            todo.append(unit)
        else:
            progress.done += 1
            progress.finished_before += 1
            on_event(f"skip {unit.name} (finished)", progress)
    failed: dict[str, str] = {}
    if todo:
        runner = _backend(backend, workers, address, threads, state_every, len(todo))
        progress.slots = runner.slots
        try:
            _schedule(runner, todo, progress, failed, on_event)
        finally:
            runner.close()
    start = time.perf_counter()
    table = _write_reports(plan, failed)
    return SweepResult(plan, progress, failed, table, time.perf_counter() - start)


def _backend(
    backend: str, workers: int | None, address: str | None, threads: int | None, state_every: float, n: int
) -> _Backend:
    if backend == "ray":
        return _Ray(address, workers, threads or 1, state_every)
    workers = min(workers or 1, n)
    threads = threads or max(1, cores() // workers)  # workers x threads <= cores
    return _Sequential(threads, state_every) if workers == 1 else _Pool(workers, threads, state_every)


def _schedule(
    runner: _Backend,
    units: list[Unit],
    progress: SweepProgress,
    failed: dict[str, str],
    on_event: Callable[[str, SweepProgress], None],
) -> None:
    """Keep `runner.slots` runs in flight (so `running` is exact) until all have ended."""
    pending, running = deque(units), dict[Hashable, Unit]()
    while pending or running:
        while pending and len(running) < runner.slots:
            unit = pending.popleft()
            running[runner.submit(unit)] = unit
            progress.running += 1
            on_event(f"start {unit.name}", progress)
        for handle, outcome in runner.wait(list(running)):
            unit = running.pop(handle)
            progress.running -= 1
            if outcome.status == "failed":
                progress.failed += 1
                failed[unit.name] = outcome.error or "unknown error"
                on_event(f"FAILED {unit.name}: {outcome.error}", progress)
                continue
            progress.done += 1
            progress.executed += outcome.status == "done"
            progress.run_seconds += outcome.seconds if outcome.status == "done" else 0.0
            progress.finished_before += outcome.status == "finished"
            on_event(f"done {unit.name} ({outcome.seconds:.1f} s)", progress)


def _write_reports(plan: SweepPlan, failed: dict[str, str]) -> pd.DataFrame:
    """Each complete combination's combined report in OUT/<combination>/; all rows in OUT/results.csv."""
    tables = []
    for combo in plan.combinations:
        units = [u for u in plan.units if u.combination == combo.name]
        if any(u.name in failed for u in units):
            continue
        results = [AuditResult.read(u.run_dir / "results.json") for u in units]
        table = write_experiment_report(combo.config, plan.out / combo.name, results).table.copy()
        columns = {k: v if isinstance(v, str | int | float | bool) else json.dumps(v) for k, v in combo.values.items()}
        table.insert(0, "combination", combo.name)
        for i, (key, value) in enumerate(columns.items()):
            table.insert(1 + i, key if key not in table.columns else f"grid:{key}", value)
        tables.append(table)
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    atomic_write(plan.out / "results.csv", lambda p: table.to_csv(p, index=False))
    record = {
        "name": plan.name,
        "grid": plan.grid,
        "combinations": [
            {"name": c.name, "values": c.values, "hash": c.config.hash(), "models": [m.name for m in c.config.models]}
            for c in plan.combinations
        ],
        "skipped": plan.skipped,
        "runs": len(plan.units),
        "failed": failed,
    }
    atomic_write(plan.out / "sweep.json", lambda p: p.write_text(json.dumps(record, indent=1, default=str)))
    return table
