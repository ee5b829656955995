"""Fusions made of per-modality terms fuse every (token row, mask) pair at once, with the outputs
of fusing each pair on its own (the audit's fast path for sum and late fusion)."""

from __future__ import annotations

import pytest
import torch

import mmrobust
from mmrobust.data import Tokens


@pytest.mark.parametrize("fusion", ["sum", "late"])
@pytest.mark.parametrize("task", ["classification", "regression"])
def test_pairs_equal_one_fuse_per_pair(fusion: str, task: str) -> None:
    data = mmrobust.load_dataset("synthetic", n_samples=60, task=task, seed=1)
    method = mmrobust.create_method("dropout", fusion=fusion, dim=8)
    mmrobust.fit(method, data, epochs=1, progress=False)
    model = method.fitted_model.eval()
    g = torch.Generator().manual_seed(0)
    z = torch.randn(10, 3, 8, generator=g)
    rows = torch.randint(10, (40,), generator=g)
    present = torch.rand(40, 3, generator=g) < 0.6
    with torch.no_grad():
        at_once = method.fuse_pairs(z, rows, present)
        one_by_one = torch.cat([model.fuse(Tokens(z[rows[i : i + 1]], present[i : i + 1], data.modalities))
                                for i in range(40)])  # fmt: skip
    assert at_once is not None
    torch.testing.assert_close(at_once, one_by_one, atol=1e-6, rtol=1e-5)


def test_methods_that_fuse_their_own_way_decline() -> None:
    data = mmrobust.load_dataset("synthetic", n_samples=60, seed=1)
    for name, fusion in [("dropout", "transformer"), ("actionmae", "sum"), ("ume", "late")]:
        method = mmrobust.create_method(name, fusion=fusion)
        method.build(data.spec)
        z = torch.zeros(2, 3, method.fitted_model.dim)
        assert method.fuse_pairs(z, torch.tensor([0, 1]), torch.ones(2, 3, dtype=torch.bool)) is None, name
