"""`features`, the non-deep floor: fitted directly by `fit`, deterministic, blind to absent
placeholders, stored as tensors, audited correctly on every scenario."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import mmrobust
from mmrobust import Subset, create_method, fit
from mmrobust.checkpoint import load_checkpoint, save_checkpoint

TREES = 30  # small forests: these tests check behaviour, not accuracy


@pytest.fixture(scope="module")
def trained(kinds_data: mmrobust.MultimodalData) -> tuple[mmrobust.Method, mmrobust.FitResult]:
    method = create_method("features", trees=TREES)
    return method, fit(method, kinds_data, seed=0, progress=False)


def test_fit_records_one_row_with_validation_metrics(trained: tuple[mmrobust.Method, mmrobust.FitResult]) -> None:
    _, result = trained
    assert result.best_epoch == 0 and result.epochs_run == 1 and len(result.history) == 1
    row = result.history[0]
    assert row["epoch"] == 0 and row["train_loss"] < row["val_loss"]
    assert result.val_metrics["accuracy"] == row["val_accuracy"] > 0.5


def test_a_fixed_budget_needs_no_validation_split(small_data: mmrobust.MultimodalData) -> None:
    train = small_data.subset(small_data.splits["train"])
    train = mmrobust.MultimodalData(
        train.spec, train.inputs, train.present, train.target, {"train": torch.arange(len(train))}
    )
    result = fit(create_method("features", trees=TREES), train, select="none", progress=False)
    assert result.val_metrics == {} and result.history[0]["train_loss"] > 0


def test_same_seed_same_forest_other_seed_other_forest(kinds_data: mmrobust.MultimodalData, trained) -> None:
    test = kinds_data.split("test").batch(slice(None))
    reference = trained[0].predict(test)
    again = create_method("features", trees=TREES)
    fit(again, kinds_data, seed=0, progress=False)
    other = create_method("features", trees=TREES)
    fit(other, kinds_data, seed=1, progress=False)
    assert torch.equal(again.predict(test), reference) and not torch.equal(other.predict(test), reference)


def test_absent_placeholders_are_never_read(kinds_data: mmrobust.MultimodalData, trained) -> None:
    method = trained[0]
    test = Subset(kinds_data.modalities[:1])(kinds_data.split("test").batch(slice(None)), torch.Generator())
    outputs = []
    for fill in (float("nan"), 1e6, 0.0):
        inputs = {m: x.clone() for m, x in test.inputs.items()}
        for j, m in enumerate(test.modalities):
            inputs[m][~test.present[:, j]] = fill
        outputs.append(method.predict(mmrobust.Batch(inputs, test.present, test.target, test.modalities)))
    assert torch.isfinite(outputs[0]).all()
    assert torch.equal(outputs[0], outputs[1]) and torch.equal(outputs[0], outputs[2])


def test_outputs_are_log_probabilities(kinds_data: mmrobust.MultimodalData, trained) -> None:
    out = trained[0].predict(kinds_data.split("test").batch(slice(None)))
    torch.testing.assert_close(out.exp().sum(dim=1), torch.ones(len(out)))


def test_every_subset_is_predicted_from_what_it_has() -> None:
    """Trained on complete data only, the masked copies teach the trees every subset: each single
    modality is well above chance on its own."""
    data = mmrobust.load_dataset("synthetic", n_samples=400, informativeness=(2.0, 2.0, 2.0), seed=6)
    method = create_method("features", trees=60)
    fit(method, data, seed=0, progress=False)
    test = data.split("test").batch(slice(None))
    for m in data.modalities:
        out = method.predict(Subset((m,))(test, torch.Generator()))
        assert (out.argmax(dim=1) == test.target).float().mean() > 2 / data.spec.num_classes, m


def test_the_trees_learn_from_the_data_and_masked_copies_of_it(small_data: mmrobust.MultimodalData) -> None:
    method = create_method("features", copies=2)
    method.build(small_data.spec)
    train = small_data.split("train")
    x, y = method.training_design(train, torch.Generator().manual_seed(0))
    n = len(train)
    assert x.shape[0] == 3 * n and (y[:n] == train.target.numpy()).all() and (y[n:2 * n] == y[:n]).all()
    assert not torch.isnan(torch.from_numpy(x[:n])).any()  # the data as given: complete here
    assert torch.isnan(torch.from_numpy(x[n:])).any()  # the copies lose modalities: NaN features


def test_checkpoint_round_trip_is_weights_only(tmp_path: Path, kinds_data: mmrobust.MultimodalData, trained) -> None:
    method = trained[0]
    path = save_checkpoint(method, tmp_path / "features.pt")
    payload = torch.load(path, weights_only=True)  # plain tensors: nothing to unpickle
    assert payload["state"]["forest.roots"].shape == (TREES,)
    reloaded, config = load_checkpoint(path)
    test = kinds_data.split("test").batch(slice(None))
    assert config["method"] == "features" and torch.equal(reloaded.predict(test), method.predict(test))


def test_audit_fast_path_equals_the_naive_path(kinds_data: mmrobust.MultimodalData, trained) -> None:
    method = trained[0]
    noise = mmrobust.GaussianNoise(kinds_data.modalities[1], sigma=0.5, proportion=0.5, stage="token")
    fast = mmrobust.audit(method, kinds_data, [noise]).table
    naive = mmrobust.audit(method, kinds_data, [noise], fast=False).table
    assert len(fast) == len(naive) > 0
    torch.testing.assert_close(torch.tensor(fast.value.values), torch.tensor(naive.value.values), atol=1e-6, rtol=0)


def test_a_uni_modal_floor_reads_only_its_modality(kinds_data: mmrobust.MultimodalData) -> None:
    first = kinds_data.modalities[0]
    method = create_method("features", trees=TREES, modalities=[first])
    fit(method, kinds_data, progress=False)
    test = kinds_data.split("test").batch(slice(None))
    alone = method.predict(Subset((first,))(test, torch.Generator()))
    assert torch.equal(method.predict(test.with_present(test.present[:, :1].expand_as(test.present))), alone)


def test_resumable_fit_leaves_no_state_file(tmp_path: Path, kinds_data: mmrobust.MultimodalData, trained) -> None:
    method = create_method("features", trees=TREES)
    state = tmp_path / "state.pt"
    result = fit(method, kinds_data, seed=0, progress=False, state_path=state, state_every=0)
    test = kinds_data.split("test").batch(slice(None))
    assert not state.exists() and result.history == trained[1].history
    assert torch.equal(method.predict(test), trained[0].predict(test))


def test_bad_parameters() -> None:
    data = mmrobust.load_dataset("synthetic", n_samples=40, seed=0)
    with pytest.raises(mmrobust.MMRobustError, match="trees >= 1"):
        fit(create_method("features", trees=0), data, progress=False)
