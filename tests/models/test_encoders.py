"""Encoders by modality kind: shapes, clear errors, and the space-time (`frames`) encoder."""

from __future__ import annotations

import pytest
import torch

import mmrobust
from mmrobust import MMRobustError
from mmrobust.data.dataset import ENCODER_KINDS, standardize
from mmrobust.models.encoders import create_encoder

SHAPES = {"mlp": (16,), "conv1d": (2, 16), "conv2d": (1, 8, 8), "seq": (6, 4), "frames": (3, 1, 8, 8)}


@pytest.mark.parametrize("kind", ENCODER_KINDS)
def test_every_kind_maps_a_batch_to_one_token_per_sample(kind: str) -> None:
    encoder = create_encoder(kind, SHAPES[kind], 32).eval()
    x = torch.randn(5, *SHAPES[kind])
    z = encoder(x)
    assert z.shape == (5, 32) and torch.isfinite(z).all()
    torch.testing.assert_close(encoder(x[2:3]), z[2:3], atol=1e-5, rtol=0)  # samples are independent


def test_frames_encoder_sees_frame_order() -> None:
    torch.manual_seed(0)
    encoder = create_encoder("frames", (4, 1, 8, 8), 16).eval()
    x = torch.randn(2, 4, 1, 8, 8)
    assert not torch.allclose(encoder(x), encoder(x.flip(1)))


@pytest.mark.parametrize(("kind", "shape"), [("frames", (1, 8, 8)), ("seq", (6,)), ("conv2d", (8, 8))])
def test_wrong_shapes_are_user_errors(kind: str, shape: tuple[int, ...]) -> None:
    with pytest.raises(MMRobustError, match=f"{kind} expects per-sample shape"):
        create_encoder(kind, shape, 16)


def test_frames_are_standardised_per_channel_and_train() -> None:
    data = mmrobust.load_dataset("synthetic", n_samples=60, kinds=("frames", "mlp", "mlp"), seed=0)
    x = standardize(data).inputs["m0"][data.splits["train"]]  # (N, T, C, H, W)
    torch.testing.assert_close(x.mean(dim=(0, 1, 3, 4)), torch.zeros(1), atol=1e-5, rtol=0)
    method = mmrobust.create_method("joint")
    mmrobust.fit(method, data, epochs=1, progress=False)
    assert torch.isfinite(mmrobust.predict(method, data.split("test"))).all()
