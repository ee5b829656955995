"""Glue shared by the CLI and the demo: resolve a data source, train-and-audit a grid."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from pathlib import Path

from .audit import AuditResult, audit
from .data import DATASETS, MultimodalData, load_dataset, load_npz
from .errors import MMRobustError
from .methods import create_method
from .train import fit


def load_data(name: str | None, npz: str | Path | None, data_dir: str | None = None) -> MultimodalData:
    """Exactly one of a registered dataset name or an npz file."""
    if (name is None) == (npz is None):
        raise MMRobustError("give exactly one of --data NAME or --npz FILE")
    if npz is not None:
        return load_npz(npz)
    assert name is not None
    loader = DATASETS.get(name)
    accepts_dir = "data_dir" in inspect.signature(loader).parameters
    return load_dataset(name, data_dir=data_dir) if data_dir and accepts_dir else load_dataset(name)


def train_and_audit_grid(
    data: MultimodalData,
    methods: Sequence[str],
    fusions: Sequence[str],
    seeds: Sequence[int],
    epochs: int,
    on_done: Callable[[str], None] = lambda _: None,
) -> AuditResult:
    """Train every method x fusion x seed and audit each with the same (paired) masks."""
    results = []
    for method_name in methods:
        for fusion in fusions:
            for seed in seeds:
                method = create_method(method_name, fusion=fusion)
                fit(method, data, seed=seed, epochs=epochs, progress=False)
                results.append(audit(method, data, seed=0))
                on_done(f"{method_name}/{fusion} seed {seed}")
    return AuditResult.concat(results)
