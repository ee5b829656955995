"""Hand-made summary statistics of one modality's samples: the inputs of the `features` floor.

Each sample becomes a fixed-length vector, computed for the whole batch at once (no Python loop
over samples or channels), by the modality's kind:

- time series, `conv1d` (C, T) and `seq` (T, F) (a channel per feature): per channel mean, std,
  min, max, the QUANTILES, mean absolute first difference, least-squares slope per step, energy
  (mean square): the classic features of activity recognition from sensor windows;
- `frames` (T, C, H, W): each frame pooled to a coarse grid, then each grid cell as a time series;
- images, `conv2d` (C, H, W): per channel mean, std, min, max, the QUANTILES, plus the channel
  averaged over a GRID x GRID layout (where in the image the mass is);
- feature vectors, `mlp`: the values themselves (flattened).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from ..errors import unknown_name

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
GRID = 4
KINDS = ("mlp", "conv1d", "seq", "frames", "conv2d")


def summarize(kind: str, x: Tensor) -> Tensor:
    """(n, *shape) samples of a modality of `kind` -> (n, F) float32 features, sample by sample."""
    x = x.float()
    if kind == "mlp":
        return x.flatten(1)
    if kind == "conv1d":
        return _series(x)
    if kind == "seq":
        return _series(x.transpose(1, 2))
    if kind == "frames":  # (n, T, C, H, W) -> (n, T, C*cells) -> a series per cell
        return _series(_grid(x.flatten(0, 1)).unflatten(0, x.shape[:2]).flatten(2).transpose(1, 2))
    if kind == "conv2d":
        return torch.cat([_distribution(x.flatten(2)).flatten(1), _grid(x).flatten(1)], dim=1)
    raise unknown_name("modality kind", kind, KINDS)


def feature_count(kind: str, shape: tuple[int, ...]) -> int:
    """How many features `summarize` gives a sample of `shape`."""
    return int(summarize(kind, torch.zeros(1, *shape)).shape[1])


def _distribution(v: Tensor) -> Tensor:
    """(n, C, L) -> (n, C, 4 + len(QUANTILES)): mean, std, min, max, quantiles (linear
    interpolation, as `torch.quantile`) of each channel's L values."""
    ordered = v.sort(dim=-1).values
    pos = torch.tensor(QUANTILES) * (v.shape[-1] - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp_max(v.shape[-1] - 1)
    quantiles = torch.lerp(ordered[..., lo], ordered[..., hi], pos - lo)
    mean = v.mean(dim=-1, keepdim=True)
    std = v.std(dim=-1, correction=0, keepdim=True)
    return torch.cat([mean, std, ordered[..., :1], ordered[..., -1:], quantiles], dim=-1)


def _series(v: Tensor) -> Tensor:
    """(n, C, T) -> (n, C * 12): the distribution of each channel plus its dynamics."""
    steps = v.shape[-1]
    diff = v.diff(dim=-1).abs().mean(dim=-1, keepdim=True) if steps > 1 else v.new_zeros((*v.shape[:-1], 1))
    t = torch.arange(steps, dtype=v.dtype) - (steps - 1) / 2  # centred time: the slope needs no intercept
    slope = (v * t).sum(dim=-1, keepdim=True) / (t * t).sum().clamp_min(1.0)
    energy = (v * v).mean(dim=-1, keepdim=True)
    return torch.cat([_distribution(v), diff, slope, energy], dim=-1).flatten(1)


def _grid(x: Tensor) -> Tensor:
    """(n, C, H, W) -> (n, C, h, w): averages over a GRID x GRID layout (fewer cells if smaller)."""
    return F.adaptive_avg_pool2d(x, (min(GRID, x.shape[-2]), min(GRID, x.shape[-1])))
