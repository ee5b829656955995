"""A split of consecutive rows is a view of the dataset (the audit of a large test split does not
copy it first); any other index still gives the same samples as indexing would."""

from __future__ import annotations

import pytest
import torch

import mmrobust
from mmrobust.errors import MMRobustError


def test_consecutive_rows_are_views_with_the_same_samples() -> None:
    data = mmrobust.load_dataset("synthetic", n_samples=50, seed=0)
    index = torch.arange(10, 30)
    part = data.subset(index)
    for m in data.modalities:
        assert part.inputs[m].data_ptr() == data.inputs[m][10].data_ptr()  # a view, no copy
        torch.testing.assert_close(part.inputs[m], data.inputs[m][index])
    assert torch.equal(part.present, data.present[index]) and torch.equal(part.target, data.target[index])


BOOL_INDEX = torch.zeros(50, dtype=torch.bool).index_fill(0, torch.tensor([4, 9]), True)


@pytest.mark.parametrize("index", [torch.tensor([3, 1, 2]), torch.tensor([0, 2, 4]), torch.tensor([5]), BOOL_INDEX])
def test_other_indices_give_the_indexed_samples(index: torch.Tensor) -> None:
    data = mmrobust.load_dataset("synthetic", n_samples=50, seed=0)
    part = data.subset(index)
    for m in data.modalities:
        torch.testing.assert_close(part.inputs[m], data.inputs[m][index])
    assert torch.equal(part.target, data.target[index])


def test_out_of_range_rows_still_fail() -> None:
    data = mmrobust.load_dataset("synthetic", n_samples=50, seed=0)
    with pytest.raises(IndexError):
        data.subset(torch.arange(45, 55))
    with pytest.raises(MMRobustError):
        data.split("nope")
