"""`check_method` (tags, parameters, invariant 1 with per-sample masks, determinism, checkpoints) for every
registered method x fusion x task, and that it catches methods breaking the contract."""

from __future__ import annotations

import inspect

import pytest
import torch

import mmrobust
from mmrobust.methods.base import MethodTags
from mmrobust.methods.supervised import ModalityDropout
from mmrobust.models import FUSIONS
from mmrobust.testing import check_method

METHOD_NAMES = mmrobust.METHODS.names()
FUSION_NAMES = FUSIONS.names()
TASKS = ("classification", "regression")


def test_registries_are_populated():
    assert {"joint", "dropout"} <= set(METHOD_NAMES)
    assert {"sum", "concat", "transformer", "late"} <= set(FUSION_NAMES)


def _fusions(method: str) -> tuple[str | None, ...]:
    """Every fusion for a method that takes one; None for one that has none (`features`)."""
    takes = "fusion" in inspect.signature(mmrobust.METHODS.get(method).__init__).parameters
    return tuple(FUSION_NAMES) if takes else (None,)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize(("method", "fusion"), [(m, f) for m in METHOD_NAMES for f in _fusions(m)])
def test_check_method(method: str, fusion: str | None, task: str) -> None:
    check_method(method, task=task, **({} if fusion is None else {"fusion": fusion}))


@pytest.mark.parametrize("task", TASKS)
def test_check_method_with_fusion_readout_members(task: str) -> None:
    check_method("ume", task=task, readout={"m0": "transformer", "m1": "concat"})


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


class _Unseeded(ModalityDropout):
    """A broken method whose predictions depend on something besides the data and the seed."""

    builds = 0

    def build(self, spec: mmrobust.DataSpec) -> None:
        super().build(spec)
        type(self).builds += 1

    @torch.no_grad()
    def predict(self, batch: mmrobust.Batch) -> torch.Tensor:
        return super().predict(batch) + 1e-3 * self.builds


class _ClassificationOnly(ModalityDropout):
    tags = MethodTags(tasks=frozenset({"classification"}))


@pytest.mark.parametrize(
    ("cls", "task", "problem"),
    [(_Unseeded, "classification", "two fits with the same seed differ"), (_ClassificationOnly, "regression", None)],
)
def test_check_method_checks_determinism_and_tags(cls: type, task: str, problem: str | None) -> None:
    name = f"_test_{cls.__name__.lower()}"
    mmrobust.register_method(name)(cls)
    try:
        if problem is None:  # the left-out task is refused by fit, as the tags say
            check_method(name, task=task, fusion="sum")
        else:
            with pytest.raises(AssertionError, match=problem):
                check_method(name, task=task, fusion="sum")
    finally:
        mmrobust.METHODS.unregister(name)
