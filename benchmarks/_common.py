"""Shared helpers for the speed benchmarks: CLI, fixed threads, interleaved median timing, data.

Every benchmark measures a *ratio* of two timings taken in the same process: after one
warm-up call of each, the two are run alternately (A B, B A, A B, ...) so that slow drift
in machine load hits both sides alike, and each side is summarised by its median.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F

import mmrobust
from mmrobust import MultimodalData
from mmrobust.data.dataset import ModalitySpec

# Per-sample shapes of small but real inputs: a CIFAR-sized RGB image and a UCI-HAR-sized
# sensor window (9 channels x 128 steps). The synthetic loader's own shapes, (1, 8, 8) and
# (2, 16), are so small that fusion rather than encoding dominates the cost.
REALISTIC_SHAPES: dict[str, tuple[int, ...]] = {"conv2d": (3, 32, 32), "conv1d": (9, 128)}
RESULTS = Path(__file__).resolve().parent / "results"  # the README's benchmark table is generated from these


def parse_args(
    description: str, extra: Callable[[argparse.ArgumentParser], None] | None = None
) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke run")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch.set_num_threads (default 1: stable timings on a shared machine)",
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per side")
    parser.add_argument(
        "--native-shapes", action="store_true",
        help="keep the synthetic loader's tiny input shapes instead of REALISTIC_SHAPES",
    )
    parser.add_argument(
        "--shape", action="append", default=[], metavar="KIND=DIMS",
        help="override a realistic per-sample shape, e.g. --shape conv2d=1,64,64",
    )
    if extra is not None:
        extra(parser)
    return parser.parse_args()


def setup(args: argparse.Namespace) -> None:
    """Fix the thread count and the seed, and print what the numbers were measured on."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for item in args.shape:
        kind, dims = item.split("=")
        REALISTIC_SHAPES[kind] = tuple(int(d) for d in dims.split(","))
    print(
        f"torch {torch.__version__} | python {platform.python_version()} | "
        f"threads {torch.get_num_threads()} (of {os.cpu_count()} cpus) | "
        f"{'quick' if args.quick else 'full'} run | load avg {os.getloadavg()[0]:.2f} | "
        f"shapes {'native synthetic' if args.native_shapes else REALISTIC_SHAPES}"
    )


def time_interleaved(
    fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Wall-clock seconds of each function, `repeats` times, alternating the call order."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    items = list(fns.items())
    for r in range(repeats):
        for name, fn in items if r % 2 == 0 else items[::-1]:
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def paired_ratio(num: Sequence[float], den: Sequence[float]) -> float:
    """Median over repeats of num_i / den_i (a drift-robust companion to the ratio of medians)."""
    return statistics.median(a / b for a, b in zip(num, den, strict=True))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for k, row in enumerate(cells):
        print("  ".join(c.rjust(w) if k else c.ljust(w) for c, w in zip(row, widths, strict=True)))
        if k == 0:
            print("  ".join("-" * w for w in widths))


def _fmt(x: object) -> str:
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def verdict(ratio: float, goal: float, higher_is_better: bool) -> str:
    ok = meets(ratio, goal, higher_is_better)
    return f"{'PASS' if ok else 'MISS'} (goal {'>=' if higher_is_better else '<='} {goal:g})"


def meets(ratio: float, goal: float, higher_is_better: bool) -> bool:
    return ratio >= goal if higher_is_better else ratio <= goal


def row(what: str, goal: str, measured: str, passed: bool | None) -> dict[str, str]:
    """One line of the README's benchmark table; `passed` None for a reference figure without a goal."""
    return {"what": what, "goal": goal, "measured": measured,
            "verdict": "" if passed is None else "pass" if passed else "miss"}  # fmt: skip


def record(args: argparse.Namespace, rows: Sequence[Mapping[str, str]], variant: str = "") -> None:
    """Write a full run's headline rows, with what they were measured on, to
    benchmarks/results/<script>[-variant].json: `scripts/doc_tables.py` renders the README's table
    from these files, so a documented figure is always one a benchmark wrote. Quick runs are smoke
    runs and are not recorded."""
    if args.quick:
        print("(quick run: not recorded)")
        return
    name = Path(sys.argv[0]).stem + (f"-{variant}" if variant else "")
    here = Path(__file__).resolve().parent
    git = ["git", "-C", str(here)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    code = ["../src", "*.py"]  # the library and the benchmarks, not their docs or results
    dirty = subprocess.run([*git, "diff", "--quiet", "HEAD", "--", *code], capture_output=True).returncode
    result = {
        "benchmark": name,
        "command": " ".join(["python", f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]]),
        "commit": (commit or "unknown") + ("+changes" if commit and dirty else ""),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "load_avg_1_5_15_at_end": [round(x, 2) for x in os.getloadavg()],
        "rows": [dict(r) for r in rows],
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    print(f"recorded {path}")


def synthetic(
    n_samples: int,
    kinds: Sequence[str],
    native_shapes: bool,
    splits: Sequence[str] = ("train", "val", "test"),
    seed: int = 0,
) -> MultimodalData:
    """`load_dataset("synthetic")` with one modality per kind (m0 informative, the rest weak).

    Only the samples of `splits` are kept (the loader splits 60/20/20). Unless
    `native_shapes`, each conv modality is resampled (interpolated in time/space, channels
    tiled) to its REALISTIC_SHAPES size, so that encoding costs what it does on real data;
    labels and masks are the loader's.
    """
    info = (3.0,) + (1.0,) * (len(kinds) - 1)
    data = mmrobust.load_dataset(
        "synthetic", n_samples=n_samples, informativeness=info, kinds=tuple(kinds), seed=seed
    )
    keep = torch.cat([data.splits[s] for s in splits])
    bounds = torch.tensor([0] + [len(data.splits[s]) for s in splits]).cumsum(0).tolist()
    new_splits = {s: torch.arange(a, b) for s, a, b in zip(splits, bounds[:-1], bounds[1:], strict=True)}
    specs, inputs = [], {}
    for spec in data.spec.modalities:
        shape = spec.shape if native_shapes else REALISTIC_SHAPES.get(spec.kind, spec.shape)
        inputs[spec.name] = _resample(data.inputs[spec.name][keep], shape)
        specs.append(ModalitySpec(spec.name, spec.kind, shape))
    new_spec = dataclasses.replace(data.spec, modalities=tuple(specs))
    return MultimodalData(new_spec, inputs, data.present[keep], data.target[keep], new_splits)


def _resample(x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """(N, C, *S) -> (N, *shape): interpolate the spatial axes, tile the channels (a feature
    vector, (N, F) -> (N, F'): tile its features)."""
    if tuple(x.shape[1:]) == shape:
        return x
    if len(shape) == 1:
        return x.repeat(1, math.ceil(shape[0] / x.shape[1]))[:, : shape[0]].contiguous()
    mode = {1: "linear", 2: "bilinear"}[len(shape) - 1]
    x = F.interpolate(x, size=shape[1:], mode=mode, align_corners=False)  # (N, C, *shape[1:])
    reps = math.ceil(shape[0] / x.shape[1])
    return x.repeat(1, reps, *[1] * (x.dim() - 2))[:, : shape[0]].contiguous()  # (N, *shape)
