"""Audit cost as modalities grow: time(default audit) / time(one clean prediction pass).

The default audit is every non-empty modality subset (2^M - 1 of them, clean included), Missing
30% per modality and GaussianNoise (sigma 1, 30% of samples) per modality. Three timings on the
same test set and model, M = 2..6, for conv inputs (image + sensor-window encoders, alternated)
and for small feature vectors (`mlp` encoders, CMU-MOSI-sized):

- predict: one clean pass (encode + fuse every sample once), the unit;
- audit: `mmrobust.audit`, the fast path (encode once, re-encode only changed rows, fuse each
  distinct (token row, mask) pair with each row's mask-independent fusion work done once);
- clean audit: `mmrobust.audit(defaults=False)`, the clean scenario alone: what the engine adds to
  a clean pass (streaming, metrics, the result table);
- naive: `mmrobust.audit(fast=False)`, every scenario corrupts the test set and runs the whole
  model (every encoder, every scenario): what an audit costs without the engine.

Goals: audit / predict <= 1.5 at M=3 and <= 3 at M=6, for both input kinds.

    python benchmarks/audit_cost.py [--quick] [--threads N] [--fusion F] [--inputs conv,mlp] [--modalities 2,3,4,5,6]
"""

from __future__ import annotations

import argparse

import torch
from _common import (
    REALISTIC_SHAPES,
    median,
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
from mmrobust.audit import default_scenarios
from mmrobust.data import Tokens

METHOD = "dropout"
GOALS = {3: 1.5, 6: 3.0}  # modalities -> goal for audit / predict
INPUTS = {"conv": ("conv2d", "conv1d"), "mlp": ("mlp",)}  # kinds, alternated over the modalities


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fusion", default="transformer", help="fusion of the audited model (default transformer)")
    parser.add_argument("--inputs", default="conv,mlp", help="input kinds to measure: conv, mlp (comma-separated)")
    parser.add_argument("--modalities", default="2,3,4,5,6", help="numbers of modalities (comma-separated)")
    parser.add_argument("--samples", type=int, default=None, help="synthetic samples (the test split is 20%%)")


def measure(inputs: str, n_mod: int, args: argparse.Namespace) -> list[object]:
    n_samples = args.samples or (500 if args.quick else 5_000)
    repeats = args.repeats or (2 if args.quick else 5)
    kinds = [INPUTS[inputs][j % len(INPUTS[inputs])] for j in range(n_mod)]
    data = synthetic(n_samples, kinds, args.native_shapes, splits=("test",))  # the audit reads test
    test = data.split("test")
    torch.manual_seed(0)
    method = mmrobust.create_method(METHOD, fusion=args.fusion)
    method.build(data.spec)
    method.modules().eval()
    model = method.fitted_model
    with torch.no_grad():
        tokens = model.encode(test.batch(slice(None)))

    @torch.no_grad()
    def fuse_part() -> None:  # what predict spends in the fusion
        for i in range(0, len(test), 512):
            part = slice(i, i + 512)
            model.fuse(Tokens(tokens.z[part], tokens.present[part], tokens.modalities))

    times = time_interleaved(
        {
            "audit": lambda: mmrobust.audit(method, data),
            "predict": lambda: mmrobust.predict(method, test),
            "clean audit": lambda: mmrobust.audit(method, data, defaults=False),  # the engine's own overhead
            "fuse part": fuse_part,
        },
        repeats,
    )
    naive = time_interleaved({"naive": lambda: mmrobust.audit(method, data, fast=False)}, 1, warmup=0)["naive"]
    unit = median(times["predict"])
    ratio = median(times["audit"]) / unit
    goal = GOALS.get(n_mod)
    return [
        inputs,
        n_mod,
        len(default_scenarios(data.modalities)),
        len(test),
        median(times["fuse part"]) / unit,
        median(times["clean audit"]) / unit,
        ratio,
        paired_ratio(times["audit"], times["predict"]),
        median(naive) / unit,
        median(naive) / median(times["audit"]),
        verdict(ratio, goal, False) if goal else "",
    ]


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], options)
    REALISTIC_SHAPES.setdefault("mlp", (74,))  # a CMU-MOSI-sized feature vector (COVAREP audio)
    setup(args)
    print(f"method {METHOD}, fusion {args.fusion}, dim 64, untrained weights (cost is weight-independent)")
    rows = []
    for inputs in args.inputs.split(","):
        for n_mod in (int(m) for m in args.modalities.split(",")):
            rows.append(measure(inputs, n_mod, args))
            print(f"  {inputs} M={n_mod}: audit/predict {rows[-1][6]:.2f}, naive/predict {rows[-1][8]:.1f}", flush=True)
    print()
    print_table(
        ["inputs", "M", "scenarios", "test N", "fuse share", "clean audit/predict", "audit/predict", "paired",
         "naive/predict",
         "naive/audit", "verdict"],
        rows,
    )
    kinds = args.inputs.split(",")
    record(args, [line for inputs in kinds for line in headline(inputs, [r for r in rows if r[0] == inputs])])


def headline(inputs: str, rows: list[list]) -> list[dict[str, str]]:
    """The README's rows for one input kind: the audit's ratio per M against the goals, and the naive
    audit's for reference."""
    shapes = " + ".join(str(REALISTIC_SHAPES[kind]) for kind in dict.fromkeys(INPUTS[inputs]))
    where = f"{inputs} inputs {shapes}, M = {' / '.join(str(r[1]) for r in rows)} modalities"
    goals = [r[6] <= GOALS[r[1]] for r in rows if r[1] in GOALS]
    goal = ", ".join(f"≤ {g:g} at M={m}" for m, g in GOALS.items())
    return [
        row(f"default audit / one clean pass, {where}", goal, " / ".join(f"{r[6]:.2f}" for r in rows),
            all(goals) if goals else None),
        row(f"naive audit (every scenario through the whole model) / one clean pass, {where}", "(reference)",
            " / ".join(f"{r[8]:.1f}" for r in rows), None),
    ]  # fmt: skip


if __name__ == "__main__":
    main()
