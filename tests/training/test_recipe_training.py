"""Recipe elements of `fit`: a fixed budget (`select="none"`), training-time augmentation and
label smoothing, and the final models of a recipe trained without a val split."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import mmrobust
from mmrobust import MMRobustError, MultimodalData
from mmrobust.data.augment import Augment, parse_augment


def fitted(data: MultimodalData, seed: int = 0, **options):  # type: ignore[no-untyped-def]
    method = mmrobust.create_method(options.pop("method", "joint"), fusion="sum", **options.pop("params", {}))
    result = mmrobust.fit(method, data, seed=seed, batch_size=32, progress=False, **options)
    return method, result


def weights(method: mmrobust.Method) -> list[torch.Tensor]:
    return [p.detach().clone() for p in method.modules().parameters()]


# --- a fixed budget -----------------------------------------------------------------------------
def test_fixed_budget_keeps_the_last_epoch_and_records_the_val_curve(small_data) -> None:
    method, result = fitted(small_data, epochs=5, select="none", patience=0)
    assert result.best_epoch == 4 and result.epochs_run == 5  # patience 0 would have stopped early
    assert [row["epoch"] for row in result.history] == [0, 1, 2, 3, 4]
    assert all("val_accuracy" in row for row in result.history)
    assert result.val_metrics["accuracy"] == result.history[-1]["val_accuracy"]
    again = mmrobust.evaluate(method, small_data.split("val"))  # the last epoch's weights were kept
    assert again["accuracy"] == pytest.approx(result.val_metrics["accuracy"])


def test_fixed_budget_trains_without_a_val_split_and_selection_still_needs_one(small_data) -> None:
    no_val = dataclasses.replace(
        small_data, splits={"train": small_data.splits["train"], "test": small_data.splits["test"]}
    )
    method, result = fitted(no_val, epochs=3, select="none")
    assert result.best_epoch == 2 and result.val_metrics == {} and "val_loss" not in result.history[-1]
    assert mmrobust.evaluate(method, small_data.split("test"))["accuracy"] > 0.4  # it did learn (4 classes)
    empty_val = dataclasses.replace(no_val, splits={**no_val.splits, "val": torch.arange(0)})
    with pytest.raises(MMRobustError, match=r"no val samples, but select='accuracy' .* select='none'"):
        fitted(empty_val, epochs=1, select="accuracy")


# --- augmentation -------------------------------------------------------------------------------
def test_crop_of_a_ramp_is_a_sub_ramp_and_constants_stay_constant() -> None:
    g = torch.Generator().manual_seed(0)
    ramp = torch.linspace(0, 1, 50).expand(8, 2, 50)  # conv1d (C, T)
    out = Augment(crop=0.4)(ramp, "conv1d", g)
    steps = out.diff(dim=-1)
    assert out.shape == ramp.shape and (steps > 0).all()  # still increasing: a stretched window
    assert (out[..., 0] >= 0).all() and (out[..., -1] <= 1).all()
    span = out[..., -1] - out[..., 0]
    assert (span >= 0.6 * 49 / 50 - 1e-4).all() and (span < 0.999).any()  # windows of 60-100% of the ramp
    seq = torch.ones(4, 10, 3) * 7  # seq (T, F): crop along T
    assert torch.allclose(Augment(crop=0.5)(seq, "seq", g), seq)
    image = torch.ones(4, 1, 12, 8) * 2
    assert torch.allclose(Augment(crop=0.3)(image, "conv2d", g), image)


def test_scale_is_one_factor_per_channel_and_jitter_adds_noise() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.ones(1000, 3, 20)
    out = Augment(scale=0.1)(x, "conv1d", g)
    assert torch.allclose(out, out[..., :1].expand_as(out))  # constant over time within a channel
    assert out[:, :, 0].std().item() == pytest.approx(0.1, rel=0.1)
    seq = Augment(scale=0.1)(torch.ones(500, 6, 4), "seq", g)
    assert torch.allclose(seq, seq[:, :1, :1].expand_as(seq))  # one factor per sample
    noisy = Augment(jitter=0.5)(torch.zeros(200, 50), "mlp", g)
    assert noisy.std().item() == pytest.approx(0.5, rel=0.05)


def test_rotate_turns_each_triple_by_one_rotation_per_sample_within_the_angle() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(300, 6, 20)  # two 3-axis sensors of one device
    out = Augment(rotate=30)(x, "conv1d", g)
    # a rotation keeps every time step's vector length, within each triple
    assert torch.allclose(out.unflatten(1, (2, 3)).norm(dim=2), x.unflatten(1, (2, 3)).norm(dim=2), atol=1e-5)
    # the same rotation for both triples of a sample: solve it from the first triple, apply to the second
    first, second = x[:, :3], x[:, 3:]
    rotation = torch.linalg.lstsq(first.transpose(1, 2), out[:, :3].transpose(1, 2)).solution.transpose(1, 2)
    assert torch.allclose(rotation @ second, out[:, 3:], atol=1e-4)
    assert torch.allclose(rotation @ rotation.transpose(1, 2), torch.eye(3).expand(300, 3, 3), atol=1e-4)
    angle = torch.rad2deg(torch.arccos(((rotation.diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1, 1)))
    assert angle.max() <= 30.01 and angle.max() > 25 and angle.min() < 5  # U(-30, 30) degrees, in magnitude
    assert torch.equal(Augment(rotate=0)(x, "conv1d", g), x)


def test_augment_options_are_checked_against_the_data(kinds_data) -> None:
    with pytest.raises(MMRobustError, match="no modality 'm9'"):
        parse_augment(kinds_data.spec, {"m9": {"crop": 0.1}})
    with pytest.raises(MMRobustError, match=r"unknown transform \['warp'\]"):
        parse_augment(kinds_data.spec, {"m0": {"warp": 0.1}})
    with pytest.raises(MMRobustError, match=r"crop must be in \[0, 1\)"):
        parse_augment(kinds_data.spec, {"m0": {"crop": 1.5}})
    mlp = next(m.name for m in kinds_data.spec.modalities if m.kind == "mlp")
    with pytest.raises(MMRobustError, match="mlp inputs have none"):
        parse_augment(kinds_data.spec, {mlp: {"crop": 0.1}})
    with pytest.raises(MMRobustError, match=r"rotate must be in \[0, 180\]"):
        parse_augment(kinds_data.spec, {"m0": {"rotate": 200}})
    with pytest.raises(MMRobustError, match=f"rotate turns 3-axis channel triples of conv1d windows; {mlp} is mlp"):
        parse_augment(kinds_data.spec, {mlp: {"rotate": 10}})


def test_augmented_training_is_seeded_and_changes_the_run(kinds_data) -> None:
    augment = {m.name: {"scale": 0.2, "jitter": 0.1} for m in kinds_data.spec.modalities}
    a, _ = fitted(kinds_data, epochs=2, augment=augment)
    b, _ = fitted(kinds_data, epochs=2, augment=augment)
    plain, _ = fitted(kinds_data, epochs=2)
    assert all(torch.equal(x, y) for x, y in zip(weights(a), weights(b), strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(weights(a), weights(plain), strict=True))


def test_label_smoothing_changes_the_loss_of_joint_and_dropout(small_data) -> None:
    for name in ("joint", "dropout"):
        sharp, _ = fitted(small_data, epochs=1, method=name, params={"label_smoothing": 0.0})
        smooth, _ = fitted(small_data, epochs=1, method=name, params={"label_smoothing": 0.3})
        assert mmrobust.create_method(name, label_smoothing=0.3).get_params()["label_smoothing"] == 0.3
        assert not all(torch.equal(x, y) for x, y in zip(weights(sharp), weights(smooth), strict=True))


@pytest.mark.parametrize("name", mmrobust.METHODS.names())
def test_every_method_takes_label_smoothing_into_its_classification_loss(small_data, name: str) -> None:
    """Label smoothing is a recipe element: every method must accept it, so a comparison can give
    every method the same value."""
    batch = small_data.split("train").batch(slice(0, 32))
    losses = []
    for smoothing in (0.0, 0.3):
        method = mmrobust.create_method(name, label_smoothing=smoothing)
        assert method.get_params()["label_smoothing"] == smoothing
        torch.manual_seed(0)
        method.build(small_data.spec)
        if any(stage.fit_direct for stage in method.stages(0)):
            pytest.skip(f"{name} is fitted without gradient: label smoothing enters its reported loss only")
        method.modules().eval()  # no dropout: the two losses differ only by the smoothing
        losses.append(float(method.loss(batch, torch.Generator().manual_seed(0)).detach()))
    assert losses[0] != pytest.approx(losses[1], rel=1e-4)


def test_a_choice_on_a_fixed_budget_is_made_on_validation_accuracy(small_data) -> None:
    """Training stages keep their last epoch; the choice between candidates (not an epoch) is made on
    the primary metric, and needs a val split."""
    method = mmrobust.create_method("ume_mma")
    result = mmrobust.fit(method, small_data, epochs=2, select="none", progress=False)
    scored = [row for row in result.history if row["stage"] == "choose"]
    assert [row["choice"] for row in scored] == ["ume", "mma"]
    accuracy = [row["val_accuracy"] for row in scored]
    kept = 1 if accuracy[1] > accuracy[0] else 0
    assert result.best_epoch == kept and method.chosen == ("ume", "mma")[kept]
    no_val = dataclasses.replace(small_data, splits={k: v for k, v in small_data.splits.items() if k != "val"})
    with pytest.raises(MMRobustError, match=r"ume_mma chooses on validation .* non-empty val split"):
        mmrobust.fit(mmrobust.create_method("ume_mma"), no_val, epochs=1, select="none", progress=False)
