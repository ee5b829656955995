"""Choosing another encoder for a modality (`encoders`): the deeper residual CNNs, how a dataset
names them, and that the choice travels with the model (checkpoints, CroSSL), not with the data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import mmrobust
from mmrobust import MMRobustError
from mmrobust.checkpoint import load_checkpoint, save_checkpoint
from mmrobust.data.dataset import DataSpec
from mmrobust.experiment import load_data
from mmrobust.models.encoders import ConvEncoder, ResidualConvEncoder, create_encoder


@pytest.mark.parametrize(("name", "shape"), [("resconv1d", (3, 40)), ("resconv2d", (2, 12, 10))])
def test_residual_encoders_map_a_batch_to_one_token_per_sample(name: str, shape: tuple[int, ...]) -> None:
    encoder = create_encoder(name, shape, 24).eval()
    x = torch.randn(5, *shape)
    z = encoder(x)
    assert z.shape == (5, 24) and torch.isfinite(z).all()
    torch.testing.assert_close(encoder(x[1:2]), z[1:2], atol=1e-5, rtol=0)  # samples are independent
    grads = torch.autograd.grad(encoder(x).sum(), list(encoder.parameters()), allow_unused=True)
    assert all(g is not None for g in grads)  # every block is on the path to the token


@pytest.mark.parametrize(("name", "shape"), [("resconv1d", (3, 4, 40)), ("resconv2d", (12, 10))])
def test_residual_encoders_refuse_another_layout(name: str, shape: tuple[int, ...]) -> None:
    with pytest.raises(MMRobustError, match=f"{name} expects per-sample shape"):
        create_encoder(name, shape, 16)


def _conv_data(**options: object) -> mmrobust.MultimodalData:
    options = {"n_samples": 60, "kinds": ("conv1d", "mlp", "mlp"), "seed": 0, **options}
    return load_data("synthetic", None, options=options)


def test_a_dataset_names_the_encoder_a_model_builds() -> None:
    data = _conv_data(encoders={"m0": "resconv1d"})
    assert [m.encoder_name for m in data.spec.modalities] == ["resconv1d", "mlp", "mlp"]
    method = mmrobust.create_method("joint", dim=16)
    mmrobust.fit(method, data, epochs=1, progress=False)
    assert isinstance(method.fitted_model.encoders["m0"], ResidualConvEncoder)
    assert isinstance(create_encoder("conv1d", (2, 16), 8), ConvEncoder)  # the kind's own stays the default


def test_the_spec_records_the_encoder_only_when_one_is_named() -> None:
    plain, chosen = _conv_data().spec, _conv_data(encoders={"m0": "resconv1d"}).spec
    assert all("encoder" not in m for m in plain.to_dict()["modalities"])  # caches keyed on specs are unchanged
    assert DataSpec.from_dict(chosen.to_dict()) == chosen
    assert plain.compatibility_problem(chosen) is None  # the encoder is the model's, not a property of the data


def test_a_checkpoint_rebuilds_its_encoder_and_audits_data_loaded_without_naming_it(tmp_path: Path) -> None:
    method = mmrobust.create_method("joint", dim=16)
    mmrobust.fit(method, _conv_data(encoders={"m0": "resconv1d"}), epochs=1, progress=False)
    loaded, _ = load_checkpoint(save_checkpoint(method, tmp_path / "model.pt"))
    assert isinstance(loaded.fitted_model.encoders["m0"], ResidualConvEncoder)
    plain = _conv_data()
    test = plain.split("test")
    np.testing.assert_allclose(mmrobust.predict(loaded, test), mmrobust.predict(method, test), atol=1e-6)
    assert len(mmrobust.audit(loaded, plain).table)  # the audit's compatibility check passes


def test_crossl_reads_a_named_encoder_instead_of_the_papers() -> None:
    method = mmrobust.create_method("crossl", embed_dim=16)
    data = _conv_data(encoders={"m0": "resconv1d"})
    method.build(data.spec)
    encoders = method.fitted_model.encoders
    assert isinstance(encoders["m0"], ResidualConvEncoder) and not isinstance(encoders["m1"], ResidualConvEncoder)


def test_a_wrong_encoder_choice_is_a_one_line_error() -> None:
    with pytest.raises(MMRobustError, match="unknown modality 'm9'"):
        _conv_data(encoders={"m9": "resconv1d"})
    data = _conv_data(encoders={"m0": "resnet"})  # the data layer cannot know the encoders: the model build tells
    with pytest.raises(MMRobustError, match="unknown encoder kind 'resnet'"):
        mmrobust.fit(mmrobust.create_method("joint", dim=16), data, epochs=1, progress=False)


def test_npz_files_take_the_encoder_choice_too(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, x_a=rng.normal(size=(40, 2, 16)).astype(np.float32), y=np.arange(40) % 2)
    data = load_data(None, path, options={"encoders": {"a": "resconv1d"}})
    assert data.spec.modalities[0].encoder_name == "resconv1d"
