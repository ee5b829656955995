"""Per-modality encoders by modality kind; each maps one sample to a D-dim token.

Every encoder ends in a LayerNorm so that tokens of all modalities share one scale, which is
what makes token-stage noise (`GaussianNoise(stage="token", sigma=1)`) comparable across
modalities and models.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from functools import partial
from math import prod

import torch
from torch import Tensor, nn

from ..errors import MMRobustError
from ..registry import Registry
from .attention import ReadoutTransformer

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


ConvType = type[nn.Conv1d] | type[nn.Conv2d]


class ConvEncoder(nn.Module):
    """Sensor windows (C, T) with `ndim=1`, images or spectrograms (C, H, W) with `ndim=2`:
    three strided convolutions, then global average pooling to a D-dim token."""

    family = "conv"  # registered as conv1d and conv2d (the error messages name them)

    def __init__(self, shape: tuple[int, ...], dim: int, ndim: int) -> None:
        super().__init__()
        if len(shape) != ndim + 1:
            layout = "(C, T)" if ndim == 1 else "(C, H, W)"
            raise MMRobustError(f"{self.family}{ndim}d expects per-sample shape {layout}, got {shape}")
        self.convs = self.layers(shape[0], dim, nn.Conv1d if ndim == 1 else nn.Conv2d)
        self.pool_dims = tuple(range(-ndim, 0))
        self.out = nn.Sequential(nn.Linear(dim, dim), nn.LayerNorm(dim))

    @staticmethod
    def layers(channels: int, dim: int, conv: ConvType) -> nn.Sequential:
        widths = (channels, 32, 64, dim)
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(itertools.pairwise(widths)):
            kernel, stride = (5, 2) if i == 0 else (3, 2 if i == 1 else 1)
            layers += [conv(a, b, kernel, stride, kernel // 2), nn.GroupNorm(1, b), nn.GELU()]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.convs(x).mean(dim=self.pool_dims))  # (B, D, *spatial) -> (B, D)


class ResidualBlock(nn.Module):
    """Two 3-wide convolutions with a shortcut (a strided 1x1 convolution when the shape changes),
    as in "Deep Residual Learning for Image Recognition" (He et al., arXiv:1512.03385)."""

    def __init__(self, a: int, b: int, stride: int, conv: ConvType) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv(a, b, 3, stride, 1), nn.GroupNorm(1, b), nn.GELU(), conv(b, b, 3, 1, 1), nn.GroupNorm(1, b)
        )
        same = a == b and stride == 1
        self.shortcut = nn.Identity() if same else nn.Sequential(conv(a, b, 1, stride), nn.GroupNorm(1, b))

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.gelu(self.body(x) + self.shortcut(x))


class ResidualConvEncoder(ConvEncoder):
    """The same layouts through a deeper network, for data the three-layer CNN is too shallow for: a
    strided stem, then four residual blocks (widths 32, 64, 128, dim; each after the first halves the
    time axis or the image), global average pooling to a token."""

    family = "resconv"

    @staticmethod
    def layers(channels: int, dim: int, conv: ConvType) -> nn.Sequential:
        widths = (32, 32, 64, 128, dim)
        blocks = [ResidualBlock(a, b, 1 if i == 0 else 2, conv) for i, (a, b) in enumerate(itertools.pairwise(widths))]
        return nn.Sequential(conv(channels, 32, 5, 2, 2), nn.GroupNorm(1, 32), nn.GELU(), *blocks)


ENCODERS.register("conv1d")(partial(ConvEncoder, ndim=1))
ENCODERS.register("conv2d")(partial(ConvEncoder, ndim=2))
ENCODERS.register("resconv1d")(partial(ResidualConvEncoder, ndim=1))
ENCODERS.register("resconv2d")(partial(ResidualConvEncoder, ndim=2))


class TemporalReadout(nn.Module):
    """A CLS token and learned positions prepended to a (B, T, D) sequence, read out by a transformer."""

    def __init__(self, steps: int, dim: int, layers: int = 2, heads: int = 4) -> None:
        super().__init__()
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, steps + 1, dim) * 0.02)
        self.body = ReadoutTransformer(dim, layers, heads)

    def forward(self, h: Tensor) -> Tensor:
        h = torch.cat([self.cls.expand(len(h), -1, -1), h], dim=1) + self.pos  # (B, T+1, D)
        return self.body(h)  # (B, D)


@ENCODERS.register("seq")
class SequenceEncoder(nn.Module):
    """Sequences of frame or word vectors (T, F): projected, then a temporal readout."""

    def __init__(self, shape: tuple[int, ...], dim: int) -> None:
        super().__init__()
        if len(shape) != 2:
            raise MMRobustError(f"seq expects per-sample shape (T, F), got {shape}")
        steps, features = shape
        self.proj = nn.Linear(features, dim)
        self.temporal = TemporalReadout(steps, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.temporal(self.proj(x))  # (B, T, F) -> (B, D)


@ENCODERS.register("frames")
class SpaceTimeEncoder(nn.Module):
    """Frame sequences (T, C, H, W): a per-frame CNN shared over time (run on all B*T frames at
    once), then a temporal readout — ActionMAE's spatial + temporal encoder, sized for a CPU."""

    def __init__(self, shape: tuple[int, ...], dim: int) -> None:
        super().__init__()
        if len(shape) != 4:
            raise MMRobustError(f"frames expects per-sample shape (T, C, H, W), got {shape}")
        steps, *frame = shape
        self.frame = ConvEncoder(tuple(frame), dim, ndim=2)
        self.temporal = TemporalReadout(steps, dim)

    def forward(self, x: Tensor) -> Tensor:
        per_frame = self.frame(x.flatten(0, 1)).unflatten(0, x.shape[:2])  # (B*T, C, H, W) -> (B, T, D)
        return self.temporal(per_frame)  # (B, D)


def create_encoder(kind: str, shape: tuple[int, ...], dim: int) -> nn.Module:
    build = ENCODERS.get(kind)
    if not shape or any(int(s) < 1 for s in shape):
        raise MMRobustError(f"{kind} encoder: per-sample shape {tuple(shape)} is invalid; every dimension must be >= 1")
    if dim < 1:
        raise MMRobustError(f"{kind} encoder: dim must be >= 1, got {dim}")
    return build(tuple(shape), dim)
