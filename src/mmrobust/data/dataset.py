"""In-memory multimodal datasets: tensors per modality, a presence mask, targets, splits.

Everything the toolkit reads ends up as a `MultimodalData`. Batches are cut by index
slicing (no per-sample Python on the hot path), and a dataset validates itself once at
construction so that bad files fail early with a one-line message.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, Protocol

import torch
from torch import Tensor

from ..errors import MMRobustError, check_fraction, check_int, unknown_name
from ..seeds import MAX_SEED
from .batch import Batch

Task = Literal["classification", "regression"]
Scaling = dict[str, tuple[Tensor, Tensor]]  # modality -> (mean, std), each shaped to broadcast over one sample
ENCODER_KINDS = ("mlp", "conv1d", "conv2d", "seq", "frames")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ModalitySpec:
    """What an encoder needs to know about a modality: its kind (the layout of its samples) and
    per-sample shape, and the registered encoder that reads it when not the kind's own (`encoder`:
    e.g. "resconv2d" for images that need a deeper network; empty: the encoder named like the kind)."""

    name: str
    kind: str  # one of ENCODER_KINDS
    shape: tuple[int, ...]
    encoder: str = ""

    @property
    def encoder_name(self) -> str:
        return self.encoder or self.kind


@dataclass(frozen=True)
class DataSpec:
    """Everything a model must agree with to be trained or evaluated on a dataset."""

    name: str
    modalities: tuple[ModalitySpec, ...]
    task: Task
    num_classes: int  # 1 for regression
    class_names: tuple[str, ...] = ()

    @property
    def modality_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.modalities)

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain data; a modality read by its kind's own encoder has no `encoder` key, so
        specs (and the caches and checkpoints keyed on them) read as they did before the key existed."""
        d = asdict(self)
        for m in d["modalities"]:
            if not m["encoder"]:
                del m["encoder"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataSpec:
        mods = tuple(
            ModalitySpec(m["name"], m["kind"], tuple(m["shape"]), m.get("encoder", "")) for m in d["modalities"]
        )
        return cls(d["name"], mods, d["task"], int(d["num_classes"]), tuple(d["class_names"]))

    def compatibility_problem(self, other: DataSpec) -> str | None:
        """Why a model built for `self` cannot run on data described by `other` (or None). The encoders
        are the model's own: data loaded without naming them still runs a model trained with them."""
        if self.modality_names != other.modality_names:
            return f"modalities {list(self.modality_names)} vs {list(other.modality_names)}"
        for a, b in zip(self.modalities, other.modalities, strict=True):
            if (a.kind, a.shape) != (b.kind, b.shape):
                return f"modality '{a.name}' is {a.kind}{list(a.shape)} vs {b.kind}{list(b.shape)}"
        if self.task != other.task:
            return f"task {self.task} vs {other.task}"
        if self.num_classes != other.num_classes:
            return f"{self.num_classes} classes vs {other.num_classes}"
        return None


@dataclass
class MultimodalData:
    """N samples of M modalities with a presence mask, targets and named index splits."""

    spec: DataSpec
    inputs: dict[str, Tensor]  # modality -> (N, *shape)
    present: Tensor  # (N, M) bool
    target: Tensor  # (N,)
    splits: dict[str, Tensor] = field(default_factory=dict)  # name -> (n_split,) long indices
    scaling: Scaling = field(default_factory=dict)  # how `standardize` scaled each modality (absent: as stored)

    def __post_init__(self) -> None:
        _validate(self)

    def __len__(self) -> int:
        return int(self.present.shape[0])

    def __repr__(self) -> str:
        """One line a user can read: the dataclass default would print every tensor of the dataset."""
        share = self.present.float().mean(0).tolist() if len(self) else [1.0] * len(self.modalities)
        modalities = ", ".join(
            f"{m.name} {m.encoder_name}{list(m.shape)}" + (f" {s:.0%} present" if s < 1 else "")
            for m, s in zip(self.spec.modalities, share, strict=True)
        )
        task = f"{self.spec.num_classes} classes" if self.spec.task == "classification" else "regression"
        splits = "".join(f", {name} {len(index)}" for name, index in self.splits.items())
        return f"MultimodalData('{self.spec.name}', {len(self)} samples, {task}; {modalities}{splits})"

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.spec.modality_names

    def with_encoders(self, encoders: Mapping[str, str]) -> MultimodalData:
        """The same samples with some modalities read by another registered encoder (modality ->
        encoder name, e.g. {"depth": "resconv2d"}): an encoder is a choice of the recipe, not of the
        data, so any dataset can take any encoder that accepts its layout. (Data sit below models: an
        unknown encoder name fails, with a suggestion, when a model is built.)"""
        for name in encoders:
            if name not in self.modalities:
                raise unknown_name("modality", name, self.modalities)
        modalities = tuple(replace(m, encoder=encoders.get(m.name, m.encoder)) for m in self.spec.modalities)
        spec = replace(self.spec, modalities=modalities)
        return _trusted(spec, self.inputs, self.present, self.target, self.splits, self.scaling)

    def split(self, name: str) -> MultimodalData:
        """The samples of one split, as a dataset of its own (with no further splits)."""
        if name not in self.splits:
            raise MMRobustError(
                f"dataset '{self.spec.name}' has no '{name}' split (has: {sorted(self.splits)})"
            )
        return self.subset(self.splits[name])

    def subset(self, index: Tensor) -> MultimodalData:
        """The samples at `index`; not re-validated, since a subset of valid data is valid. A run of
        consecutive indices (a split of most loaders) gives views, not copies: the audit of a large
        test split no longer starts by copying it."""
        rows = _as_slice(index, len(self))
        inputs = {m: x[rows] for m, x in self.inputs.items()}
        return _trusted(self.spec, inputs, self.present[rows], self.target[rows], {}, self.scaling)

    def batch(self, index: Tensor | slice) -> Batch:
        return Batch(
            {m: x[index] for m, x in self.inputs.items()},
            self.present[index],
            self.target[index],
            self.modalities,
        )

    def batches(
        self, batch_size: int, generator: torch.Generator | None = None, drop_last: bool = False
    ) -> Iterator[Batch]:
        """Batches in order, or shuffled by `generator` when one is given."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if generator is not None else None
        stop = n - n % batch_size if drop_last and n >= batch_size else n
        for start in range(0, stop, batch_size):
            if order is None:
                yield self.batch(slice(start, start + batch_size))
            else:
                yield self.batch(order[start : start + batch_size])


class ChunkedData(Protocol):
    """What the audit streams over: a spec, a length and the samples in order, a chunk at a time.

    `batches(size)` yields consecutive batches of exactly `size` samples (the last one may be
    shorter). `MultimodalData` is one; `data.synthetic.SyntheticStream` is another, which makes
    each chunk on demand, so a test set need never be in memory as a whole.
    """

    @property
    def spec(self) -> DataSpec: ...

    @property
    def modalities(self) -> tuple[str, ...]: ...

    def __len__(self) -> int: ...

    def batches(self, batch_size: int) -> Iterator[Batch]: ...


def _trusted(
    spec: DataSpec,
    inputs: dict[str, Tensor],
    present: Tensor,
    target: Tensor,
    splits: dict[str, Tensor],
    scaling: Scaling,
) -> MultimodalData:
    """A dataset made of the parts of a valid one, not validated again (validation reads every value)."""
    data = object.__new__(MultimodalData)
    data.spec, data.inputs, data.present, data.target, data.splits = spec, inputs, present, target, splits
    data.scaling = scaling
    return data


def _as_slice(index: Tensor, n: int) -> Tensor | slice:
    """`index` as the equal slice when it is a run of consecutive row numbers below `n`, else
    unchanged (so an out-of-range index still fails as it would)."""
    if index.dtype == torch.bool or index.dim() != 1 or not len(index):
        return index
    start = int(index[0])
    steps = index[1:] - index[:-1]
    inside = start >= 0 and start + len(index) <= n
    return slice(start, start + len(index)) if inside and bool((steps == 1).all()) else index


SCENARIO_SYNTAX = "+@,[]="  # what scenario names are written with: `subset[a+b]`, `missing[a@0.3]`, `rates[a=0.5,b=0]`


def _check_name(name: str) -> None:
    """A modality name must read back out of a scenario name: `subset[a+b]` would be one modality `a+b`
    or two, and the audit's summaries (which modality a model relies on) would name the wrong one."""
    bad = [c for c in dict.fromkeys(name) if c in SCENARIO_SYNTAX or c.isspace()]
    if not isinstance(name, str) or not name or bad:
        shown = f" contains {' '.join(repr(c) for c in bad)}" if bad else " is empty"
        raise MMRobustError(
            f"modality name {name!r}{shown}: scenario names are written with {' '.join(SCENARIO_SYNTAX)} "
            "(`subset[a+b]`, `missing[a@0.3]`), so a modality name cannot hold them or spaces; rename it "
            "(in an npz file: its x_<modality> array)"
        )


def _validate(data: MultimodalData) -> None:
    """Fail early, in one line, on data that would otherwise break far from its cause."""
    spec, n = data.spec, len(data)
    if data.present.dtype != torch.bool or data.present.shape != (n, len(spec.modalities)):
        raise MMRobustError(f"present mask must be bool of shape ({n}, {len(spec.modalities)})")
    if data.target.shape[:1] != (n,):
        raise MMRobustError(f"{data.target.shape[0]} labels for {n} samples")
    for m in spec.modality_names:
        _check_name(m)
    for j, m in enumerate(spec.modality_names):
        x = data.inputs.get(m)
        if x is None or x.shape[0] != n:
            got = "no array" if x is None else f"{x.shape[0]} samples"
            raise MMRobustError(f"modality '{m}' has {got}, but the labels have {n}")
        bad = ~torch.isfinite(x.flatten(1)).all(dim=1) & data.present[:, j]
        if bad.any():
            first = int(bad.nonzero()[0])
            raise MMRobustError(
                f"modality '{m}' has NaN/inf in {int(bad.sum())} present samples (first: {first}); "
                "clean them or mark them absent"
            )
    if spec.task == "regression" and not torch.isfinite(data.target).all():
        bad_rows = (~torch.isfinite(data.target)).nonzero().flatten()
        raise MMRobustError(
            f"{len(bad_rows)} regression targets are NaN/inf (first: sample {int(bad_rows[0])}); "
            "drop those samples"
        )
    if spec.task == "classification":
        if data.target.dtype.is_floating_point:
            raise MMRobustError("classification labels must be integers")
        if n and (data.target.min() < 0 or data.target.max() >= spec.num_classes):
            raise MMRobustError(
                f"labels out of range: found {int(data.target.min())}..{int(data.target.max())}, "
                f"expected 0..{spec.num_classes - 1}"
            )
    for name, index in data.splits.items():
        if index.numel() and (index.min() < 0 or index.max() >= n):
            raise MMRobustError(f"split '{name}' indexes outside the {n} samples")
    scaling_problem = check_scaling(data.scaling, spec)
    if scaling_problem:
        raise MMRobustError(f"scaling: {scaling_problem}")


def check_scaling(scaling: object, spec: DataSpec) -> str | None:
    """Why `scaling` cannot scale data described by `spec` (or None): statistics of a modality it does
    not have, or of a shape that does not broadcast over one sample, would fail (or silently
    broadcast wrongly) only when a model is fed the data."""
    if not isinstance(scaling, dict):
        return f"expected a dict of modality -> (mean, std), got {type(scaling).__name__}"
    shapes = {m.name: m.shape for m in spec.modalities}
    for name, stats in scaling.items():
        if name not in shapes:
            return f"statistics of '{name}', which is not a modality of the data ({', '.join(shapes)})"
        ok = isinstance(stats, tuple) and len(stats) == 2 and all(isinstance(t, Tensor) for t in stats)
        if not ok:
            return f"'{name}': expected a (mean, std) pair of tensors"
        mean, std = stats
        fits = mean.shape == std.shape and mean.dim() == len(shapes[name])
        if not fits or any(s not in (1, d) for s, d in zip(mean.shape, shapes[name], strict=True)):
            return f"'{name}': statistics of shape {list(mean.shape)} do not fit samples of shape {list(shapes[name])}"
        if not (mean.is_floating_point() and std.is_floating_point()):
            return f"'{name}': statistics must be floating-point, got {mean.dtype} and {std.dtype}"
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all() and (std > 0).all()):
            return f"'{name}': statistics must be finite, with std > 0"
    return None


def scaling_to_file(scaling: Scaling) -> dict[str, dict[str, Tensor]]:
    """`scaling` as the plain containers a tensors-only file holds (the cache, checkpoints)."""
    return {m: {"mean": mean, "std": std} for m, (mean, std) in scaling.items()}


def scaling_from_file(saved: object) -> Scaling:
    """`scaling_to_file`'s inverse; a MMRobustError when `saved` is not of that form."""
    pairs = {"mean", "std"}
    if not isinstance(saved, dict) or not all(isinstance(s, dict) and s.keys() == pairs for s in saved.values()):
        raise MMRobustError("scaling is not modality -> {mean, std}")
    return {m: (s["mean"], s["std"]) for m, s in saved.items()}


def stratified_split(labels: Tensor, fractions: Sequence[float], generator: torch.Generator) -> list[Tensor]:
    """Split indices into parts with the given fractions, class by class (seeded).

    For regression targets pass a binned label (e.g. the sign) to stratify on. Fractions outside
    [0, 1], or summing past 1, are refused: they would cut overlapping or reversed slices.
    """
    shares = [check_fraction(f, "a split fraction") for f in fractions]
    if sum(shares) > 1 + 1e-9:
        raise MMRobustError(f"split fractions must sum to at most 1, got {shares} (sum {sum(shares):g})")
    parts: list[list[Tensor]] = [[] for _ in fractions]
    for c in torch.unique(labels):
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        bounds = torch.tensor([0.0, *shares]).cumsum(0) * len(idx)
        cuts = bounds.round().long().tolist()
        for k in range(len(fractions)):
            parts[k].append(idx[cuts[k] : cuts[k + 1]])
    return [torch.sort(torch.cat(p)).values for p in parts]


def check_split_options(split_seed: object, val_fraction: object = None) -> None:
    """The split options loaders share, checked before anything is read (`val_fraction` None: the
    loader has none). A val_fraction outside (0, 1) cut negative slices (1.5 gave train 20 / val 20
    of BasicMotions's 40 training windows, -0.1 no val at all); a split_seed that is not an int in
    0..MAX_SEED failed inside torch (a RuntimeError for "a") or silently seeded another split (-1)."""
    check_int(split_seed, "split_seed", 0, MAX_SEED)
    if val_fraction is not None:
        check_fraction(val_fraction, "val_fraction", open_interval=True)


def standardize(data: MultimodalData, reference: str = "train") -> MultimodalData:
    """Scale every modality to zero mean, unit variance per channel, using `reference` only.

    Statistics come from the present samples of the reference split, so validation and test
    data never leak into preprocessing; absent placeholders are left untouched. A channel is
    a feature (`mlp`, `seq`), a leading channel (`conv1d`, `conv2d`) or a frame channel (`frames`).
    The statistics are kept in `scaling` (composed with any earlier scaling, so they always map the
    stored arrays): `fit` records them in the model, so a checkpoint is fed other data scaled alike.
    """
    index = data.splits[reference]
    scaling: Scaling = {}
    for j, spec in enumerate(data.spec.modalities):
        x = data.inputs[spec.name].float()
        ref = x[index][data.present[index, j]]
        if len(ref) < 2:
            raise MMRobustError(
                f"modality '{spec.name}' is present in {len(ref)} '{reference}' samples; "
                "at least 2 are needed to standardise it"
            )
        dims = _channel_reduce_dims(spec.kind, x.dim())
        mean = ref.mean(dim=dims, keepdim=True)[0]
        std = ref.std(dim=dims, keepdim=True)[0].clamp_min(1e-6)
        if spec.name in data.scaling:  # already scaled: the statistics of the arrays as stored
            before_mean, before_std = data.scaling[spec.name]
            mean, std = before_mean + before_std * mean, before_std * std
        scaling[spec.name] = (mean, std)
    out = rescaled(data, scaling)  # validated, as before: a value that overflowed is named here, not in training
    return MultimodalData(out.spec, out.inputs, out.present, out.target, out.splits, out.scaling)


def rescaled(data: MultimodalData, scaling: Scaling) -> MultimodalData:
    """`data` with each present sample scaled by `scaling` instead of by its own `data.scaling`
    (a modality missing from either: as stored), so a model is fed inputs on the scale it was
    trained on, whatever split or file they were standardised with. `data` itself when they agree."""
    problem = check_scaling(scaling, data.spec)
    if problem:
        raise MMRobustError(f"cannot rescale '{data.spec.name}': {problem}")
    if scaling.keys() == data.scaling.keys() and all(_same_statistics(scaling[m], data.scaling[m]) for m in scaling):
        return data
    inputs = {}
    for j, m in enumerate(data.modalities):
        x = data.inputs[m]
        if _same_statistics(scaling.get(m), data.scaling.get(m)):  # this modality is on the right scale already
            inputs[m] = x
            continue
        raw = stored = x.float()
        if m in data.scaling:
            mean, std = data.scaling[m]
            raw = raw * std.float() + mean.float()
        if m in scaling:
            mean, std = scaling[m]
            raw = (raw - mean.float()) / std.float()
        keep = data.present[:, j].view(-1, *[1] * (x.dim() - 1))
        inputs[m] = torch.where(keep, raw, stored)
    return _trusted(data.spec, inputs, data.present, data.target, data.splits, dict(scaling))


def _same_statistics(a: tuple[Tensor, Tensor] | None, b: tuple[Tensor, Tensor] | None) -> bool:
    """Whether two (mean, std) pairs, or their absence, scale a modality alike."""
    if a is None or b is None:
        return a is b
    return a is b or all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def _channel_reduce_dims(kind: str, ndim: int) -> tuple[int, ...]:
    """Axes (sample axis included) that one channel's statistics are pooled over."""
    if kind in ("conv1d", "conv2d"):
        return (0, *range(2, ndim))  # (N, C, ...) -> per C
    if kind == "frames":
        return (0, 1, *range(3, ndim))  # (N, T, C, H, W) -> per C
    return tuple(range(ndim - 1))  # (N, ..., F) -> per F
