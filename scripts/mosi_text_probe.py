"""How far validation on CMU-MOSI can be trusted: a least-squares probe on one modality.

    python scripts/mosi_text_probe.py --data-dir DATA_DIR [--modality text]

Fits sentiment by least squares on the `mosi` train split (the training videos minus the validation
videos, exactly as the loader splits them) and prints MAE and Acc-2 (non-zero scores) on train, val and
test (`mmrobust.metrics`). With the released text features, val is nearly as easy as train
and far easier than test: the features carry the labels of every training-split video
(docs/reproductions/ume_redcore.md).
"""

from __future__ import annotations

import argparse

import torch

from mmrobust.data import load_dataset
from mmrobust.errors import MMRobustError
from mmrobust.metrics import regression_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--modality", default="text", choices=["text", "audio", "video"])
    parser.add_argument("--split-seed", type=int, default=0)
    args = parser.parse_args()
    try:
        data = load_dataset("mosi", data_dir=args.data_dir, split_seed=args.split_seed)
    except MMRobustError as e:
        raise SystemExit(f"error: {e}") from None
    x = data.inputs[args.modality].flatten(1).double()
    design = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    y = data.target.double()
    train = data.splits["train"]
    weights = torch.linalg.lstsq(design[train], y[train, None]).solution
    print(f"| {args.modality} probe | samples | MAE | Acc-2 (non-zero) |\n|---|---|---|---|")
    for name in ("train", "val", "test"):
        rows = data.splits[name]
        scores = regression_metrics((design[rows] @ weights).float(), y[rows].float())
        print(f"| {name} | {len(rows)} | {scores['mae']:.3f} | {scores['acc2']:.3f} |")


if __name__ == "__main__":
    main()
