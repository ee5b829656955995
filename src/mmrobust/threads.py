"""How many torch threads a single run uses when the user does not say: the cores idle now.

PyTorch starts one OpenMP thread per core, and those threads spin-wait between operations. On a
machine whose cores are busy with other work, that default is far slower than fewer threads: on
2 cores with two other training runs going, `mmrobust train` took 4-5x the wall time of the same
run on 1 thread (README, "Threads"). So a run takes the cores not already in use (the number of
cores minus the one-minute load average, at least 1): every core on an idle machine, as torch
would, and 1 on a loaded one. An explicit `--threads` / `train.threads`, or `OMP_NUM_THREADS` in
the environment, always wins.
"""

from __future__ import annotations

import os

import torch


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS reports it)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


def idle_cores(cores: int | None = None, load: float | None = None) -> int:
    """Cores not busy with other work: `cores` minus the rounded one-minute load, in [1, cores]."""
    cores = available_cores() if cores is None else cores
    load = os.getloadavg()[0] if load is None and hasattr(os, "getloadavg") else load or 0.0
    return max(1, min(cores, cores - round(load)))


def set_threads(threads: int | None) -> int:
    """Use `threads` torch threads, or (None) the idle cores unless OMP_NUM_THREADS is set; returns
    the number in use."""
    if threads is None and os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    torch.set_num_threads(threads if threads is not None else idle_cores())
    return torch.get_num_threads()
