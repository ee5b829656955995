"""`anysubset` (methods/anysubset.py): members shared with UME, a student distilled from them on the
same subset, and predictions that blend the two on every subset."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

import mmrobust
from mmrobust.corruption import MissingRates
from mmrobust.data.batch import Batch
from mmrobust.errors import MMRobustError
from mmrobust.methods.anysubset import AnySubset, distillation
from mmrobust.methods.losses import task_loss
from mmrobust.methods.ume import UniModalEnsembleMethod


@pytest.fixture(autouse=True)
def _fresh_stage_cache(tmp_path, monkeypatch) -> None:
    """Each test starts without reusable members (conftest's session cache is shared)."""
    monkeypatch.setenv("MMROBUST_CACHE", str(tmp_path / "cache"))


def fit(method: mmrobust.Method, data: mmrobust.MultimodalData) -> mmrobust.FitResult:
    return mmrobust.fit(method, data, seed=0, epochs=3, batch_size=32, progress=False)


def masked_test_batch(data: mmrobust.MultimodalData) -> Batch:
    """The test split with every subset represented (each sample keeps at least one modality)."""
    test = data.split("test").batch(slice(None))
    rates = MissingRates(dict.fromkeys(data.modalities, 0.5), if_all_missing="keep_one")
    return rates(test, torch.Generator().manual_seed(1))


@pytest.mark.parametrize("blend", [0.0, 0.3, 1.0])
def test_prediction_blends_student_and_members_on_the_same_subset(small_data, blend: float) -> None:
    method = AnySubset(fusion="sum", blend=blend)
    fit(method, small_data)
    model, batch = method.adapted_model, masked_test_batch(small_data)
    with torch.no_grad():
        student = model.adapted_output(batch).log_softmax(-1)
        members = model.ensemble(batch).log_softmax(-1)
        out = method.predict(batch)
    torch.testing.assert_close(out, (1 - blend) * student + blend * members)
    assert not torch.allclose(student, members)  # the two really differ: the blend is measured


def test_the_teacher_sees_the_subset_the_student_sees(small_data) -> None:
    method = AnySubset(fusion="sum", corruption={"type": "MissingRates", "rates": {"m0": 1.0}})
    method.build(small_data.spec)
    seen: list[Tensor] = []
    members = method.adapted_model.ensemble
    members.register_forward_pre_hook(lambda module, args: seen.append(args[0].present.clone()))
    batch = small_data.split("train").batch(slice(0, 32))
    method.loss(batch, torch.Generator().manual_seed(0))
    (present,) = seen
    assert not present[:, 0].any() and present[:, 1:].all()  # m0 dropped for the teacher too


def test_distillation_is_zero_only_when_the_student_matches_the_teacher() -> None:
    teacher = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    assert float(distillation(teacher.clone(), teacher, 2.0, "classification")) == pytest.approx(0.0, abs=1e-6)
    other = teacher + torch.randn(8, 4, generator=torch.Generator().manual_seed(1))
    assert float(distillation(other, teacher, 2.0, "classification")) > 0
    assert float(distillation(other, teacher, 2.0, "regression")) == pytest.approx(
        float((other - teacher).abs().mean())
    )


def test_without_distillation_the_student_loss_is_the_task_loss(small_data) -> None:
    method = AnySubset(fusion="sum", distill=0.0, corruption={"type": "MissingRates", "rates": {"m0": 0.0}})
    method.build(small_data.spec)
    model = method.adapted_model
    model.eval()  # no dropout: both sides compute the same function
    batch = small_data.split("train").batch(slice(0, 32))
    loss = method.loss(batch, torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = task_loss(model.adapted_output(batch), batch.target, "classification")
    torch.testing.assert_close(loss.detach(), expected)


@pytest.mark.parametrize("readout", ["linear", {"m1": "transformer"}])
def test_members_are_shared_with_ume(small_data, readout: str | dict[str, str]) -> None:
    ume = UniModalEnsembleMethod(readout=readout)
    fit(ume, small_data)
    method = AnySubset(fusion="sum", readout=readout)
    result = fit(method, small_data)
    for key, value in ume.ensemble.state_dict().items():
        assert torch.equal(method.adapted_model.ensemble.state_dict()[key], value), key
    assert [r["stage"] for r in result.history[:3]] == ["ume:m0"] * 3  # reused, history kept
    assert result.history[-1]["stage"] == "student"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"blend": 1.5}, "blend must be in"),
        ({"distill": -1.0}, "distill must be"),
        ({"temperature": 0.0}, "temperature"),
    ],
)
def test_bad_parameters_are_one_line_errors(small_data, params: dict[str, float], message: str) -> None:
    with pytest.raises(MMRobustError, match=message):
        AnySubset(**params).build(small_data.spec)  # type: ignore[arg-type]
