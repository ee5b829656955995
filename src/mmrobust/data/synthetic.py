"""`synthetic`: a controlled generator with known ground truth about modality reliance.

Every modality observes the same latent class signal, scaled by its own *informativeness*,
plus private noise, through its own random linear map:

    x_m = A_m (info_m * s * mu_y + n_m) + sigma * e_m,   n_m, e_m ~ N(0, I)

where s = ±1 is a per-sample random sign (`sign_flip`, on by default): the class is carried
by the axis of mu_y, not its sign, so a modality can only be read by a non-linear encoder,
and the weakly informative ones are learned slowly. With one large `info_m` (the default
makes `m0` dominant) a jointly trained model leans on that modality and under-learns the
others; the audit then shows a large drop exactly when it is missing (a test checks this).
"""

from __future__ import annotations

from collections.abc import Sequence
from math import prod

import torch

from ..errors import MMRobustError
from .dataset import ENCODER_KINDS, DataSpec, ModalitySpec, MultimodalData, Task, stratified_split
from .registry import DatasetInfo, register_dataset

_DEFAULT_SHAPES = {"mlp": (16,), "conv1d": (2, 16), "conv2d": (1, 8, 8), "seq": (6, 4), "frames": (3, 1, 8, 8)}


@register_dataset(
    "synthetic", DatasetInfo(summary="Controlled generator with a known dominant modality (for tests)")
)
def load_synthetic(
    n_samples: int = 1200,
    num_classes: int = 4,
    informativeness: Sequence[float] = (5.0, 0.8, 0.8),
    kinds: Sequence[str] | None = None,
    latent_dim: int = 8,
    noise: float = 0.5,
    missing_rate: float = 0.0,
    sign_flip: bool = True,
    task: Task = "classification",
    seed: int = 0,
) -> MultimodalData:
    """Generate the dataset; `kinds` picks each modality's encoder kind (default all `mlp`)."""
    n_mod = len(informativeness)
    kinds = tuple(kinds) if kinds is not None else ("mlp",) * n_mod
    if len(kinds) != n_mod or n_mod < 1:
        raise MMRobustError(f"{len(kinds)} kinds for {n_mod} modalities")
    for kind in kinds:
        if kind not in ENCODER_KINDS:
            raise MMRobustError(f"unknown encoder kind '{kind}' (valid: {', '.join(ENCODER_KINDS)})")
    if task not in ("classification", "regression"):
        raise MMRobustError(f"task must be classification or regression, not '{task}'")
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(num_classes, (n_samples,), generator=g)
    prototypes = torch.randn(num_classes, latent_dim, generator=g)  # (C, L)
    signal = prototypes[labels]  # (N, L)
    names = tuple(f"m{j}" for j in range(n_mod))
    specs, inputs = [], {}
    for name, kind, info in zip(names, kinds, informativeness, strict=True):
        shape = _DEFAULT_SHAPES[kind]
        mixing = torch.randn(latent_dim, prod(shape), generator=g) / latent_dim**0.5
        private = torch.randn(n_samples, latent_dim, generator=g)
        sign = torch.randint(2, (n_samples, 1), generator=g) * 2.0 - 1 if sign_flip else 1.0
        x = (info * sign * signal + private) @ mixing + noise * torch.randn(
            n_samples, prod(shape), generator=g
        )
        inputs[name] = x.reshape(n_samples, *shape)
        specs.append(ModalitySpec(name, kind, shape))
    present = torch.rand(n_samples, n_mod, generator=g) >= missing_rate
    present[torch.arange(n_samples), torch.randint(n_mod, (n_samples,), generator=g)] = True
    if task == "classification":
        target, n_out = labels, num_classes
    else:  # a continuous score in [-3, 3], like sentiment intensity
        target, n_out = (labels.float() / max(num_classes - 1, 1)) * 6 - 3, 1
    train, val, test = stratified_split(labels, (0.6, 0.2, 0.2), g)
    spec = DataSpec(
        "synthetic",
        tuple(specs),
        task,
        n_out,
        tuple(str(c) for c in range(num_classes)) if task == "classification" else (),
    )
    return MultimodalData(spec, inputs, present, target, {"train": train, "val": val, "test": test})
