"""Invariant 1 (absence is a mask, never a value) for every registered method x fusion x task."""

from __future__ import annotations

import pytest
import torch

import mmrobust
from mmrobust.methods.supervised import ModalityDropout
from mmrobust.models import FUSIONS
from mmrobust.testing import check_method, conformance_data

METHOD_NAMES = mmrobust.METHODS.names()
FUSION_NAMES = FUSIONS.names()
TASKS = ("classification", "regression")


def test_registries_are_populated():
    assert {"joint", "dropout"} <= set(METHOD_NAMES)
    assert {"sum", "concat", "transformer", "late"} <= set(FUSION_NAMES)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("fusion", FUSION_NAMES)
@pytest.mark.parametrize("method", METHOD_NAMES)
def test_check_method(method: str, fusion: str, task: str) -> None:
    check_method(method, task=task, fusion=fusion)


def _fill_absent(batch: mmrobust.Batch, how: str, g: torch.Generator) -> mmrobust.Batch:
    inputs = {}
    for j, m in enumerate(batch.modalities):
        x = batch.inputs[m].clone()
        absent = ~batch.present[:, j]
        if how == "nan":
            x[absent] = float("nan")
        else:
            x[absent] = torch.randn(x[absent].shape, generator=g) * 1e4
        inputs[m] = x
    return mmrobust.Batch(inputs, batch.present, batch.target, batch.modalities)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("fusion", FUSION_NAMES)
@pytest.mark.parametrize("method", METHOD_NAMES)
def test_per_sample_masks_ignore_placeholders(method: str, fusion: str, task: str) -> None:
    """check_method uses one mask per batch; here every sample has its own mask (mixed batches
    exercise the gather -> encode -> scatter path), including samples with nothing present."""
    data = conformance_data(task)
    m = mmrobust.create_method(method, fusion=fusion)
    mmrobust.fit(m, data, epochs=1, batch_size=16, progress=False)
    test = data.split("test").batch(slice(None))
    g = torch.Generator().manual_seed(1)
    for rates, policy in (
        ({"m0": 0.5, "m1": 0.5, "m2": 0.5}, "keep_one"),
        ({"m0": 0.8, "m1": 0.8, "m2": 0.8}, "allow"),
    ):
        masked = mmrobust.MissingRates(rates, if_all_missing=policy)(test, g)
        assert 0 < int(masked.present.sum()) < masked.present.numel()  # genuinely mixed
        outs = [m.predict(_fill_absent(masked, how, g)) for how in ("nan", "garbage", "garbage")]
        for out in outs:
            assert torch.isfinite(out).all()
            torch.testing.assert_close(out, outs[0], atol=1e-5, rtol=0)
        # ...and equal to predicting the same masked batch with zero placeholders
        zeros = mmrobust.Batch(
            {
                k: torch.where(masked.present[:, j].view(-1, *[1] * (v.dim() - 1)), v, torch.zeros_like(v))
                for j, (k, v) in enumerate(masked.inputs.items())
            },
            masked.present,
            masked.target,
            masked.modalities,
        )
        torch.testing.assert_close(m.predict(zeros), outs[0], atol=1e-5, rtol=0)


class _Leaky(ModalityDropout):
    """A broken method whose predictions read the absent placeholders."""

    @torch.no_grad()
    def predict(self, batch: mmrobust.Batch) -> torch.Tensor:
        out = super().predict(batch)
        leak = sum(x.flatten(1).mean(dim=1) for x in batch.inputs.values())
        return out + 1e-3 * leak.view(-1, *[1] * (out.dim() - 1))


def test_check_method_catches_a_method_that_reads_placeholders() -> None:
    name = "_test_leaky"
    mmrobust.register_method(name)(_Leaky)
    try:
        with pytest.raises(AssertionError, match=name):
            check_method(name, fusion="sum")
    finally:
        mmrobust.METHODS.unregister(name)  # keep the registry clean for other tests
    assert name not in mmrobust.METHODS
