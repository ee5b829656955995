"""A fitted forest of scikit-learn decision trees held as plain tensors, predicted in torch.

Checkpoints are loaded with `torch.load(weights_only=True)` and never unpickle objects, so the
fitted trees are exported through sklearn's public `tree_` arrays (split feature, threshold,
children, missing-value direction, node values) into buffers, and prediction walks every sample
down every tree at once: one gather per level, no loop over samples or trees. `Forest` averages
its trees' leaf values, as `RandomForest*` and `ExtraTrees*` do; `tests/models/test_forest.py`
holds it to sklearn's own predictions.

The arrays' sizes depend on the data the trees were fitted to, so loading a state dict takes the
saved sizes (an unfitted forest has no trees and predicts zeros).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

_DTYPES = {  # the buffers a fitted forest is made of
    "feature": torch.long,
    "threshold": torch.float64,
    "left": torch.long,
    "right": torch.long,
    "missing_left": torch.bool,
    "value": torch.float32,
    "roots": torch.long,
    "depth": torch.long,
}


class Forest(nn.Module):
    """`outputs` values per sample: class probabilities (columns chosen by `columns`) or one regression value."""

    sized_by_weights = True  # checkpoint.py: its buffers take the saved shapes, not the declared ones

    feature: Tensor  # (N,) long: the split feature of each node of every tree, concatenated
    threshold: Tensor  # (N,) float64: go left when x <= threshold (sklearn compares float32 x in float64)
    left: Tensor  # (N,) long: global node ids; a leaf points to itself
    right: Tensor  # (N,) long
    missing_left: Tensor  # (N,) bool: where a NaN goes
    value: Tensor  # (N, outputs) float32: a leaf's class fractions or regression value
    roots: Tensor  # (T,) long
    depth: Tensor  # () long: levels to walk

    def __init__(self, outputs: int) -> None:
        super().__init__()
        self.outputs = outputs
        empty = {k: np.zeros(0) for k in ("feature", "threshold", "left", "right", "missing_left", "roots")}
        self._set({**empty, "value": np.zeros((0, outputs)), "depth": 0}, torch.device("cpu"))

    def load_sklearn(self, trees: Sequence[Any], columns: Sequence[int] | None = None) -> None:
        """Take the fitted `estimators_` of a sklearn forest; `columns[k]` is the output column of
        the trees' k-th class (their `classes_` may be a subset of the task's classes)."""
        names = ("feature", "threshold", "left", "right", "missing_left", "value")
        parts: dict[str, list[np.ndarray]] = {k: [] for k in names}
        roots, offset, depth = [], 0, 0
        for estimator in trees:
            tree = estimator.tree_
            nodes = np.arange(tree.node_count)
            leaf = tree.children_left < 0
            parts["feature"].append(np.where(leaf, 0, tree.feature))
            parts["threshold"].append(tree.threshold)
            parts["left"].append(np.where(leaf, nodes, tree.children_left) + offset)
            parts["right"].append(np.where(leaf, nodes, tree.children_right) + offset)
            parts["missing_left"].append(tree.missing_go_to_left.astype(bool))
            parts["value"].append(self._values(tree.value[:, 0, :], columns))
            roots.append(offset)
            offset, depth = offset + tree.node_count, max(depth, tree.max_depth)
        arrays = {k: np.concatenate(v) for k, v in parts.items()}
        self._set({**arrays, "roots": np.asarray(roots), "depth": depth}, self.value.device)

    def _values(self, value: np.ndarray, columns: Sequence[int] | None) -> np.ndarray:
        """(nodes, classes) counts or fractions -> (nodes, outputs) fractions, or regression values."""
        if columns is None:
            return value
        total = value.sum(axis=1, keepdims=True)
        out = np.zeros((len(value), self.outputs))
        out[:, list(columns)] = value / np.where(total == 0, 1, total)
        return out

    def _set(self, arrays: Mapping[str, Any], device: torch.device) -> None:
        for name, dtype in _DTYPES.items():
            self.register_buffer(name, torch.as_tensor(np.asarray(arrays[name]), dtype=dtype, device=device))

    def forward(self, x: Tensor) -> Tensor:
        """(B, F) features, NaN where missing -> (B, outputs) float32: the trees' mean leaf value."""
        if not len(self.roots):
            return x.new_zeros((len(x), self.outputs))
        x = x.double()
        node = self.roots.expand(len(x), -1)  # (B, T)
        for _ in range(int(self.depth)):
            value = x.gather(1, self.feature[node])
            go_left = torch.where(value.isnan(), self.missing_left[node], value <= self.threshold[node])
            node = torch.where(go_left, self.left[node], self.right[node])
        return self.value[node].mean(dim=1)  # (B, T, outputs) -> (B, outputs)

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        for name, own in self._buffers.items():  # a fitted forest's size is its data's: take the saved size
            saved = state_dict.get(prefix + name)
            if isinstance(saved, Tensor) and own is not None:
                self._buffers[name] = own.new_empty(saved.shape)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
