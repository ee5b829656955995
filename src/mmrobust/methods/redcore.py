"""RedCore (Sun et al., AAAI 2024, arXiv 2312.10386; code github.com/sunjunaimer/RedCore, read at
b2c6a2d3): variational cross-modal representations for missing modalities, whose reconstruction
supervision is re-weighted by each modality's *relative advantage*.

Per sample, K_m: modality m is observed in training, i.e. present in the data and not removed by
the training-time drop (`corruption`, default `RandomDrop`), which acts before encoding as in the
released code: a dropped modality is never encoded, so it is no reconstruction or KL target;
f_m = Tokens.z[:, m] (B, D). At prediction K = P = the given mask.

1. VIB heads     [μ_m, log σ²_m] = W_m f_m + b_m;  c_m = μ_m + σ_m ⊙ ε, ε ~ N(0, I) in training,
                 c_m = μ_m at evaluation (`sample_at_eval=True` samples there too, as the code does);
2. predictors    ĉ_m = G_m([c̃_k]_{k≠m}),  c̃_k = c_k if K_k else e_k (a learned filler per modality);
                 G_m: `predictor_blocks` residual blocks x ← x + Dec(Enc(x)) (Enc: `predictor_layers`,
                 LeakyReLU; Dec: mirrored, ReLU), then Linear–ReLU–Linear to D;
3. completion    r_m = c_m if K_m else ĉ_m;
4. heads         ŷ = Fusion(r_1..r_M) with every slot present (any registered fusion);
                 ŷ_m = C_m(r_m), per-modality MLP heads (`classifier_hidden`, ReLU, dropout);
5. loss          L = ℓ(ŷ, y) + λ_uni Σ_m ℓ(ŷ_m, y) + L_KL + γ Σ_m β_m ℓ_m,   ℓ = CE, or L1 for regression,
                 L_KL = λ_KL (1/B) Σ_i Σ_m K_{m,i} · [−Σ_j (1 + log σ²_{m,ij} − μ²_{m,ij} − σ²_{m,ij})],
                 ℓ_m  = (1/n_m) Σ_i K_{m,i} ‖ĉ_{m,i} − c_{m,i}‖²,  n_m = Σ_i K_{m,i}  (ℓ_m = 0 if n_m = 0),
                 no side detached; every sample counts in the task terms, all-missing ones included;
6. weights β     at training step s = 0, 1, ... (before the loss of that step, as the code does):
                 ℓ̄_m ← (1 − κ) ℓ̄_m + κ ℓ_m   only if n_m > 0  (ℓ̄ starts at 0; t_m counts these updates),
                 ℓ̂_m = ℓ̄_m / (1 − (1 − κ)^{t_m}),
                 ρ_m = (ℓ̂_avg − ℓ̂_m) / ℓ̂_avg,  ℓ̂_avg = mean of ℓ̂ over {m : t_m > 0}  (ρ_m = 0 where t_m = 0),
                 η_s = min(η · g^{⌊s/S⌋ + 1}, 1e15)  (the code's modulo check also multiplies at s = 0),
                 if s mod I = 0:  β ← max(β − η_s ρ, β_min),  β ← β / ‖β‖₂;     β starts at β_0 · 1.
                 ρ_m > 0: m is predicted from the others better than average ("advantaged"): β_m falls.

Defaults are the released IEMOCAP values: λ_KL = 8e-4 (the code omits KL's ½), γ = 0.15, κ = 0.7,
η = 0.1, g = 1.5, S = 500, I = 3, β_min = 0.1, β_0 = 1, λ_uni = 1, predictor layers (256, 128, 64)
x 5 blocks, heads (128, 128) with dropout 0.5. ℓ̄, t, β and s are buffers of the model, so
checkpoints and resumed runs carry them; they move only when `loss` runs in training mode.

Where this differs from the released code:
- absent modalities are never encoded (docs/architecture.md, invariant 1); the code runs its encoder on
  zero-filled input, i.e. feeds the predictors a constant per modality, which the learned filler e_k stands in for;
- guards: n_m = 0 gives ℓ_m = 0 and leaves ℓ̄_m alone (the code divides 0/0 = NaN); a modality never
  observed is left out of ρ (its ℓ̄ = 0 would read as "perfectly predicted"), and ℓ̂ undoes the
  EMA's zero start so a modality first seen late is comparable. ρ is scale-invariant, so ℓ̂ gives
  the code's ρ exactly whenever every modality has been observed equally often;
- the toolkit's encoders (ending in LayerNorm, hence no sigmoid before the VIB head) and any
  fusion replace the 3-block transformers and the concat MLP head; `fit` has no per-network
  gradient clipping (the code clips at 1.0).

    mmrobust train --data mosi --method redcore --fusion concat --out runs/redcore
    create_method("redcore", corruption={"type": "MissingRates", "rates": {"audio": 0.2, "video": 0.5,
                  "text": 0.8}, "if_all_missing": "allow"})   # the paper's imbalanced training rates
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from ..corruption import Corruption, RandomDrop, as_corruption, encode_corrupted
from ..data.batch import Batch
from ..data.dataset import DataSpec
from ..data.tokens import Tokens
from ..errors import MMRobustError
from ..models.layers import BatchedLinear, mlp
from ..models.model import MultimodalModel
from .base import EVERY_TASK, Method, MethodTags, register_method
from .losses import task_loss


def batched_mlp(n: int, sizes: Sequence[int], activation: type[nn.Module], dropout: float = 0.0) -> nn.Sequential:
    """M independent MLPs in one (`BatchedLinear` layers; a Dropout only where `dropout` > 0)."""
    return mlp(sizes, activation, dropout or None, partial(BatchedLinear, n))


class CrossModalPredictors(nn.Module):
    """G_1..G_M (the code's `ResidualXE`), all in one pass: the codes of the others -> ĉ (B, M, D)."""

    others: Tensor  # (M, M-1) long buffer: the slots each predictor reads

    def __init__(self, n: int, dim: int, layers: Sequence[int], blocks: int) -> None:
        super().__init__()
        fan_in = (n - 1) * dim
        others = [[k for k in range(n) if k != m] for m in range(n)]
        self.register_buffer("others", torch.tensor(others, dtype=torch.long).view(n, n - 1), persistent=False)
        self.encoders = nn.ModuleList(batched_mlp(n, (fan_in, *layers), nn.LeakyReLU) for _ in range(blocks))
        self.decoders = nn.ModuleList(batched_mlp(n, (*layers[::-1], fan_in), nn.ReLU) for _ in range(blocks))
        self.transition = batched_mlp(n, (fan_in, fan_in, dim), nn.ReLU)

    def forward(self, codes: Tensor) -> Tensor:
        """codes (B, M, D), every slot valid (fillers already in) -> predictions (B, M, D)."""
        x = codes[:, self.others].flatten(2)  # (B, M, M-1, D) -> (B, M, (M-1)·D)
        out = torch.zeros_like(x)
        for encoder, decoder in zip(self.encoders, self.decoders, strict=True):
            x = x + out
            out = decoder(encoder(x))
        return self.transition(x + out)


ETA_MAX = 1e15  # reached after ~45k steps at the defaults, where every β update is long saturated


class RelativeAdvantage(nn.Module):
    """The supervision weights β and the state they evolve from (step 6 of the module docstring), all in buffers."""

    ema: Tensor  # (M,) ℓ̄, the EMA of the per-modality reconstruction losses
    updates: Tensor  # (M,) long, t: how many batches updated each ℓ̄_m
    beta: Tensor  # (M,) β, the supervision weights
    step: Tensor  # () long, s: training steps so far

    def __init__(
        self, n: int, kappa: float, eta: float, eta_growth: float, eta_every: int, every: int, floor: float, init: float
    ) -> None:
        super().__init__()
        self.kappa, self.eta, self.eta_growth, self.eta_every = kappa, eta, eta_growth, eta_every
        self.every, self.floor = every, floor
        self.register_buffer("ema", torch.zeros(n))
        self.register_buffer("updates", torch.zeros(n, dtype=torch.long))
        self.register_buffer("beta", torch.full((n,), float(init)))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def advantage(self) -> Tensor:
        """ρ (M,): 0 for modalities never observed, and all 0 while nothing has been."""
        seen = self.updates > 0
        bias = 1 - (1 - self.kappa) ** self.updates.to(self.ema.dtype)  # 0 where never updated
        debiased = (self.ema / bias.clamp_min(1e-12)).masked_fill(~seen, 0.0)
        average = debiased.sum() / seen.sum().clamp_min(1)
        rho = (average - debiased) / average.clamp_min(torch.finfo(debiased.dtype).tiny)
        return torch.where(seen & (average > 0), rho, torch.zeros_like(rho))

    @torch.no_grad()
    def update(self, losses: Tensor, observed: Tensor) -> None:
        """One training step: losses ℓ (M,) (ignored where `observed` (M,) is False)."""
        blended = (1 - self.kappa) * self.ema + self.kappa * losses.detach().to(self.ema)
        self.ema.copy_(torch.where(observed, blended, self.ema))
        self.updates += observed.long()
        eta = self.eta * self.eta_growth ** (self.step // self.eta_every + 1).to(self.beta.dtype)
        eta = eta.clamp(max=ETA_MAX)  # finite forever (the code's float overflows after ~875k steps)
        beta = (self.beta - eta * self.advantage()).clamp_min(self.floor)
        beta = beta / torch.linalg.vector_norm(beta)
        self.beta.copy_(torch.where(self.step % self.every == 0, beta, self.beta))
        self.step += 1


def kl_divergence(mu: Tensor, logvar: Tensor, present: Tensor) -> Tensor:
    """(1/B) Σ_i Σ_m P_{m,i} · −Σ_j (1 + log σ² − μ² − σ²): the code's 2·KL, present slots only."""
    absent = ~present[..., None]
    mu, logvar = mu.masked_fill(absent, 0.0), logvar.masked_fill(absent, 0.0)  # N(0, I): adds exactly 0
    return -(1 + logvar - mu.square() - logvar.exp()).sum() / len(present)


def reconstruction_losses(prediction: Tensor, code: Tensor, present: Tensor) -> Tensor:
    """ℓ_m (M,): summed squared error per sample, averaged over the samples where m is present (0 if none)."""
    error = (prediction - code).masked_fill(~present[..., None], 0.0)  # (B, M, D), no gradient where absent
    return error.square().sum(dim=(0, 2)) / present.sum(dim=0).clamp_min(1)  # (M,)


class RedCoreModel(MultimodalModel):
    """Encoders -> VIB heads -> cross-modal completion of the missing codes -> fusion over all M slots."""

    def __init__(
        self,
        spec: DataSpec,
        fusion: str,
        dim: int,
        predictors: CrossModalPredictors,
        advantage: RelativeAdvantage,
        classifier_hidden: Sequence[int],
        classifier_dropout: float,
        sample_at_eval: bool,
    ) -> None:
        super().__init__(spec, fusion=fusion, dim=dim)
        n = len(spec.modalities)
        self.vib = BatchedLinear(n, dim, 2 * dim)
        self.filler = nn.Parameter(torch.zeros(n, dim))
        self.predictors = predictors
        self.unimodal_heads = batched_mlp(n, (dim, *classifier_hidden, spec.num_classes), nn.ReLU, classifier_dropout)
        self.advantage = advantage
        self.sample_at_eval = sample_at_eval

    def posterior(self, z: Tensor, present: Tensor) -> tuple[Tensor, Tensor]:
        """μ, log σ² (B, M, D) each; absent tokens are never read (their rows come from zeros)."""
        mu, logvar = self.vib(z.masked_fill(~present[..., None], 0.0)).chunk(2, dim=-1)
        return mu, logvar

    def sample(self, mu: Tensor, logvar: Tensor) -> Tensor:
        if self.training or self.sample_at_eval:
            return mu + (0.5 * logvar).exp() * torch.randn_like(mu)
        return mu

    def cross_predict(self, code: Tensor, available: Tensor) -> Tensor:
        """ĉ (B, M, D) from the available codes only (a learned filler stands in for the others)."""
        return self.predictors(torch.where(available[..., None], code, self.filler))

    def classify(self, completed: Tensor) -> Tensor:
        """The fused prediction from completed codes r (B, M, D): every slot is present."""
        present = torch.ones(completed.shape[:2], dtype=torch.bool, device=completed.device)
        return super().fuse(Tokens(completed, present, self.modalities))

    def fuse(self, tokens: Tokens) -> Tensor:
        present = tokens.present & self.use_mask
        code = self.sample(*self.posterior(tokens.z, present))
        if bool(present.all()):  # nothing to complete: the predictors are skipped
            return self.classify(code)
        return self.classify(torch.where(present[..., None], code, self.cross_predict(code, present)))


@register_method("redcore")
class RedCore(Method):
    """RedCore with every constant of the paper's code as a parameter (names as in the module docstring);
    `corruption` is the training-time drop (default `RandomDrop`; the paper trains under fixed
    imbalanced `MissingRates` with `if_all_missing="allow"`), applied before encoding."""

    tags = MethodTags(tasks=EVERY_TASK, needs_complete_training_data=False, per_sample_masks=True)

    def __init__(
        self,
        fusion: str = "transformer",
        dim: int = 64,
        corruption: Corruption | Mapping[str, Any] | None = None,
        lambda_kl: float = 8e-4,
        gamma: float = 0.15,
        lambda_unimodal: float = 1.0,
        ema: float = 0.7,
        eta: float = 0.1,
        eta_growth: float = 1.5,
        eta_every: int = 500,
        update_every: int = 3,
        beta_floor: float = 0.1,
        beta_init: float = 1.0,
        predictor_layers: Sequence[int] = (256, 128, 64),
        predictor_blocks: int = 5,
        classifier_hidden: Sequence[int] = (128, 128),
        classifier_dropout: float = 0.5,
        sample_at_eval: bool = False,
        label_smoothing: float = 0.0,
    ) -> None:
        self.fusion = fusion
        self.dim = dim
        self.corruption = corruption
        self.lambda_kl = lambda_kl
        self.gamma = gamma
        self.lambda_unimodal = lambda_unimodal
        self.ema = ema
        self.eta = eta
        self.eta_growth = eta_growth
        self.eta_every = eta_every
        self.update_every = update_every
        self.beta_floor = beta_floor
        self.beta_init = beta_init
        self.predictor_layers = list(predictor_layers)
        self.predictor_blocks = predictor_blocks
        self.classifier_hidden = list(classifier_hidden)
        self.classifier_dropout = classifier_dropout
        self.sample_at_eval = sample_at_eval
        self.label_smoothing = label_smoothing

    @property
    def train_corruption(self) -> Corruption:
        return RandomDrop() if self.corruption is None else as_corruption(self.corruption)

    def build(self, spec: DataSpec) -> None:
        self.check_task(spec)
        self.check_params(spec)
        n = len(spec.modalities)
        predictors = CrossModalPredictors(n, self.dim, self.predictor_layers, self.predictor_blocks)
        advantage = RelativeAdvantage(
            n, self.ema, self.eta, self.eta_growth, self.eta_every, self.update_every, self.beta_floor, self.beta_init
        )
        self.model = RedCoreModel(
            spec, self.fusion, self.dim, predictors, advantage,
            self.classifier_hidden, self.classifier_dropout, self.sample_at_eval,
        )  # fmt: skip

    def check_params(self, spec: DataSpec) -> None:
        problems = [
            (not 0 < self.ema <= 1, f"ema must be in (0, 1], got {self.ema}"),
            (self.update_every < 1 or self.eta_every < 1, "update_every and eta_every must be >= 1"),
            (self.beta_floor < 0 or self.beta_init <= 0, "beta_floor must be >= 0 and beta_init > 0"),
            (not self.predictor_layers or self.predictor_blocks < 0, "predictor_layers must be non-empty, blocks >= 0"),
        ]
        for bad, message in problems:
            if bad:
                raise MMRobustError(f"redcore: {message}")
        self.train_corruption.to_dict()  # a malformed corruption fails now, not mid-training

    @property
    def redcore_model(self) -> RedCoreModel:
        return self.fitted_as(RedCoreModel)

    def loss(self, batch: Batch, generator: torch.Generator) -> Tensor:
        model = self.redcore_model
        tokens = encode_corrupted(model.encode, batch, self.train_corruption, generator)
        kept = tokens.present  # K: all the loss may read; a dropped modality is unobserved, as in the code
        mu, logvar = model.posterior(tokens.z, kept)
        code = model.sample(mu, logvar)  # (B, M, D)
        prediction = model.cross_predict(code, kept)  # (B, M, D)
        completed = torch.where(kept[..., None], code, prediction)
        task = model.spec.task
        unimodal = model.unimodal_heads(completed)  # (B, M, C)
        unimodal = unimodal.squeeze(-1) if task == "regression" else unimodal
        targets = batch.target[:, None].expand(-1, len(model.modalities))  # (B, M)
        losses = reconstruction_losses(prediction, code, kept)  # (M,)
        if model.training:  # β is updated before this step's loss uses it, as in the released code
            model.advantage.update(losses, observed=kept.any(dim=0))
        beta, smoothing = model.advantage.beta.clone(), self.label_smoothing
        return (
            task_loss(model.classify(completed), batch.target, task, smoothing)
            + self.lambda_unimodal
            * len(model.modalities)
            * task_loss(unimodal.flatten(0, 1), targets.flatten(), task, smoothing)
            + self.lambda_kl * kl_divergence(mu, logvar, kept)
            + self.gamma * (beta * losses).sum()
        )
