"""Training-loop overhead: samples/s of `mmrobust.fit` / samples/s of a minimal hand loop.

Both train the same `MultimodalModel` (fresh, same seed) on the same train split, with the
same batch size, AdamW settings and number of epochs. `fit` validates every epoch for
early stopping, so the hand loop also evaluates the val split once per epoch and keeps a
copy of the best weights (a minimal loop with model selection). Patience is larger than
the number of epochs, so `fit` always runs them all. Goal: >= 0.9.

The hand loop uses AdamW as a user would write it (on CPU that is the per-parameter
implementation); a second hand loop with `fused=True`, the setting `fit` uses on a CPU, is timed
too, so that pure loop overhead (ratio vs that one) can be told apart from optimizer choice.

    python benchmarks/train_overhead.py [--quick] [--threads N] [--native-shapes]
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from _common import (
    median,
    meets,
    paired_ratio,
    parse_args,
    print_table,
    record,
    row,
    setup,
    synthetic,
    time_interleaved,
    verdict,
)

import mmrobust
from mmrobust import Batch, MultimodalData
from mmrobust.models import MultimodalModel

FUSION, BATCH, LR, WEIGHT_DECAY, GOAL = "transformer", 32, 1e-3, 1e-2, 0.9
KINDS = ("conv2d", "conv1d", "conv2d")


def project_loop(data: MultimodalData, epochs: int) -> None:
    method = mmrobust.create_method("joint", fusion=FUSION)
    result = mmrobust.fit(
        method, data, seed=0, epochs=epochs, batch_size=BATCH, lr=LR, weight_decay=WEIGHT_DECAY,
        patience=10 * epochs, device="cpu", progress=False,
    )
    assert result.epochs_run == epochs


def hand_loop(data: MultimodalData, epochs: int, fused: bool | None = None) -> None:
    train, val = data.split("train"), data.split("val")
    torch.manual_seed(0)
    model = MultimodalModel(data.spec, fusion=FUSION)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY, fused=fused
    )
    generator = torch.Generator().manual_seed(0)
    best_loss, best_state = float("inf"), copy.deepcopy(model.state_dict())
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(train), generator=generator).split(BATCH):
            batch = Batch(
                {m: x[idx] for m, x in train.inputs.items()}, train.present[idx],
                train.target[idx], train.modalities,
            )
            loss = F.cross_entropy(model(batch), batch.target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            logits = torch.cat([model(b) for b in val.batches(512)])
        val_loss = float(F.cross_entropy(logits, val.target))
        if val_loss < best_loss:
            best_loss, best_state = val_loss, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    setup(args)
    n_samples = 500 if args.quick else 3_000  # train 60%, val 20%
    epochs = 1 if args.quick else 3
    repeats = args.repeats or (1 if args.quick else 5)
    data = synthetic(n_samples, KINDS, args.native_shapes)
    n_train = len(data.splits["train"])
    shapes = ", ".join(f"{m.kind}{list(m.shape)}" for m in data.spec.modalities)
    print(
        f"joint, fusion {FUSION}, dim 64 | {shapes} | train {n_train}, "
        f"val {len(data.splits['val'])} | batch {BATCH}, AdamW lr {LR} wd {WEIGHT_DECAY}, "
        f"{epochs} epochs"
    )
    times = time_interleaved(
        {
            "mmrobust.fit": lambda: project_loop(data, epochs),
            "hand loop": lambda: hand_loop(data, epochs),
            "hand loop, fused AdamW": lambda: hand_loop(data, epochs, fused=True),
        },
        repeats,
    )
    print_table(
        ["loop", "median s", "min s", "max s", "samples/s"],
        [[k, median(v), min(v), max(v), epochs * n_train / median(v)] for k, v in times.items()],
    )
    ratio = median(times["hand loop"]) / median(times["mmrobust.fit"])  # = samples/s ratio
    paired = paired_ratio(times["hand loop"], times["mmrobust.fit"])
    print(
        f"ratio fit/hand (samples/s) = {ratio:.3f} (paired median {paired:.3f})  "
        f"{verdict(ratio, GOAL, True)}"
    )
    same_opt = median(times["hand loop, fused AdamW"]) / median(times["mmrobust.fit"])
    print(f"ratio fit/hand with the same (fused) AdamW = {same_opt:.3f}")
    what = "samples/s of `mmrobust.fit` / a hand-written loop (same model, data, per-epoch validation)"
    record(args, [
        row(f"{what}, AdamW as a user writes it", f"≥ {GOAL:g}", f"{ratio:.2f}", meets(ratio, GOAL, True)),
        row(f"{what}, the same fused AdamW as `fit`", "(reference)", f"{same_opt:.2f}", None),
    ])  # fmt: skip


if __name__ == "__main__":
    main()
