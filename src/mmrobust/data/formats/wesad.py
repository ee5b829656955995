"""`wesad`: WESAD wearable stress and affect detection, read from the release's `S*/S*.pkl`.

P. Schmidt, A. Reiss, R. Duerichen, C. Marberger, K. Van Laerhoven, "Introducing WESAD, a
Multimodal Dataset for Wearable Stress and Affect Detection", ICMI 2018;
https://ubi29.informatik.uni-siegen.de/usi/data_wesad.html. Users bring `WESAD/S2/S2.pkl`
... (15 subjects, S2-S17 without S12) and put them under `<data_dir>/wesad/`. Each pickle
(written by Python 2) is a dict: 'signal' -> {'chest': {'ACC' (N, 3), 'ECG', 'EMG', 'EDA',
'Temp', 'Resp' (N, 1)} all at 700 Hz, 'wrist': {'ACC' (n, 3) 32 Hz, 'BVP' 64 Hz, 'EDA' and
'TEMP' 4 Hz}}, 'label' (N,) at 700 Hz, 'subject'. The pickles are read with the restricted
unpickler (`safe_pickle`); `trust_pickle=True` lifts that at the user's own risk.

Recipe (`wesad/1`), kept CPU-friendly:
- Modalities are the two devices, as in the paper's chest / wrist / both comparison:
  `chest` conv1d (8, W) = ACC xyz, ECG, EMG, EDA, Temp, Resp (RespiBAN) and `wrist` conv1d
  (6, W) = ACC xyz, BVP, EDA, TEMP (Empatica E4).
- Every signal is brought to `sample_rate` Hz (default 32, the E4 accelerometer's rate):
  bin means when downsampling, linear interpolation when upsampling (EDA/TEMP at 4 Hz).
- Labels 1-4 (baseline, stress, amusement, meditation) are kept; 0 and 5-7 are dropped.
- Windows of `window_seconds` (10 s) every `step_seconds` (5 s), each inside one condition.
- Split by subject (the paper uses leave-one-subject-out; one fixed hold-out is given
  here): test = S15, S16, S17 (`test_subjects`); val = a seeded `val_fraction` of the other
  subjects. Per-channel standardisation with train statistics only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import MMRobustError
from ..cache import cached
from ..dataset import MultimodalData, check_split_options
from ..paths import data_dir as resolve_data_dir
from ..registry import DatasetInfo, register_dataset
from ._windows import cut, label_windows, resample, resample_labels, windowed_dataset
from .safe_pickle import load_pickle

SUBJECTS = (2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17)
CLASSES = ("baseline", "stress", "amusement", "meditation")  # labels 1-4
_LABEL_RATE = 700.0
# device -> (signal key, native rate Hz, channels), in channel order
_SIGNALS = {
    "chest": (("ACC", 700.0, 3), ("ECG", 700.0, 1), ("EMG", 700.0, 1), ("EDA", 700.0, 1), ("Temp", 700.0, 1),
              ("Resp", 700.0, 1)),
    "wrist": (("ACC", 32.0, 3), ("BVP", 64.0, 1), ("EDA", 4.0, 1), ("TEMP", 4.0, 1)),
}  # fmt: skip

INFO = DatasetInfo(
    summary="WESAD: chest (RespiBAN) + wrist (Empatica E4) physiology, 4 affective states, 15 subjects "
    "(bring the files)",
    files=tuple(f"wesad/S{s}/S{s}.pkl" for s in SUBJECTS),
    homepage="https://ubi29.informatik.uni-siegen.de/usi/data_wesad.html",
    recipe=(
        "wesad/1: chest 8ch + wrist 6ch resampled to a common rate (32 Hz), labels 1-4, 10 s windows "
        "every 5 s; test S15-S17, val by subject; train-only standardisation"
    ),
)


@register_dataset("wesad", INFO)
def load_wesad(
    data_dir: str | None = None,
    sample_rate: float = 32.0,
    window_seconds: float = 10.0,
    step_seconds: float = 5.0,
    test_subjects: Sequence[int] = (15, 16, 17),
    val_fraction: float = 0.15,
    split_seed: int = 0,
    trust_pickle: bool = False,
    use_cache: bool = True,
) -> MultimodalData:
    """Load WESAD from its pickles (see the module docstring for the recipe and the split).

    `trust_pickle=True` reads the pickles with the unrestricted unpickler: only for files
    you trust, since unpickling can run arbitrary code.
    """

    root = resolve_data_dir(data_dir)
    INFO.require("wesad", root)
    window, step = round(window_seconds * sample_rate), round(step_seconds * sample_rate)
    if sample_rate <= 0 or window < 2 or step < 1:
        raise MMRobustError(
            f"wesad: sample_rate={sample_rate}, window_seconds={window_seconds}, step_seconds={step_seconds} "
            "must give at least 2 samples per window and 1 per step"
        )
    check_split_options(split_seed, val_fraction)
    options = {
        "sample_rate": sample_rate,
        "window": window,
        "step": step,
        "test_subjects": tuple(test_subjects),
        "val_fraction": val_fraction,
        "split_seed": split_seed,
    }  # trust_pickle changes what may be read, not what is built: not part of the key
    files = [root / f for f in INFO.files]
    return cached(
        "wesad",
        INFO.recipe,
        files,
        options,
        lambda: _build(files, sample_rate, window, step, test_subjects, val_fraction, split_seed, trust_pickle),
        use_cache,
    )


def _build(
    files: list[Path],
    fs: float,
    window: int,
    step: int,
    test_subjects: Sequence[int],
    val_fraction: float,
    split_seed: int,
    trust: bool,
) -> MultimodalData:
    parts: dict[str, list[np.ndarray]] = {"chest": [], "wrist": [], "y": [], "subject": []}
    for path, subject in zip(files, SUBJECTS, strict=True):
        record = read_pkl(path, trust)
        labels = record["label"]
        duration = min(len(labels) / _LABEL_RATE, *(len(x) / r for x, r in _each_signal(record)))
        n_out = int(np.floor(duration * fs))
        raw = np.where((labels >= 1) & (labels <= len(CLASSES)), labels - 1, -1)  # keep 1-4 as 0-3
        y = resample_labels(raw, _LABEL_RATE, fs, n_out)
        starts = label_windows(y, window, step)
        for device, signals in _SIGNALS.items():
            channels = [
                resample(record["signal"][device][key].reshape(-1, width), rate, fs)[:n_out]
                for key, rate, width in signals
            ]
            parts[device].append(cut(np.concatenate(channels, axis=1), starts, window))  # (N, C, W)
        parts["y"].append(y[starts])
        parts["subject"].append(np.full(len(starts), subject))
    return windowed_dataset("wesad", parts, list(_SIGNALS), CLASSES, test_subjects, val_fraction, split_seed)


def _each_signal(record: dict[str, Any]) -> list[tuple[np.ndarray, float]]:
    return [(record["signal"][d][key], rate) for d, sigs in _SIGNALS.items() for key, rate, _ in sigs]


def read_pkl(path: Path, trust: bool = False) -> dict[str, Any]:
    """One subject's pickle, checked against the WESAD layout (one-line errors)."""
    record = load_pickle(path, trust=trust)
    if not isinstance(record, dict) or "signal" not in record or "label" not in record:
        raise MMRobustError(f"{path}: not a WESAD record (expected a dict with 'signal' and 'label')")
    labels = np.asarray(record["label"])
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.number):
        raise MMRobustError(f"{path}: 'label' must be a 1-D numeric array, got {labels.dtype}{labels.shape}")
    record["label"] = labels.astype(np.int64)
    for device, signals in _SIGNALS.items():
        group = record["signal"].get(device) if isinstance(record["signal"], dict) else None
        if not isinstance(group, dict):
            raise MMRobustError(f"{path}: 'signal' has no '{device}' dict")
        for key, _, width in signals:
            x = group.get(key)
            if not isinstance(x, np.ndarray) or x.ndim not in (1, 2) or x.size == 0 or x.size != len(x) * width:
                shape = getattr(x, "shape", None)
                raise MMRobustError(f"{path}: signal/{device}/{key} should be (samples, {width}), got {shape}")
            if device == "chest" and len(x) != len(labels):
                raise MMRobustError(f"{path}: signal/chest/{key} has {len(x)} samples, 'label' has {len(labels)}")
            if not np.isfinite(x).all():
                raise MMRobustError(f"{path}: signal/{device}/{key} has NaN/inf values")
            group[key] = x.astype(np.float64, copy=False)
    return record
