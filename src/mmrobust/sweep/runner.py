"""Running a planned sweep: skip finished runs, keep the backend's slots busy, count progress, then
write each complete combination's report and OUT/results.csv."""

from __future__ import annotations

import json
import time
import warnings
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import pandas as pd

from ..atomic import atomic_write
from ..audit import AuditResult
from ..clock import duration
from ..errors import MMRobustError, unknown_name
from ..run import finished_run, write_experiment_report
from ..runfolder import RESULTS
from .backends import Backend, create_backend
from .plan import SweepPlan, Unit


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
            f"{self.remaining} remaining, ETA {'?' if eta is None else duration(eta)}"
        )


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
        if finished_run(unit.config, unit.model, unit.seed, unit.run_dir, unit.data_sum) is None:
            todo.append(unit)
        else:
            progress.done += 1
            progress.finished_before += 1
            on_event(f"skip {unit.name} (finished)", progress)
    failed: dict[str, str] = {}
    if todo:
        runner = create_backend(backend, workers, address, threads, state_every, len(todo))
        progress.slots = runner.slots
        try:
            _schedule(runner, todo, progress, failed, on_event)
        finally:
            runner.close()
    start = time.perf_counter()
    table = _write_reports(plan, failed)
    return SweepResult(plan, progress, failed, table, time.perf_counter() - start)


def _schedule(
    runner: Backend,
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
        results = [AuditResult.read(u.run_dir / RESULTS) for u in units]
        table = write_experiment_report(combo.config, plan.out / combo.name, results).table.copy()
        columns = {k: v if isinstance(v, str | int | float | bool) else json.dumps(v) for k, v in combo.values.items()}
        table.insert(0, "combination", combo.name)
        for i, (key, value) in enumerate(columns.items()):
            table.insert(1 + i, key if key not in table.columns else f"grid:{key}", value)
        tables.append(table)
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    _warn_of_combinations_left_out(plan)
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


def _warn_of_combinations_left_out(plan: SweepPlan) -> None:
    """OUT/results.csv and sweep.json describe the sweep just run; warn when they replace ones that
    listed other combinations or models (a narrower re-run, another sweep file into the same OUT),
    whose folders and reports are kept but which leave the table."""
    try:
        before = json.loads((plan.out / "sweep.json").read_text())
        listed = {str(c["name"]): [str(m) for m in c.get("models") or []] for c in before["combinations"]}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return  # no earlier sweep here (or not one of ours): nothing to lose
    now = {c.name: {m.name for m in c.config.models} for c in plan.combinations}
    left = []  # whole combinations, or the models a combination lost
    for name, models in listed.items():
        left += [name] if name not in now else [f"{name}/{m}" for m in models if m not in now[name]]
    if left:
        shown = ", ".join(left[:3]) + (f" and {len(left) - 3} more" if len(left) > 3 else "")
        warnings.warn(
            f"{plan.out}/results.csv and sweep.json now list this sweep's runs only; the earlier sweep "
            f"there also had {shown}, whose folders and reports are kept (run that sweep again to list them: "
            "its finished runs are skipped)",
            stacklevel=2,
        )
