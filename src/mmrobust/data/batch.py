"""The masked batch: every modality tensor plus a `present[B, M]` mask.

Absence is a mask, never a value (docs/architecture.md, invariant 1): the rows of `inputs[m]`
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
    """A batch of B samples over the ordered modalities `modalities` (M of them).

    Construction checks shapes only (never values, so it costs nothing per batch): `present` is a
    bool (B, M) tensor, every modality has an input with B rows, and `target` has B rows.
    """

    inputs: dict[str, Tensor]  # modality -> (B, *shape_m)
    present: Tensor  # (B, M) bool
    target: Tensor  # (B,) long for classification, float for regression
    modalities: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "modalities", tuple(self.modalities))
        _check_modalities(self.modalities)
        if not isinstance(self.present, Tensor) or self.present.dtype != torch.bool:
            raise MMRobustError(
                f"present must be a bool tensor, got {getattr(self.present, 'dtype', type(self.present))}"
            )
        b = int(self.present.shape[0]) if self.present.dim() else 0
        if self.present.shape != (b, len(self.modalities)):
            raise MMRobustError(
                f"present must have shape ({b}, {len(self.modalities)}) (samples, modalities), "
                f"got {tuple(self.present.shape)}"
            )
        for m in self.modalities:
            x = self.inputs.get(m)
            if x is None:
                raise MMRobustError(f"no input for modality '{m}' (inputs: {sorted(self.inputs)})")
            if x.dim() == 0 or x.shape[0] != b:
                raise MMRobustError(f"modality '{m}' has {x.shape[0] if x.dim() else 0} rows but the batch has {b}")
        if isinstance(self.target, Tensor) and (self.target.dim() == 0 or self.target.shape[0] != b):
            raise MMRobustError(f"{self.target.shape[0] if self.target.dim() else 1} targets for {b} samples")

    def __len__(self) -> int:
        return int(self.present.shape[0])

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            {m: x.to(device) for m, x in self.inputs.items()},
            self.present.to(device),
            self.target.to(device),
            self.modalities,
        )

    def rows(self, index: slice | Tensor) -> Batch:
        """The samples at `index` (a slice, a bool mask or indices), as a batch of their own."""
        return Batch(
            {m: x[index] for m, x in self.inputs.items()}, self.present[index], self.target[index], self.modalities
        )

    def with_present(self, present: Tensor) -> Batch:
        return replace(self, present=present)

    def value(self, modality: str) -> Tensor:
        return self.inputs[modality]

    def with_value(self, modality: str, value: Tensor) -> Batch:
        return replace(self, inputs={**self.inputs, modality: value})


def _check_modalities(modalities: Sequence[str]) -> None:
    if not modalities:
        raise MMRobustError("a batch needs at least one modality")
    twice = sorted({m for m in modalities if list(modalities).count(m) > 1})
    if twice:
        raise MMRobustError(f"modalities {twice} are listed twice")


def collate(samples: Sequence[Mapping[str, Any]], modalities: Sequence[str]) -> Batch:
    """Stack per-sample dicts into a `Batch`.

    A sample is `{"inputs": {modality: tensor}, "target": label}`; a modality that is
    missing from a sample's `inputs` (or given as None) is marked absent and gets a zero
    placeholder, so datasets whose samples naturally lack a modality need do nothing else.
    Inputs are tensors or arrays of one shape per modality; floating-point inputs keep their
    dtype (the model computes in float32). A present input holding NaN/inf is an error, as in
    `MultimodalData`: mark the modality absent instead.
    """
    if not samples:
        raise MMRobustError("cannot collate an empty list of samples")
    modalities = tuple(modalities)
    if not modalities:
        raise MMRobustError("cannot collate a batch with no modalities")
    _check_modalities(modalities)
    per_sample = [_sample_inputs(s, i, modalities) for i, s in enumerate(samples)]
    present = torch.tensor([[m in values for m in modalities] for values in per_sample], dtype=torch.bool)
    inputs: dict[str, Tensor] = {}
    for j, m in enumerate(modalities):
        rows = present[:, j].nonzero().flatten().tolist()
        if not rows:
            raise MMRobustError(f"modality '{m}' is absent from every sample of the batch; its shape is unknown")
        example = per_sample[rows[0]][m]
        for i in rows:
            if per_sample[i][m].shape != example.shape:
                raise MMRobustError(
                    f"modality '{m}' has shape {tuple(per_sample[i][m].shape)} in sample {i} but "
                    f"{tuple(example.shape)} in sample {rows[0]}: every sample of a modality needs one shape"
                )
        placeholder = torch.zeros_like(example)
        x = torch.stack([values.get(m, placeholder) for values in per_sample])  # (B, *shape)
        if x.is_floating_point():
            bad = ~torch.isfinite(x.flatten(1)).all(dim=1) & present[:, j]
            if bad.any():
                raise MMRobustError(
                    f"modality '{m}' has NaN/inf in present sample {int(bad.nonzero()[0])}; clean it or "
                    "leave the modality out of that sample (absent)"
                )
        inputs[m] = x
    return Batch(inputs, present, _targets(samples), modalities)


def _sample_inputs(sample: Any, i: int, modalities: Sequence[str]) -> dict[str, Tensor]:
    """One sample's present inputs among `modalities`, as tensors (None entries left out)."""
    if not isinstance(sample, Mapping):
        raise MMRobustError(
            f"sample {i} is not a mapping but {type(sample).__name__}; "
            'write samples as {"inputs": {modality: tensor}, "target": label}'
        )
    values = sample.get("inputs")
    if not isinstance(values, Mapping):
        raise MMRobustError(f"sample {i} has no 'inputs' mapping of modality -> tensor")
    if "target" not in sample:
        raise MMRobustError(f"sample {i} has no 'target'")
    out = {}
    for m in modalities:
        if values.get(m) is None:
            continue
        try:
            out[m] = torch.as_tensor(values[m])
        except (TypeError, ValueError, RuntimeError) as e:
            raise MMRobustError(f"modality '{m}' of sample {i} is not a numeric array: {e}") from None
    return out


def _targets(samples: Sequence[Mapping[str, Any]]) -> Tensor:
    try:
        return torch.as_tensor([s["target"] for s in samples])
    except (TypeError, ValueError, RuntimeError) as e:
        raise MMRobustError(f"the samples' targets do not form one numeric tensor: {e}") from None
