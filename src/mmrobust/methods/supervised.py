"""`joint` and `dropout`: supervised training of one multimodal model, with or without
modality-level augmentation.

`dropout` trains under `RandomDrop` (drop K ~ U{0..M-1} modalities per sample, re-drawn every
batch) or under any corruption given in config, e.g. `MissingRates` or a `Compose` of
missing and noise; `joint` trains on the data as given (complete, or naturally missing).
Losses: cross-entropy for classification, L1 for regression (MAE is the headline
sentiment metric).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ..corruption import Corruption, RandomDrop, as_corruption, encode_corrupted
from ..data.batch import Batch
from ..data.dataset import DataSpec
from ..models.model import MultimodalModel, modality_list
from .base import EVERY_TASK, Method, MethodTags, register_method
from .losses import task_loss


@register_method("joint")
class SupervisedMethod(Method):
    """Plain training of one encode/fuse model on the data as given (the usual baseline).

    `modalities` restricts the model to those modalities (e.g. `["audio"]` for a uni-modal
    baseline): the others are ignored in training, validation, prediction and the audit.
    `label_smoothing` is a recipe element (the same for every method in a comparison).
    """

    tags = MethodTags(tasks=EVERY_TASK, needs_complete_training_data=False, per_sample_masks=True)

    def __init__(
        self,
        fusion: str = "transformer",
        dim: int = 64,
        modalities: str | Sequence[str] | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        self.fusion = fusion
        self.dim = dim
        self.modalities = modality_list(modalities)
        self.label_smoothing = label_smoothing

    @property
    def train_corruption(self) -> Corruption | None:
        return None

    def build(self, spec: DataSpec) -> None:
        self.check_task(spec)
        self.model = MultimodalModel(spec, fusion=self.fusion, dim=self.dim, use=self.modalities)

    def loss(self, batch: Batch, generator: torch.Generator) -> Tensor:
        model = self.fitted_model
        output = model.fuse(encode_corrupted(model.encode, batch, self.train_corruption, generator))
        return task_loss(output, batch.target, model.spec.task, self.label_smoothing)


@register_method("dropout")
class ModalityDropout(SupervisedMethod):
    """Training under modality dropout (`RandomDrop`, the default) or any configured corruption,
    given as an object or as its dict (`{"type": "MissingRates", "rates": {...}}`)."""

    def __init__(
        self,
        fusion: str = "transformer",
        dim: int = 64,
        corruption: Corruption | Mapping[str, Any] | None = None,
        modalities: str | Sequence[str] | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(fusion, dim, modalities, label_smoothing)
        self.corruption = corruption

    @property
    def train_corruption(self) -> Corruption:
        return RandomDrop() if self.corruption is None else as_corruption(self.corruption)
