"""`fit`'s options, checked when a config is read (before anything trains), and the device."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import torch

from ..data.dataset import MultimodalData
from ..errors import MMRobustError, check_int, check_number
from ..metrics import metric_names
from ..seeds import MAX_SEED

DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_device(device: object, name: str = "device") -> str:
    """`device` if it names one `fit` can train on, else a one-line error (torch's own is a
    traceback for "gpu", and accepts "meta", which would train nothing)."""
    if not isinstance(device, str) or not DEVICE.fullmatch(device):
        raise MMRobustError(f"{name} must be auto, cpu, cuda or cuda:N, got {device!r}")
    return device


def resolve_device(device: str = "auto") -> torch.device:
    check_device(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MMRobustError(f"device {device!r} was requested but CUDA is not available here; use cpu "
                            "(--device cpu, or train.device=cpu in a config or sweep)")  # fmt: skip
    return torch.device(device)


def check_splits(data: MultimodalData, select: str) -> None:
    """The splits `fit` reads: train samples, and val samples unless `select` is "none" (a fixed budget
    reads no val), said before anything trains and naming both fixes; a file may hold no val rows."""
    sizes = {s: len(data.splits[s]) if s in data.splits else 0 for s in ("train", "val")}
    if not sizes["train"]:
        raise MMRobustError(f"dataset '{data.spec.name}' has no train samples to fit on; give it a train split")
    if not sizes["val"] and select != "none":
        raise MMRobustError(
            f"dataset '{data.spec.name}' has no val samples, but select={select!r} picks the epoch on them: add "
            "val rows ('val' in an npz's split array) or train a fixed budget with select='none' "
            "(config: train.select: none)"
        )


def check_fit_options(
    options: Mapping[str, Any], task: str | None = None, name: Callable[[str], str] = lambda key: key
) -> None:
    """Range-check `fit`'s numeric options and `select` (against `task`'s metrics; any task's when
    None), naming each as `name(key)` (a config key or a command-line option): an epoch budget of 0
    would audit an untrained model, a batch size of 0 divide by zero, a NaN learning rate train
    nothing. Keys absent from `options` are not checked."""
    ints = {"epochs": 1, "batch_size": 1, "patience": 0}
    for key, minimum in ints.items():
        if key in options:
            check_int(options[key], name(key), minimum)
    if "seed" in options:
        check_int(options["seed"], name("seed"), 0, MAX_SEED)
    if "lr" in options:
        check_number(options["lr"], name("lr"), 0.0, strict=True)
    if "weight_decay" in options:
        check_number(options["weight_decay"], name("weight_decay"), 0.0)
    if "select" in options:
        select = options["select"]
        tasks = [task] if task else ["classification", "regression"]
        valid = sorted({name for t in tasks for name in metric_names(t)})
        if select != "none" and select not in valid:
            raise MMRobustError(
                f"{name('select')} must be 'none' (a fixed budget) or a validation metric"
                f"{f' of {task}' if task else ''} ({', '.join(valid)}), got {select!r}"
            )
