"""`mmsa`: CMU-MOSI / CMU-MOSEI in the MMSA toolkit's processed pickle layout.

H. Mao et al., "M-SENA: An Integrated Platform for Multimodal Sentiment Analysis", ACL 2022
demo; https://github.com/thuiar/MMSA (the processed features are linked from its README).
Users bring e.g. `MOSI/Processed/unaligned_50.pkl` and put it under `<data_dir>/mmsa/`. The
pickle is {'train' | 'valid' | 'test': {'text' (N, Lt, 768) BERT features, 'text_bert'
(N, 3, Lt) token ids, 'audio' (N, La, Da), 'vision' (N, Lv, Dv), 'regression_labels' (N,),
'id', 'raw_text', 'audio_lengths', 'vision_lengths', ...}} and is read with the restricted
unpickler (`safe_pickle`); `trust_pickle=True` lifts that at the user's own risk.

Recipe (`mmsa/1`):
- Modalities `text`, `audio`, `vision`, each "seq" (T, F) as stored (zero-padded to a
  fixed length). `text_bert` holds token ids, not features, and is not used.
- Non-finite features (MOSEI's COVAREP audio has -inf) are set to 0, as MMSA's loader does.
- Target: `regression_labels`, sentiment in [-3, 3] (regression, `num_classes=1`).
- Splits: the official train / valid / test (valid -> val). Per-feature standardisation
  with train statistics only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ...errors import MMRobustError
from ..cache import cached
from ..dataset import DataSpec, ModalitySpec, MultimodalData, standardize
from ..paths import data_dir as resolve_data_dir
from ..registry import DatasetInfo, register_dataset
from .safe_pickle import load_pickle

MODALITIES = ("text", "audio", "vision")
_SPLITS = {"train": "train", "val": "valid", "test": "test"}
_DEFAULT_FILES = {
    "mosi": "mmsa/MOSI/Processed/unaligned_50.pkl",
    "mosei": "mmsa/MOSEI/Processed/unaligned_50.pkl",
}

INFO = DatasetInfo(
    summary="CMU-MOSI/MOSEI in MMSA's processed pickles: text/audio/vision sequences, sentiment regression "
    "(bring the files)",
    files=(_DEFAULT_FILES["mosi"],),
    homepage="https://github.com/thuiar/MMSA",
    recipe="mmsa/1: BERT text, audio, vision sequences as stored, non-finite -> 0; official train/valid/test; "
    "train-only standardisation",
)


@register_dataset("mmsa", INFO)
def load_mmsa(
    data_dir: str | None = None,
    variant: Literal["mosi", "mosei"] = "mosi",
    file: str | None = None,
    trust_pickle: bool = False,
    use_cache: bool = True,
) -> MultimodalData:
    """Load an MMSA pickle: `variant`'s default `unaligned_50.pkl`, or `file` (relative to the
    data directory, e.g. "mmsa/MOSI/Processed/aligned_50.pkl", or absolute).

    `trust_pickle=True` reads it with the unrestricted unpickler: only for files you trust.
    """

    root = resolve_data_dir(data_dir)
    if file is None:
        if variant not in _DEFAULT_FILES:
            raise MMRobustError(f"mmsa: variant must be one of {sorted(_DEFAULT_FILES)}, not {variant!r}")
        file = _DEFAULT_FILES[variant]
    path = root / file  # an absolute `file` stays as it is
    if not path.is_file():
        raise MMRobustError(
            f"dataset 'mmsa' not found: expected {file} under {root} (set --data-dir or MMROBUST_DATA); "
            f"official page: {INFO.homepage}"
        )
    return cached("mmsa", INFO.recipe, [path], {"file": path.name}, lambda: _build(path, trust_pickle), use_cache)


def _build(path: Path, trust: bool) -> MultimodalData:
    content = load_pickle(path, trust=trust)
    if not isinstance(content, dict) or any(s not in content for s in _SPLITS.values()):
        raise MMRobustError(f"{path}: not an MMSA pickle (expected a dict with 'train', 'valid' and 'test')")
    parts = {name: _read_split(content[key], f"{path}['{key}']") for name, key in _SPLITS.items()}
    first = parts["train"]
    for name, part in parts.items():  # every split must have the same per-sample shapes
        for m in MODALITIES:
            if part[m].shape[1:] != first[m].shape[1:]:
                raise MMRobustError(
                    f"{path}: '{m}' is {part[m].shape[1:]} per sample in '{_SPLITS[name]}' "
                    f"but {first[m].shape[1:]} in 'train'"
                )
    sizes = [len(part["target"]) for part in parts.values()]
    bounds = np.cumsum([0, *sizes])
    splits = {name: torch.arange(bounds[i], bounds[i + 1]) for i, name in enumerate(parts)}
    inputs = {m: torch.from_numpy(np.concatenate([p[m] for p in parts.values()])) for m in MODALITIES}
    target = torch.from_numpy(np.concatenate([p["target"] for p in parts.values()]))
    spec = DataSpec(
        "mmsa",
        tuple(ModalitySpec(m, "seq", tuple(inputs[m].shape[1:])) for m in MODALITIES),
        "regression",
        1,
    )
    present = torch.ones(len(target), len(MODALITIES), dtype=torch.bool)
    return standardize(MultimodalData(spec, inputs, present, target, splits))


def _read_split(split: Any, where: str) -> dict[str, np.ndarray]:
    """One split's feature sequences (N, T, F) float32 and regression labels (N,)."""
    if not isinstance(split, dict):
        raise MMRobustError(f"{where}: expected a dict of arrays, got {type(split).__name__}")
    if "text" not in split and "text_bert" in split:
        raise MMRobustError(
            f"{where}: has only 'text_bert' (BERT token ids), not text features; this reader needs the "
            "'text' BERT features (N, L, 768) that MMSA's processed *_50.pkl files carry"
        )
    missing = [k for k in (*MODALITIES, "regression_labels") if k not in split]
    if missing:
        raise MMRobustError(f"{where}: missing {missing} (has {sorted(split)})")
    out: dict[str, np.ndarray] = {}
    labels = np.asarray(split["regression_labels"], dtype=np.float64).reshape(-1)
    for m in MODALITIES:
        x = split[m]
        if not isinstance(x, np.ndarray) or x.ndim != 3 or len(x) != len(labels):
            shape = getattr(x, "shape", type(x).__name__)
            raise MMRobustError(f"{where}: '{m}' must be ({len(labels)}, T, F), got {shape}")
        out[m] = np.nan_to_num(x.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if not np.isfinite(labels).all():
        raise MMRobustError(f"{where}: 'regression_labels' has NaN/inf")
    out["target"] = labels.astype(np.float32)
    return out
