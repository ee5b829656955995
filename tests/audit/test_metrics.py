"""Metrics against scikit-learn / numpy reference implementations on random data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmrobust.metrics import classification_metrics, compute_metrics, regression_metrics

skm = pytest.importorskip("sklearn.metrics")


# --- classification ---------------------------------------------------------------------------
def _check_classification(logits: np.ndarray, target: np.ndarray, num_classes: int) -> None:
    got = classification_metrics(torch.from_numpy(logits), torch.from_numpy(target), num_classes)
    pred = logits.argmax(axis=1)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(target, pred), abs=1e-6)
    assert got["macro_f1"] == pytest.approx(skm.f1_score(target, pred, average="macro"), abs=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_classification_random(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, c = int(rng.integers(20, 400)), int(rng.integers(2, 8))
    logits = rng.normal(size=(n, c)).astype(np.float32)
    target = rng.integers(0, c, n)
    # make it better than chance so that F1 varies across classes
    logits[np.arange(n), target] += rng.uniform(0, 2, n).astype(np.float32)
    _check_classification(logits, target, c)


def test_classification_with_classes_missing_from_predictions_or_targets() -> None:
    rng = np.random.default_rng(10)
    n, c = 200, 6
    target = rng.integers(0, 3, n)  # classes 3..5 never occur in the targets
    logits = rng.normal(size=(n, c)).astype(np.float32)
    logits[:, 5] = -10  # class 5 never predicted either: undefined, excluded like sklearn
    logits[:, 4] += 1.0  # class 4 predicted but never true: F1 = 0, included
    _check_classification(logits, target, c)
    # a class that is true but never predicted counts as F1 = 0
    logits2 = rng.normal(size=(n, c)).astype(np.float32)
    logits2[:, 0] = -10
    _check_classification(logits2, rng.integers(0, c, n), c)


def test_classification_perfect_and_single_sample() -> None:
    target = np.array([0, 1, 2, 2, 1])
    logits = np.eye(3, dtype=np.float32)[target]
    got = classification_metrics(torch.from_numpy(logits), torch.from_numpy(target), 3)
    assert got == {"accuracy": 1.0, "macro_f1": 1.0}
    _check_classification(np.array([[0.1, 0.9]], np.float32), np.array([0]), 2)


# --- regression -------------------------------------------------------------------------------
def reference_regression(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """The MOSI/MOSEI evaluation as usually published (MMSA `__eval_mosei_regression`)."""
    non_zero = truth != 0
    t2, p2 = truth[non_zero] > 0, pred[non_zero] > 0
    t0, p0 = truth >= 0, pred >= 0
    return {
        "mae": skm.mean_absolute_error(truth, pred),
        "corr": float(np.corrcoef(pred, truth)[0, 1]),
        "acc2": skm.accuracy_score(t2, p2),
        "f1": skm.f1_score(t2, p2, average="weighted"),
        "acc2_has0": skm.accuracy_score(t0, p0),
        "f1_has0": skm.f1_score(t0, p0, average="weighted"),
        "acc5": float(np.mean(np.round(np.clip(pred, -2, 2)) == np.round(np.clip(truth, -2, 2)))),
        "acc7": float(np.mean(np.round(np.clip(pred, -3, 3)) == np.round(np.clip(truth, -3, 3)))),
    }


def _check_regression(pred: np.ndarray, truth: np.ndarray) -> None:
    got = regression_metrics(torch.from_numpy(pred), torch.from_numpy(truth))
    want = reference_regression(pred.astype(np.float64), truth.astype(np.float64))
    assert set(got) == set(want)
    for k in want:
        assert got[k] == pytest.approx(want[k], abs=1e-9), k


@pytest.mark.parametrize("seed", range(5))
def test_regression_random(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(30, 500))
    # sentiment-like labels: multiples of 1/3 in [-3, 3], many exact zeros and .5-free values
    truth = np.round(rng.uniform(-3.2, 3.2, n) * 3) / 3
    truth[rng.random(n) < 0.15] = 0.0
    pred = truth * rng.uniform(0.3, 1.0) + rng.normal(0, 1.2, n)
    pred[rng.random(n) < 0.05] = 0.0  # exact-zero predictions (the >= 0 vs > 0 boundary)
    _check_regression(pred, truth)
    _check_regression(pred.astype(np.float32), truth.astype(np.float32))


def test_regression_rounding_boundaries_and_clipping() -> None:
    # halves round to even in both numpy and torch; values beyond +-3 are clipped first
    truth = np.array([-3.0, -2.5, -1.5, -0.5, 0.0, 0.5, 1.5, 2.5, 3.0, 2.0, -2.0, 1.0])
    pred = np.array([-4.0, -2.5, -2.4, 0.5, -0.4, 0.49, 1.5, 3.7, 2.6, -0.0, -1.6, 0.5])
    _check_regression(pred, truth)


def test_regression_single_class_binary_targets() -> None:
    truth = np.linspace(0.5, 3, 40)  # every label positive
    pred = np.random.default_rng(0).normal(0.5, 1.0, 40)
    _check_regression(pred, truth)


def test_regression_perfect_prediction() -> None:
    truth = np.linspace(-3, 3, 21)
    got = regression_metrics(torch.from_numpy(truth), torch.from_numpy(truth))
    assert got["mae"] == 0 and got["corr"] == pytest.approx(1.0)
    assert got["acc2"] == got["f1"] == got["acc2_has0"] == got["f1_has0"] == got["acc5"] == got["acc7"] == 1.0


def test_regression_constant_prediction_has_zero_correlation() -> None:
    truth = np.linspace(-3, 3, 21)
    got = regression_metrics(torch.zeros(21, dtype=torch.float64), torch.from_numpy(truth))
    assert got["corr"] == 0.0 and np.isfinite(list(got.values())).all()


def test_compute_metrics_dispatches_on_task() -> None:
    logits, target = torch.randn(10, 3), torch.randint(0, 3, (10,))
    assert set(compute_metrics(logits, target, "classification", 3)) == {"accuracy", "macro_f1"}
    assert "mae" in compute_metrics(torch.randn(10), torch.randn(10), "regression", 1)


def test_regression_metrics_by_hand_with_zero_labels() -> None:
    """Four samples worked out on paper; two labels are exactly 0, which the non-zero Acc-2/F1
    drop and the non-negative ("has0") ones count as positive."""
    truth = torch.tensor([-1.0, 0.0, 0.0, 2.0])
    pred = torch.tensor([-0.5, 0.3, -0.2, 1.0])
    got = regression_metrics(pred, truth)
    assert got["mae"] == pytest.approx(0.5)  # (0.5 + 0.3 + 0.2 + 1.0) / 4
    assert got["corr"] == pytest.approx(2.35 / (1.29 * 4.75) ** 0.5)  # centred cross / norms
    assert got["acc2"] == 1.0 and got["f1"] == 1.0  # only samples 0 and 3: both signs right
    assert got["acc2_has0"] == 0.75  # sample 2: label 0 is ">= 0", prediction -0.2 is not
    assert got["f1_has0"] == pytest.approx((3 * 0.8 + 1 * 2 / 3) / 4)  # weighted: F1 0.8 (n=3), 2/3 (n=1)
    assert got["acc7"] == 0.5  # rounded predictions -0, 0, -0, 1 vs labels -1, 0, 0, 2
    assert got["acc5"] == 0.5  # the same within [-2, 2]
    edge = regression_metrics(torch.tensor([2.6, -3.0]), torch.tensor([3.0, -2.4]))
    assert edge["acc5"] == 1.0 and edge["acc7"] == 0.5  # within ±2 both match; within ±3 -3 is not round(-2.4)
