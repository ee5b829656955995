"""Checkpoints: tensors plus a JSON description, loaded without unpickling code.

The file is `torch.save` of {format, config (a JSON string), state (tensors), scaling (the
statistics the training data were standardised with, so the model is fed inputs scaled alike),
sha256} and is read back with `weights_only=True`, so a crafted checkpoint cannot run code on
load: one that holds any other pickled object is refused, naming the object. `sha256` covers the
tensors' bytes, which `torch.load` does not check, so a checkpoint corrupted on disk is refused
rather than silently giving other weights (checkpoints of mmrobust 0.1 carry no checksum and are
read as before).
"""

from __future__ import annotations

import json
import math
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from .atomic import CHECKSUM, atomic_write, payload_sha256, save_tensors
from .data.dataset import DataSpec, Scaling, check_scaling, scaling_from_file, scaling_to_file
from .errors import MMRobustError, wrong_argument
from .methods.base import METHODS, Method, check_method_argument, create_method

FORMAT = "mmrobust-checkpoint/1"


def save_checkpoint(method: Method, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    check_method_argument(method, "save_checkpoint")
    if not isinstance(path, str | Path):
        raise wrong_argument("save_checkpoint", "a file path", path, "call save_checkpoint(method, path)")
    if method.name not in METHODS:  # load_checkpoint rebuilds it by its registered name
        raise MMRobustError(
            f"save_checkpoint: a '{method.name}' model cannot be saved as an mmrobust checkpoint (it could not be "
            "loaded back); save the wrapped module's weights (torch.save(model.state_dict(), path)) and audit them "
            "with mmrobust.wrap, or `mmrobust audit --model ... --weights`"
        )
    config = {
        "method": method.name,
        "params": method.get_params(),
        "seed": method.seed,
        "spec": method.spec.to_dict(),
        **(extra or {}),
    }
    payload: dict[str, Any] = {"format": FORMAT, "config": json.dumps(config), "state": method.modules().state_dict()}
    if method.input_scaling is not None:
        payload["scaling"] = scaling_to_file(method.input_scaling)
    path = Path(path)
    atomic_write(path, lambda p: save_tensors(with_checksum(payload), p))
    return path


def with_checksum(payload: dict[str, Any]) -> dict[str, Any]:
    """`payload` plus the SHA-256 of its content, which `load_tensors` verifies."""
    return {**payload, CHECKSUM: payload_sha256(payload)}


def load_tensors(path: Path, fmt: str, what: str, unreadable: str, advice: str) -> dict[str, Any]:
    """A file of tensors and plain containers (weights_only: nothing is unpickled that could run
    code), whose `format` field must be `fmt` and whose checksum, if it has one, must match;
    anything else is a one-line error."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))  # torch refused to import a callable or class
        if not found:  # an unpicklable byte stream: truncated or corrupt
            raise MMRobustError(f"{path} {unreadable} ({type(e).__name__}); {advice}") from None
        raise MMRobustError(
            f"{path} is not a safe mmrobust {what}: it holds pickled Python objects other than tensors and "
            f"plain containers ('{found.group(1)}'), and unpickling them could run arbitrary code; {advice}"
        ) from None
    except Exception as e:
        raise MMRobustError(f"{path} {unreadable} ({type(e).__name__}); {advice}") from None
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise MMRobustError(f"{path} is not an mmrobust {what} (expected format {fmt}); {advice}")
    if CHECKSUM in payload:
        saved = payload.pop(CHECKSUM)
        if saved != payload_sha256(payload):
            raise MMRobustError(
                f"{path}: this {what} is damaged (its content does not match the checksum saved with it: "
                f"corrupted on disk or edited); {advice}"
            )
    return payload


def checkpoint_config(path: Path) -> dict[str, Any]:
    """A checkpoint's description alone (method, params, spec): the file is memory-mapped, so its
    tensors are neither read nor checked (what a report needs from many runs' checkpoints)."""
    payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise MMRobustError(f"{path} is not an mmrobust checkpoint (expected format {FORMAT})")
    config: dict[str, Any] = json.loads(payload["config"])
    return config


MAX_SHAPE_VALUES = 2**31  # values per sample of one modality that a checkpoint may declare


def _check_declared_model(path: Path, name: str, params: dict[str, Any], spec: DataSpec, state: dict[str, Any]) -> None:
    """Build the model the checkpoint describes on the meta device (no memory) and compare it with
    the weights the file holds, before anything is allocated: a crafted spec declaring a huge
    shape would otherwise allocate it (hundreds of GB) before its weights were found not to fit."""
    refuse = f"{path}: malformed mmrobust checkpoint"
    for m in spec.modalities:
        sizes_ok = all(isinstance(d, int) and d >= 1 for d in m.shape)
        if not m.shape or not sizes_ok or math.prod(m.shape) > MAX_SHAPE_VALUES:
            raise MMRobustError(f"{refuse} (modality '{m.name}' declares shape {list(m.shape)}); refusing to load it")
    if not 1 <= spec.num_classes <= MAX_SHAPE_VALUES:
        raise MMRobustError(f"{refuse} (it declares {spec.num_classes} classes); refusing to load it")
    try:
        with torch.device("meta"):
            declared = create_method(name, **params)
            declared.build(spec)
    except (TypeError, ValueError) as e:  # MMRobustError too
        raise MMRobustError(f"{refuse} (cannot build the model it describes: {str(e).splitlines()[0]})") from None
    module = declared.modules()
    expected = module.state_dict()
    sized = tuple(f"{n}." for n, m in module.named_modules() if getattr(m, "sized_by_weights", False))
    wrong = sorted(set(expected) ^ set(state)) or [
        k for k, t in expected.items() if t.shape != state[k].shape and not k.startswith(sized)
    ]  # a module sized by its weights (a fitted forest) takes the saved shapes; the file bounds them
    if wrong:
        raise MMRobustError(
            f"{path}: weights do not match the model it describes (first difference: '{wrong[0]}'); refusing to load it"
        )
    tensors = [*module.parameters(), *module.buffers()]
    size = sum(t.numel() * t.element_size() for t in tensors)
    if size > path.stat().st_size + 2**28:  # beyond the weights saved: buffers it would make
        raise MMRobustError(
            f"{refuse} (its model needs {size / 2**30:.1f} GiB, far more than the {path.stat().st_size} bytes "
            "of the file); refusing to load it"
        )


def _read_scaling(path: Path, saved: object, spec: DataSpec) -> Scaling | None:
    """The statistics the model's training data were standardised with (None: a checkpoint saved
    before they were recorded, audited on data as given, as then)."""
    if saved is None:
        return None
    try:
        scaling = scaling_from_file(saved)
    except MMRobustError as e:
        raise MMRobustError(f"{path}: malformed mmrobust checkpoint ({e}); refusing to load it") from None
    problem = check_scaling(scaling, spec)
    if problem:
        raise MMRobustError(f"{path}: malformed mmrobust checkpoint (scaling: {problem}); refusing to load it")
    return {m: (mean.float(), std.float()) for m, (mean, std) in scaling.items()}  # as `standardize` makes them


def load_checkpoint(path: str | Path) -> tuple[Method, dict[str, Any]]:
    """Rebuild the method and its trained weights; returns (method, config)."""
    path = Path(path)
    if not path.is_file():
        raise MMRobustError(f"checkpoint not found: {path}")
    payload = load_tensors(
        path,
        FORMAT,
        "checkpoint",
        unreadable="is not a safe mmrobust checkpoint (unreadable: truncated, corrupt or another format)",
        advice="refusing to load it",
    )
    try:
        config = json.loads(payload["config"])
        state = payload["state"]
        name, params, spec = config["method"], dict(config["params"]), DataSpec.from_dict(config["spec"])
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise MMRobustError(f"{path}: malformed mmrobust checkpoint (no valid {e}); refusing to load it") from None
    if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise MMRobustError(f"{path}: malformed mmrobust checkpoint (its weights are not tensors); refusing to load it")
    _check_declared_model(path, name, params, spec, state)
    scaling = _read_scaling(path, payload.get("scaling"), spec)
    method = create_method(name, **params)
    torch.manual_seed(0)
    method.build(spec)
    method.seed = config.get("seed")
    method.input_scaling = scaling
    try:
        method.modules().load_state_dict(state)
    except RuntimeError as e:
        raise MMRobustError(
            f"{path}: weights do not match the model it describes ({str(e).splitlines()[0]})"
        ) from None
    method.modules().eval()
    return method, config
