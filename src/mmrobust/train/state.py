"""The training state that lets an interrupted `fit` resume bit for bit (ARCHITECTURE.md
invariant 5), and the fingerprints that say which run a saved state or cached stage belongs to."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_write, save_tensors
from ..checkpoint import load_tensors, with_checksum
from ..data.dataset import MultimodalData
from ..methods.base import Method
from ..seeds import SEEDING

STATE_FORMAT = "mmrobust-training-state/1"


def data_digest(train: MultimodalData, val: MultimodalData) -> str:
    """The data's spec and every tensor's shape, dtype and bytes (bytes alone would let data of
    another layout, e.g. (1, 8) vs (8, 1) per sample, share a key)."""
    digest = hashlib.sha256(json.dumps(train.spec.to_dict(), sort_keys=True).encode())
    for part in (train, val):
        for t in (*(part.inputs[m] for m in part.modalities), part.present, part.target):
            digest.update(f"{tuple(t.shape)}{t.dtype}".encode())
            digest.update(t.contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def fingerprint(method: Method, train: MultimodalData, val: MultimodalData, options: dict[str, Any]) -> str:
    """What determines the rest of a run: method and parameters, the data fit reads, fit options."""
    key = {
        "method": method.name,
        "params": method.get_params(),
        "spec": train.spec.to_dict(),
        "options": options,
        "torch": torch.__version__,
        "seeding": SEEDING,
        "data": data_digest(train, val),
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class StateFile:
    """Where an interrupted `fit` left off: saved atomically, at most every `every` seconds."""

    path: Path
    fingerprint: str
    every: float

    def due(self, last_save: float) -> bool:
        return time.monotonic() - last_save >= self.every

    def save(
        self,
        stage: int,
        progress: tuple[list[dict[str, Any]], Any],
        stateful: dict[str, Any],
        generator: torch.Generator,
        dev: torch.device,
        within: dict[str, Any] | None,
    ) -> None:
        """Tensors and plain containers only (no pickled code); `progress` is (history, FitResult)
        and `within` is None between stages."""
        history, result = progress
        state = {
            "format": STATE_FORMAT,
            "fingerprint": self.fingerprint,
            "stage": stage,
            "within": within,
            "history": history,
            "result": dataclasses.asdict(result),
            **{name: obj.state_dict() for name, obj in stateful.items()},  # model, optimizer, schedule
            "generator": generator.get_state(),  # shuffling and augmentation
            "torch_rng": torch.get_rng_state(),  # dropout layers draw from the global generator
            "cuda_rng": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None,
        }
        atomic_write(self.path, lambda p: save_tensors(with_checksum(state), p))

    def load(self) -> dict[str, Any] | None:
        """The state saved by the same run, or None (no file, or another run's: start over)."""
        if not self.path.is_file():
            return None
        state = load_tensors(
            self.path,
            STATE_FORMAT,
            "training state",
            unreadable="is not a readable training state",
            advice="delete it to start over",
        )
        if state["fingerprint"] != self.fingerprint:
            warnings.warn(
                f"{self.path} was saved by a run with other settings or data; training starts over", stacklevel=3
            )
            return None
        return state


def restore_state(
    state: dict[str, Any], stateful: dict[str, Any], generator: torch.Generator, dev: torch.device
) -> None:
    for name, obj in stateful.items():
        obj.load_state_dict(state[name])
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] is not None and dev.type == "cuda":
        torch.cuda.set_rng_state(state["cuda_rng"], dev)
