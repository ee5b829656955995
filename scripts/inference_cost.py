"""Inference cost of a study's models: milliseconds per 1,000 test samples of one clean prediction
pass (one thread, median of 21 rounds over all the models after a warm-up round), from each model's
seed-0 checkpoint.

    python scripts/inference_cost.py runs/utd_mhad --study subsets_utd_mhad [--data-dir DIR]

Writes docs/reproductions/results/<study>_inference.csv (model, samples, ms_per_1000), which the
`cost` tables of scripts/doc_tables.py read beside the training cost: serving every subset with one
model against serving each subset with its own specialist.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import pandas as pd
import torch

import mmrobust
from mmrobust.checkpoint import load_checkpoint
from mmrobust.errors import MMRobustError
from mmrobust.experiment import load_data

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "reproductions" / "results"
REPEATS = 21  # one pass takes ~0.1 s: a median of many steadies it


def measure(run_roots: list[Path], data_dir: str | None) -> pd.DataFrame:
    """One row per model: its seed-0 checkpoint's clean prediction time on the test split. The models
    are timed in turn, round after round, so that a slow spell of the machine falls on all of them
    alike instead of on whichever model it happened to be timing (one model after another, the same
    network measured 2x apart)."""
    models, cache = [], {}
    for manifest in sorted(m for root in run_roots for m in root.glob("**/seed-0/manifest.json")):
        record = json.loads(manifest.read_text())
        if record.get("status") != "done" or not (manifest.parent / "checkpoint.pt").is_file():
            continue
        data_config = record["config"]["data"]
        key = json.dumps(data_config, sort_keys=True)
        if key not in cache:
            data = load_data(data_config["name"], data_config["npz"], data_dir or data_config["data_dir"],
                             data_config["options"])  # fmt: skip
            cache[key] = data.split("test")
        method, _ = load_checkpoint(manifest.parent / "checkpoint.pt")
        label = (record.get("model") or {}).get("label") or record["model"]["method"]
        models.append((label, method, cache[key]))
    if not models:
        raise MMRobustError(f"no finished seed-0 runs with a checkpoint under {', '.join(map(str, run_roots))}")
    seconds: dict[str, list[float]] = {label: [] for label, _, _ in models}
    for round_ in range(REPEATS + 1):  # round 0 warms up
        for label, method, test in models:
            start = time.perf_counter()
            mmrobust.predict(method, test)
            if round_:
                seconds[label].append(time.perf_counter() - start)
    rows = []
    for label, _, test in models:
        ms = 1000 * statistics.median(seconds[label]) / len(test) * 1000
        rows.append({"model": label, "samples": len(test), "ms_per_1000": round(ms, 2)})
        print(f"{label}: {ms:.1f} ms per 1,000 samples", file=sys.stderr)
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--study", required=True)
    parser.add_argument("--data-dir", help="where the data is, if not where the runs found it")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = RESULTS / f"{args.study}_inference.csv"
    measure(args.runs, args.data_dir).to_csv(out, index=False)
    print(out)


if __name__ == "__main__":
    try:
        main()
    except MMRobustError as e:
        sys.exit(f"error: {e}")
