"""Exact Shapley values of modalities (`mmrobust report`): the value of a coalition S of modalities
is a model's score under the audit scenario `subset[S]` (clean = all), read from the tidy table.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence

import pandas as pd

from ..corruption import Subset, corruption_from_name
from ..errors import MMRobustError
from ..metrics import LOWER_IS_BETTER
from .scenarios import CLEAN

MAX_PLAYERS = 16  # exact Shapley enumerates 2^M coalitions


def shapley_values(value: Mapping[frozenset[str], float], players: Sequence[str]) -> dict[str, float]:
    """Exact Shapley values: each player's marginal contribution averaged over all join orders.

    `value` maps every coalition (a frozenset of players, including the empty one) to its worth.
    phi_i = sum over S not containing i of |S|! (M-|S|-1)! / M! * (v(S + i) - v(S)); they sum to
    v(all) - v(empty) (efficiency).
    """
    m = len(players)
    if len(set(players)) != m or m == 0:
        raise ValueError("players must be distinct and non-empty")
    if m > MAX_PLAYERS:
        raise ValueError(f"exact Shapley over {m} players needs 2^{m} coalitions; at most {MAX_PLAYERS}")
    weights = [math.factorial(k) * math.factorial(m - k - 1) / math.factorial(m) for k in range(m)]
    out = {}
    for player in players:
        others = [p for p in players if p != player]
        phi = 0.0
        for k in range(m):
            for coalition in map(frozenset, itertools.combinations(others, k)):
                try:
                    phi += weights[k] * (value[coalition | {player}] - value[coalition])
                except KeyError as e:
                    raise ValueError(f"no value for coalition {sorted(e.args[0])}") from None
        out[player] = phi
    return out


def _subset_keep(scenario: str) -> tuple[str, ...] | None:
    try:
        c = corruption_from_name(scenario)
    except MMRobustError:
        return None
    return c.keep if isinstance(c, Subset) else None


def coalition(scenario: str, modalities: Sequence[str]) -> frozenset[str] | None:
    """The modalities present under a subset scenario (clean = all of them); None for others."""
    if scenario == CLEAN:
        return frozenset(modalities)
    keep = _subset_keep(scenario)
    return None if keep is None else frozenset(keep)


def subset_modalities(scenarios: Iterable[str]) -> list[str]:
    """Every modality named by the subset scenarios, in order of appearance."""
    found: dict[str, None] = {}
    for scenario in scenarios:
        found.update(dict.fromkeys(_subset_keep(scenario) or ()))
    return list(found)


def empty_coalition_value(table: pd.DataFrame, metric: str, num_classes: int | None) -> tuple[float, str]:
    """v(∅), the score with no modality, and a sentence saying where it comes from.

    Accuracy: chance, 1/num_classes. Otherwise (MAE: the score of predicting the training mean,
    which run directories do not record) the worst score any model reached on any non-empty
    subset; changing v(∅) shifts every modality's value by the same amount, so rankings hold.
    """
    if metric == "accuracy" and num_classes:
        return 1 / num_classes, f"chance accuracy 1/{num_classes} ({num_classes} classes, from the runs' checkpoints)"
    scores = table[(table.metric == metric) & table.kind.isin([CLEAN, "subset"])].value
    worst = float(scores.max() if metric in LOWER_IS_BETTER else scores.min())
    why = "the number of classes is not recorded" if metric == "accuracy" else "run folders do not record it"
    return worst, (
        f"the worst {metric} of any model on any non-empty subset ({worst:.3f}), since {why}; "
        "another v(∅) shifts every modality's value by the same amount"
    )


def modality_contributions(table: pd.DataFrame, metric: str, empty: float) -> pd.DataFrame:
    """Shapley value of each modality per model: mean ± std over seeds, signed so > 0 means it helps.

    The coalition values are the all-subset scores (negated for lower-is-better metrics) with
    v(∅) = `empty`; a seed whose audit lacks some subset is left out.
    """
    t = table[(table.metric == metric) & table.kind.isin([CLEAN, "subset"])]
    modalities = subset_modalities(t.scenario.unique())
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    rows = []
    for (model, seed), g in t.groupby(["model", "seed"], sort=False):
        coalitions = (coalition(s, modalities) for s in g.scenario)
        value = {c: sign * v for c, v in zip(coalitions, g.value, strict=True) if c is not None}
        value[frozenset()] = sign * empty
        if not modalities or len(value) < 2 ** len(modalities):
            continue
        phi = shapley_values(value, modalities)
        rows += [{"model": model, "seed": seed, "modality": m, "shapley": phi[m]} for m in modalities]
    per_seed = pd.DataFrame(rows, columns=["model", "seed", "modality", "shapley"])
    stats = per_seed.groupby(["model", "modality"], sort=False).shapley.agg(["mean", "std", "count"])
    return stats.reset_index().rename(columns={"count": "seeds"})
