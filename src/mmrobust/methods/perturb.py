"""`perturb`: modality-perturbation robust training (Hazarika et al., "Analyzing Modality Robustness in
Multimodal Sentiment Analysis", NAACL 2022, arXiv 2205.15465).

Every training batch, of the samples that have the target modality, exactly ⌊B·p⌋ lose it
and another, disjoint ⌊B·p⌋ get it noised (`Perturbation`, the same object the audit can
run), re-drawn every batch; the paper's "15% missing + 15% noise" is `proportion=0.15`.
The perturbation sits at the encoder output token by default (`stage="token"`, the paper's
"representation"), or on the raw input features (`stage="input"`).

The target `modality` is a name, `"random"` (one modality drawn per batch) or `"dominant"`:
the modality whose removal raises this batch's loss the most under the current model (M
extra fusion passes without gradients), so the method needs no prior knowledge of which
modality dominates — the paper perturbs language, which it found dominant.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..corruption import CorruptionStage, NoiseMode, Perturbation
from ..data.batch import Batch
from ..data.dataset import DataSpec
from ..data.tokens import Tokens
from ..errors import unknown_name
from ..models.model import MultimodalModel
from .base import register_method
from .losses import task_loss
from .supervised import SupervisedMethod


@torch.no_grad()
def dominant_modality(model: MultimodalModel, tokens: Tokens, target: Tensor) -> str:
    """The modality whose removal (mask) raises the task loss on these samples the most."""
    losses = []
    for j in range(len(tokens.modalities)):
        present = tokens.present.clone()
        present[:, j] = False
        losses.append(float(task_loss(model.fuse(tokens.with_present(present)), target, model.spec.task)))
    return tokens.modalities[max(range(len(losses)), key=losses.__getitem__)]


@register_method("perturb")
class PerturbationTraining(SupervisedMethod):
    """Supervised training where one modality is dropped for p and noised for another p of every batch."""

    def __init__(
        self,
        fusion: str = "transformer",
        dim: int = 64,
        modality: str = "dominant",
        proportion: float = 0.15,
        sigma: float = 1.0,
        noise: NoiseMode = "additive",
        stage: CorruptionStage = "token",
        modalities: str | Sequence[str] | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(fusion, dim, modalities, label_smoothing)
        self.modality = modality
        self.proportion = proportion
        self.sigma = sigma
        self.noise = noise
        self.stage = stage
        Perturbation(modality, proportion, sigma, stage, noise)  # bad numbers fail now, not mid-training

    def build(self, spec: DataSpec) -> None:
        choices = (*spec.modality_names, "dominant", "random")
        if self.modality not in choices:
            raise unknown_name("perturb modality", self.modality, choices)
        super().build(spec)

    def loss(self, batch: Batch, generator: torch.Generator) -> Tensor:
        model = self.fitted_model
        tokens = model.encode(batch) if self.stage == "token" else None
        modality = self.pick_modality(model, batch, tokens, generator)
        perturbation = Perturbation(modality, self.proportion, self.sigma, self.stage, self.noise)
        if tokens is not None:
            output = model.fuse(perturbation(tokens, generator))
        else:
            output = model(perturbation(batch, generator))
        return task_loss(output, batch.target, model.spec.task, self.label_smoothing)

    def pick_modality(
        self, model: MultimodalModel, batch: Batch, tokens: Tokens | None, generator: torch.Generator
    ) -> str:
        if self.modality == "random":
            return model.modalities[int(torch.randint(len(model.modalities), (1,), generator=generator))]
        if self.modality != "dominant":
            return self.modality
        if tokens is None:  # input stage: one extra, gradient-free encoding to judge dominance
            with torch.no_grad():
                tokens = model.encode(batch)
        return dominant_modality(model, tokens, batch.target)
