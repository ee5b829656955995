"""Backends: where the runs of a sweep execute, one `execute(unit)` each: in this process, in a pool
of processes, or as Ray tasks. A failed run is an `Outcome`, never an exception."""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import socket
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import torch

from ..errors import MMRobustError
from ..run import run_or_skip
from .plan import Unit, dataset

# imported once by the pool's fork server rather than on each worker's first run (~3 s each)
PRELOAD = [__name__, "torch._dynamo", "matplotlib.pyplot"]


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
    (the driver's MMROBUST_* variables: data and cache folders) are set first on a Ray worker. The
    config's `train.threads`, if set, wins over the backend's `threads`, as in `mmrobust run`."""
    threads = unit.config.train.threads or threads
    if threads:
        torch.set_num_threads(threads)
    if cwd and os.getcwd() != cwd and os.path.isdir(cwd):
        os.chdir(cwd)  # relative data paths in the config mean the same as for the driver
    os.environ.update(env or {})
    start = time.perf_counter()
    try:
        _, skipped = run_or_skip(
            unit.config, unit.model, unit.seed, lambda: dataset(unit.config.data), unit.run_dir, state_every,
            unit.data_sum, unit.tracking,
        )  # fmt: skip
    except Exception as e:  # one failed run must not stop the others
        return Outcome("failed", time.perf_counter() - start, f"{type(e).__name__}: {e}".splitlines()[0])
    return Outcome("finished" if skipped else "done", time.perf_counter() - start)


class Backend(Protocol):
    slots: int

    def submit(self, unit: Unit) -> Hashable: ...

    def wait(self, handles: list[Hashable]) -> list[tuple[Hashable, Outcome]]: ...

    def close(self) -> None: ...


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Sequential:
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


class Pool:
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


class Ray:
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


def create_backend(
    backend: str, workers: int | None, address: str | None, threads: int | None, state_every: float, n: int
) -> Backend:
    """`ray`, or `local`: in this process (one worker) or a pool (threads: cores / workers each)."""
    if backend == "ray":
        return Ray(address, workers, threads or 1, state_every)
    workers = min(workers or 1, n)
    threads = threads or max(1, cores() // workers)  # workers x threads <= cores
    return Sequential(threads, state_every) if workers == 1 else Pool(workers, threads, state_every)
