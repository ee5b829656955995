"""Models restricted to some modalities (`modalities=[...]`): the others are never read."""

from __future__ import annotations

import pytest
import torch

import mmrobust
from mmrobust import MMRobustError, Subset
from mmrobust.audit.engine import naive_outputs, scenario_outputs
from mmrobust.audit.scenarios import default_scenarios


def fit_restricted(data: mmrobust.MultimodalData, keep: list[str], fusion: str = "transformer") -> mmrobust.Method:
    method = mmrobust.create_method("joint", fusion=fusion, modalities=keep)
    mmrobust.fit(method, data, seed=0, epochs=2, progress=False)
    return method


@pytest.mark.parametrize("fusion", ["transformer", "concat", "sum"])
def test_other_modalities_do_not_change_predictions(kinds_data, fusion: str) -> None:
    first = kinds_data.modalities[0]
    method = fit_restricted(kinds_data, [first], fusion)
    test = kinds_data.split("test")
    only_first = Subset([first])(test.batch(slice(None)), torch.Generator())
    torch.testing.assert_close(method.predict(test.batch(slice(None))), method.predict(only_first))
    assert set(method.fitted_model.encoders) == {first}  # the others have no parameters at all


def test_audit_fast_path_equals_naive_for_a_restricted_model(kinds_data) -> None:
    a, b, _ = kinds_data.modalities
    method = fit_restricted(kinds_data, [a, b])
    test = kinds_data.split("test")
    scenarios = default_scenarios(kinds_data.modalities)
    fast, _ = scenario_outputs(method, test, scenarios, seed=0)
    naive = naive_outputs(method, test, scenarios, seed=0)
    for name in naive:
        torch.testing.assert_close(fast[name], naive[name], atol=1e-5, rtol=0, msg=name)
    # dropping or noising an unused modality is a no-op; dropping a used one is not
    unused = [s.name for s in scenarios if s.name.startswith("subset") and a in s.name and b in s.name]
    for name in unused:
        torch.testing.assert_close(fast[name], fast["clean"], msg=name)
    assert not torch.allclose(fast[f"subset[{b}]"], fast["clean"])


def test_restricted_model_survives_a_checkpoint(kinds_data, tmp_path) -> None:
    method = fit_restricted(kinds_data, [kinds_data.modalities[1]])
    path = mmrobust.save_checkpoint(method, tmp_path / "m.pt")
    loaded, _ = mmrobust.load_checkpoint(path)
    assert loaded.get_params()["modalities"] == [kinds_data.modalities[1]]
    test = kinds_data.split("test").batch(slice(None))
    torch.testing.assert_close(loaded.predict(test), method.predict(test))


def test_bad_modality_lists_are_user_errors(kinds_data) -> None:
    with pytest.raises(MMRobustError, match="unknown modality 'audoi'"):
        fit_restricted(kinds_data, ["audoi"])
    with pytest.raises(MMRobustError, match="at least one modality"):
        fit_restricted(kinds_data, [])


def test_one_modality_given_as_a_string_is_that_modality_not_its_letters(kinds_data) -> None:
    """Before: `modalities="accelerometer"` was read letter by letter ("unknown modality 'a'")."""
    first = kinds_data.modalities[0]
    method = mmrobust.create_method("joint", fusion="sum", modalities=first)
    mmrobust.fit(method, kinds_data, seed=0, epochs=1, progress=False)
    assert set(method.fitted_model.encoders) == {first}
