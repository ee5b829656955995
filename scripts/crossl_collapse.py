"""Why does CroSSL's pretrained embedding nearly collapse on UTD-MHAD? Measure it: the per-dimension
standard deviation of the training embeddings after every pretraining epoch, for several covariance
weights (the VICReg term the paper weights 100), on the training split only.

    python scripts/crossl_collapse.py --data-dir DIR [--epochs 200] [--cov 1,10,100] [--seeds 0]

Writes one JSON line per (cov weight, seed) to docs/reproductions/results/crossl_collapse.jsonl:
the mean per-dimension std of the embedding and the VICReg loss after each epoch. A collapse is a
std near 0; VICReg's variance term pushes each dimension's std toward 1.
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
from mmrobust.methods.base import Stage
from mmrobust.methods.crossl import CroSSL

OUT = Path(__file__).resolve().parents[1] / "docs" / "reproductions" / "results" / "crossl_collapse.jsonl"


class PretrainOnly(CroSSL):
    """CroSSL's pretraining stage alone (what the measurement is about), always trained (never taken
    from the stage cache: the epochs are what is measured)."""

    def stages(self, seed: int) -> Sequence[Stage]:
        return [dataclasses.replace(super().stages(seed)[0], reuse_key=None)]


class EmbeddingStd:
    """A tracker that measures the embedding's per-dimension std on `data` after every epoch."""

    def __init__(self, method: CroSSL, data: mmrobust.MultimodalData) -> None:
        self.method, self.data, self.std, self.loss = method, data, [], []

    @torch.no_grad()
    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        model = self.method.crossl_model
        was_training = model.training
        model.eval()
        z = torch.cat([model.embed(model.encode(b)) for b in self.data.batches(256)])  # (N, P)
        model.train(was_training)
        self.std.append(round(float(z.std(dim=0).mean()), 4))
        self.loss.append(round(float(next(v for k, v in metrics.items() if k.startswith("train/loss"))), 4))

    def close(self) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir")
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--cov", default="1,10,100")
    parser.add_argument("--seeds", default="0")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = mmrobust.load_dataset("utd_mhad", data_dir=args.data_dir, modalities=["inertial", "skeleton"])
    train = data.split("train")
    rows = [json.loads(line) for line in OUT.read_text().splitlines()] if OUT.exists() else []
    done = {(r["cov_coeff"], r["seed"], r["epochs"]) for r in rows}
    for cov in (float(c) for c in args.cov.split(",")):
        for seed in (int(s) for s in args.seeds.split(",")):
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
