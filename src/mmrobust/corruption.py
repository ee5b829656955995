"""Every way a modality can go missing or noisy, as one set of seeded, serialisable objects.

The same objects are training augmentations (modality dropout, perturbation) and audit
scenarios (docs/architecture.md, invariant 2). Each is a pure function of its input and an
explicit `torch.Generator`, and has a short stable `name` plus a `to_dict()` so that results
record exactly what was applied.

Conventions:
- a *proportion* or *rate* is the fraction of samples for which something happens
  (`Missing("audio", 0.3)`: audio is absent for ~30% of samples, drawn independently per
  sample); only samples where the modality is present can lose it or be noised;
- mask corruptions (`Subset`, `Missing`, `MissingRates`, `RandomDrop`) only edit
  `present`, so they act identically on a `Batch` and on `Tokens`;
- noise acts on the raw inputs (`stage="input"`) or on encoder tokens (`stage="token"`).
"""

from __future__ import annotations

import math
import numbers
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar

import torch
from torch import Tensor

from .data.batch import Batch
from .data.tokens import Tokens
from .errors import MMRobustError, check_fraction, unknown_name
from .registry import Registry

CorruptionStage = Literal["input", "token"]
AllMissingPolicy = Literal["keep_one", "allow"]
T = TypeVar("T", Batch, Tokens)
CORRUPTIONS: Registry[type[Corruption]] = Registry("corruption")  # by `type_name`, as `to_dict` records it


class Corruption(ABC):
    """Base class: `corruption(batch_or_tokens, generator) -> same type`."""

    type_name: ClassVar[str]
    stage: CorruptionStage = "input"

    def __init_subclass__(cls) -> None:
        if "type_name" in cls.__dict__:
            CORRUPTIONS.register(cls.type_name)(cls)

    @property
    @abstractmethod
    def name(self) -> str:
        """A short, stable label used in result tables."""

    def to_dict(self) -> dict[str, Any]:
        fields = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in vars(self).items()}
        fields = {k: (list(v) if isinstance(v, tuple) else v) for k, v in fields.items()}
        return {"type": self.type_name, **fields}

    @abstractmethod
    def __call__(self, x: T, generator: torch.Generator) -> T:
        """Apply to a `Batch` (input stage) or `Tokens` (token stage)."""

    def touched(self, modalities: Sequence[str]) -> tuple[str, ...]:
        """The modalities whose values (not just masks) this corruption changes."""
        return ()

    @property
    def allows_all_missing(self) -> bool:
        """Whether it leaves a sample with no modality on purpose (`if_all_missing="allow"`): the audit
        scores such samples only then, and otherwise leaves them out (a subset a sample has none of)."""
        return getattr(self, "if_all_missing", None) == "allow"

    @property
    def on_tokens(self) -> bool:
        """Whether it acts on encoded tokens (token-stage noise) rather than on the batch before
        encoding (masks, whatever their stage, and input noise: a dropped modality is never encoded)."""
        return self.stage == "token" and not isinstance(self, MaskCorruption)


def encode_corrupted(
    encode: Callable[[Batch], Tokens], batch: Batch, corruption: Corruption | None, generator: torch.Generator
) -> Tokens:
    """`batch` encoded under `corruption` (None: as it is), which acts where `on_tokens` says."""
    if corruption is None:
        return encode(batch)
    if corruption.on_tokens:
        return corruption(encode(batch), generator)
    return encode(corruption(batch, generator))


def as_corruption(value: Corruption | Mapping[str, Any] | str) -> Corruption:
    """A corruption parameter as methods take it: the object, its dict or its short name."""
    if isinstance(value, Corruption):
        return value
    return corruption_from_name(value) if isinstance(value, str) else corruption_from_dict(value)


def corruption_from_dict(d: Mapping[str, Any]) -> Corruption:
    if not isinstance(d, Mapping):
        raise MMRobustError(f"a corruption is a mapping with a 'type' (e.g. {{'type': 'RandomDrop'}}), got {d!r}")
    d = dict(d)
    kind = d.pop("type", None)
    cls = CORRUPTIONS.get(str(kind))
    try:
        return cls(**d)
    except MMRobustError:
        raise
    except (TypeError, ValueError) as e:
        raise MMRobustError(f"bad parameters for corruption {kind}: {e}") from None


def _index(modality: str, modalities: Sequence[str]) -> int:
    if modality not in modalities:
        raise unknown_name("modality", modality, modalities)
    return list(modalities).index(modality)


def _check_modality(modality: object) -> None:
    if not isinstance(modality, str) or not modality:
        raise MMRobustError(f"a modality name must be a non-empty string, got {modality!r}")


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)  # numpy scalars included


def _num(value: float) -> str:
    """A number as names print it: short (`%g`), unless that loses digits (then exact), so that
    `corruption_from_name(c.name) == c` and distinct corruptions never share a name."""
    short = f"{value:g}"
    return short if float(short) == value else repr(float(value))


def _policy_suffix(policy: AllMissingPolicy) -> str:
    return ",allow" if policy == "allow" else ""


def _check_policy(policy: str) -> None:
    if policy not in ("keep_one", "allow"):
        raise MMRobustError(f"if_all_missing must be 'keep_one' or 'allow', not '{policy}'")


def _check_stage(stage: str) -> None:
    if stage not in ("input", "token"):
        raise MMRobustError(f"stage must be 'input' or 'token', not '{stage}'")


class MaskCorruption(Corruption):
    """A corruption that only changes which modalities are present."""

    @abstractmethod
    def new_present(self, present: Tensor, modalities: Sequence[str], generator: torch.Generator) -> Tensor:
        """The corrupted (B, M) presence mask."""

    def __call__(self, x: T, generator: torch.Generator) -> T:
        return x.with_present(self.new_present(x.present, x.modalities, generator))


def _keep_one_if_all_lost(
    before: Tensor, after: Tensor, policy: AllMissingPolicy, generator: torch.Generator
) -> Tensor:
    """Give samples that lost every modality back one of their own, chosen at random."""
    if policy == "allow":
        return after
    if policy != "keep_one":
        raise MMRobustError(f"if_all_missing must be 'keep_one' or 'allow', not '{policy}'")
    lost = ~after.any(dim=1) & before.any(dim=1)
    if lost.any():
        scores = torch.rand(before.shape, generator=generator).masked_fill(~before, -1.0)
        pick = scores.argmax(dim=1)  # a random present modality per sample
        after = after.clone()
        rows = lost.nonzero().flatten()
        after[rows, pick[rows]] = True
    return after


@dataclass(frozen=True)
class Subset(MaskCorruption):
    """Only the modalities in `keep` are present, for every sample."""

    keep: tuple[str, ...]
    stage: CorruptionStage = "input"
    type_name: ClassVar[str] = "Subset"

    def __post_init__(self) -> None:
        keep = (self.keep,) if isinstance(self.keep, str) else self.keep  # Subset("audio"): one modality
        object.__setattr__(self, "keep", tuple(keep))
        if not self.keep:
            raise MMRobustError("an empty modality subset was requested; keep at least one")
        for m in self.keep:
            _check_modality(m)
        twice = sorted({m for m in self.keep if self.keep.count(m) > 1})
        if twice:  # `subset[a+a]` would be a second name for `subset[a]`, a scenario the audit already has
            raise MMRobustError(f"modality subset {'+'.join(self.keep)} names {', '.join(twice)} twice")
        _check_stage(self.stage)

    @property
    def name(self) -> str:
        return "subset[" + "+".join(self.keep) + "]"

    def new_present(self, present: Tensor, modalities: Sequence[str], generator: torch.Generator) -> Tensor:
        keep = torch.zeros(len(modalities), dtype=torch.bool, device=present.device)
        keep[[_index(m, modalities) for m in self.keep]] = True
        return present & keep


@dataclass(frozen=True)
class Missing(MaskCorruption):
    """`modality` is absent for a `proportion` of samples (independent per-sample draws)."""

    modality: str
    proportion: float
    if_all_missing: AllMissingPolicy = "keep_one"
    stage: CorruptionStage = "input"
    type_name: ClassVar[str] = "Missing"

    def __post_init__(self) -> None:
        _check_modality(self.modality)
        object.__setattr__(self, "proportion", check_fraction(self.proportion, "proportion"))
        _check_policy(self.if_all_missing)
        _check_stage(self.stage)

    @property
    def name(self) -> str:
        return f"missing[{self.modality}@{_num(self.proportion)}{_policy_suffix(self.if_all_missing)}]"

    def new_present(self, present: Tensor, modalities: Sequence[str], generator: torch.Generator) -> Tensor:
        j = _index(self.modality, modalities)
        drop = torch.rand(present.shape[0], generator=generator) < self.proportion
        after = present.clone()
        after[:, j] &= ~drop.to(present.device)
        return _keep_one_if_all_lost(present, after, self.if_all_missing, generator)


@dataclass(frozen=True)
class MissingRates(MaskCorruption):
    """Independent per-modality absence rates, e.g. {"audio": 0.2, "video": 0.8}.

    A sample that would lose every modality keeps one of them at random
    (`if_all_missing="keep_one"`, the default) or stays empty (`"allow"`).
    """

    rates: Mapping[str, float]
    if_all_missing: AllMissingPolicy = "keep_one"
    stage: CorruptionStage = "input"
    type_name: ClassVar[str] = "MissingRates"

    def __post_init__(self) -> None:
        if not isinstance(self.rates, Mapping):
            raise MMRobustError(f"rates must map modality names to missing rates, got {self.rates!r}")
        if not self.rates:
            raise MMRobustError("rates is empty; give at least one modality's missing rate")
        for m in self.rates:
            _check_modality(m)
        rates = {m: check_fraction(r, f"missing rate of '{m}'") for m, r in self.rates.items()}
        object.__setattr__(self, "rates", rates)
        _check_policy(self.if_all_missing)
        _check_stage(self.stage)

    @property
    def name(self) -> str:
        rates = ",".join(f"{m}={_num(r)}" for m, r in self.rates.items())
        return f"rates[{rates}{_policy_suffix(self.if_all_missing)}]"

    def new_present(self, present: Tensor, modalities: Sequence[str], generator: torch.Generator) -> Tensor:
        rate = torch.zeros(len(modalities))
        for m, r in self.rates.items():
            rate[_index(m, modalities)] = r
        drop = torch.rand(present.shape, generator=generator) < rate  # (B, M)
        after = present & ~drop.to(present.device)
        return _keep_one_if_all_lost(present, after, self.if_all_missing, generator)


@dataclass(frozen=True)
class RandomDrop(MaskCorruption):
    """Drop K ~ Uniform{0..P-1} of the P present modalities per sample: never all."""

    stage: CorruptionStage = "input"
    type_name: ClassVar[str] = "RandomDrop"

    @property
    def name(self) -> str:
        return "randomdrop"

    def new_present(self, present: Tensor, modalities: Sequence[str], generator: torch.Generator) -> Tensor:
        n_present = present.sum(dim=1)  # (B,)
        k = (torch.rand(present.shape[0], generator=generator) * n_present.cpu()).long()
        scores = torch.rand(present.shape, generator=generator).to(present.device)
        scores = scores.masked_fill(~present, 2.0)  # absent slots rank last
        rank = scores.argsort(dim=1).argsort(dim=1)  # (B, M): 0 = first to drop
        return present & (rank >= k.to(present.device)[:, None])


@dataclass(frozen=True)
class RandomSubset(MaskCorruption):
    """Keep a uniformly random non-empty subset of each sample's P present modalities: each of the
    2^P − 1 subsets equally likely. `RandomDrop` draws the number dropped uniformly instead, which
    weights subsets by their size (of four modalities, each pair is drawn 1/24 of the time and each
    single modality 1/16), so a model trained to serve every subset sees the middle sizes least."""

    stage: CorruptionStage = "input"
    type_name: ClassVar[str] = "RandomSubset"

    @property
    def name(self) -> str:
        return "randomsubset"

    def new_present(self, present: Tensor, modalities: Sequence[str], generator: torch.Generator) -> Tensor:
        keep = present & (torch.rand(present.shape, generator=generator) < 0.5).to(present.device)
        has_any = present.any(dim=1)  # a sample with nothing present stays empty
        empty = ~keep.any(dim=1) & has_any
        while empty.any():  # rejection: a fair coin per modality, conditioned on keeping one (P(empty) = 2^-P)
            rows = empty.nonzero().flatten()
            coins = (torch.rand((len(rows), present.shape[1]), generator=generator) < 0.5).to(present.device)
            keep[rows] = present[rows] & coins
            empty = ~keep.any(dim=1) & has_any
        return keep


NoiseMode = Literal["additive", "scalar"]


def _noise(value: Tensor, sigma: float, mode: NoiseMode, generator: torch.Generator) -> Tensor:
    """`additive`: x + sigma·ε with ε ~ N(0, 1) per element (the MSA-robustness paper's definition);
    `scalar`: x · s with one s ~ N(0, sigma²) per sample (what that paper's released code does)."""
    if mode == "additive":
        noise = torch.randn(value.shape, generator=generator)
        return value + sigma * noise.to(value.device, value.dtype)
    scale = sigma * torch.randn(len(value), generator=generator)
    return value * scale.to(value.device, value.dtype).view(-1, *[1] * (value.dim() - 1))


def _sigma(sigma: float, mode: str) -> float:
    """`sigma` as a plain float, if it is finite and >= 0 and `mode` is known."""
    if not _is_number(sigma) or not 0 <= sigma < math.inf:
        raise MMRobustError(f"sigma must be a finite number >= 0, got {sigma!r}")
    if mode not in ("additive", "scalar"):
        raise MMRobustError(f"noise mode must be 'additive' or 'scalar', not '{mode}'")
    return float(sigma)


def _noise_label(modality: str, sigma: float, mode: NoiseMode) -> str:
    return modality + (",scalar" if mode == "scalar" else "") + f",sigma={_num(sigma)}"


def _stage_suffix(stage: CorruptionStage) -> str:
    return "" if stage == "input" else "@token"


@dataclass(frozen=True)
class GaussianNoise(Corruption):
    """Noise on `modality` for a `proportion` of the samples where it is present (independent draws).

    Inputs are standardised per channel by the loaders, so sigma is in units of the data's
    standard deviation at `stage="input"` and of raw token units at `stage="token"`.
    `mode="scalar"` multiplies each hit sample by one N(0, sigma²) draw instead.
    """

    modality: str
    sigma: float = 1.0
    proportion: float = 1.0
    stage: CorruptionStage = "input"
    mode: NoiseMode = "additive"
    type_name: ClassVar[str] = "GaussianNoise"

    def __post_init__(self) -> None:
        _check_modality(self.modality)
        object.__setattr__(self, "proportion", check_fraction(self.proportion, "proportion"))
        _check_stage(self.stage)
        object.__setattr__(self, "sigma", _sigma(self.sigma, self.mode))

    @property
    def name(self) -> str:
        label = _noise_label(self.modality, self.sigma, self.mode)
        return f"noise[{label},p={_num(self.proportion)}]" + _stage_suffix(self.stage)

    def touched(self, modalities: Sequence[str]) -> tuple[str, ...]:
        return (self.modality,)

    def noised_rows(
        self, value: Tensor, present: Tensor, modalities: Sequence[str], generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """Which rows get noise (indices) and their noised values: shared by every code path."""
        j = _index(self.modality, modalities)
        hit = torch.rand(present.shape[0], generator=generator) < self.proportion
        rows = (hit.to(present.device) & present[:, j]).nonzero().flatten()
        return rows, _noise(value[rows], self.sigma, self.mode, generator)

    def __call__(self, x: T, generator: torch.Generator) -> T:
        _index(self.modality, x.modalities)  # a clear error for an unknown name
        value = x.value(self.modality)
        rows, noised = self.noised_rows(value, x.present, x.modalities, generator)
        out = value.clone()
        out[rows] = noised
        return x.with_value(self.modality, out)


@dataclass(frozen=True)
class Perturbation(Corruption):
    """Modality perturbation (Hazarika et al., NAACL 2022) as a training augmentation: of the
    samples where `modality` is present, exactly ⌊B·p⌋ lose it and another, disjoint ⌊B·p⌋ get
    it noised, re-drawn on every call. "15% missing + 15% noise" is `proportion=0.15`."""

    modality: str
    proportion: float = 0.15
    sigma: float = 1.0
    stage: CorruptionStage = "token"
    mode: NoiseMode = "additive"
    type_name: ClassVar[str] = "Perturbation"

    def __post_init__(self) -> None:
        _check_modality(self.modality)
        object.__setattr__(self, "proportion", check_fraction(self.proportion, "proportion"))
        if self.proportion > 0.5:
            raise MMRobustError(f"perturbation proportion must be <= 0.5 (missing + noise), got {self.proportion}")
        _check_stage(self.stage)
        object.__setattr__(self, "sigma", _sigma(self.sigma, self.mode))

    @property
    def name(self) -> str:
        label = _noise_label(self.modality, self.sigma, self.mode)
        return f"perturb[{label},p={_num(self.proportion)}]" + _stage_suffix(self.stage)

    def touched(self, modalities: Sequence[str]) -> tuple[str, ...]:
        return (self.modality,)

    def chosen_rows(
        self, present: Tensor, modalities: Sequence[str], generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """(dropped rows, noised rows): disjoint, ⌊B·p⌋ each, among the rows where the modality is present."""
        j = _index(self.modality, modalities)
        count = int(present.shape[0] * self.proportion)
        candidates = present[:, j].nonzero().flatten()
        order = candidates[torch.randperm(len(candidates), generator=generator).to(candidates.device)]
        return order[:count], order[count : 2 * count]

    def __call__(self, x: T, generator: torch.Generator) -> T:
        dropped, noised = self.chosen_rows(x.present, x.modalities, generator)
        value = x.value(self.modality).clone()
        value[noised] = _noise(value[noised], self.sigma, self.mode, generator)
        present = x.present.clone()
        present[dropped, x.modalities.index(self.modality)] = False
        return x.with_value(self.modality, value).with_present(present)


@dataclass(frozen=True)
class Compose(Corruption):
    """Apply corruptions in order (e.g. missing text for some samples, noise for others)."""

    parts: tuple[Corruption, ...]
    stage: CorruptionStage = "input"  # derived from the parts
    type_name: ClassVar[str] = "Compose"

    def __post_init__(self) -> None:
        if isinstance(self.parts, Corruption | Mapping | str):
            raise MMRobustError(f"Compose takes a list of corruptions, got {self.parts!r}")
        parts = tuple(as_corruption(p) for p in self.parts)  # objects, dicts or names, as everywhere
        if not parts:
            raise MMRobustError("Compose needs at least one corruption")
        object.__setattr__(self, "parts", parts)
        stages = {p.stage for p in parts if not isinstance(p, MaskCorruption)}
        if len(stages) > 1:
            raise MMRobustError("Compose mixes input- and token-stage noise; split it in two")
        object.__setattr__(self, "stage", stages.pop() if stages else "input")

    @property
    def name(self) -> str:
        return "+".join(p.name for p in self.parts)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type_name, "parts": [p.to_dict() for p in self.parts]}

    def touched(self, modalities: Sequence[str]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(m for p in self.parts for m in p.touched(modalities)))

    @property
    def allows_all_missing(self) -> bool:
        return any(p.allows_all_missing for p in self.parts)

    def __call__(self, x: T, generator: torch.Generator) -> T:
        for part in self.parts:
            x = part(x, generator)
        return x


_NOISE = r"(?P<mod>[^,\]]+)(?P<scalar>,scalar)?,sigma=(?P<s>[0-9.eE+-]+)"


def _stage(match: re.Match[str]) -> CorruptionStage:
    return "token" if match["tok"] else "input"


def _mode(match: re.Match[str]) -> NoiseMode:
    return "scalar" if match["scalar"] else "additive"


def _policy(match: re.Match[str]) -> AllMissingPolicy:
    return "allow" if match["allow"] else "keep_one"


def _rates(text: str) -> dict[str, float]:
    pairs = [kv.split("=") for kv in text.split(",")]
    if any(len(kv) != 2 for kv in pairs):
        raise ValueError("write each rate as modality=rate")
    names = [k for k, _ in pairs]
    if len(set(names)) != len(names):
        raise ValueError(f"a modality is given twice in {names}")
    return {k: float(v) for k, v in pairs}


_NAME_PATTERNS: tuple[tuple[str, Callable[[re.Match[str]], Corruption]], ...] = (
    (r"subset\[(?P<keep>[^\]]*)\]", lambda m: Subset(tuple(filter(None, m["keep"].split("+"))))),
    (
        r"missing\[(?P<mod>[^@\]]+)@(?P<p>[0-9.eE+-]+)(?P<allow>,allow)?\]",
        lambda m: Missing(m["mod"], float(m["p"]), _policy(m)),
    ),
    (r"rates\[(?P<rates>[^\]]+?)(?P<allow>,allow)?\]", lambda m: MissingRates(_rates(m["rates"]), _policy(m))),
    (r"randomdrop", lambda m: RandomDrop()),
    (r"randomsubset", lambda m: RandomSubset()),
    (
        r"noise\[" + _NOISE + r",p=(?P<p>[0-9.eE+-]+)\](?P<tok>@token)?",
        lambda m: GaussianNoise(m["mod"], float(m["s"]), float(m["p"]), _stage(m), _mode(m)),
    ),
    (
        r"perturb\[" + _NOISE + r",p=(?P<p>[0-9.eE+-]+)\](?P<tok>@token)?",
        lambda m: Perturbation(m["mod"], float(m["p"]), float(m["s"]), _stage(m), _mode(m)),
    ),
)


def corruption_from_name(name: str) -> Corruption:
    """Parse a corruption's short name back (`"missing[audio@0.3]"`), e.g. from the command line."""
    for pattern, build in _NAME_PATTERNS:
        match = re.fullmatch(pattern, name.strip())
        if match:
            try:
                return build(match)
            except MMRobustError as e:
                raise MMRobustError(f"scenario '{name}': {e}") from None
            except ValueError as e:
                raise MMRobustError(f"cannot parse scenario '{name}': {e}") from None
    raise MMRobustError(
        f"cannot parse scenario '{name}'; write it like subset[a+b], missing[a@0.3], "
        "rates[a=0.2,b=0.8], randomdrop, randomsubset, noise[a,sigma=1,p=0.3] (or noise[a,scalar,sigma=1,p=0.3]), "
        "perturb[a,sigma=1,p=0.15]; append @token for the token stage, and ,allow inside missing[...] "
        "or rates[...] to let a sample lose every modality"
    )
