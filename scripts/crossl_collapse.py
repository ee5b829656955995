"""Why does CroSSL's pretrained embedding nearly collapse on UTD-MHAD? Measure it: the per-dimension
standard deviation of the training embeddings after every pretraining epoch, for several covariance
weights (the VICReg term the paper weights 100), on the training split only.

    python scripts/crossl_collapse.py --data-dir DIR [--epochs 200] [--cov 1,10,100] [--seeds 0]
    python scripts/crossl_collapse.py --runs RUN_DIR ... [--out NAME]

Writes one JSON line per (cov weight, seed) to docs/reproductions/results/crossl_collapse.jsonl:
the mean per-dimension std of the embedding and the VICReg loss after each epoch. A collapse is a
std near 0; VICReg's variance term pushes each dimension's std toward 1.

With --runs, measures the same std, once, for trained fixed CroSSL models (whose encoders are the
pretrained ones, untouched by the probe) on their own training split, as their run folders loaded
it; one JSON line per run to docs/reproductions/results/NAME.jsonl (default crossl_spread), keyed by
model label and seed: one file per study.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

import mmrobust
from mmrobust.checkpoint import load_checkpoint
from mmrobust.errors import MMRobustError
from mmrobust.experiment import load_data
from mmrobust.methods.base import Stage
from mmrobust.methods.crossl import CroSSL, CroSSLModel
from mmrobust.runfolder import read_manifest

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "reproductions" / "results"
OUT = RESULTS / "crossl_collapse.jsonl"


@torch.no_grad()
def embedding_std(model: CroSSLModel, data: mmrobust.MultimodalData) -> float:
    """Mean over embedding dimensions of each dimension's std across `data`'s samples."""
    was_training = model.training
    model.eval()
    z = torch.cat([model.embed(model.encode(b)) for b in data.batches(256)])  # (N, P)
    model.train(was_training)
    return round(float(z.std(dim=0).mean()), 4)


class PretrainOnly(CroSSL):
    """CroSSL's pretraining stage alone (what the measurement is about), always trained (never taken
    from the stage cache: the epochs are what is measured)."""

    def stages(self, seed: int) -> Sequence[Stage]:
        return [dataclasses.replace(super().stages(seed)[0], reuse_key=None)]


class EmbeddingStd:
    """A tracker that measures the embedding's per-dimension std on `data` after every epoch."""

    def __init__(self, method: CroSSL, data: mmrobust.MultimodalData) -> None:
        self.method, self.data, self.std, self.loss = method, data, [], []

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self.std.append(embedding_std(self.method.crossl_model, self.data))
        self.loss.append(round(float(next(v for k, v in metrics.items() if k.startswith("train/loss"))), 4))

    def close(self) -> None:
        pass


def measure_runs(runs: Sequence[Path], out: Path) -> None:
    """One line per trained fixed CroSSL run: its label, seed, covariance weight and embedding std on
    its training split; runs already measured are skipped (resumable)."""
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    done = {(r["model"], r["seed"]) for r in rows}
    for run in runs:
        manifest = read_manifest(run)
        model, seed = run.parent.name, manifest["seed"]
        if (model, seed) in done:
            continue
        method, _ = load_checkpoint(run / "checkpoint.pt")
        if not isinstance(method, CroSSL) or method.mode != "fixed":
            raise MMRobustError(f"{run}: not a fixed CroSSL run (its encoders are not the pretrained ones)")
        source = manifest["config"]["data"]
        data = load_data(source["name"], source["npz"], source["data_dir"], source["options"]).split("train")
        row = {"model": model, "seed": seed, "cov_coeff": method.cov_coeff,
               "std": embedding_std(method.crossl_model, data)}  # fmt: skip
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"{model} seed {seed}: embedding std {row['std']}", file=sys.stderr)


def floats(text: str) -> list[float]:
    """A comma-separated list of numbers (argparse reports a ValueError as a usage error)."""
    return [float(v) for v in text.split(",")]


def ints(text: str) -> list[int]:
    """A comma-separated list of integers."""
    return [int(v) for v in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir")
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--cov", type=floats, default="1,10,100", help="covariance weights, comma-separated")
    parser.add_argument("--seeds", type=ints, default="0", help="seeds, comma-separated")
    parser.add_argument("--runs", nargs="+", type=Path, help="measure trained fixed CroSSL runs instead")
    parser.add_argument("--out", default="crossl_spread", help="with --runs: the results file's name")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.runs:
        try:
            measure_runs(args.runs, RESULTS / f"{args.out}.jsonl")
        except MMRobustError as e:
            sys.exit(f"crossl_collapse: {e}")
        return
    data = mmrobust.load_dataset("utd_mhad", data_dir=args.data_dir, modalities=["inertial", "skeleton"])
    train = data.split("train")
    rows = [json.loads(line) for line in OUT.read_text().splitlines()] if OUT.exists() else []
    done = {(r["cov_coeff"], r["seed"], r["epochs"]) for r in rows}
    for cov in args.cov:
        for seed in args.seeds:
            if (cov, seed, args.epochs) in done:
                continue
            method = PretrainOnly(mode="fixed", masking="spatial", mask_ratio=0.1, cov_coeff=cov,
                                  pretrain_epochs=args.epochs)  # fmt: skip
            tracker = EmbeddingStd(method, train)
            mmrobust.fit(method, data, seed=seed, epochs=args.epochs, progress=False, trackers=[tracker])
            row = {"cov_coeff": cov, "seed": seed, "epochs": args.epochs, "std": tracker.std, "loss": tracker.loss}
            with OUT.open("a") as f:
                f.write(json.dumps(row) + "\n")
            shown = {e: tracker.std[e - 1] for e in (1, 10, 50, args.epochs) if e <= len(tracker.std)}
            print(f"cov {cov:g} seed {seed}: embedding std after epoch {shown}", file=sys.stderr)


if __name__ == "__main__":
    main()
