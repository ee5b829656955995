"""Audit a model trained outside mmrobust: a plain two-branch PyTorch model, trained with a
hand-written loop, audited under every missing-value policy; then a model that takes a mask.

    python examples/audit_your_model.py [--epochs 30]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import mmrobust


class TwoBranch(nn.Module):
    """One small MLP per modality, logits summed: the kind of model people already have."""

    def __init__(self, shapes: dict[str, int], classes: int) -> None:
        super().__init__()
        self.branches = nn.ModuleDict(
            {
                m: nn.Sequential(nn.Flatten(), nn.Linear(n, 32), nn.ReLU(), nn.Linear(32, classes))
                for m, n in shapes.items()
            }
        )

    def forward(self, inputs: dict[str, Tensor]) -> Tensor:
        return sum(branch(inputs[m]) for m, branch in self.branches.items())


class IgnoresMask(TwoBranch):
    """Accepts a mask and ignores it: the trap a mask-blind audit would not notice."""

    def forward(self, inputs: dict[str, Tensor], present: Tensor | None = None) -> Tensor:
        return super().forward(inputs)


class MaskAware(TwoBranch):
    """The same model, told which inputs are present: an absent branch contributes nothing."""

    def forward(self, inputs: dict[str, Tensor], present: Tensor | None = None) -> Tensor:
        outs = torch.stack([branch(inputs[m]) for m, branch in self.branches.items()], dim=1)  # (B, M, C)
        if present is not None:
            outs = outs * present[..., None]
        return outs.sum(dim=1)


def train(model: nn.Module, data: mmrobust.MultimodalData, epochs: int, mask_aware: bool = False) -> nn.Module:
    """A minimal hand-written loop (what the user already has); the mask-aware model also sees
    random modality dropout so that it learns to predict from either branch."""
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for batch in data.split("train").batches(32, g):
            extra = {}
            if mask_aware:
                keep = torch.rand(batch.present.shape, generator=g) < 0.7
                keep[torch.arange(len(batch)), torch.randint(keep.shape[1], (len(batch),), generator=g)] = True
                extra["present"] = keep
            loss = F.cross_entropy(model(batch.inputs, **extra), batch.target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    data = mmrobust.load_dataset("synthetic", n_samples=600, informativeness=(2.0, 1.0), seed=0)
    shapes = {m.name: int(torch.tensor(m.shape).prod()) for m in data.spec.modalities}
    plain = train(TwoBranch(shapes, data.spec.num_classes), data, args.epochs)
    for policy in ("zeros", "mean"):
        result = mmrobust.audit(mmrobust.wrap(plain, data, missing=policy), data, label=f"two-branch ({policy})")
        print(result.summary().to_string(index=False))
    try:  # the trap: a model that ignores masks scores the same on every subset, and is refused
        blind = IgnoresMask(shapes, data.spec.num_classes)
        blind.load_state_dict(plain.state_dict())
        mmrobust.audit(mmrobust.wrap(blind, data, missing="mask"), data)
    except mmrobust.MMRobustError as e:
        print(f"refused: {e}")
    aware = train(MaskAware(shapes, data.spec.num_classes), data, args.epochs, mask_aware=True)
    result = mmrobust.audit(mmrobust.wrap(aware, data, missing="mask"), data, label="mask-aware")
    print(result.summary().to_string(index=False))


if __name__ == "__main__":
    main()
