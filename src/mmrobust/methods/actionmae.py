"""ActionMAE (Woo et al., "Towards Good Practices for Missing Modality Robust Action Recognition",
AAAI 2023, arXiv 2211.13916; code github.com/sangminwoo/ActionMAE): a masked autoencoder over modality
tokens, between the encoders and the fusion, so that one model handles every subset of modalities.

With N modality tokens f_1..f_N (one per encoder, `Tokens.z`), training does, per batch:

1. draw K ~ U{0, ..., N-1} (one K per batch, re-drawn every step) and, per sample, a
   uniformly random set of K slots to drop; kept = present and not dropped;
2. encoder: pre-norm transformer over [m_1..m_P, f_kept] (P learnable memory tokens, zero
   position; each kept token plus the fixed sinusoidal embedding of its slot index);
3. decoder: [encoder outputs at the memory positions; encoder outputs at kept slots, a
   learnable mask token at every other slot, *scattered by slot index* so any subset works],
   plus slot positions again -> transformer -> drop the memory positions -> Linear:
   reconstructions f̂_1..f̂_N;
4. fusion input: the original f_m where kept, f̂_m where not (the paper's semantics; the
   released code fed decoder outputs for all slots);
5. loss = λ_cls · CE_{smoothing 0.1}(fusion) + λ_rec · L_rec, with
   L_rec = mean over dropped-but-present slots of (1/D)·||f̂ − f̃||², where
   f̃ = (f − mean_D f) / sqrt(var_D f + 1e-6) (per-token normalised target, not detached).

At inference only the available modalities are encoded, the missing slots are reconstructed
the same way (K = however many are missing), and the fusion sees N tokens. The released
code's slot-order and K = 0 bugs do not apply here by construction.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.batch import Batch
from ..data.dataset import DataSpec
from ..data.tokens import Tokens
from ..models.attention import Block
from ..models.model import MultimodalModel
from .base import EVERY_TASK, Method, MethodTags, register_method
from .losses import task_loss


def sinusoidal_positions(n: int, dim: int) -> Tensor:
    """Fixed 1-D sin/cos embedding of positions 1..n (temperature 10000): (n, dim)."""
    position = torch.arange(1, n + 1, dtype=torch.float32)[:, None]  # (n, 1)
    omega = 1.0 / 10000 ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)  # (ceil(dim/2),)
    angle = position * omega  # (n, ceil(dim/2))
    return torch.stack([angle.sin(), angle.cos()], dim=-1).flatten(1)[:, :dim]  # interleaved sin, cos


def sample_drop(present: Tensor, generator: torch.Generator) -> Tensor:
    """Per batch one K ~ U{0..N-1}; per sample a uniformly random K-subset of the N slots: (B, N) bool."""
    batch, n = present.shape
    k = int(torch.randint(0, n, (1,), generator=generator))
    rank = torch.rand(batch, n, generator=generator).argsort(dim=1).argsort(dim=1)  # a random permutation per row
    return (rank < k).to(present.device)


def normalised_target(z: Tensor) -> Tensor:
    """MAE's per-token normalisation over channels (no affine), the reconstruction target."""
    return (z - z.mean(dim=-1, keepdim=True)) / torch.sqrt(z.var(dim=-1, keepdim=True, unbiased=False) + 1e-6)


class TokenAutoencoder(nn.Module):
    """ActionMAE's module: reconstruct every slot from the kept ones (and P memory tokens)."""

    slot_position: Tensor  # (1, N, D) buffer, zeros when position embeddings are off

    def __init__(
        self,
        n_slots: int,
        dim: int,
        n_memory: int = 1,
        layers: int = 2,
        heads: int = 4,
        position_embedding: bool = True,
    ) -> None:
        super().__init__()
        self.n_memory = n_memory
        self.memory = nn.Parameter(torch.randn(1, n_memory, dim) * 0.02)
        self.mask_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        positions = sinusoidal_positions(n_slots, dim) if position_embedding else torch.zeros(n_slots, dim)
        self.register_buffer("slot_position", positions[None], persistent=False)  # (1, N, D)
        self.encoder = nn.ModuleList(Block(dim, heads, dropout=0.0) for _ in range(layers))
        self.decoder = nn.ModuleList(Block(dim, heads, dropout=0.0) for _ in range(layers))
        self.encoder_norm, self.decoder_norm = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.predict = nn.Linear(dim, dim)

    def forward(self, z: Tensor, kept: Tensor) -> Tensor:
        """z (B, N, D), kept (B, N) bool -> reconstructions (B, N, D); z is never read where not kept."""
        batch, p = len(z), self.n_memory
        memory = self.memory.expand(batch, -1, -1)  # (B, P, D)
        h = torch.cat([memory, z.masked_fill(~kept[..., None], 0.0) + self.slot_position], dim=1)  # (B, P+N, D)
        ignore = torch.cat([kept.new_zeros(batch, p), ~kept], dim=1)  # (B, P+N): dropped slots are not keys
        ignore &= ~ignore.all(dim=1, keepdim=True)  # no memory and nothing kept: attend to the (zeroed) slots
        for block in self.encoder:
            h = block(h, ignore)
        h = self.encoder_norm(h)
        slots = torch.where(kept[..., None], h[:, p:], self.mask_token) + self.slot_position  # scatter by slot
        h = torch.cat([h[:, :p], slots], dim=1)
        for block in self.decoder:
            h = block(h)
        return self.predict(self.decoder_norm(h[:, p:]))  # memory positions are never predicted


class ActionMAEModel(MultimodalModel):
    """Encoders -> token autoencoder (fills the missing slots) -> fusion over all N slots."""

    def __init__(self, spec: DataSpec, fusion: str, dim: int, autoencoder: TokenAutoencoder) -> None:
        super().__init__(spec, fusion=fusion, dim=dim)
        self.autoencoder = autoencoder

    def complete(self, tokens: Tokens) -> tuple[Tokens, Tensor | None]:
        """Originals where present, reconstructions elsewhere (None if nothing was missing)."""
        if bool(tokens.present.all()):
            return tokens, None
        reconstruction = self.autoencoder(tokens.z, tokens.present)
        z = torch.where(tokens.present[..., None], tokens.z, reconstruction)
        return Tokens(z, torch.ones_like(tokens.present), tokens.modalities), reconstruction

    def fuse(self, tokens: Tokens) -> Tensor:
        return super().fuse(self.complete(tokens)[0])


@register_method("actionmae")
class ActionMAE(Method):
    """ActionMAE with the paper's ablation switches: `n_memory` (0 = no memory token),
    `position_embedding`, the loss weights and the fusion (sum / concat / transformer / late)."""

    tags = MethodTags(tasks=EVERY_TASK, needs_complete_training_data=False, per_sample_masks=True)

    def __init__(
        self,
        fusion: str = "transformer",
        dim: int = 64,
        n_memory: int = 1,
        position_embedding: bool = True,
        lambda_cls: float = 1.0,
        lambda_rec: float = 1.0,
        normalize_target: bool = True,
        label_smoothing: float = 0.1,
        layers: int = 2,
    ) -> None:
        self.fusion = fusion
        self.dim = dim
        self.n_memory = n_memory
        self.position_embedding = position_embedding
        self.lambda_cls = lambda_cls
        self.lambda_rec = lambda_rec
        self.normalize_target = normalize_target
        self.label_smoothing = label_smoothing
        self.layers = layers

    def build(self, spec: DataSpec) -> None:
        self.check_task(spec)
        autoencoder = TokenAutoencoder(
            len(spec.modalities), self.dim, self.n_memory, self.layers, position_embedding=self.position_embedding
        )
        self.model = ActionMAEModel(spec, self.fusion, self.dim, autoencoder)

    @property
    def actionmae_model(self) -> ActionMAEModel:
        return self.fitted_as(ActionMAEModel)

    def loss(self, batch: Batch, generator: torch.Generator) -> Tensor:
        model = self.actionmae_model
        tokens = model.encode(batch)  # every present modality is encoded; dropping is token-level
        kept = tokens.present & ~sample_drop(tokens.present, generator)
        completed, reconstruction = model.complete(tokens.with_present(kept))
        output = model.fuse(completed)
        loss = self.lambda_cls * task_loss(output, batch.target, model.spec.task, self.label_smoothing)
        dropped = tokens.present & ~kept  # slots with an original to reconstruct
        if reconstruction is not None and bool(dropped.any()):
            loss = loss + self.lambda_rec * self.reconstruction_loss(reconstruction, tokens.z, dropped)
        return loss

    def reconstruction_loss(self, reconstruction: Tensor, z: Tensor, dropped: Tensor) -> Tensor:
        """Mean squared error over the dropped slots only (the target keeps its gradient)."""
        target = normalised_target(z) if self.normalize_target else z
        per_slot = F.mse_loss(reconstruction, target, reduction="none").mean(dim=-1)  # (B, N)
        return per_slot[dropped].mean()
