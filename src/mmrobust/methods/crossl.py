"""CroSSL (Deldari et al., "Latent Masking for Multimodal Self-supervised Learning in Health
Timeseries", ICML 2023 workshop; WSDM 2024 "CroSSL", arXiv 2307.16847, and its released TensorFlow
code): self-supervised pretraining by masking the *intermediate embeddings*
of per-modality encoders and aggregating two masked views with a cross-modal aggregator under
VICReg, then a downstream classifier.

For M modalities, batch B, embedding K = `embed_dim` (96) and global embedding P = `proj_dim` (32):

1. encoders      q_m = E_m(x_m) ∈ R^K, only for the samples where m is present (gather -> encode ->
                 scatter, `MultimodalModel.encode`); E_m for a conv1d modality (C, T) is the paper's
                 3-layer 1-D CNN: filters K/4, K/2, K (24/48/96), kernels 24/16/8, stride 1, 'same'
                 padding, each conv -> LayerNorm over channels per time step -> PReLU (one slope per
                 channel) -> Dropout(0.1); global average pooling over time. Other kinds (mlp, seq,
                 conv2d, ...) use the toolkit's `create_encoder(kind, shape, K)`, which already ends in
                 a K-dim LayerNorm token: the paper's framework is encoder-agnostic (§4.2).
2. aggregator    z = A(Q ⊙ a),  Q = [q_1; ...; q_M] (B, M, K), a ∈ {0,1} the availability: absent
                 modalities are zeroed, not removed. A = flatten (M·K) -> Linear 64 -> ReLU -> Linear 32
                 -> ReLU -> Linear P -> LayerNorm(P) (`fusion="mlp"`, the paper's). Any registered
                 fusion may stand in for the flatten-MLP (`fusion="transformer"`, ...): it maps
                 Tokens(Q, a) to R^P and the LayerNorm follows; spatially masked slots are marked
                 absent for it, randomly masked entries are zeroed.
3. latent masks  two independent views v = 1, 2 per batch; `mask_ratio` r is the probability that
                 an entry is MASKED (the released code's `coverage` c = 1 − r is the keep probability;
                 default r = 0.1 ⇔ c = 0.9):
                   spatial: k^v_{bm} ~ Bernoulli(1 − r), broadcast over K (whole modality embeddings);
                   random:  k^v_{bmk} ~ Bernoulli(1 − r) i.i.d. (individual latent entries);
                 z^v = A(Q ⊙ a ⊙ k^v). No guard against masking every modality of a sample (as the code).
4. VICReg        with Z¹, Z² (B, P), Z̄ the column-centred Z:
                   s = (1/B) Σ_b (1/P) ‖z¹_b − z²_b‖²                                  (invariance)
                   v = ½ Σ_views (1/P) Σ_j max(0, 1 − sqrt(Var_j(Z) + ε)), Var biased, ε = 1e-4
                   c = Σ_views (1/P) Σ_{i≠j} C_ij²,  C = Z̄ᵀZ̄ / (B − 1)           (summed over views)
                 L_ssl = λ_s s + λ_v v + λ_c c  (10 / 10 / 100)  + λ_2 Σ ‖W_conv‖²  (kernel L2, 1e-4).
                 No label is read. The encoders run with dropout off, as in the code (`training=False`).
5. downstream    ŷ = G(A(Q ⊙ a)), G = [Linear 128 -> ReLU -> Dropout 0.1 ->] Linear(classes) (the code's
                 MaskedClassifier; `head_hidden=[]` is the paper's linear probe). Modes:
                   fixed:      E and A frozen (run in eval mode, no gradient), only G is trained;
                   finetune:   optionally `freeze_epochs` with E, A frozen, then everything;
                   supervised: the same network trained end to end from scratch, no pretraining.
                 `corruption` (e.g. {"type": "RandomDrop"}) is optional missing-modality augmentation
                 of the downstream training batches. Prediction: encode the present modalities, zero
                 the rest, aggregate, classify; deterministic at evaluation (no masks, no dropout).

Label efficiency (`label_fraction` f < 1): the downstream loss uses only the training windows whose
*label key* u(x) < f, where u ∈ [0, 1) is a seeded integer hash of the sample's present inputs'
bytes (`label_keys`). The key is a pure function of (sample, seed), so the same windows are labelled
in every epoch, batch order and device; `fit` computes it on the raw window before the recipe's
augmentation (`Stage.rows`), since a hash of an augmented copy would pick different windows every
epoch and, over the budget, use every label. The choice ignores the class, so every class keeps a
fraction f of its windows in expectation (stratified in expectation; the count is Binomial(N, f),
not exactly round(f·N) — `fit` gives a loss only batches, not sample indices). Pretraining always
uses every training window, unlabelled; the validation split is not reduced.

Differences from the released code: PyTorch default initialisation (not N(0, 0.05)); one learning
rate for all stages (`fit`'s; the paper uses 1e-4 for SSL, 1e-3 for the classifier); early stopping
on validation in the downstream stage only (the code also stops SSL on the training loss).

    mmrobust run configs/crossl/spsw_har.yaml data.data_dir=DATA_DIR
    create_method("crossl", mode="fixed", masking="spatial", mask_ratio=0.1, pretrain_epochs=100)
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..corruption import Corruption, as_corruption, encode_corrupted
from ..data.batch import Batch
from ..data.dataset import DataSpec, ModalitySpec
from ..data.tokens import Tokens
from ..errors import MMRobustError
from ..models.encoders import create_encoder
from ..models.fusion import create_fusion
from ..models.layers import mlp
from ..models.model import MultimodalModel
from ..seeds import derive_seed
from .base import EVERY_TASK, Method, MethodTags, Stage, register_method
from .losses import task_loss

MODES = ("finetune", "fixed", "supervised")
MASKINGS = ("spatial", "random")


class ConvBlock(nn.Module):
    """Conv1d ('same', stride 1) -> LayerNorm over channels at each time step -> PReLU -> Dropout."""

    def __init__(self, c_in: int, c_out: int, kernel: int, dropout: float) -> None:
        super().__init__()
        self.pad = ((kernel - 1) // 2, kernel // 2)  # TensorFlow's 'same': the extra zero goes right
        self.conv = nn.Conv1d(c_in, c_out, kernel)
        self.norm = nn.LayerNorm(c_out)
        self.act = nn.PReLU(c_out)  # one slope per channel, shared over time
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv(F.pad(x, self.pad))  # (B, C_in, T) -> (B, C_out, T)
        h = self.norm(h.transpose(1, 2)).transpose(1, 2)  # LayerNorm over channels at each time step
        return self.drop(self.act(h))


class CroSSLEncoder(nn.Module):
    """The paper's conv1d encoder E_m: (B, C, T) -> (B, K)."""

    def __init__(self, channels: int, dim: int, kernels: Sequence[int], dropout: float) -> None:
        super().__init__()
        widths = (channels, dim // 4, dim // 2, dim)
        self.blocks = nn.Sequential(
            *(ConvBlock(a, b, k, dropout) for (a, b), k in zip(itertools.pairwise(widths), kernels, strict=True))
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x).mean(dim=-1)  # global average pooling over time: (B, K, T) -> (B, K)


def create_crossl_encoder(modality: ModalitySpec, dim: int, kernels: Sequence[int], dropout: float) -> nn.Module:
    """The paper's encoder for conv1d modalities; otherwise the toolkit's encoder of that kind, or the
    one the data names for the modality (to K dims)."""
    shape = modality.shape
    if modality.encoder_name == "conv1d":
        if len(shape) != 2:
            raise MMRobustError(f"conv1d expects per-sample shape (C, T), got {shape}")
        return CroSSLEncoder(shape[0], dim, kernels, dropout)
    return create_encoder(modality.encoder_name, shape, dim)


class Aggregator(nn.Module):
    """A: (B, M, K) embeddings + availability (B, M) [+ entry mask (B, M, K)] -> global embedding (B, P)."""

    def __init__(self, n_modalities: int, dim: int, hidden: Sequence[int], out: int, fusion: str) -> None:
        super().__init__()
        self.fusion_name = fusion
        if fusion == "mlp":
            self.body: nn.Module = nn.Sequential(nn.Flatten(), *mlp((n_modalities * dim, *hidden, out)))
        else:
            self.body = create_fusion(fusion, n_modalities, dim, out)
        self.norm = nn.LayerNorm(out)

    def forward(self, q: Tensor, available: Tensor, keep: Tensor | None = None) -> Tensor:
        if keep is not None and keep.shape[-1] == 1:  # spatial: whole slots are unavailable
            available, keep = available & keep[..., 0], None
        q = q.masked_fill(~available[..., None], 0.0)  # zeroed, never read (NaN-safe)
        if keep is not None:  # random: individual entries zeroed
            q = q * keep
        if self.fusion_name == "mlp":
            return self.norm(self.body(q))  # (B, M·K) -> (B, P)
        return self.norm(self.body(Tokens(q, available, tuple(map(str, range(q.shape[1]))))))


def latent_mask(shape: Sequence[int], mask_ratio: float, masking: str, generator: torch.Generator) -> Tensor:
    """Keep mask (bool): (B, M, 1) for spatial, (B, M, K) for random; P(keep) = 1 − mask_ratio."""
    b, m, k = shape
    size = (b, m, 1) if masking == "spatial" else (b, m, k)
    return torch.rand(size, generator=generator) >= mask_ratio


def vicreg_terms(z1: Tensor, z2: Tensor, eps: float = 1e-4) -> tuple[Tensor, Tensor, Tensor]:
    """(invariance s, variance v, covariance c) of the module docstring, for Z¹, Z² (B, P)."""
    b, p = z1.shape
    invariance = (z1 - z2).square().mean()  # (1/B) Σ_b (1/P) ‖z¹_b − z²_b‖²

    def variance(z: Tensor) -> Tensor:
        return torch.relu(1 - torch.sqrt(z.var(dim=0, unbiased=False) + eps)).mean()

    def covariance(z: Tensor) -> Tensor:
        zc = z - z.mean(dim=0)
        cov = zc.T @ zc / (b - 1)  # (P, P)
        return (cov.square().sum() - cov.diagonal().square().sum()) / p

    return invariance, 0.5 * (variance(z1) + variance(z2)), covariance(z1) + covariance(z2)


_PRIME = 2_147_483_647  # 2^31 − 1


def label_keys(batch: Batch, seed: int) -> Tensor:
    """u (B,) in [0, 1): a seeded universal hash of each sample's present inputs' float32 bytes.

    Integer arithmetic only (exact on every device); absent placeholders are never read.
    """
    dev = batch.present.device
    total = torch.zeros(len(batch), dtype=torch.int64, device=dev)
    g = torch.Generator().manual_seed(derive_seed(seed, "label-keys"))
    for j, m in enumerate(batch.modalities):
        bits = batch.inputs[m].float().flatten(1).contiguous().view(torch.int32).to(torch.int64)  # (B, F)
        halves = torch.cat([bits & 0xFFFF, (bits >> 16) & 0xFFFF], dim=1)  # (B, 2F), each < 2^16
        weights = torch.randint(1, 2**15, (halves.shape[1],), generator=g).to(dev)
        h = (halves * weights).sum(dim=1) % _PRIME  # < 2^31·2F: no overflow in int64
        h = (h * int(torch.randint(1, _PRIME, (1,), generator=g)) + j + 1) % _PRIME
        total = torch.where(batch.present[:, j], (total * 65_599 + h) % _PRIME, total)
    a, c = (int(v) for v in torch.randint(1, _PRIME, (2,), generator=g))
    return ((total * a + c) % _PRIME).double() / _PRIME


class CroSSLModel(MultimodalModel):
    """Encoders E_m (96-d embeddings as tokens) -> aggregator A -> head G."""

    def __init__(
        self,
        spec: DataSpec,
        fusion: str,
        embed_dim: int,
        kernels: Sequence[int],
        dropout: float,
        aggregator_hidden: Sequence[int],
        proj_dim: int,
        head_hidden: Sequence[int],
        head_dropout: float,
    ) -> None:
        encoders = nn.ModuleDict(
            {m.name: create_crossl_encoder(m, embed_dim, kernels, dropout) for m in spec.modalities}
        )
        super().__init__(spec, fusion, embed_dim, encoders=encoders, fused_by_subclass=True)
        self.aggregator = Aggregator(len(spec.modalities), embed_dim, aggregator_hidden, proj_dim, fusion)
        self.head = mlp((proj_dim, *head_hidden, spec.num_classes), dropout=head_dropout)

    def backbone(self) -> nn.ModuleList:
        """What pretraining trains (and `fixed` freezes): encoders and aggregator."""
        return nn.ModuleList([self.encoders, self.aggregator])

    def embed(self, tokens: Tokens, keep: Tensor | None = None) -> Tensor:
        return self.aggregator(tokens.z, tokens.present & self.use_mask, keep)  # (B, P)

    def fuse(self, tokens: Tokens) -> Tensor:
        out = self.head(self.embed(tokens))  # (B, C) logits, or (B, 1)
        return out.squeeze(-1) if self.spec.task == "regression" else out


@register_method("crossl")
class CroSSL(Method):
    """CroSSL with the released code's constants as parameters (names as in the module docstring).

    Stages: `supervised` trains once, end to end ("train"); `fixed` runs "pretrain" (encoders and
    aggregator, no selection) then "probe" (the head only, selected on val); `finetune` runs
    "pretrain", then "frozen" (the head only, `freeze_epochs`, no selection) when
    `freeze_epochs > 0`, then "finetune" (everything, selected on val). `pretrain_epochs=None`
    pretrains for `fit`'s `epochs` (the paper: 100). The pretraining stage's `reuse_key` holds
    every parameter it depends on, so fixed and fine-tuned runs with the same pretraining share it.
    `fusion="mlp"` is the paper's aggregator; any registered fusion can replace its flatten-MLP."""

    tags = MethodTags(tasks=EVERY_TASK, needs_complete_training_data=False, per_sample_masks=True)

    def __init__(
        self,
        mode: str = "finetune",
        masking: str = "spatial",
        mask_ratio: float = 0.1,
        sim_coeff: float = 10.0,
        std_coeff: float = 10.0,
        cov_coeff: float = 100.0,
        pretrain_epochs: int | None = None,
        freeze_epochs: int = 0,
        label_fraction: float = 1.0,
        corruption: Corruption | Mapping[str, Any] | None = None,
        fusion: str = "mlp",
        embed_dim: int = 96,
        kernels: Sequence[int] = (24, 16, 8),
        dropout: float = 0.1,
        aggregator_hidden: Sequence[int] = (64, 32),
        proj_dim: int = 32,
        head_hidden: Sequence[int] = (128,),
        head_dropout: float = 0.1,
        kernel_l2: float = 1e-4,
        label_smoothing: float = 0.0,
    ) -> None:
        self.mode = mode
        self.masking = masking
        self.mask_ratio = mask_ratio
        self.sim_coeff = sim_coeff
        self.std_coeff = std_coeff
        self.cov_coeff = cov_coeff
        self.pretrain_epochs = pretrain_epochs
        self.freeze_epochs = freeze_epochs
        self.label_fraction = label_fraction
        self.corruption = corruption
        self.fusion = fusion
        self.embed_dim = embed_dim
        self.kernels = list(kernels)
        self.dropout = dropout
        self.aggregator_hidden = list(aggregator_hidden)
        self.proj_dim = proj_dim
        self.head_hidden = list(head_hidden)
        self.head_dropout = head_dropout
        self.kernel_l2 = kernel_l2
        self.label_smoothing = label_smoothing

    @property
    def train_corruption(self) -> Corruption | None:
        return None if self.corruption is None else as_corruption(self.corruption)

    def check_params(self) -> None:
        problems = [
            (self.mode not in MODES, f"mode must be one of {MODES}, got '{self.mode}'"),
            (self.masking not in MASKINGS, f"masking must be one of {MASKINGS}, got '{self.masking}'"),
            (not 0 <= self.mask_ratio < 1, f"mask_ratio (the masked share) must be in [0, 1), got {self.mask_ratio}"),
            (not 0 < self.label_fraction <= 1, f"label_fraction must be in (0, 1], got {self.label_fraction}"),
            (self.freeze_epochs < 0, "freeze_epochs must be >= 0"),
            (self.pretrain_epochs is not None and self.pretrain_epochs < 1, "pretrain_epochs must be >= 1"),
            (len(self.kernels) != 3 or self.embed_dim % 4 != 0, "kernels needs 3 sizes and embed_dim % 4 == 0"),
        ]
        for bad, message in problems:
            if bad:
                raise MMRobustError(f"crossl: {message}")

    def build(self, spec: DataSpec) -> None:
        self.check_task(spec)
        self.check_params()
        self.model = CroSSLModel(
            spec, self.fusion, self.embed_dim, self.kernels, self.dropout,
            self.aggregator_hidden, self.proj_dim, self.head_hidden, self.head_dropout,
        )  # fmt: skip

    @property
    def crossl_model(self) -> CroSSLModel:
        return self.fitted_as(CroSSLModel)

    # --- stages ------------------------------------------------------------------------
    def pretrain_key(self) -> dict[str, Any]:
        """Everything pretraining depends on (besides data, seed and `fit`'s options)."""
        names = ("masking", "mask_ratio", "sim_coeff", "std_coeff", "cov_coeff", "pretrain_epochs", "fusion",
                 "embed_dim", "kernels", "dropout", "aggregator_hidden", "proj_dim", "kernel_l2")  # fmt: skip
        return {"method": "crossl-pretrain", **{n: getattr(self, n) for n in names}}

    def stages(self, seed: int) -> Sequence[Stage]:
        model = self.crossl_model
        rows = partial(self.labelled, label_seed=seed) if self.label_fraction < 1 else None  # downstream stages only
        if self.mode == "supervised":
            return (Stage("train", self.loss, rows=rows),)
        pretrain = Stage(
            "pretrain", self.pretrain_loss, module=model.backbone(), select=False,
            epochs=self.pretrain_epochs, reuse_key=self.pretrain_key(),
        )  # fmt: skip
        if self.mode == "fixed":
            return (pretrain, Stage("probe", self.frozen_loss, module=model.head, rows=rows))
        frozen = Stage(
            "frozen", self.frozen_loss, module=model.head, select=False, epochs=self.freeze_epochs, rows=rows
        )
        return (pretrain, *((frozen,) if self.freeze_epochs > 0 else ()), Stage("finetune", self.loss, rows=rows))

    # --- losses ------------------------------------------------------------------------
    def kernel_penalty(self) -> Tensor:
        """λ_2 Σ ‖W‖² over the conv kernels of the paper's encoders (the code's L2 regulariser)."""
        convs = [m.weight for m in self.crossl_model.encoders.modules() if isinstance(m, nn.Conv1d)]
        return self.kernel_l2 * sum((w.square().sum() for w in convs), self._zero())

    def _zero(self) -> Tensor:
        return torch.zeros((), device=next(self.crossl_model.parameters()).device)

    def _empty_loss(self) -> Tensor:
        """A batch with nothing to learn from (no labelled sample, or one sample for VICReg): a zero
        that still has a graph, so `backward` works."""
        return sum((p.sum() for p in self.crossl_model.head.parameters()), self._zero()) * 0.0

    def pretrain_loss(self, batch: Batch, generator: torch.Generator) -> Tensor:
        """VICReg on two latent-masked views; never reads `batch.target`. A batch of one sample
        (the last of an epoch) has no variance or covariance to measure: it contributes nothing."""
        model = self.crossl_model
        if len(batch) < 2:
            return self._empty_loss()
        model.encoders.eval()  # the code pretrains with the encoders' dropout off
        tokens = model.encode(batch)  # (B, M, K)
        dev = tokens.z.device
        keep1, keep2 = (latent_mask(tuple(tokens.z.shape), self.mask_ratio, self.masking, generator) for _ in "12")
        z1, z2 = model.embed(tokens, keep1.to(dev)), model.embed(tokens, keep2.to(dev))  # (B, P) each
        s, v, c = vicreg_terms(z1, z2)
        return self.sim_coeff * s + self.std_coeff * v + self.cov_coeff * c + self.kernel_penalty()

    def labelled(self, batch: Batch, label_seed: int) -> Tensor:
        """(B,) bool: the samples whose labels the downstream stages may use (`label_fraction`; which
        ones is fixed by the run's seed). `fit` asks before augmenting, as the keys hash the raw inputs."""
        return label_keys(batch, label_seed) < self.label_fraction

    def augment(self, batch: Batch, generator: torch.Generator) -> Tokens:
        """The labelled batch encoded under the optional training `corruption`."""
        return encode_corrupted(self.crossl_model.encode, batch, self.train_corruption, generator)

    def loss(self, batch: Batch, generator: torch.Generator) -> Tensor:
        """Downstream task loss, everything trainable (fine-tuning and `supervised`)."""
        model = self.crossl_model
        if len(batch) == 0:
            return self._empty_loss()
        return (
            task_loss(model.fuse(self.augment(batch, generator)), batch.target, model.spec.task, self.label_smoothing)
            + self.kernel_penalty()
        )

    def frozen_loss(self, batch: Batch, generator: torch.Generator) -> Tensor:
        """Downstream task loss with encoders and aggregator frozen (eval mode, no gradient)."""
        model = self.crossl_model
        if len(batch) == 0:
            return self._empty_loss()
        model.backbone().eval()
        with torch.no_grad():
            z = model.embed(self.augment(batch, generator))  # (B, P)
        out = model.head(z)
        out = out.squeeze(-1) if model.spec.task == "regression" else out
        return task_loss(out, batch.target, model.spec.task, self.label_smoothing)
