"""`derive_seed`: the one way a run's seed becomes the seed of one of its streams."""

from __future__ import annotations

import pytest

from mmrobust.seeds import derive_seed


def test_same_coordinates_give_the_same_seed_and_others_differ() -> None:
    seeds = {
        derive_seed(root, *coords) for root in (0, 1, 2**63 - 1) for coords in [(), ("stage", 1), ("stage", 2), (1,)]
    }
    assert len(seeds) == 12  # no two streams of these runs share a seed
    assert derive_seed(5, "stage", 1) == derive_seed(5, "stage", 1)
    assert all(0 <= s < 2**63 for s in seeds)  # what torch.Generator.manual_seed accepts


def test_strings_and_integers_are_different_coordinates() -> None:
    assert derive_seed(0, "1") != derive_seed(0, 1)


def test_negative_values_are_refused() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        derive_seed(-1)
