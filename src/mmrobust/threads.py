"""How many torch threads a single run uses when the user does not say: the cores idle now.

PyTorch starts one OpenMP thread per core, and those threads spin-wait between operations. On a
machine whose cores are busy with other work, that default is far slower than fewer threads: on
2 cores with two other training runs going, the same training took 2.5x the wall time of 1 thread
(README, "Threads"). So a run takes the cores not in use right now (measured over 0.1 s from
/proc/stat where there is one, else the one-minute load average, which lags: a run started just
after another would count it), at least 1: every core on an idle machine, as torch would, and 1 on
a loaded one. An explicit `--threads` / `train.threads`, or `OMP_NUM_THREADS`, always wins.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS reports it)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


def idle_cores(cores: int | None = None, load: float | None = None) -> int:
    """Cores not busy with other work: `cores` minus the rounded `load` (default: the cores busy right
    now, or the one-minute load average where that cannot be measured), in [1, cores]."""
    cores = available_cores() if cores is None else cores
    if load is None:
        load = busy_cores()
    if load is None:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, min(cores, cores - round(load)))


def busy_cores(interval: float = 0.1, stat: str = "/proc/stat") -> float | None:
    """How many cores other processes kept busy over the next `interval` seconds (this process
    sleeps meanwhile), from the kernel's CPU time counters; None without /proc/stat."""
    first = _cpu_times(stat)
    if first is None:
        return None
    time.sleep(interval)
    second = _cpu_times(stat)
    if second is None:
        return None
    (idle0, total0, cpus), (idle1, total1, _) = first, second
    elapsed = total1 - total0
    return cpus * (1 - (idle1 - idle0) / elapsed) if elapsed > 0 else None


def _cpu_times(stat: str) -> tuple[int, int, int] | None:
    """(idle + iowait jiffies, all jiffies, number of CPUs) summed over the machine."""
    try:
        lines = Path(stat).read_text().splitlines()
    except OSError:
        return None
    fields = [int(v) for v in lines[0].split()[1:]] if lines and lines[0].startswith("cpu ") else []
    if len(fields) < 5:
        return None
    cpus = sum(1 for line in lines if line.startswith("cpu") and line[3:4].isdigit())
    return fields[3] + fields[4], sum(fields[:8]), max(cpus, 1)


def set_threads(threads: int | None) -> int:
    """Use `threads` torch threads, or (None) the idle cores unless OMP_NUM_THREADS is set; returns
    the number in use."""
    if threads is None and os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    torch.set_num_threads(threads if threads is not None else idle_cores())
    return torch.get_num_threads()
