"""Per-modality encoders by modality kind; each maps one sample to a D-dim token.

Every encoder ends in a LayerNorm so that tokens of all modalities share one scale, which is
what makes token-stage noise (`GaussianNoise(stage="token", sigma=1)`) comparable across
modalities and models.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from math import prod

import torch
from torch import Tensor, nn

from ..errors import MMRobustError
from ..registry import Registry

ENCODERS: Registry[Callable[[tuple[int, ...], int], nn.Module]] = Registry("encoder kind")


@ENCODERS.register("mlp")
class MLPEncoder(nn.Module):
    """Feature vectors (F,) (any trailing shape is flattened)."""

    def __init__(self, shape: tuple[int, ...], dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(prod(shape), 2 * dim),
            nn.GELU(),
            nn.Linear(2 * dim, dim),
            nn.LayerNorm(dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)  # (B, D)


def _conv_stack(conv: type[nn.Conv1d] | type[nn.Conv2d], in_ch: int, dim: int) -> nn.Sequential:
    """Three strided convolutions, then global average pooling to a D-dim token."""
    widths = (in_ch, 32, 64, dim)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        kernel, stride = (5, 2) if i == 0 else (3, 2 if i == 1 else 1)
        layers += [conv(a, b, kernel, stride, kernel // 2), nn.GroupNorm(1, b), nn.GELU()]
    return nn.Sequential(*layers)


@ENCODERS.register("conv1d")
class Conv1dEncoder(nn.Module):
    """Multichannel sensor windows (C, T)."""

    def __init__(self, shape: tuple[int, ...], dim: int) -> None:
        super().__init__()
        if len(shape) != 2:
            raise MMRobustError(f"conv1d expects per-sample shape (C, T), got {shape}")
        self.convs = _conv_stack(nn.Conv1d, shape[0], dim)
        self.out = nn.Sequential(nn.Linear(dim, dim), nn.LayerNorm(dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.convs(x).mean(dim=-1))  # (B, D, T') -> (B, D)


@ENCODERS.register("conv2d")
class Conv2dEncoder(nn.Module):
    """Images or spectrograms (C, H, W)."""

    def __init__(self, shape: tuple[int, ...], dim: int) -> None:
        super().__init__()
        if len(shape) != 3:
            raise MMRobustError(f"conv2d expects per-sample shape (C, H, W), got {shape}")
        self.convs = _conv_stack(nn.Conv2d, shape[0], dim)
        self.out = nn.Sequential(nn.Linear(dim, dim), nn.LayerNorm(dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.convs(x).mean(dim=(-2, -1)))  # (B, D, H', W') -> (B, D)


@ENCODERS.register("seq")
class SequenceEncoder(nn.Module):
    """Sequences of frame or word vectors (T, F): a small transformer read out at a CLS token."""

    def __init__(self, shape: tuple[int, ...], dim: int, layers: int = 2, heads: int = 4) -> None:
        super().__init__()
        if len(shape) != 2:
            raise MMRobustError(f"seq expects per-sample shape (T, F), got {shape}")
        steps, features = shape
        self.proj = nn.Linear(features, dim)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, steps + 1, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            dim, heads, 2 * dim, dropout=0.1, batch_first=True, norm_first=True
        )
        self.body = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        h = self.proj(x)  # (B, T, D)
        h = torch.cat([self.cls.expand(len(h), -1, -1), h], dim=1) + self.pos  # (B, T+1, D)
        return self.norm(self.body(h)[:, 0])  # (B, D)


def create_encoder(kind: str, shape: tuple[int, ...], dim: int) -> nn.Module:
    return ENCODERS.get(kind)(shape, dim)
