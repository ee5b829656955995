"""The multimodal model: per-modality encoders, then a fusion, split at the token tensor.

`encode` and `fuse` are separate so that the audit can encode a batch once and fuse it
under many masks (ARCHITECTURE.md invariant 3). Each encoder only runs on the samples
where its modality is present (gather -> encode -> scatter): absent placeholders are never
read, and training under modality dropout costs in proportion to what is present.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..data.batch import Batch
from ..data.dataset import DataSpec
from .encoders import create_encoder
from .fusion import create_fusion
from .tokens import Tokens


class MultimodalModel(nn.Module):
    def __init__(self, spec: DataSpec, fusion: str = "transformer", dim: int = 64) -> None:
        super().__init__()
        self.spec, self.dim, self.fusion_name = spec, dim, fusion
        self.encoders = nn.ModuleDict({m.name: create_encoder(m.kind, m.shape, dim) for m in spec.modalities})
        self.fusion = create_fusion(fusion, len(spec.modalities), dim, spec.num_classes)

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.spec.modality_names

    def encode_modality(self, modality: str, x: Tensor) -> Tensor:
        return self.encoders[modality](x)  # (n, D)

    def encode(self, batch: Batch) -> Tokens:
        z = batch.present.new_zeros((len(batch), len(self.modalities), self.dim), dtype=torch.float32)
        for j, m in enumerate(self.modalities):
            rows = batch.present[:, j]
            if rows.all():
                z[:, j] = self.encode_modality(m, batch.inputs[m])
            elif rows.any():
                z[rows, j] = self.encode_modality(m, batch.inputs[m][rows])
        return Tokens(z, batch.present, self.modalities)  # z: (B, M, D)

    def fuse(self, tokens: Tokens) -> Tensor:
        out = self.fusion(tokens)  # (B, C) logits, or (B, 1) for regression
        return out.squeeze(-1) if self.spec.task == "regression" else out

    def forward(self, batch: Batch) -> Tensor:
        return self.fuse(self.encode(batch))
