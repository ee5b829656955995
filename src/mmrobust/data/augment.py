"""Training-time input augmentation: random resized crops, amplitude scaling, jitter and rotation.

Small multimodal datasets (UTD-MHAD has 32 trials per class) are where deep models lose to
simple baselines; the standard remedy is to show the model slightly different versions of each
training sample. These transforms act on the raw (standardised) inputs of one modality, for the
whole batch at once, and draw from the training generator, so a run stays a pure function of its
seed. They are part of a dataset's *recipe* (`train.augment`), applied by `fit` to every training
batch before the method's loss, identically for every method.

- `crop`: a random resized crop along time (`conv1d` (C, T), `seq` (T, F), `frames` (T, ...)) or
  space (`conv2d` (C, H, W)): a window of a fraction U(1 - crop, 1) of the axis at a random offset,
  linearly resampled back to the full length (a random time warp and shift).
- `scale`: every sample's values times 1 + N(0, scale²): one factor per channel for `conv1d` and
  `conv2d` inputs, one per sample for the others (e.g. a skeleton's size).
- `jitter`: N(0, jitter²) added to every value.
- `rotate`: for `conv1d` sensor windows whose channels are 3-axis triples (x, y, z of an
  accelerometer, gyroscope, or a skeleton joint), one random rotation per sample, about a uniform
  random axis by an angle U(-rotate, rotate) degrees, applied to every triple: a device worn at
  another angle. The inputs are standardised per channel, so it turns the standardised axes (close
  to, not exactly, a physical rotation).

Placeholders of absent modalities are transformed like any other row: no output reads them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import MMRobustError, check_number
from .batch import Batch
from .dataset import DataSpec


@dataclass(frozen=True)
class Augment:
    """One modality's augmentation; zero disables a transform."""

    crop: float = 0.0
    scale: float = 0.0
    jitter: float = 0.0
    rotate: float = 0.0  # degrees

    def __post_init__(self) -> None:
        bounds = {"crop": ("[0, 1)", lambda v: 0.0 <= v < 1.0), "rotate": ("[0, 180]", lambda v: 0.0 <= v <= 180.0)}
        for f in fields(self):
            value = getattr(self, f.name)
            bound, holds = bounds.get(f.name, (">= 0", lambda v: 0.0 <= v < float("inf")))
            if not holds(value):
                raise MMRobustError(f"augment {f.name} must be in {bound}, got {value}")

    def __call__(self, x: Tensor, kind: str, generator: torch.Generator) -> Tensor:
        if self.crop:
            x = _random_resized_crop(x, kind, self.crop, generator)
        if self.scale:
            channels = (x.shape[0], x.shape[1]) if kind in ("conv1d", "conv2d") else (x.shape[0], 1)
            factor = 1 + self.scale * torch.randn(channels, generator=generator)
            x = x * factor.view(*channels, *[1] * (x.dim() - 2)).to(x)
        if self.jitter:
            x = x + self.jitter * torch.randn(x.shape, generator=generator).to(x)
        if self.rotate:
            x = _random_rotation(x, self.rotate, generator)
        return x


def check_augment_options(options: object) -> dict[str, Augment]:
    """`train.augment` checked without the data (types and ranges), so a bad value is found when the
    config is read rather than when training starts: modality -> `Augment`."""
    names = [f.name for f in fields(Augment)]
    if not isinstance(options, Mapping):
        raise MMRobustError(f"train.augment must map modalities to {{{', '.join(names)}}}, got {options!r}")
    parsed = {}
    for modality, params in options.items():
        where = f"train.augment.{modality}"
        if not isinstance(params, Mapping):
            raise MMRobustError(f"{where} must be a mapping of transforms ({', '.join(names)}), got {params!r}")
        unknown = sorted(set(params) - set(names))
        if unknown:
            raise MMRobustError(f"{where}: unknown transform {unknown}; valid are {sorted(names)}")
        values = {k: check_number(v, f"{where}.{k}", 0.0) for k, v in params.items()}
        try:
            parsed[str(modality)] = Augment(**values)
        except MMRobustError as e:
            raise MMRobustError(f"{where}: {e}") from None
    return parsed


def parse_augment(spec: DataSpec, options: Mapping[str, Mapping[str, float]]) -> dict[str, Augment]:
    """`{"inertial": {"crop": 0.2}}` -> per-modality `Augment`s, checked against the data."""
    kinds = {m.name: m.kind for m in spec.modalities}
    shapes = {m.name: tuple(m.shape) for m in spec.modalities}
    parsed = check_augment_options(options)
    for modality, augment in parsed.items():
        if modality not in kinds:
            raise MMRobustError(f"train.augment: no modality '{modality}' in {spec.name} (has {sorted(kinds)})")
        if augment.crop and kinds[modality] == "mlp":
            raise MMRobustError(f"train.augment.{modality}: crop needs a time or space axis; mlp inputs have none")
        channels = shapes[modality][0]
        if augment.rotate and (kinds[modality] != "conv1d" or channels % 3):
            raise MMRobustError(
                f"train.augment.{modality}: rotate turns 3-axis channel triples of conv1d windows; "
                f"{modality} is {kinds[modality]} {shapes[modality]}"
            )
    return parsed


def augment_batch(
    batch: Batch, augments: Mapping[str, Augment], kinds: Mapping[str, str], generator: torch.Generator
) -> Batch:
    """The batch with each configured modality augmented (modalities in the batch's order)."""
    for modality in batch.modalities:
        if modality in augments:
            batch = batch.with_value(modality, augments[modality](batch.value(modality), kinds[modality], generator))
    return batch


def _random_resized_crop(x: Tensor, kind: str, crop: float, generator: torch.Generator) -> Tensor:
    n = x.shape[0]
    length = 1 - crop * torch.rand(n, generator=generator)  # fraction of the axis kept
    if kind == "conv2d":  # a crop of the image plane with the image's aspect, anywhere in it
        start = (1 - length)[:, None] * torch.rand(n, 2, generator=generator)  # (x, y) offsets
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = theta[:, 1, 1] = length
        theta[:, :, 2] = 2 * start + length[:, None] - 1  # window centre in [-1, 1]
        grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    start = (1 - length) * torch.rand(n, generator=generator)
    axis = x.dim() - 1 if kind == "conv1d" else 1  # conv1d (C, T); seq (T, F) and frames (T, ...)
    steps = x.shape[axis]
    where = start[:, None] + length[:, None] * (torch.arange(steps) + 0.5) / steps  # (n, steps) in [0, 1]
    pos = (where * steps - 0.5).clamp(0, steps - 1)
    low = pos.floor().long().clamp(max=steps - 1)
    high = (low + 1).clamp(max=steps - 1)
    weight = (pos - low).to(x)
    moved = x.movedim(axis, 1)  # (n, steps, ...)
    shape = (n, steps) + (1,) * (moved.dim() - 2)

    def pick(index: Tensor) -> Tensor:
        return moved.gather(1, index.view(shape).expand_as(moved).to(x.device))

    w = weight.view(shape).to(x.device)
    return (pick(low) * (1 - w) + pick(high) * w).movedim(1, axis)


def _random_rotation(x: Tensor, degrees: float, generator: torch.Generator) -> Tensor:
    """(n, C, T) windows, C a multiple of 3, with each sample's channel triples turned by one rotation
    (Rodrigues' formula: R = I + sin(a) K + (1 - cos(a)) K², K the cross-product matrix of the axis)."""
    n = x.shape[0]
    axis = F.normalize(torch.randn(n, 3, generator=generator), dim=1)
    angle = (2 * torch.rand(n, generator=generator) - 1) * math.radians(degrees)
    cross = torch.zeros(n, 3, 3)
    cross[:, 0, 1], cross[:, 0, 2], cross[:, 1, 2] = -axis[:, 2], axis[:, 1], -axis[:, 0]
    cross = cross - cross.transpose(1, 2)
    sin, cos = angle.sin().view(n, 1, 1), angle.cos().view(n, 1, 1)
    rotation = (torch.eye(3) + sin * cross + (1 - cos) * cross @ cross).to(x)
    return torch.einsum("nij,nkjt->nkit", rotation, x.unflatten(1, (-1, 3))).flatten(1, 2)
