"""Thread default: wall time of one training run with mmrobust's default thread count (the idle
cores, `mmrobust/threads.py`) / torch's default (every core) and / 1 thread, on an idle machine
and on one whose cores are busy.

Each side is a fresh process (OpenMP's thread pool is per process) that trains the same model on
the same synthetic data (realistic input shapes) for a few epochs; `--busy K` starts K processes
that keep one core each busy for the whole measurement, as other users' jobs would. Goal: the
default never loses to either fixed choice by more than the noise (ratio <= 1.1 against the
better of the two).

    python benchmarks/thread_default.py [--quick] [--busy K] [--epochs E]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from _common import median, meets, parse_args, print_table, record, row, verdict

from mmrobust.threads import available_cores, idle_cores

GOAL = 1.1
CHILD = """
import sys, time
sys.path.insert(0, {bench!r})
from _common import synthetic
import mmrobust
from mmrobust.threads import set_threads
threads = {threads}
used = set_threads(threads) if threads != "torch" else __import__("torch").get_num_threads()
data = synthetic({samples}, ("conv2d", "conv1d", "conv2d"), False)
method = mmrobust.create_method("dropout", fusion="transformer")
start = time.perf_counter()
mmrobust.fit(method, data, epochs={epochs}, seed=0, progress=False)
print(used, time.perf_counter() - start)
"""


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--busy", type=int, default=0, help="processes that keep a core busy meanwhile")
    parser.add_argument("--epochs", type=int, default=None)


def run_side(threads: str, samples: int, epochs: int) -> tuple[int, float]:
    """(threads used, training seconds) of one fresh process."""
    code = CHILD.format(bench=os.path.dirname(os.path.abspath(__file__)), threads=threads, samples=samples,
                        epochs=epochs)  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # the default under test decides
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    used, seconds = out.stdout.split()
    return int(used), float(seconds)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], options)
    samples, epochs = (500, 1) if args.quick else (2_500, args.epochs or 3)
    repeats = args.repeats or (1 if args.quick else 3)
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        time.sleep(0 if args.quick or not busy else 65)  # let the one-minute load average see them
        print(f"{available_cores()} cores, {args.busy} busy processes, load avg {os.getloadavg()[0]:.2f}, "
              f"idle cores by the default's estimate: {idle_cores()}")  # fmt: skip
        sides = {"default (idle cores)": "None", "torch default (every core)": str(available_cores()), "1 thread": "1"}
        times: dict[str, list[float]] = {name: [] for name in sides}
        used: dict[str, int] = {}
        for r in range(repeats):
            for name, threads in list(sides.items())[:: 1 if r % 2 == 0 else -1]:
                used[name], seconds = run_side(threads, samples, epochs)
                times[name].append(seconds)
    finally:
        for p in busy:
            p.kill()
    best_fixed = min(median(times["torch default (every core)"]), median(times["1 thread"]))
    ratio = median(times["default (idle cores)"]) / best_fixed
    print_table(["side", "threads", "median s", "min s", "max s"],
                [[k, used[k], median(v), min(v), max(v)] for k, v in times.items()])  # fmt: skip
    print(f"default / best fixed choice = {ratio:.3f}  {verdict(ratio, GOAL, False)}")
    torch_default = median(times["torch default (every core)"]) / median(times["1 thread"])
    where = f"{args.busy} extra busy processes" if args.busy else "no extra busy process"
    what = (f"training time, the default thread count / the better of torch's default and 1 thread ({where}; "
            f"torch's default / 1 thread: {torch_default:.2f})")  # fmt: skip
    record(args, [row(what, f"≤ {GOAL:g}", f"{ratio:.2f}", meets(ratio, GOAL, False))],
           variant=f"busy{args.busy}" if args.busy else "")  # fmt: skip


if __name__ == "__main__":
    main()
