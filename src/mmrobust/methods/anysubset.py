"""`anysubset`: one model meant to serve every modality subset as well as a model trained for it.

Each known method gives something up: a jointly trained model is strong on the full set and weak on
single modalities (the encoders lean on each other), modality dropout trades full-set accuracy for
robustness, and the uni-modal ensemble (UME) is near the single-modality specialists but misses the
cross-modal gain. This method keeps both kinds of model and teaches one with the other:

1. members (as `ume`)        per modality m, E_m + head h_m trained *alone* (the singleton
                             specialists, same stages and `reuse_key` as `ume`, so runs share them).
2. student                   its own encoders E'_m (started from the members' E_m, as `mma`) and a
                             `fusion` (default transformer), trained under modality dropout over
                             subsets (`RandomDrop` by default: K ~ U{0..M-1} modalities dropped per
                             sample) with the task loss plus a distillation term toward the members'
                             ensemble *on the same subset S* (teacher T_S = mean of h_m(E_m) over
                             m ∈ S, members frozen and in eval mode):
                                 ℓ = task(s_S, y) + distill · τ² KL(softmax(T_S/τ) ‖ softmax(s_S/τ))
                             (regression: + distill · |s_S − T_S|).
3. prediction                a blend on every subset S of the student and the members' ensemble:
                                 ŷ_S = (1 − blend) · log_softmax(s_S) + blend · log_softmax(T_S)
                             (a weighted geometric mean of the two predictive distributions;
                             regression: the weighted mean). `blend=0` is the student alone.

The ensemble keeps the specialists' single-modality behaviour, the distillation pulls the student
toward it on every subset while the task loss and the cross-modal fusion keep what joint training
gains; the blend hedges the two per sample. The tokens carry both encoders' outputs side by side
((B, M, 2D): student | members), so the audit still encodes once and fuses under every mask, and a
corruption on the tokens touches what both models see.

    create_method("anysubset", fusion="transformer", distill=1.0, blend=0.5)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..corruption import Corruption, RandomDrop, as_corruption, encode_corrupted
from ..data.batch import Batch
from ..data.dataset import DataSpec
from ..data.tokens import Tokens
from ..errors import MMRobustError
from ..models.model import encode_present
from .base import Stage, register_method
from .losses import task_loss
from .ume import AdaptedModel, Combine, MissingModalityAdaptation, Readout, UniModalEnsemble


class BlendedModel(AdaptedModel):
    """The student (MMA's adapted model) and the members side by side; `blend` mixes their outputs."""

    def __init__(self, spec: DataSpec, fusion: str, dim: int, ensemble: UniModalEnsemble, blend: float) -> None:
        super().__init__(spec, fusion, dim, ensemble, choice=1)
        self.blend = blend

    def encode(self, batch: Batch) -> Tokens:
        if self._adapted_only:
            return super().encode(batch)
        self.check_batch(batch)
        present = batch.present & self.use_mask
        both = encode_present(batch, present, self.encode_modality, 2 * self.dim)  # (B, M, 2D)
        return Tokens(both, present, self.modalities)

    def encode_modality(self, modality: str, x: Tensor) -> Tensor:
        """(n, 2D): the student's token | the member's token (the student's alone within `adapted_only`)."""
        student = super().encode_modality(modality, x)  # (n, D)
        if self._adapted_only:
            return student
        return torch.cat([student, self.ensemble.encode_modality(modality, x)], dim=-1)

    def fuse(self, tokens: Tokens) -> Tensor:
        if self._adapted_only:
            return super().fuse(tokens)
        student, members = tokens.z.split(self.dim, dim=-1)  # (B, M, D) each
        s = super().fuse(Tokens(student, tokens.present, tokens.modalities))
        t = self.ensemble.fuse(Tokens(members, tokens.present, tokens.modalities))
        return blend_outputs(s, t, self.blend, self.spec.task)


def blend_outputs(student: Tensor, teacher: Tensor, blend: float, task: str) -> Tensor:
    """(1 − blend)·student + blend·teacher, as log-probabilities for classification."""
    if task == "classification":
        student, teacher = student.log_softmax(dim=-1), teacher.log_softmax(dim=-1)
    return (1 - blend) * student + blend * teacher


def distillation(student: Tensor, teacher: Tensor, temperature: float, task: str) -> Tensor:
    """τ² KL(softmax(teacher/τ) ‖ softmax(student/τ)), mean over the batch; L1 for regression."""
    if task != "classification":
        return F.l1_loss(student, teacher)
    log_s, log_t = (student / temperature).log_softmax(dim=-1), (teacher / temperature).log_softmax(dim=-1)
    return temperature**2 * F.kl_div(log_s, log_t, log_target=True, reduction="batchmean")


@register_method("anysubset")
class AnySubset(MissingModalityAdaptation):
    """Members (stage 1, shared with `ume`), then a student distilled per subset from them (stage 2);
    predictions blend the two on every subset."""

    def __init__(
        self,
        fusion: str = "transformer",
        dim: int = 64,
        corruption: Corruption | Mapping[str, Any] | None = None,
        distill: float = 1.0,
        temperature: float = 2.0,
        blend: float = 0.5,
        combine: Combine = "logits",
        label_smoothing: float = 0.0,
        readout: Readout = "linear",
    ) -> None:
        super().__init__(fusion, dim, 0.0, corruption, combine, label_smoothing, readout)
        self.distill = distill
        self.temperature = temperature
        self.blend = blend

    def build(self, spec: DataSpec) -> None:
        self._check(spec)
        problems = [
            (self.distill < 0, f"distill must be >= 0, got {self.distill}"),
            (self.temperature <= 0, f"temperature must be > 0, got {self.temperature}"),
            (not 0 <= self.blend <= 1, f"blend must be in [0, 1], got {self.blend}"),
        ]
        for bad, message in problems:
            if bad:
                raise MMRobustError(f"anysubset: {message}")
        ensemble = UniModalEnsemble(spec, self.dim, self.combine, self.readouts(spec))
        self.model = BlendedModel(spec, self.fusion, self.dim, ensemble, self.blend)

    @property
    def train_corruption(self) -> Corruption:
        return RandomDrop() if self.corruption is None else as_corruption(self.corruption)

    def loss(self, batch: Batch, generator: torch.Generator) -> Tensor:
        model = self.adapted_model
        if not bool(model.initialised):  # first step of the stage (a resumed run has it in its weights)
            self.start_adaptation()
        with model.adapted_only():
            tokens = encode_corrupted(model.encode, batch, self.train_corruption, generator)
            student = model.fuse(tokens)
        loss = task_loss(student, batch.target, model.spec.task, self.label_smoothing)
        if self.distill == 0:
            return loss
        members = model.ensemble
        members.eval()  # the teacher without dropout
        with torch.no_grad():
            teacher = members(batch.with_present(tokens.present))  # the same subset S per sample
        return loss + self.distill * distillation(student, teacher, self.temperature, model.spec.task)

    def stages(self, seed: int) -> Sequence[Stage]:
        model = self.adapted_model
        return (*self.member_stages(), Stage("student", self.loss, model.adapted()))
