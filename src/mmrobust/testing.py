"""`check_method`: the contract every registered method must meet (cf. sklearn's check_estimator).

- parameters: `get_params` is JSON (what checkpoints and configs store) and `create_method(name,
  **get_params())` gives a method with the same parameters;
- tags: a task the method's `MethodTags` leave out is refused by `fit`; one they claim is checked
  below, on training data with missing modalities unless `needs_complete_training_data`;
- invariant 1 of docs/architecture.md (absence is a mask, never a value): for every modality subset,
  and for per-sample masks if the tags claim them, filling the absent placeholders with NaN, with random garbage or
  with zeros gives identical, finite predictions;
- determinism: two fits with the same seed predict identically;
- checkpoints: a saved and reloaded method predicts as before.
"""

from __future__ import annotations

import itertools
import json
import tempfile
from pathlib import Path

import torch

from .checkpoint import load_checkpoint, save_checkpoint
from .corruption import AllMissingPolicy, MissingRates, Subset
from .data.batch import Batch
from .data.dataset import MultimodalData
from .data.synthetic import load_synthetic
from .errors import MMRobustError
from .methods.base import Method, create_method
from .train import fit

TASKS = ("classification", "regression")
MISSING_RATE = 0.2  # of the training data, when the method's tags say it copes with missing modalities


def conformance_data(task: str = "classification", missing_rate: float = 0.0) -> MultimodalData:
    """Small synthetic data covering every encoder kind but one of each per modality."""
    return load_synthetic(
        n_samples=96,
        informativeness=(2.0, 1.0, 1.0),
        kinds=("mlp", "conv1d", "seq"),
        missing_rate=missing_rate,
        task=task,
        seed=1,
    )


def _fill_absent(batch: Batch, value: str, generator: torch.Generator) -> Batch:
    inputs = {}
    for j, m in enumerate(batch.modalities):
        x = batch.inputs[m].clone()
        absent = ~batch.present[:, j]
        if value == "nan":
            x[absent] = float("nan")
        elif value == "zeros":
            x[absent] = 0.0
        else:
            x[absent] = torch.randn(x[absent].shape, generator=generator) * 1e3
        inputs[m] = x
    return Batch(inputs, batch.present, batch.target, batch.modalities)


def _check_params(name: str, method: Method) -> None:
    params = method.get_params()
    assert json.loads(json.dumps(params)) == params, f"{name}: get_params() is not plain JSON: {params}"
    assert create_method(name, **params).get_params() == params, f"{name}: get_params() does not round-trip"


def _check_ignores_placeholders(name: str, method: Method, masked: Batch, what: str, g: torch.Generator) -> None:
    outputs = [method.predict(_fill_absent(masked, how, g)) for how in ("nan", "garbage", "zeros")]
    assert torch.isfinite(outputs[0]).all(), f"{name}: non-finite output with {what}"
    for out in outputs[1:]:
        assert torch.allclose(out, outputs[0], atol=1e-5), f"{name}: output depends on absent placeholders with {what}"


def check_method(name: str, task: str = "classification", **params: object) -> None:
    """Raise AssertionError if the registered method `name` breaks the toolkit's contract."""
    method = create_method(name, **params)
    tags = method.tags
    assert tags.tasks and set(tags.tasks) <= set(TASKS), f"{name}: tags name unknown tasks {set(tags.tasks)}"
    _check_params(name, method)
    data = conformance_data(task, 0.0 if tags.needs_complete_training_data else MISSING_RATE)
    if task not in tags.tasks:
        try:
            fit(method, data, epochs=1, batch_size=16, progress=False)
        except MMRobustError:
            return
        raise AssertionError(f"{name}: its tags leave out {task}, but fit accepted it")
    fit(method, data, epochs=2, batch_size=16, progress=False)
    test = data.split("test").batch(slice(None))
    g = torch.Generator().manual_seed(0)
    mods = test.modalities
    for size in range(1, len(mods) + 1):
        for keep in itertools.combinations(mods, size):
            _check_ignores_placeholders(name, method, Subset(keep)(test, g), f"{keep} present", g)
    if tags.per_sample_masks:
        mixes: tuple[tuple[float, AllMissingPolicy], ...] = ((0.5, "keep_one"), (0.8, "allow"))
        for rate, policy in mixes:  # "allow": some samples have nothing present
            masked = MissingRates(dict.fromkeys(mods, rate), if_all_missing=policy)(test, g)
            _check_ignores_placeholders(name, method, masked, f"per-sample masks ({policy})", g)
    reference = method.predict(test)
    again = create_method(name, **params)
    fit(again, data, epochs=2, batch_size=16, progress=False)
    assert torch.equal(again.predict(test), reference), f"{name}: two fits with the same seed differ"
    with tempfile.TemporaryDirectory() as tmp:
        path = save_checkpoint(method, Path(tmp) / "m.pt")
        reloaded, _ = load_checkpoint(path)
    assert torch.allclose(reloaded.predict(test), reference, atol=1e-6), (
        f"{name}: checkpoint round-trip changed outputs"
    )
