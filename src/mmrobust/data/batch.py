"""The masked batch: every modality tensor plus a `present[B, M]` mask.

Absence is a mask, never a value (ARCHITECTURE.md invariant 1): the rows of `inputs[m]`
where `present[:, m]` is False are placeholders that no model output may depend on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from ..errors import MMRobustError


@dataclass(frozen=True)
class Batch:
    """A batch of B samples over the ordered modalities `modalities` (M of them)."""

    inputs: dict[str, Tensor]  # modality -> (B, *shape_m)
    present: Tensor  # (B, M) bool
    target: Tensor  # (B,) long for classification, float for regression
    modalities: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.present.shape[0])

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            {m: x.to(device) for m, x in self.inputs.items()},
            self.present.to(device),
            self.target.to(device),
            self.modalities,
        )

    def with_present(self, present: Tensor) -> Batch:
        return replace(self, present=present)

    def value(self, modality: str) -> Tensor:
        return self.inputs[modality]

    def with_value(self, modality: str, value: Tensor) -> Batch:
        return replace(self, inputs={**self.inputs, modality: value})


def collate(samples: Sequence[Mapping[str, Any]], modalities: Sequence[str]) -> Batch:
    """Stack per-sample dicts into a `Batch`.

    A sample is `{"inputs": {modality: tensor}, "target": label}`; a modality that is
    missing from a sample's `inputs` (or given as None) is marked absent and gets a zero
    placeholder, so datasets whose samples naturally lack a modality need do nothing else.
    """
    if not samples:
        raise MMRobustError("cannot collate an empty list of samples")
    modalities = tuple(modalities)
    present = torch.tensor(
        [[s["inputs"].get(m) is not None for m in modalities] for s in samples], dtype=torch.bool
    )
    inputs: dict[str, Tensor] = {}
    for j, m in enumerate(modalities):
        if not present[:, j].any():
            raise MMRobustError(
                f"modality '{m}' is absent from every sample of the batch; its shape is unknown"
            )
        example = next(torch.as_tensor(s["inputs"][m]) for s in samples if s["inputs"].get(m) is not None)
        placeholder = torch.zeros_like(example)
        inputs[m] = torch.stack(
            [
                torch.as_tensor(s["inputs"][m]) if s["inputs"].get(m) is not None else placeholder
                for s in samples
            ]
        )
    target = torch.as_tensor([s["target"] for s in samples])
    return Batch(inputs, present, target, modalities)
