"""The `features` floor's summary statistics, checked by hand on tiny inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmrobust.errors import MMRobustError
from mmrobust.models.summary import QUANTILES, feature_count, summarize


def test_time_series_statistics_by_hand() -> None:
    x = torch.tensor([[[1.0, 3.0, 2.0, 6.0]]])  # one sample, one channel, T = 4
    got = summarize("conv1d", x)[0]
    quantiles = np.quantile([1.0, 3.0, 2.0, 6.0], QUANTILES)  # numpy's default: linear interpolation
    diffs = (2 + 1 + 4) / 3
    slope = (-1.5 * 1 - 0.5 * 3 + 0.5 * 2 + 1.5 * 6) / (2.25 + 0.25 + 0.25 + 2.25)  # least squares, per step
    energy = (1 + 9 + 4 + 36) / 4
    want = [3.0, np.std([1, 3, 2, 6]), 1.0, 6.0, *quantiles, diffs, slope, energy]
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float32))


def test_seq_takes_each_feature_as_a_channel() -> None:
    x = torch.randn(5, 7, 3)  # (n, T, F)
    torch.testing.assert_close(summarize("seq", x), summarize("conv1d", x.transpose(1, 2)))


def test_image_statistics_and_grid() -> None:
    x = torch.arange(64.0).view(1, 1, 8, 8)
    got = summarize("conv2d", x)[0]
    assert got.shape == (9 + 16,)
    assert got[0] == 31.5 and got[2] == 0 and got[3] == 63  # mean, min, max
    assert got[9] == x[0, 0, :2, :2].mean() and got[-1] == x[0, 0, 6:, 6:].mean()  # the 4x4 grid, row-major


def test_frames_pool_each_frame_then_describe_each_cell_over_time() -> None:
    x = torch.randn(2, 5, 1, 8, 8)  # (n, T, C, H, W)
    cells = torch.nn.functional.adaptive_avg_pool2d(x.flatten(0, 1), 4).view(2, 5, 16)
    torch.testing.assert_close(summarize("frames", x), summarize("seq", cells))


@pytest.mark.parametrize(
    ("kind", "shape"),
    [("mlp", (3, 2)), ("conv1d", (2, 1)), ("seq", (1, 4)), ("conv2d", (1, 1, 3)), ("frames", (1, 2, 1, 1))],
)
def test_every_kind_and_degenerate_shape_gives_finite_features(kind: str, shape: tuple[int, ...]) -> None:
    got = summarize(kind, torch.randn(4, *shape))
    assert got.shape == (4, feature_count(kind, shape)) and torch.isfinite(got).all()


def test_rows_are_summarised_independently() -> None:
    x = torch.randn(6, 3, 20)
    torch.testing.assert_close(summarize("conv1d", x)[2:4], summarize("conv1d", x[2:4]))


def test_unknown_kind() -> None:
    with pytest.raises(MMRobustError, match="unknown modality kind 'conv3d'"):
        summarize("conv3d", torch.zeros(1, 2))
