"""Audit at scale: wall time, throughput and peak memory of a streamed audit over N = 10k / 100k / 1M samples.

The test set is a `SyntheticStream` of 4 `mlp` modalities (16 features each), made a chunk at a
time on demand, so it never exists in memory as a whole. The model is the project's
`MultimodalModel` (method `joint`, `transformer` fusion, dim 64), trained for 2 epochs on 5,000
other samples of the same generator. Scenarios: the defaults for 4 modalities, i.e. the 15
non-empty subsets (clean included), Missing 30% and GaussianNoise (sigma 1, on 30%) per modality:
23 scenarios.

Each N is audited in a fresh child process so that its peak memory is its own. The child imports
everything, builds the stream and loads the model, and records its RSS (`setup`); it then runs a
warm-up audit of 300 samples (which pages in library code and allocator pools, a constant cost)
and records its RSS again (`warm`); it resets the kernel's peak-RSS mark (`/proc/self/clear_refs`),
runs `mmrobust.audit` over the N samples and reads the peak (`VmHWM`). Reported: peak - setup
(everything the audit adds, including that constant) and peak - warm (the audit's working
memory). The goal is that both stay flat as N grows: the streamed engine holds one chunk and
the metrics are folded in chunk by chunk. `--chunk-sweep` also audits the middle N with chunks
of 1,024, 4,096 and 16,384 samples, to show what the memory does depend on.

Correctness check, on the smallest N (if at most 20,000): the streamed audit (chunks of 4,096)
equals the naive path (`fast=False`: the whole test set in memory, corrupted in one pass, every
scenario through the full model, metrics of `metrics.py` on all outputs at once) to 1e-5.

    python benchmarks/audit_scale.py                     # 10k, 100k and 1M (5-10 min on 1 thread)
    python benchmarks/audit_scale.py --sizes 10k,100k --chunk-sweep
    python benchmarks/audit_scale.py --quick            # 2k and 20k, a smoke run
    python benchmarks/audit_scale.py --mmap-threshold 131072   # glibc's fixed mmap threshold
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import parse_args, print_table, record, row, setup

import mmrobust
from mmrobust.audit.engine import DEFAULT_CHUNK
from mmrobust.data.synthetic import SyntheticStream

INFO = (3.0, 1.0, 1.0, 1.0)  # 4 mlp modalities, m0 the most informative
METHOD, FUSION, TRAIN_SAMPLES, TEST_OFFSET = "joint", "transformer", 5_000, 10**9
CHECK_MAX = 20_000  # the naive check materialises the test set and every scenario's outputs
FLAT = 1.5  # "flat in N": the largest N's peak above setup within this factor of the smallest N's


def stream(n: int) -> SyntheticStream:
    """The test set: samples from index 10^9 on, disjoint from the training samples."""
    return SyntheticStream(n, informativeness=INFO, offset=TEST_OFFSET, seed=0)


def _sizes(text: str) -> list[int]:
    units = {"k": 1_000, "m": 1_000_000}
    return [int(float(s[:-1]) * units[s[-1].lower()]) if s[-1].lower() in units else int(s) for s in text.split(",")]


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _load_method(weights: Path, data_spec: mmrobust.DataSpec) -> mmrobust.Method:
    method = mmrobust.create_method(METHOD, fusion=FUSION)
    method.build(data_spec)
    method.modules().load_state_dict(torch.load(weights, weights_only=True))
    method.seed = 0
    return method


def child(n: int, weights: Path, chunk: int, threads: int) -> None:
    """Audit N samples in this process and print one JSON line of measurements."""
    torch.set_num_threads(threads)
    test = stream(n)
    method = _load_method(weights, test.spec)
    setup_kb = _status_kb("VmRSS")
    mmrobust.audit(method, stream(300), progress=False)  # warm-up: library code and kernels paged in
    baseline_kb = _status_kb("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        peak_of = "VmHWM"
    except OSError:  # no permission: fall back to the lifetime peak (includes set-up)
        peak_of = "ru_maxrss"
    start = time.perf_counter()
    result = mmrobust.audit(method, test, chunk=chunk, progress=False)
    seconds = time.perf_counter() - start
    peak_kb = _status_kb("VmHWM") if peak_of == "VmHWM" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = result.table
    acc = t[t.metric == "accuracy"].set_index("scenario").value
    print(json.dumps({
        "n": n, "chunk": chunk, "seconds": seconds, "scenarios": len(result.scenarios),
        "setup_mb": setup_kb / 1024, "baseline_mb": baseline_kb / 1024,
        "peak_mb": peak_kb / 1024, "peak_of": peak_of, "clean": float(acc["clean"]),
        "worst_subset": float(acc[[s for s in acc.index if s.startswith("subset[")]].min()),
        "missing_m0": float(acc["missing[m0@0.3]"]),
    }))


def check_small(n: int, weights: Path) -> float:
    """Max |streamed - naive| over the table's values at N samples."""
    test = stream(n)
    method = _load_method(weights, test.spec)
    fast = mmrobust.audit(method, test, progress=False)
    naive = mmrobust.audit(method, test, fast=False)
    assert list(fast.table.scenario) == list(naive.table.scenario)
    return float((fast.table.value - naive.table.value).abs().max())


def _run_child(n: int, chunk: int, weights: Path, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--child", str(n), "--weights", str(weights),
               "--chunk", str(chunk), "--threads", str(args.threads)]
    env = dict(os.environ)
    if args.mmap_threshold:  # glibc: a fixed threshold, so large freed blocks go back to the OS
        env["MALLOC_MMAP_THRESHOLD_"] = str(args.mmap_threshold)
    out = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
    r = json.loads(out.strip().splitlines()[-1])
    print(f"N={n:,} chunk {chunk}: {r['seconds']:.1f} s, RSS setup {r['setup_mb']:.0f} MB, "
          f"warm {r['baseline_mb']:.0f} MB, peak {r['peak_mb']:.0f} MB ({r['peak_of']})", flush=True)
    return r


def _row(r: dict) -> list[object]:
    n, seconds = r["n"], r["seconds"]
    return [
        f"{n:,}", r["chunk"], round(seconds, 1), round(n / seconds), round(n * r["scenarios"] / seconds),
        round(r["setup_mb"]), round(r["peak_mb"] - r["setup_mb"], 1), round(r["peak_mb"] - r["baseline_mb"], 1),
        round(r["clean"], 4), round(r["worst_subset"], 4), round(r["missing_m0"], 4),
    ]


def main() -> None:
    def extra(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--sizes", default=None, help="comma-separated N, e.g. 10k,100k,1M (default)")
        parser.add_argument("--chunk", type=int, default=DEFAULT_CHUNK, help="samples per streamed chunk")
        parser.add_argument("--chunk-sweep", action="store_true", help="also the middle N at chunks 1k, 4k, 16k")
        parser.add_argument("--mmap-threshold", type=int, default=None, metavar="BYTES",
                            help="run the audits with MALLOC_MMAP_THRESHOLD_=BYTES (glibc), e.g. 131072")
        parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
        parser.add_argument("--weights", default=None, help=argparse.SUPPRESS)

    args = parse_args(__doc__.splitlines()[0], extra)
    if args.child is not None:
        child(args.child, Path(args.weights), args.chunk, args.threads)
        return
    setup(args)
    sizes = _sizes(args.sizes or ("2k,20k" if args.quick else "10k,100k,1M"))
    train = SyntheticStream(TRAIN_SAMPLES, informativeness=INFO, seed=0).to_data()
    method = mmrobust.create_method(METHOD, fusion=FUSION)
    mmrobust.fit(method, train, seed=0, epochs=2, progress=False)
    weights = Path(tempfile.mkdtemp(prefix="audit-scale-")) / "weights.pt"
    torch.save(method.modules().state_dict(), weights)
    malloc = f" | MALLOC_MMAP_THRESHOLD_={args.mmap_threshold}" if args.mmap_threshold else ""
    print(f"model: {METHOD}/{FUSION} dim 64, 2 epochs on {TRAIN_SAMPLES} samples | test: SyntheticStream, "
          f"4 mlp modalities x 16 features | one child process per audit{malloc}")
    gap = None
    if min(sizes) <= CHECK_MAX:
        gap = check_small(min(sizes), weights)
        print(f"check at N={min(sizes):,}: streamed vs naive audit, max |value difference| = {gap:.2e} "
              f"({'PASS' if gap < 1e-5 else 'FAIL'}, tolerance 1e-5)")
    else:
        print(f"no naive-path check: it holds the whole test set in memory (only run for N <= {CHECK_MAX:,})")
    runs = [_run_child(n, args.chunk, weights, args) for n in sizes]
    if args.chunk_sweep:
        middle = sorted(sizes)[len(sizes) // 2]
        runs += [_run_child(middle, c, weights, args) for c in (1024, 4096, 16384) if c != args.chunk]
    print()
    print_table(
        ["N", "chunk", "audit s", "samples/s", "sample-scenarios/s", "setup RSS MB", "peak - setup MB",
         "peak - warm MB", "clean acc", "worst subset acc", "missing[m0] acc"],
        [_row(r) for r in runs],
    )
    by_size = [r for r in runs if r["chunk"] == args.chunk]
    growth = [r["peak_mb"] - r["setup_mb"] for r in by_size]
    checked = "" if gap is None else f"; streamed = naive audit at N={min(sizes):,} to {gap:.0e}"
    sizes_text = " / ".join(f"{r['n']:,}" for r in by_size)
    record(args, [row(
        f"peak memory of a streamed audit above setup, N = {sizes_text} synthetic samples x 4 modalities "
        f"(23 scenarios, chunk {args.chunk:,})",
        f"flat in N (largest ≤ {FLAT:g} x smallest)",
        f"{' / '.join(f'{g:.0f}' for g in growth)} MB; {by_size[-1]['n']:,} audited in "
        f"{by_size[-1]['seconds']:.0f} s{checked}",
        growth[-1] <= FLAT * growth[0] and (gap is None or gap < 1e-5),
    )])  # fmt: skip


if __name__ == "__main__":
    main()
