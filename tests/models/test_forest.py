"""Forests exported from scikit-learn to tensors predict what scikit-learn predicts."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier, RandomForestRegressor

from mmrobust.models.forest import Forest


def _data(n: int, rng: np.random.Generator) -> np.ndarray:
    x = rng.normal(size=(n, 6)).astype(np.float32)
    x[rng.random(x.shape) < 0.25] = np.nan  # missing values, routed by each split's learned direction
    return x


def test_classifier_export_equals_predict_proba() -> None:
    rng = np.random.default_rng(0)
    x, test = _data(300, rng), _data(200, rng)
    y = 2 + (np.nan_to_num(x[:, 0]) > 0) + (np.nan_to_num(x[:, 1]) > 0.5)  # classes 2..4 of 6
    for cls in (RandomForestClassifier, ExtraTreesClassifier):
        model = cls(n_estimators=40, random_state=0).fit(x, y)
        forest = Forest(6)
        forest.load_sklearn(model.estimators_, [int(c) for c in model.classes_])
        got = forest(torch.from_numpy(test))
        np.testing.assert_allclose(got[:, 2:5].numpy(), model.predict_proba(test), atol=1e-6)
        assert (got[:, [0, 1, 5]] == 0).all()  # classes never seen in training


def test_regressor_export_equals_predict() -> None:
    rng = np.random.default_rng(1)
    x, test = _data(300, rng), _data(200, rng)
    model = RandomForestRegressor(n_estimators=30, min_samples_leaf=5, random_state=0).fit(x, rng.normal(size=300))
    forest = Forest(1)
    forest.load_sklearn(model.estimators_)
    np.testing.assert_allclose(forest(torch.from_numpy(test))[:, 0].numpy(), model.predict(test), rtol=1e-5, atol=1e-6)


def test_a_state_dict_of_any_size_loads_into_an_unfitted_forest() -> None:
    rng = np.random.default_rng(2)
    x = _data(100, rng)
    model = RandomForestClassifier(n_estimators=5, random_state=0).fit(x, np.arange(100) % 3)
    fitted = Forest(3)
    fitted.load_sklearn(model.estimators_, [0, 1, 2])
    empty = Forest(3)
    assert torch.equal(empty(torch.from_numpy(x)), torch.zeros(100, 3))
    empty.load_state_dict(fitted.state_dict())
    assert torch.equal(empty(torch.from_numpy(x)), fitted(torch.from_numpy(x)))
