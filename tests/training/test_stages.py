"""Multi-stage training (`Method.stages`): order, what each stage trains, selection, reuse, resume."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pytest
import torch
from torch import Tensor

import mmrobust
from mmrobust.data.batch import Batch
from mmrobust.methods.base import Stage
from mmrobust.methods.losses import task_loss
from mmrobust.methods.supervised import SupervisedMethod


class TwoStage(SupervisedMethod):
    """Stage 1 trains only the encoders (a stand-in for self-supervised pretraining, no selection);
    stage 2 trains everything with selection on validation."""

    name = "two-stage-test"

    def __init__(self, fail_at: tuple[str, int] | None = None, reuse: bool = False) -> None:
        super().__init__(fusion="sum", dim=16)
        self.fail_at, self.reuse = fail_at, reuse
        self.calls = {"pretrain": 0, "finetune": 0}
        self.fusion_before_finetune: dict[str, Tensor] = {}

    def get_params(self) -> dict[str, object]:
        return {"fusion": "sum", "dim": 16}

    def stages(self, seed: int) -> Sequence[Stage]:
        model = self.fitted_model
        return (
            Stage("pretrain", self._loss("pretrain"), module=model.encoders, select=False, epochs=2,
                  reuse_key={"test": "pretrain"} if self.reuse else None),
            Stage("finetune", self._loss("finetune")),
        )

    def _loss(self, stage: str):  # type: ignore[no-untyped-def]
        def loss(batch: Batch, generator: torch.Generator) -> Tensor:
            self.calls[stage] += 1
            if self.fail_at == (stage, self.calls[stage]):
                raise KeyboardInterrupt
            model = self.fitted_model
            if stage == "finetune" and not self.fusion_before_finetune:
                self.fusion_before_finetune = {k: v.clone() for k, v in model.fusion.state_dict().items()}
            if stage == "pretrain":  # any label-free objective on the tokens
                return model.encode(batch).z.pow(2).mean()
            return task_loss(model(batch), batch.target, model.spec.task)

        return loss


def fit(method: mmrobust.Method, data: mmrobust.MultimodalData, **kw) -> mmrobust.FitResult:  # type: ignore[no-untyped-def]
    return mmrobust.fit(method, data, seed=0, epochs=4, batch_size=32, progress=False, **kw)


def test_stages_run_in_order_and_only_train_their_module(small_data) -> None:
    method = TwoStage()
    torch.manual_seed(0)
    init = TwoStage()
    init.build(small_data.spec)  # fit builds under manual_seed(0) too: the same initial weights
    result = fit(method, small_data)
    stages = [row["stage"] for row in result.history]
    assert stages[:2] == ["pretrain", "pretrain"] and set(stages[2:]) == {"finetune"}
    assert "val_loss" not in result.history[0] and "val_loss" in result.history[2]  # no selection in pretrain
    for k, v in init.fitted_model.fusion.state_dict().items():  # pretraining left the fusion alone
        torch.testing.assert_close(method.fusion_before_finetune[k], v)
    assert 0 <= result.best_epoch < 4 and result.epochs_run == len(result.history)


def test_a_reused_stage_is_not_trained_again_and_changes_nothing(small_data) -> None:
    first, second = TwoStage(reuse=True), TwoStage(reuse=True)
    a, b = fit(first, small_data), fit(second, small_data)
    assert first.calls["pretrain"] > 0 and second.calls["pretrain"] == 0
    assert a == b
    for k, v in first.modules().state_dict().items():
        assert torch.equal(second.modules().state_dict()[k], v)


@pytest.mark.parametrize("fail_at", [("pretrain", 6), ("finetune", 3), ("finetune", 11)])
def test_a_run_interrupted_in_any_stage_resumes_to_identical_results(small_data, tmp_path, fail_at) -> None:
    reference = TwoStage()
    expected = fit(reference, small_data)
    state = tmp_path / "state.pt"
    with pytest.raises(KeyboardInterrupt):
        fit(TwoStage(fail_at=fail_at), small_data, state_path=state, state_every=0)
    assert state.is_file()
    resumed = TwoStage()
    assert fit(resumed, small_data, state_path=state, state_every=0) == expected
    for k, v in reference.modules().state_dict().items():
        assert torch.equal(resumed.modules().state_dict()[k], v), k
    assert not state.exists()


def test_a_stage_is_reused_only_for_the_same_data_spec(small_data) -> None:
    """The same tensors under another spec (name, kinds, shapes) are other data: no reuse."""
    renamed = dataclasses.replace(small_data, spec=dataclasses.replace(small_data.spec, name="renamed"))
    first, second = TwoStage(reuse=True), TwoStage(reuse=True)
    fit(first, small_data)
    fit(second, renamed)
    assert second.calls["pretrain"] > 0  # small_data's entry exists now, but is not this data's


def test_a_stage_is_reused_across_options_it_does_not_read_only(small_data) -> None:
    """The pretraining (no selection, its own epochs) ignores select, patience and fit's epochs;
    the learning rate changes what it learns, so it must not be reused across lr."""
    first = TwoStage(reuse=True)
    fit(first, small_data)
    other_selection = TwoStage(reuse=True)
    options = {"seed": 0, "epochs": 3, "batch_size": 32, "progress": False}
    mmrobust.fit(other_selection, small_data, select="accuracy", patience=2, **options)
    assert other_selection.calls["pretrain"] == 0 and other_selection.calls["finetune"] > 0
    other_lr = TwoStage(reuse=True)
    fit(other_lr, small_data, lr=5e-3)
    assert other_lr.calls["pretrain"] > 0


class ChooseScale(SupervisedMethod):
    """Train, then a choice stage over output scales (a buffer): the choice keeps the candidate with
    the best validation loss and trains nothing."""

    name = "choose-test"
    SCALES = (0.0, 1.0, 1e3)

    def __init__(self) -> None:
        super().__init__(fusion="sum", dim=16)

    def get_params(self) -> dict[str, object]:
        return {"fusion": "sum", "dim": 16}

    def build(self, spec: mmrobust.DataSpec) -> None:
        super().build(spec)
        self.fitted_model.register_buffer("scale", torch.tensor(1.0))

    def scaled(self, batch: Batch) -> Tensor:
        return self.fitted_model(batch) * self.fitted_model.scale

    def stages(self, seed: int) -> Sequence[Stage]:
        scales = self.SCALES
        return (
            Stage("train", self.loss),
            Stage("choose", self.loss, predict=self.scaled, choices=tuple(map(str, scales)),
                  choose=lambda i: self.fitted_model.scale.fill_(scales[i])),
        )  # fmt: skip


def test_a_choice_stage_scores_each_candidate_keeps_the_best_and_trains_nothing(small_data) -> None:
    method = ChooseScale()
    result = fit(method, small_data)
    weights = {k: v.clone() for k, v in method.fitted_model.state_dict().items() if k != "scale"}
    rows = [r for r in result.history if r.get("stage") == "choose"]
    assert [r["choice"] for r in rows] == ["0.0", "1.0", "1000.0"] and all("train_loss" not in r for r in rows)
    best = min(range(3), key=lambda i: rows[i]["val_loss"])
    assert result.best_epoch == best and float(method.fitted_model.scale) == ChooseScale.SCALES[best]
    assert best == 1  # a trained model's own scale beats uniform (0) and overconfident (1000) logits
    trained_only = TrainOnly()
    fit(trained_only, small_data)
    for k, v in weights.items():  # the choice changed no weight: as the train stage left them
        torch.testing.assert_close(trained_only.fitted_model.state_dict()[k], v)


class TrainOnly(ChooseScale):
    def stages(self, seed: int) -> Sequence[Stage]:
        return super().stages(seed)[:1]
