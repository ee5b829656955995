"""`Tokens`: the per-modality encoder outputs that every fusion consumes."""

from __future__ import annotations

from dataclasses import dataclass, replace

from torch import Tensor


@dataclass(frozen=True)
class Tokens:
    """One D-dim token per modality and sample; absent slots hold zeros nobody reads."""

    z: Tensor  # (B, M, D)
    present: Tensor  # (B, M) bool
    modalities: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.z.shape[0])

    def with_present(self, present: Tensor) -> Tokens:
        return replace(self, present=present)

    def value(self, modality: str) -> Tensor:
        return self.z[:, self.modalities.index(modality)]  # (B, D)

    def with_value(self, modality: str, value: Tensor) -> Tokens:
        z = self.z.clone()
        z[:, self.modalities.index(modality)] = value
        return replace(self, z=z)
