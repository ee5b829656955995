"""The audit's scenarios: named corruptions with a kind, and the default set.

Defaults: every non-empty modality subset (the full set is the clean reference),
`Missing` at 30% for each modality and `GaussianNoise` (sigma 1 at 30%) for each modality.

A scenario draws its randomness per *draw block*: the test set is cut into consecutive blocks
of `DRAW_BLOCK` samples and the corruption is applied to each block with a generator of its
own, seeded by (audit seed, scenario name, block index). A sample's mask and noise therefore do
not depend on how the audit streams the test set (its chunks are whole blocks), and block 0
keeps the seed of the earlier whole-set draw: on a test set of at most `DRAW_BLOCK` samples the
masks are exactly those of a single draw over the set.
"""

from __future__ import annotations

import hashlib
import itertools
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from ..corruption import Corruption, GaussianNoise, Missing, MissingRates, Subset, as_corruption
from ..data.batch import Batch
from ..data.tokens import Tokens
from ..errors import MMRobustError, check_int
from ..train.options import MAX_SEED

CLEAN = "clean"
DRAW_BLOCK = 1024  # samples per draw block: part of a scenario's definition, like the seed
T = TypeVar("T", Batch, Tokens)


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # "clean" | "subset" | "missing" | "noise" | "custom"
    corruption: Corruption

    def generator(self, seed: int, block: int = 0) -> torch.Generator:
        """The generator of draw block `block`; it depends only on (audit seed, scenario name,
        block): the same masks for every model audited with the same seed, so comparisons are paired."""
        if block == 0:  # the seed a whole-set draw used
            return torch.Generator().manual_seed(zlib.crc32(f"{seed}:{self.name}".encode()))
        digest = hashlib.blake2b(f"{seed}:{self.name}:{block}".encode(), digest_size=8).digest()
        return torch.Generator().manual_seed(int.from_bytes(digest, "little"))

    def blocks(
        self, seed: int, start: int, n: int, block: int = DRAW_BLOCK
    ) -> Iterator[tuple[int, int, torch.Generator]]:
        """(lo, hi, generator) for the draw blocks of test-set rows [start, start + n), with lo and hi
        relative to `start`; `start` must begin a block."""
        if block < 1 or start % block:
            raise MMRobustError(f"rows from {start} do not start a draw block of {block} samples")
        for lo in range(0, n, block):
            yield lo, min(lo + block, n), self.generator(seed, (start + lo) // block)

    def apply(self, x: T, seed: int, start: int = 0, block: int = DRAW_BLOCK) -> T:
        """The scenario on rows [start, start + len(x)) of the test set (a `Batch`, or `Tokens` for a
        token-stage corruption): its corruption applied block by block."""
        parts = [self.corruption(x.rows(slice(lo, hi)), g) for lo, hi, g in self.blocks(seed, start, len(x), block)]
        return parts[0] if len(parts) == 1 else _concat(parts)


def clean_scenario(modalities: Sequence[str]) -> list[Scenario]:
    """The clean reference: every modality kept (a sample's own absences stay)."""
    return [Scenario(CLEAN, "clean", Subset(tuple(modalities)))]


MAX_SUBSETS = 126  # proper subsets audited by default: all of them up to 7 modalities


def check_audit_options(seed: object, max_subsets: object, name: Callable[[str], str] = lambda key: key) -> None:
    """The audit seed and subset cap, named `name(key)` (a config key or an argument): the seed names
    every scenario's draws as text, so 0.0 or False would silently draw other masks than 0, and a cap
    below 1 would audit no subset."""
    check_int(seed, name("seed"), 0, MAX_SEED)
    if max_subsets is not None:
        check_int(max_subsets, name("max_subsets"), 1)


def subset_scenarios(modalities: Sequence[str], max_subsets: int | None = None) -> list[Scenario]:
    """The clean reference, then every proper non-empty subset (largest first); above `max_subsets`
    (None: no cap) every single modality and every leave-one-out subset, plus a fixed, seeded sample
    of the others (the same for every model and run), with a warning saying how to audit them all."""
    subsets = [keep for size in range(len(modalities) - 1, 0, -1) for keep in itertools.combinations(modalities, size)]
    if max_subsets is not None and len(subsets) > max_subsets:
        subsets = _capped(subsets, len(modalities), max_subsets)
    out = clean_scenario(modalities)
    for keep in subsets:
        c = Subset(keep)
        out.append(Scenario(c.name, "subset", c))
    return out


def _capped(subsets: list[tuple[str, ...]], m: int, cap: int) -> list[tuple[str, ...]]:
    kept = {s for s in subsets if len(s) in (1, m - 1)}  # what each modality does alone, and without it
    rest = [s for s in subsets if s not in kept]
    order = torch.randperm(len(rest), generator=torch.Generator().manual_seed(0)).tolist()
    kept |= {rest[i] for i in order[: max(0, cap - len(kept))]}
    warnings.warn(
        f"{m} modalities have {len(subsets)} proper subsets: auditing {len(kept)} (every single modality, every "
        "leave-one-out subset and a fixed sample of the rest); pass max_subsets=None (audit.max_subsets: null, "
        "--all-subsets) to audit them all",
        stacklevel=4,
    )
    return [s for s in subsets if s in kept]


def default_scenarios(
    modalities: Sequence[str],
    missing_proportion: float = 0.3,
    noise_sigma: float = 1.0,
    noise_proportion: float = 0.3,
    max_subsets: int | None = MAX_SUBSETS,
) -> list[Scenario]:
    out = subset_scenarios(modalities, max_subsets)
    for m in modalities:
        c = Missing(m, missing_proportion)
        out.append(Scenario(c.name, "missing", c))
    for m in modalities:
        n = GaussianNoise(m, noise_sigma, noise_proportion)
        out.append(Scenario(n.name, "noise", n))
    return out


def custom_scenarios(corruptions: Corruption | str | Iterable[Corruption | str | Mapping[str, Any]]) -> list[Scenario]:
    """User scenarios, given as corruptions, their short names (`"missing[audio@0.3]"`, as in configs
    and on the command line) or their dicts, as every corruption parameter takes them. One corruption
    or name alone is one scenario (as `Subset("audio")` is one modality): a name would otherwise be
    read letter by letter."""
    if isinstance(corruptions, Corruption | str | Mapping) or not isinstance(corruptions, Iterable):
        corruptions = [corruptions]  # anything else: refused below, by its type
    parsed = []
    for c in corruptions:
        if not isinstance(c, Corruption | str | Mapping):
            raise MMRobustError(
                f"a scenario is a corruption (e.g. mmrobust.Missing('audio', 0.3)), its name "
                f"('missing[audio@0.3]') or its dict, not a {type(c).__name__}"
            )
        corruption = as_corruption(c)
        parsed.append(Scenario(corruption.name, "custom", corruption))
    return parsed


def rate_scenarios(
    modalities: Sequence[str], rates: Sequence[float] = (0.2, 0.5, 0.8), balanced: float | None = 0.5
) -> list[Scenario]:
    """Imbalanced missing-rate scenarios (the protocol of RedCore, Sun et al., AAAI 2024, arXiv
    2312.10386): `MissingRates` with the balanced rate for every modality, then every distinct
    assignment of `rates` to the modalities (all permutations, e.g. 0.2/0.5/0.8 over a, b, c: six scenarios).

    With fewer rates than modalities the rates repeat in order; with more, the first M are used.
    `balanced=None` leaves the balanced scenario out. Names are `rates[a=0.2,b=0.5,c=0.8]`, which
    `corruption_from_name` parses back, so they also work as config/CLI scenario names.
    """
    if not modalities:
        return []
    values = [rates[i % len(rates)] for i in range(len(modalities))] if rates else []
    out: list[Scenario] = []
    if balanced is not None:
        c = MissingRates({m: balanced for m in modalities})
        out.append(Scenario(c.name, "custom", c))
    for order in dict.fromkeys(itertools.permutations(values)):
        c = MissingRates(dict(zip(modalities, order, strict=True)))
        if c.name not in {s.name for s in out}:
            out.append(Scenario(c.name, "custom", c))
    return out


def _concat(parts: Sequence[T]) -> T:
    first = parts[0]
    present = torch.cat([p.present for p in parts])
    if isinstance(first, Tokens):
        return Tokens(torch.cat([p.z for p in parts]), present, first.modalities)
    inputs = {m: torch.cat([p.inputs[m] for p in parts]) for m in first.inputs}
    return Batch(inputs, present, torch.cat([p.target for p in parts]), first.modalities)
