"""Fusions: Tokens(z[B, M, D], present[B, M]) -> predictions (B, out).

None of them reads an absent token: absent slots are zeroed first (so even NaN there
cannot leak through attention or a matmul) and then masked out.

Each also has `prepare(z)`, for fusing many (token row, mask) pairs, as the audit does (every
sample under every subset's mask): it does the mask-independent work on every row of z (R, M, D)
once and returns a `RowFuser`, (rows (P,), present (P, M)) -> the P pairs' outputs, equal to
`forward` on `Tokens(z[rows], present)` up to float rounding.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch
from torch import Tensor, nn

from ..data.tokens import Tokens
from ..registry import Registry
from .attention import Block, ReadoutTransformer

FUSIONS: Registry[Callable[[int, int, int], nn.Module]] = Registry("fusion")
RowFuser = Callable[[Tensor, Tensor], Tensor]


def _zero_absent(tokens: Tokens) -> Tensor:
    return tokens.z.masked_fill(~tokens.present[..., None], 0.0)  # (B, M, D)


class _PerModalityHeads(nn.Module):
    """One linear head per modality, evaluated for all modalities in one einsum."""

    def __init__(self, n_modalities: int, dim: int, out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_modalities, dim, out) / dim**0.5)
        self.bias = nn.Parameter(torch.zeros(n_modalities, out))

    def forward(self, tokens: Tokens) -> Tensor:
        z = _zero_absent(tokens)
        per_modality = torch.einsum("bmd,mdo->bmo", z, self.weight) + self.bias  # (B, M, O)
        return self.combine(per_modality * tokens.present[..., None], tokens.present)

    def prepare(self, z: Tensor) -> RowFuser:
        """Each row's per-modality terms, computed once: a pair only masks and combines them."""
        per_modality = torch.einsum("rmd,mdo->rmo", z, self.weight) + self.bias  # (R, M, O)

        def fuse_rows(rows: Tensor, present: Tensor) -> Tensor:
            terms = per_modality[rows].masked_fill(~present[..., None], 0.0)  # (P, M, O), NaN-safe
            return self.combine(terms, present)

        return fuse_rows

    def combine(self, terms: Tensor, present: Tensor) -> Tensor:
        """(B, M, O) masked per-modality terms -> (B, O): their sum (`late` averages instead)."""
        return terms.sum(dim=1)


@FUSIONS.register("sum")
class SumFusion(_PerModalityHeads):
    """Sum of per-modality heads over the present modalities."""


@FUSIONS.register("late")
class LateFusion(_PerModalityHeads):
    """Average of per-modality predictions over the present modalities."""

    def combine(self, terms: Tensor, present: Tensor) -> Tensor:
        count = present.sum(dim=1, keepdim=True).clamp_min(1)
        return terms.sum(dim=1) / count  # (B, O)


@FUSIONS.register("concat")
class ConcatFusion(nn.Module):
    """Concatenate tokens; an absent slot is replaced by a learned per-modality filler."""

    def __init__(self, n_modalities: int, dim: int, out: int) -> None:
        super().__init__()
        self.filler = nn.Parameter(torch.zeros(n_modalities, dim))
        self.head = nn.Sequential(nn.Linear(n_modalities * dim, dim), nn.GELU(), nn.Dropout(0.1), nn.Linear(dim, out))

    def forward(self, tokens: Tokens) -> Tensor:
        z = torch.where(tokens.present[..., None], _zero_absent(tokens), self.filler)  # (B, M, D)
        return self.head(z.flatten(1))  # (B, M*D) -> (B, O)

    def prepare(self, z: Tensor) -> RowFuser:
        """The first layer is a sum over slots: each slot's term for its token and for its filler
        is computed once, so a pair only picks and adds M terms before the rest of the head."""
        first, rest = cast(nn.Linear, self.head[0]), self.head[1:]
        weight = first.weight.unflatten(1, self.filler.shape)  # (H, M, D)
        token_terms = torch.einsum("rmd,hmd->rmh", z, weight)  # (R, M, H)
        filler_terms = torch.einsum("md,hmd->mh", self.filler, weight)  # (M, H)

        def fuse_rows(rows: Tensor, present: Tensor) -> Tensor:
            terms = torch.where(present[..., None], token_terms[rows], filler_terms)  # (P, M, H)
            return rest(terms.sum(dim=1) + first.bias)

        return fuse_rows


@FUSIONS.register("transformer")
class TransformerFusion(nn.Module):
    """CLS token + modality embeddings, self-attention with absent tokens masked out as keys."""

    def __init__(self, n_modalities: int, dim: int, out: int, layers: int = 2, heads: int = 4) -> None:
        super().__init__()
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.modality_embedding = nn.Parameter(torch.randn(1, n_modalities, dim) * 0.02)
        self.body = ReadoutTransformer(dim, layers, heads)
        self.head = nn.Linear(dim, out)

    def forward(self, tokens: Tokens) -> Tensor:
        z = _zero_absent(tokens) + self.modality_embedding  # (B, M, D)
        h = torch.cat([self.cls.expand(len(z), -1, -1), z], dim=1)  # (B, 1+M, D)
        if bool((tokens.present == tokens.present[:1]).all()):  # one mask for all: drop absent tokens
            keep = torch.cat([tokens.present.new_ones(1), tokens.present[0]])  # (1+M,)
            return self.head(self.body(h[:, keep]))  # same result, no padding, fewer tokens
        cls_kept = torch.zeros_like(tokens.present[:, :1])
        ignore = torch.cat([cls_kept, ~tokens.present], dim=1)  # (B, 1+M), True = absent
        return self.head(self.body(h, ignore))  # (B, O)

    def prepare(self, z: Tensor) -> RowFuser:
        """The first block's LayerNorm and query/key/value projection of every token, computed
        once per row (an absent slot's token is the zero token, as in `forward`); a pair runs the
        attention and everything after it."""
        first = cast(Block, self.body.blocks[0])
        h = torch.cat([self.cls.expand(len(z), -1, -1), z + self.modality_embedding], dim=1)  # (R, 1+M, D)
        qkv = first.qkv(first.norm1(h))  # (R, 1+M, 3D)
        h_absent = torch.cat([self.cls[0], self.modality_embedding[0]])  # (1+M, D): zero tokens
        qkv_absent = first.qkv(first.norm1(h_absent))

        def fuse_rows(rows: Tensor, present: Tensor) -> Tensor:
            if bool((present == present[:1]).all()):  # one mask: drop absent tokens, as `forward`
                kept = torch.cat([present.new_ones(1), present[0]]).nonzero().squeeze(1)
                at = (rows[:, None], kept)  # one gather of the kept tokens of each row
                return self.head(self.body(h[at], first_qkv=qkv[at]))
            kept = torch.cat([present.new_ones((len(rows), 1)), present], dim=1)[..., None]  # (P, 1+M, 1)
            h_rows = torch.where(kept, h[rows], h_absent)  # NaN-safe: absent rows are the zero token's
            qkv_rows = torch.where(kept, qkv[rows], qkv_absent)
            return self.head(self.body(h_rows, ~kept[..., 0], first_qkv=qkv_rows))

        return fuse_rows


def create_fusion(name: str, n_modalities: int, dim: int, out: int) -> nn.Module:
    return FUSIONS.get(name)(n_modalities, dim, out)
