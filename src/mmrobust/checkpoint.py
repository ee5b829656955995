"""Checkpoints: tensors plus a JSON description, loaded without unpickling code.

The file is `torch.save` of {format, config (a JSON string), state (tensors)} and is read
back with `weights_only=True`, so a crafted checkpoint cannot run code on load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_write
from .data.dataset import DataSpec
from .errors import MMRobustError
from .methods.base import Method, create_method

FORMAT = "mmrobust-checkpoint/1"


def save_checkpoint(method: Method, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    config = {
        "method": method.name,
        "params": method.get_params(),
        "seed": method.seed,
        "spec": method.spec.to_dict(),
        **(extra or {}),
    }
    payload = {"format": FORMAT, "config": json.dumps(config), "state": method.modules().state_dict()}
    path = Path(path)
    atomic_write(path, lambda p: torch.save(payload, p))
    return path


def load_tensors(path: Path, fmt: str, what: str, unreadable: str, advice: str) -> dict[str, Any]:
    """A file of tensors and plain containers (weights_only: nothing is unpickled that could run
    code), whose `format` field must be `fmt`; anything else is a one-line error."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise MMRobustError(f"{path} {unreadable} ({type(e).__name__}); {advice}") from None
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise MMRobustError(f"{path} is not an mmrobust {what} (expected format {fmt}); {advice}")
    return payload


def load_checkpoint(path: str | Path) -> tuple[Method, dict[str, Any]]:
    """Rebuild the method and its trained weights; returns (method, config)."""
    path = Path(path)
    if not path.is_file():
        raise MMRobustError(f"checkpoint not found: {path}")
    payload = load_tensors(path, FORMAT, "checkpoint", unreadable="is not a safe mmrobust checkpoint",
                           advice="refusing to load it")
    config = json.loads(payload["config"])
    method = create_method(config["method"], **config["params"])
    torch.manual_seed(0)
    method.build(DataSpec.from_dict(config["spec"]))
    method.seed = config.get("seed")
    try:
        method.modules().load_state_dict(payload["state"])
    except RuntimeError as e:
        raise MMRobustError(
            f"{path}: weights do not match the model it describes ({str(e).splitlines()[0]})"
        ) from None
    method.modules().eval()
    return method, config
