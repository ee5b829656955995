"""The audit's scenarios: named corruptions with a kind, and the default set.

Defaults: every non-empty modality subset (the full set is the clean reference),
`Missing` at 30% for each modality and `GaussianNoise` (sigma 1 at 30%) for each modality.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..corruption import Corruption, GaussianNoise, Missing, MissingRates, Subset

CLEAN = "clean"


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # "clean" | "subset" | "missing" | "noise" | "custom"
    corruption: Corruption

    def generator(self, seed: int) -> torch.Generator:
        """A generator that depends only on (audit seed, scenario name): the same masks for every
        model audited with the same seed, so comparisons are paired."""
        return torch.Generator().manual_seed(zlib.crc32(f"{seed}:{self.name}".encode()))


def subset_scenarios(modalities: Sequence[str]) -> list[Scenario]:
    """The clean reference, then every proper non-empty subset (largest first)."""
    out = [Scenario(CLEAN, "clean", Subset(tuple(modalities)))]
    for size in range(len(modalities) - 1, 0, -1):
        for keep in itertools.combinations(modalities, size):
            c = Subset(keep)
            out.append(Scenario(c.name, "subset", c))
    return out


def default_scenarios(
    modalities: Sequence[str],
    missing_proportion: float = 0.3,
    noise_sigma: float = 1.0,
    noise_proportion: float = 0.3,
) -> list[Scenario]:
    out = subset_scenarios(modalities)
    for m in modalities:
        c = Missing(m, missing_proportion)
        out.append(Scenario(c.name, "missing", c))
    for m in modalities:
        n = GaussianNoise(m, noise_sigma, noise_proportion)
        out.append(Scenario(n.name, "noise", n))
    return out


def custom_scenarios(corruptions: Sequence[Corruption]) -> list[Scenario]:
    return [Scenario(c.name, "custom", c) for c in corruptions]


def rate_scenarios(
    modalities: Sequence[str], rates: Sequence[float] = (0.2, 0.5, 0.8), balanced: float | None = 0.5
) -> list[Scenario]:
    """Imbalanced missing-rate scenarios (RedCore's protocol, METHODS.md §4): `MissingRates` with
    the balanced rate for every modality, then every distinct assignment of `rates` to the
    modalities (all permutations, e.g. 0.2/0.5/0.8 over a, b, c: six scenarios).

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
