"""Modality-dropout cost: time(training epoch, method "dropout") / time(epoch, method "joint").

`RandomDrop` drops K ~ U{0..P-1} of the P = 3 present modalities per sample, so on average
2/3 of the (sample, modality) pairs stay; since the model encodes only present rows
(gather -> encode -> scatter), an epoch under dropout should cost about 2/3 of a complete
one when encoding dominates. Both epochs run the project's training step (`method.loss`,
backward, AdamW step) on the same model architecture and data; validation is left out as
it is identical for both. Goal: close to 2/3, at most 0.8.

    python benchmarks/dropout_cost.py [--quick] [--threads N] [--native-shapes]
"""

from __future__ import annotations

from collections.abc import Callable

import torch
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
from mmrobust import MultimodalData
from mmrobust.train.optim import adamw

FUSION, BATCH, GOAL = "transformer", 32, 0.8
KINDS = ("conv2d", "conv1d", "conv2d")


def epoch_runner(name: str, data: MultimodalData) -> Callable[[], None]:
    """One training epoch of method `name` per call, exactly as `fit`'s inner loop runs it."""
    train = data.split("train")
    torch.manual_seed(0)
    method = mmrobust.create_method(name, fusion=FUSION)
    method.build(data.spec)
    module = method.modules()
    optimizer = adamw(list(module.parameters()), lr=1e-3, weight_decay=1e-2, dev=torch.device("cpu"))  # fit's optimizer
    generator = torch.Generator().manual_seed(0)

    def epoch() -> None:
        module.train()
        for batch in train.batches(BATCH, generator):
            loss = method.loss(batch, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return epoch


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    setup(args)
    n_samples = 500 if args.quick else 3_000  # train split: 60%
    repeats = args.repeats or (2 if args.quick else 7)
    data = synthetic(n_samples, KINDS, args.native_shapes)
    shapes = ", ".join(f"{m.kind}{list(m.shape)}" for m in data.spec.modalities)
    print(
        f"fusion {FUSION}, dim 64 | {shapes} | train {len(data.splits['train'])} | batch {BATCH}"
    )
    times = time_interleaved(
        {"dropout epoch": epoch_runner("dropout", data), "joint epoch": epoch_runner("joint", data)},
        repeats,
    )
    print_table(
        ["epoch", "median s", "min s", "max s"],
        [[k, median(v), min(v), max(v)] for k, v in times.items()],
    )
    ratio = median(times["dropout epoch"]) / median(times["joint epoch"])
    paired = paired_ratio(times["dropout epoch"], times["joint epoch"])
    print(
        f"ratio dropout/joint = {ratio:.3f} (paired median {paired:.3f}; ideal 0.667)  "
        f"{verdict(ratio, GOAL, False)}"
    )
    record(args, [row("training epoch under `RandomDrop` / complete epoch, 3 modalities (ideal 0.67)",
                      f"≤ {GOAL:g}", f"{ratio:.2f}", meets(ratio, GOAL, False))])  # fmt: skip


if __name__ == "__main__":
    main()
