"""Gaps to the specialists: how far a model that sees a modality subset S at test time falls short
of a model trained *and* tested on S alone (the reference UME-MMA's reviewers asked for, arXiv 2310.06383).

Specialists are ordinary audited models labelled `specialist[a+b]` (the labels
`specialist_configs` writes: `joint` with `modalities: [a, b]`), or any labels
given in `specialists`. A specialist for S uses only S, so its *clean* score is its score on S.
Every other model is scored on S by its `subset[S]` scenario, or by `clean` when S is every modality.

    result = AuditResult.concat([audit(m, data, label=...) for ...])   # specialists and other models
    specialist_gaps(result)        # one row per (dataset, subset, model): value, specialist, gap
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from ..errors import MMRobustError
from ..metrics import LOWER_IS_BETTER
from .result import MODEL_KEYS, AuditResult
from .scenarios import CLEAN

SPECIALIST = "specialist["
COLUMNS = [*MODEL_KEYS[:1], "subset", *MODEL_KEYS[1:], "value", "specialist", "gap", "shortfall", "seeds"]


def _modalities(label: str, prefix: str) -> frozenset[str]:
    """`subset[a+b]` / `specialist[a+b]` -> {a, b}."""
    return frozenset(label[len(prefix) : -1].split("+"))


def _subset_name(subset: frozenset[str], order: Sequence[str]) -> str:
    return "+".join(m for m in order if m in subset)


def specialist_gaps(
    result: AuditResult, metric: str | None = None, specialists: Mapping[str, Sequence[str]] | None = None
) -> pd.DataFrame:
    """Per dataset, modality subset S and non-specialist model: its `metric` on S (mean over seeds),
    the specialist's, `gap` = model − specialist, and `shortfall` (> 0: worse than the specialist,
    whatever the metric's direction). `specialists` maps model labels to their subsets; by default
    every model labelled `specialist[...]`. Subsets without a specialist are left out."""
    metric = metric or result.primary_metric
    t = result.table[result.table.metric == metric]
    if specialists is None:
        labels = [str(x) for x in t.model.unique() if str(x).startswith(SPECIALIST) and str(x).endswith("]")]
        specialists = {label: sorted(_modalities(label, SPECIALIST)) for label in labels}
    if not specialists:
        raise MMRobustError("no specialists in the audit result: label them specialist[a+b] or pass `specialists`")
    sign = 1.0 if metric in LOWER_IS_BETTER else -1.0
    rows = []
    for dataset, d in t.groupby("dataset", sort=False):
        subset_names = [str(s) for s in d[d.kind == "subset"].scenario.unique()]
        subsets = {_modalities(s, "subset["): s for s in subset_names}
        order = list(dict.fromkeys(m for s in subset_names for m in s[len("subset[") : -1].split("+")))
        order += sorted({m for ms in specialists.values() for m in ms} - set(order))
        everything = frozenset(order)
        reference = {}
        for label, ms in specialists.items():
            clean = d[(d.model == label) & (d.scenario == CLEAN)].value
            if len(clean):
                reference[frozenset(ms)] = float(clean.mean())
        others = d[~d.model.isin(list(specialists))]
        for subset, specialist in reference.items():
            scenario = CLEAN if subset == everything else subsets.get(subset)
            if scenario is None:
                continue
            scored = others[others.scenario == scenario]
            for key, g in scored.groupby(MODEL_KEYS[1:], sort=False, dropna=False):
                value = float(g.value.mean())
                rows.append(
                    {
                        "dataset": dataset,
                        "subset": _subset_name(subset, order),
                        **dict(zip(MODEL_KEYS[1:], key, strict=True)),
                        "value": value,
                        "specialist": specialist,
                        "gap": value - specialist,
                        "shortfall": sign * (value - specialist),
                        "seeds": int(g.seed.nunique()),
                    }
                )
    return pd.DataFrame(rows, columns=COLUMNS)


def specialist_configs(modalities: Sequence[str], fusion: str = "late", dim: int = 64) -> list[dict[str, Any]]:
    """The specialists to train, as experiment-config model entries: for every non-empty modality
    subset S a `joint` model trained and tested on S only, labelled as `specialist_gaps` expects."""
    out = []
    for size in range(len(modalities), 0, -1):
        for keep in itertools.combinations(modalities, size):
            params = {"fusion": fusion, "dim": dim, "modalities": list(keep)}
            out.append({"method": "joint", "label": specialist_label(keep), "params": params})
    return out


def specialist_label(subset: Sequence[str]) -> str:
    return SPECIALIST + "+".join(subset) + "]"
