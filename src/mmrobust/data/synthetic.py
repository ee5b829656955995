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

from collections.abc import Collection, Iterator, Sequence
from math import prod

import torch

from ..errors import MMRobustError, check_fraction, check_int, check_number
from ..seeds import MAX_SEED, derive_seed
from .batch import Batch
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
    kinds = _checked_options(
        n_samples, 1, num_classes, informativeness, kinds, latent_dim, noise, missing_rate, task, seed
    )
    n_mod = len(kinds)
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


class SyntheticStream:
    """The `synthetic` generator as a stream: any number of samples, made a chunk at a time on demand.

    The same model of the data as `load_synthetic` (the class prototypes and each modality's mixing
    map are drawn from `seed` once), but sample i is drawn from a generator of (seed, i // BLOCK)
    only, so `batches(size)` gives the same samples whatever `size`, and memory holds one chunk,
    not N samples: the audit's scale benchmark streams 1,000,000 of them. The stream has no
    splits (the audit reads all of it); `offset` starts it at another sample index, so
    `SyntheticStream(n, offset=10**9)` is a test set disjoint from `SyntheticStream(m).to_data()`.

        train = SyntheticStream(5_000, informativeness=(3, 1, 1, 1)).to_data()   # in memory, split
        test = SyntheticStream(1_000_000, informativeness=(3, 1, 1, 1), offset=10**9)
        mmrobust.audit(model, test)
    """

    BLOCK = 4096  # samples per generator

    def __init__(
        self,
        n_samples: int,
        num_classes: int = 4,
        informativeness: Sequence[float] = (5.0, 0.8, 0.8),
        kinds: Sequence[str] | None = None,
        latent_dim: int = 8,
        noise: float = 0.5,
        missing_rate: float = 0.0,
        sign_flip: bool = True,
        task: Task = "classification",
        seed: int = 0,
        offset: int = 0,
    ) -> None:
        kinds = _checked_options(
            n_samples, 0, num_classes, informativeness, kinds, latent_dim, noise, missing_rate, task, seed
        )
        check_int(offset, "offset", 0)
        n_mod = len(kinds)
        self.n_samples, self.num_classes, self.latent_dim = n_samples, num_classes, latent_dim
        self.informativeness, self.kinds = tuple(informativeness), kinds
        self.noise, self.missing_rate, self.sign_flip, self.task = noise, missing_rate, sign_flip, task
        self.seed, self.offset = seed, offset
        self._last: tuple[int, tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]] | None = None
        g = torch.Generator().manual_seed(seed)
        self.prototypes = torch.randn(num_classes, latent_dim, generator=g)  # (C, L)
        self.shapes = [_DEFAULT_SHAPES[kind] for kind in kinds]
        self.mixing = [torch.randn(latent_dim, prod(s), generator=g) / latent_dim**0.5 for s in self.shapes]
        names = tuple(f"m{j}" for j in range(n_mod))
        self.spec = DataSpec(
            "synthetic",
            tuple(ModalitySpec(n, k, s) for n, k, s in zip(names, kinds, self.shapes, strict=True)),
            task,
            num_classes if task == "classification" else 1,
            tuple(str(c) for c in range(num_classes)) if task == "classification" else (),
        )

    def __len__(self) -> int:
        return self.n_samples

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.spec.modality_names

    def batch(self, start: int, stop: int) -> Batch:
        """Samples [start, stop) of the stream."""
        inputs, present, labels = self._rows(start, min(stop, self.n_samples))
        return Batch(inputs, present, self._target(labels), self.modalities)

    def batches(self, batch_size: int) -> Iterator[Batch]:
        for start in range(0, self.n_samples, batch_size):
            yield self.batch(start, start + batch_size)

    def to_data(self, fractions: Sequence[float] = (0.6, 0.2, 0.2)) -> MultimodalData:
        """All samples in memory, with stratified train/val/test splits (for training a model)."""
        inputs, present, labels = self._rows(0, self.n_samples)
        parts = stratified_split(labels, fractions, torch.Generator().manual_seed(self.seed))
        splits = dict(zip(("train", "val", "test"), parts, strict=False))
        return MultimodalData(self.spec, inputs, present, self._target(labels), splits)

    def _target(self, labels: torch.Tensor) -> torch.Tensor:
        if self.task == "classification":
            return labels
        return (labels.float() / max(self.num_classes - 1, 1)) * 6 - 3  # as load_synthetic

    def _rows(self, start: int, stop: int) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """Inputs, present mask and class labels of samples [start, stop), from the blocks covering them."""
        first, last = self.offset + start, self.offset + max(stop, start)
        blocks = [self._block(b) for b in range(first // self.BLOCK, -(-last // self.BLOCK))]
        if not blocks:  # an empty range
            return self._empty()
        cut = slice(first % self.BLOCK, first % self.BLOCK + last - first)
        inputs = {m: torch.cat([blk[0][m] for blk in blocks])[cut] for m in self.modalities}
        return inputs, torch.cat([blk[1] for blk in blocks])[cut], torch.cat([blk[2] for blk in blocks])[cut]

    def _empty(self) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        inputs = {m: torch.zeros(0, *shape) for m, shape in zip(self.modalities, self.shapes, strict=True)}
        return inputs, torch.zeros(0, len(self.modalities), dtype=torch.bool), torch.zeros(0, dtype=torch.long)

    def _block(self, block: int) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """Inputs, present mask and labels of the BLOCK samples of one generator (load_synthetic's model);
        the last block made is kept, so batches smaller than a block do not make it again."""
        if self._last is not None and self._last[0] == block:
            return self._last[1]
        n, n_mod = self.BLOCK, len(self.modalities)
        g = torch.Generator().manual_seed(derive_seed(self.seed, "block", block))
        labels = torch.randint(self.num_classes, (n,), generator=g)
        signal = self.prototypes[labels]  # (n, L)
        inputs = {}
        for j, (name, shape) in enumerate(zip(self.modalities, self.shapes, strict=True)):
            private = torch.randn(n, self.latent_dim, generator=g)
            sign = torch.randint(2, (n, 1), generator=g) * 2.0 - 1 if self.sign_flip else 1.0
            latent = self.informativeness[j] * sign * signal + private  # (n, L)
            x = latent @ self.mixing[j] + self.noise * torch.randn(n, prod(shape), generator=g)
            inputs[name] = x.reshape(n, *shape)
        present = torch.rand(n, n_mod, generator=g) >= self.missing_rate
        present[torch.arange(n), torch.randint(n_mod, (n,), generator=g)] = True
        self._last = (block, (inputs, present, labels))
        return inputs, present, labels


def _checked_options(
    n_samples: object,
    min_samples: int,
    num_classes: object,
    informativeness: object,
    kinds: Sequence[str] | None,
    latent_dim: object,
    noise: object,
    missing_rate: object,
    task: str,
    seed: object,
) -> tuple[str, ...]:
    """Each modality's encoder kind (default all `mlp`), after checking every option of the generator:
    0 samples or classes failed inside torch, and a missing_rate of 1.5 or -2, a single class, negative
    noise or a latent of 0 dimensions were generated silently (as data with nothing to learn)."""
    check_int(n_samples, "n_samples", min_samples)
    check_int(num_classes, "num_classes", 2)
    check_int(latent_dim, "latent_dim", 1)
    check_number(noise, "noise", 0.0)
    check_fraction(missing_rate, "missing_rate")
    check_int(seed, "seed", 0, MAX_SEED)
    if isinstance(informativeness, str) or not isinstance(informativeness, Collection) or not len(informativeness):
        raise MMRobustError(f"informativeness must list a number per modality, e.g. (5, 0.8), got {informativeness!r}")
    n_mod = len([check_number(v, f"informativeness[{j}]", 0.0) for j, v in enumerate(informativeness)])
    kinds = tuple(kinds) if kinds is not None else ("mlp",) * n_mod
    if len(kinds) != n_mod:
        raise MMRobustError(f"{len(kinds)} kinds for {n_mod} modalities")
    for kind in kinds:
        if kind not in ENCODER_KINDS:
            raise MMRobustError(f"unknown encoder kind '{kind}' (valid: {', '.join(ENCODER_KINDS)})")
    if task not in ("classification", "regression"):
        raise MMRobustError(f"task must be classification or regression, not '{task}'")
    return kinds
