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
   plus slot positions again -> transformer -> drop the memory positions -> Linear: per slot
   a normalised token n̂_m and the two numbers the normalisation removes, μ̂_m and log σ̂_m;
   the reconstruction is f̂_m = μ̂_m + σ̂_m · n̂_m, on the scale of the token it replaces;
4. fusion input: the original f_m where kept, f̂_m where not (the paper's semantics; the
   released code fed decoder outputs for all slots);
5. loss = λ_cls · CE_{smoothing 0.1}(fusion) + λ_rec · L_rec, with L_rec the mean over
   dropped-but-present slots of (1/D)·||n̂ − f̃||² + (μ̂ − μ)² + (log σ̂ − log σ)², where
   μ = mean_D f, σ = sqrt(var_D f + 1e-6) and f̃ = (f − μ) / σ (the paper's per-token normalised
   target, not detached). The paper reconstructs f̃ alone and fuses it beside raw tokens, on
   another scale; the two statistics put it back on the token's (`normalize_target=False`
   instead reconstructs f itself).

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


def token_std(z: Tensor) -> Tensor:
    """Each token's standard deviation over its channels (B, N), as the normalisation uses it."""
    return torch.sqrt(z.var(dim=-1, unbiased=False) + 1e-6)


def denormalise(prediction: Tensor) -> Tensor:
    """[n̂, μ̂, log σ̂] (..., D + 2) -> the token μ̂ + σ̂ · n̂ (..., D): undoes `normalised_target`."""
    normalised, mean, log_std = prediction.split([prediction.shape[-1] - 2, 1, 1], dim=-1)
    return mean + log_std.exp() * normalised


def normalised_target(z: Tensor) -> Tensor:
    """MAE's per-token normalisation over channels (no affine), the reconstruction target."""
    return (z - z.mean(dim=-1, keepdim=True)) / token_std(z)[..., None]


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
        with_statistics: bool = True,
    ) -> None:
        super().__init__()
        self.n_memory, self.with_statistics = n_memory, with_statistics
        self.memory = nn.Parameter(torch.randn(1, n_memory, dim) * 0.02)
        self.mask_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        positions = sinusoidal_positions(n_slots, dim) if position_embedding else torch.zeros(n_slots, dim)
        self.register_buffer("slot_position", positions[None], persistent=False)  # (1, N, D)
        self.encoder = nn.ModuleList(Block(dim, heads, dropout=0.0) for _ in range(layers))
        self.decoder = nn.ModuleList(Block(dim, heads, dropout=0.0) for _ in range(layers))
        self.encoder_norm, self.decoder_norm = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.predict = nn.Linear(dim, dim + 2 if with_statistics else dim)

    def reconstruct(self, z: Tensor, kept: Tensor) -> tuple[Tensor, Tensor]:
        """The reconstructions on the tokens' scale (B, N, D) and the raw predictions the loss reads."""
        prediction = self(z, kept)
        return (denormalise(prediction) if self.with_statistics else prediction), prediction

    def forward(self, z: Tensor, kept: Tensor) -> Tensor:
        """z (B, N, D), kept (B, N) bool -> predictions (B, N, D or D + 2); z is never read where not kept."""
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
        """Originals where present, reconstructions elsewhere, and the autoencoder's raw predictions
        (None if nothing was missing)."""
        if bool(tokens.present.all()):
            return tokens, None
        reconstruction, prediction = self.autoencoder.reconstruct(tokens.z, tokens.present)
        z = torch.where(tokens.present[..., None], tokens.z, reconstruction)
        return Tokens(z, torch.ones_like(tokens.present), tokens.modalities), prediction

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
            len(spec.modalities),
            self.dim,
            self.n_memory,
            self.layers,
            position_embedding=self.position_embedding,
            with_statistics=self.normalize_target,
        )
        self.model = ActionMAEModel(spec, self.fusion, self.dim, autoencoder)

    @property
    def actionmae_model(self) -> ActionMAEModel:
        return self.fitted_as(ActionMAEModel)

    def loss(self, batch: Batch, generator: torch.Generator) -> Tensor:
        model = self.actionmae_model
        tokens = model.encode(batch)  # every present modality is encoded; dropping is token-level
        kept = tokens.present & ~sample_drop(tokens.present, generator)
        completed, prediction = model.complete(tokens.with_present(kept))
        output = model.fuse(completed)
        loss = self.lambda_cls * task_loss(output, batch.target, model.spec.task, self.label_smoothing)
        dropped = tokens.present & ~kept  # slots with an original to reconstruct
        if prediction is not None and bool(dropped.any()):
            loss = loss + self.lambda_rec * self.reconstruction_loss(prediction, tokens.z, dropped)
        return loss

    def reconstruction_loss(self, prediction: Tensor, z: Tensor, dropped: Tensor) -> Tensor:
        """Squared errors over the dropped slots only (the target keeps its gradient): of the
        normalised token and its two statistics, or of the token itself."""
        if not self.normalize_target:
            return F.mse_loss(prediction, z, reduction="none").mean(dim=-1)[dropped].mean()
        normalised, mean, log_std = prediction.split([z.shape[-1], 1, 1], dim=-1)
        per_slot = (
            F.mse_loss(normalised, normalised_target(z), reduction="none").mean(dim=-1)
            + (mean[..., 0] - z.mean(dim=-1)).square()
            + (log_std[..., 0] - token_std(z).log()).square()
        )  # (B, N)
        return per_slot[dropped].mean()
