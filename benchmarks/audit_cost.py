"""Audit cost: time(full default audit) / time(one clean prediction pass), same test set.

The default audit is every non-empty modality subset (2^M - 1 of them, clean included),
Missing 30% per modality and GaussianNoise (sigma 1, 30% of samples) per modality. Goals:
<= 1.5 with 3 modalities, <= 3 with 6 modalities (63 subsets).

    python benchmarks/audit_cost.py [--quick] [--threads N] [--native-shapes]
"""

from __future__ import annotations

import argparse

import torch
from _common import (
    median,
    paired_ratio,
    parse_args,
    print_table,
    setup,
    synthetic,
    time_interleaved,
    verdict,
)

import mmrobust
from mmrobust.audit import default_scenarios
from mmrobust.data import Tokens

METHOD, FUSION = "dropout", "transformer"
GOALS = {3: 1.5, 6: 3.0}  # modalities -> goal for audit / predict
KINDS = ("conv2d", "conv1d")  # alternated over the modalities


def measure(n_mod: int, goal: float, args: argparse.Namespace) -> list[object]:
    n_samples = 1_000 if args.quick else 10_000  # the test split is 20%: ~200 / ~2000 samples
    repeats = args.repeats or (2 if args.quick else 5)
    kinds = [KINDS[j % 2] for j in range(n_mod)]
    data = synthetic(n_samples, kinds, args.native_shapes, splits=("test",))  # audit reads test
    test = data.split("test")
    torch.manual_seed(0)
    method = mmrobust.create_method(METHOD, fusion=FUSION)
    method.build(data.spec)
    method.modules().eval()
    model = method.fitted_model
    with torch.no_grad():
        tokens = model.encode(test.batch(slice(None)))

    @torch.no_grad()
    def encode_part() -> None:  # what predict spends in the encoders
        for batch in test.batches(512):
            model.encode(batch)

    @torch.no_grad()
    def fuse_part() -> None:  # what predict spends in the fusion
        for i in range(0, len(test), 512):
            part = slice(i, i + 512)
            model.fuse(Tokens(tokens.z[part], tokens.present[part], tokens.modalities))

    times = time_interleaved(
        {
            "audit": lambda: mmrobust.audit(method, data),
            "predict": lambda: mmrobust.predict(method, test),
            "  encode part": encode_part,
            "  fuse part": fuse_part,
        },
        repeats,
    )
    n_scen = len(default_scenarios(data.modalities))
    shapes = ", ".join(f"{m.kind}{list(m.shape)}" for m in data.spec.modalities)
    print(f"\n{n_mod} modalities ({shapes}), {len(test)} test samples, {n_scen} scenarios")
    print_table(
        ["timing", "median s", "min s", "max s"],
        [[k, median(v), min(v), max(v)] for k, v in times.items()],
    )
    ratio = median(times["audit"]) / median(times["predict"])
    paired = paired_ratio(times["audit"], times["predict"])
    fuse_share = median(times["  fuse part"]) / median(times["predict"])
    print(
        f"ratio audit/predict = {ratio:.3f} (paired median {paired:.3f})  "
        f"{verdict(ratio, goal, False)}"
    )
    return [n_mod, n_scen, len(test), fuse_share, ratio, paired, verdict(ratio, goal, False)]


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    setup(args)
    print(f"method {METHOD}, fusion {FUSION}, dim 64, untrained weights (cost is weight-independent)")
    rows = [measure(n_mod, goal, args) for n_mod, goal in GOALS.items()]
    print()
    print_table(
        ["modalities", "scenarios", "test N", "fuse share", "audit/predict", "paired", "verdict"],
        rows,
    )


if __name__ == "__main__":
    main()
