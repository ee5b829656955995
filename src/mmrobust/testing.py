"""`check_method`: the contract every registered method must meet (cf. sklearn's check_estimator).

Invariant 1 (absence is a mask, never a value): for every fusion and every modality subset,
filling the absent placeholders with NaN or with random garbage gives identical, finite
predictions. The check also trains the method briefly and round-trips it through a
checkpoint.
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

import torch

from .checkpoint import load_checkpoint, save_checkpoint
from .corruption import Subset
from .data.batch import Batch
from .data.dataset import MultimodalData
from .data.synthetic import load_synthetic
from .methods.base import create_method
from .train import fit


def conformance_data(task: str = "classification") -> MultimodalData:
    """Small synthetic data covering every encoder kind but one of each per modality."""
    return load_synthetic(
        n_samples=96, informativeness=(2.0, 1.0, 1.0), kinds=("mlp", "conv1d", "seq"), task=task, seed=1
    )


def _fill_absent(batch: Batch, value: str, generator: torch.Generator) -> Batch:
    inputs = {}
    for j, m in enumerate(batch.modalities):
        x = batch.inputs[m].clone()
        absent = ~batch.present[:, j]
        fill = (
            torch.full_like(x[absent], float("nan"))
            if value == "nan"
            else torch.randn(x[absent].shape, generator=generator) * 1e3
        )
        x[absent] = fill
        inputs[m] = x
    return Batch(inputs, batch.present, batch.target, batch.modalities)


def check_method(name: str, task: str = "classification", **params: object) -> None:
    """Raise AssertionError if the registered method `name` breaks the toolkit's contract."""
    data = conformance_data(task)
    method = create_method(name, **params)
    if task not in method.tags.tasks:
        return
    fit(method, data, epochs=2, batch_size=16, progress=False)
    test = data.split("test").batch(slice(None))
    g = torch.Generator().manual_seed(0)
    mods = test.modalities
    for size in range(1, len(mods) + 1):
        for keep in itertools.combinations(mods, size):
            masked = Subset(keep)(test, g)
            with_nan = method.predict(_fill_absent(masked, "nan", g))
            with_noise = method.predict(_fill_absent(masked, "garbage", g))
            assert torch.isfinite(with_nan).all(), f"{name}: non-finite output with {keep} present"
            assert torch.allclose(with_nan, with_noise, atol=1e-5), (
                f"{name}: output depends on absent placeholders with {keep} present"
            )
    reference = method.predict(test)
    with tempfile.TemporaryDirectory() as tmp:
        path = save_checkpoint(method, Path(tmp) / "m.pt")
        reloaded, _ = load_checkpoint(path)
    assert torch.allclose(reloaded.predict(test), reference, atol=1e-6), (
        f"{name}: checkpoint round-trip changed outputs"
    )
