"""`Tokens`: the per-modality encoder outputs that every fusion consumes.

A data-path type like `Batch` (same `present` mask, same `with_present`/`value`/`with_value`
interface), so corruptions act on both without knowing about models.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from ..errors import MMRobustError


@dataclass(frozen=True)
class Tokens:
    """One D-dim token per modality and sample; absent slots hold zeros nobody reads."""

    z: Tensor  # (B, M, D)
    present: Tensor  # (B, M) bool
    modalities: tuple[str, ...]

    def __post_init__(self) -> None:  # shapes only: free, and a one-line error instead of one deep in a fusion
        object.__setattr__(self, "modalities", tuple(self.modalities))
        if self.z.dim() != 3 or self.present.dtype != torch.bool or self.present.shape != self.z.shape[:2]:
            raise MMRobustError(
                f"tokens need z (B, M, D) and a bool present (B, M); got z {tuple(self.z.shape)}, "
                f"present {tuple(self.present.shape)} {self.present.dtype}"
            )
        if len(self.modalities) != self.z.shape[1]:
            raise MMRobustError(f"{len(self.modalities)} modality names for {self.z.shape[1]} token slots")

    def __len__(self) -> int:
        return int(self.z.shape[0])

    def rows(self, index: slice | Tensor) -> Tokens:
        """The samples at `index` (a slice, a bool mask or indices), as `Batch.rows` does."""
        return Tokens(self.z[index], self.present[index], self.modalities)

    def with_present(self, present: Tensor) -> Tokens:
        return replace(self, present=present)

    def value(self, modality: str) -> Tensor:
        return self.z[:, self.modalities.index(modality)]  # (B, D)

    def with_value(self, modality: str, value: Tensor) -> Tokens:
        z = self.z.clone()
        z[:, self.modalities.index(modality)] = value
        return replace(self, z=z)
