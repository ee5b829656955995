"""Every fusion's `prepare` (each row's mask-independent work done once, then many (row, mask)
pairs) gives the outputs of fusing each pair on its own: the audit's fast path."""

from __future__ import annotations

import pytest
import torch

import mmrobust
from mmrobust.data import Tokens

FUSIONS = ["sum", "late", "concat", "transformer"]


def trained(fusion: str, task: str = "classification") -> tuple[mmrobust.Method, tuple[str, ...]]:
    data = mmrobust.load_dataset("synthetic", n_samples=60, task=task, seed=1)
    method = mmrobust.create_method("dropout", fusion=fusion, dim=8)
    mmrobust.fit(method, data, epochs=1, progress=False)
    method.modules().eval()
    return method, data.modalities


def one_by_one(method: mmrobust.Method, z: torch.Tensor, rows: torch.Tensor, present: torch.Tensor,
               modalities: tuple[str, ...]) -> torch.Tensor:  # fmt: skip
    pairs = [Tokens(z[rows[i : i + 1]], present[i : i + 1], modalities) for i in range(len(rows))]
    return torch.cat([method.fuse(tokens) for tokens in pairs])


@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("task", ["classification", "regression"])
def test_prepared_pairs_equal_one_fuse_per_pair(fusion: str, task: str) -> None:
    method, modalities = trained(fusion, task)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(10, 3, 8, generator=g)
    rows = torch.randint(10, (40,), generator=g)
    present = torch.rand(40, 3, generator=g) < 0.6  # mixed masks, some with nothing present
    with torch.no_grad():
        prepared = method.prepare_fusion(z)
        assert prepared is not None
        torch.testing.assert_close(prepared(rows, present), one_by_one(method, z, rows, present, modalities),
                                   atol=1e-5, rtol=1e-5)  # fmt: skip
        same_mask = present[:1].expand(40, -1)  # the one-mask path (transformer drops absent tokens)
        torch.testing.assert_close(prepared(rows, same_mask), one_by_one(method, z, rows, same_mask, modalities),
                                   atol=1e-5, rtol=1e-5)  # fmt: skip


@pytest.mark.parametrize("fusion", FUSIONS)
def test_prepared_pairs_never_read_absent_tokens(fusion: str) -> None:
    method, _ = trained(fusion)
    z = torch.randn(4, 3, 8)
    clean = z.clone()
    z[:, 1] = float("nan")  # slot 1 is absent in every pair below
    rows = torch.tensor([0, 1, 2, 3, 0, 1])
    present = torch.tensor([[1, 0, 1], [1, 0, 0], [0, 0, 1], [1, 0, 1], [0, 0, 1], [1, 0, 0]], dtype=torch.bool)
    with torch.no_grad():
        out = method.prepare_fusion(z)(rows, present)  # type: ignore[misc]
        expected = method.prepare_fusion(clean)(rows, present)  # type: ignore[misc]
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, expected)


def test_methods_that_fuse_their_own_way_decline() -> None:
    data = mmrobust.load_dataset("synthetic", n_samples=60, seed=1)
    for name, fusion in [("actionmae", "sum"), ("ume", "late")]:
        method = mmrobust.create_method(name, fusion=fusion)
        method.build(data.spec)
        z = torch.zeros(2, 3, method.fitted_model.dim)
        assert method.prepare_fusion(z) is None, name
