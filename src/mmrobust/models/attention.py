"""A pre-norm transformer block whose last layer can update only the read-out (CLS) token.

Fusion and sequence encoders read one position (CLS) after the last layer, so that layer
needs queries, attention output and MLP for that position alone: the same result as a full
layer at a fraction of the cost, which matters most in the audit (one fusion per scenario).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import MMRobustError


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float = 0.1) -> None:
        super().__init__()
        if dim < 1 or dim % heads:
            raise MMRobustError(f"dim {dim} must be divisible by the {heads} heads of the attention layers")
        self.heads, self.dropout = heads, dropout
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(
        self, h: Tensor, ignore: Tensor | None = None, queries: int | None = None, qkv: Tensor | None = None
    ) -> Tensor:
        """h (B, L, D); `ignore` (B, L) True where a key must not be attended; `queries`: update
        only the first `queries` positions (the output then has that many); `qkv`: this block's
        `qkv(norm1(h))` when the caller already has it (the audit computes it once per sample)."""
        D = h.shape[-1]
        if qkv is not None:
            q, k, v = qkv.split(D, dim=-1)  # each (B, L, D)
        elif queries is None:
            q, k, v = self.qkv(self.norm1(h)).split(D, dim=-1)
        else:  # queries for the first positions only: a third less of this projection's work
            x, w, b = self.norm1(h), self.qkv.weight, self.qkv.bias
            q = F.linear(x[:, :queries], w[:D], b[:D])
            k, v = F.linear(x, w[D:], b[D:]).split(D, dim=-1)
        if queries is not None:
            q, h = q[:, :queries], h[:, :queries]
        q, k, v = (t.unflatten(-1, (self.heads, D // self.heads)).transpose(1, 2) for t in (q, k, v))  # (B, H, *, D/H)
        allowed = None if ignore is None else ~ignore[:, None, None, :]  # (B, 1, 1, L)
        p = self.dropout if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=p)  # (B, H, Lq, D/H)
        h = h + self.drop(self.proj(a.transpose(1, 2).flatten(2)))  # (B, Lq, D)
        return h + self.drop(self.mlp(self.norm2(h)))


class ReadoutTransformer(nn.Module):
    """`layers` blocks over a sequence whose position 0 is the read-out; returns it, normalised."""

    def __init__(self, dim: int, layers: int, heads: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, h: Tensor, ignore: Tensor | None = None, first_qkv: Tensor | None = None) -> Tensor:
        """`first_qkv`: the first block's query/key/value projection of `h`, if already computed."""
        for i, block in enumerate(self.blocks):
            last = i == len(self.blocks) - 1
            h = block(h, ignore, queries=1 if last else None, qkv=first_qkv if i == 0 else None)
        return self.norm(h[:, 0])  # (B, D)
