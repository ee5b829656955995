"""`perturb`: dominance detection, modality choice, configuration errors."""

from __future__ import annotations

import pytest
import torch

import mmrobust
from mmrobust import MMRobustError
from mmrobust.methods.perturb import PerturbationTraining, dominant_modality


def test_dominant_modality_is_the_one_the_model_needs(small_data, fit_small) -> None:
    """The synthetic data's m0 carries most of the label signal (informativeness 5 vs 0.8)."""
    method = fit_small(small_data, "joint", "transformer", epochs=3)
    model = method.fitted_model.eval()
    batch = small_data.split("val").batch(slice(None))
    assert dominant_modality(model, model.encode(batch), batch.target) == "m0"


@pytest.mark.parametrize("choice", ["dominant", "random", "m2"])
def test_every_modality_choice_trains(small_data, choice: str) -> None:
    method = mmrobust.create_method("perturb", modality=choice, proportion=0.2)
    mmrobust.fit(method, small_data, epochs=1, progress=False)
    assert isinstance(method, PerturbationTraining)
    picks = {
        method.pick_modality(
            method.fitted_model, small_data.batch(slice(0, 32)), None, torch.Generator().manual_seed(i)
        )
        for i in range(20)
    }
    expected = {"dominant": None, "random": {"m0", "m1", "m2"}, "m2": {"m2"}}[choice]
    if expected is not None:
        assert picks == expected
    else:
        assert len(picks) == 1


def test_bad_configuration_is_a_user_error(small_data) -> None:
    with pytest.raises(MMRobustError, match="unknown perturb modality 'tetx'"):
        mmrobust.fit(mmrobust.create_method("perturb", modality="tetx"), small_data, epochs=1, progress=False)
    with pytest.raises(MMRobustError, match="proportion"):
        mmrobust.create_method("perturb", proportion=0.7)
    with pytest.raises(MMRobustError, match="noise mode"):
        mmrobust.create_method("perturb", noise="multiplicative")
