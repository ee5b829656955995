"""Small building blocks the methods' models share: an MLP builder and M linear maps in one einsum."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn


def mlp(
    sizes: Sequence[int],
    activation: type[nn.Module] = nn.ReLU,
    dropout: float | None = None,
    linear: Callable[[int, int], nn.Module] = nn.Linear,
) -> nn.Sequential:
    """`linear` layers through `sizes`, with `activation` (then a Dropout, when `dropout` is given)
    between them and nothing after the last: the layer indices are the models' checkpoint keys."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(linear(a, b))
        if i < len(sizes) - 2:
            layers += [activation()] if dropout is None else [activation(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


class BatchedLinear(nn.Module):
    """M independent linear maps applied in one einsum: (B, M, in) -> (B, M, out)."""

    def __init__(self, n: int, fan_in: int, fan_out: int) -> None:
        super().__init__()
        bound = 1.0 / max(fan_in, 1) ** 0.5  # nn.Linear's default initialisation
        self.weight = nn.Parameter(torch.empty(n, fan_in, fan_out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n, fan_out).uniform_(-bound, bound))

    def forward(self, x: Tensor) -> Tensor:
        return torch.einsum("bmi,mio->bmo", x, self.weight) + self.bias
