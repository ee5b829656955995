"""`pamap2`: PAMAP2 Physical Activity Monitoring, read from the release's own `.dat` files.

A. Reiss, D. Stricker, "Introducing a New Benchmarked Dataset for Activity Monitoring",
ISWC 2012; https://archive.ics.uci.edu/dataset/231/pamap2+physical+activity+monitoring.
Users bring `PAMAP2_Dataset/Protocol/subject101.dat` ... `subject109.dat` and put them
under `<data_dir>/pamap2/Protocol/`. Each row (100 Hz) holds 54 space-separated columns:
timestamp, activityID, heart rate (~9 Hz, NaN in between), then three IMUs (hand, chest,
ankle), 17 columns each: temperature, acc ±16 g xyz, acc ±6 g xyz, gyro xyz, magnetometer
xyz, orientation (4, documented as invalid).

Recipe (`pamap2/1`), following Hammerla et al., "Deep, Convolutional, and Recurrent Models
for Human Activity Recognition using Wearables" (IJCAI 2016), the usual deep-HAR protocol:
- Modalities `hand`, `chest`, `ankle`: conv1d (9, W) = acc ±16 g, gyro, magnetometer (the
  ±6 g accelerometer saturates, temperature barely varies, orientation is invalid);
  `heart_rate`: conv1d (1, W).
- Missing samples (dropped packets; heart rate between its beats) are linearly interpolated
  per channel. A window whose IMU lost more than half its raw samples, or whose heart rate
  has no reading at all, has that modality marked absent (natural missingness).
- Activity 0 (transient) is dropped; the 12 protocol activities are kept.
- Downsampled 100 -> 33.3 Hz (bin means of 3, as Hammerla et al.); windows of 5.12 s
  (171 samples) with 50% overlap (`overlap`), each inside one activity bout.
- Split by subject: test = subject 106, val = subject 105 (Hammerla et al.'s choice), train =
  the other seven. Per-channel standardisation with train statistics only.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ...errors import MMRobustError
from ..cache import cached
from ..dataset import DataSpec, ModalitySpec, MultimodalData, standardize
from ..paths import data_dir as resolve_data_dir
from ..registry import DatasetInfo, register_dataset
from ..sequences import subject_splits
from ._windows import cut, fill_gaps, label_windows, resample, resample_labels

SUBJECTS = tuple(range(101, 110))
ACTIVITIES = {
    1: "lying",
    2: "sitting",
    3: "standing",
    4: "walking",
    5: "running",
    6: "cycling",
    7: "nordic_walking",
    12: "ascending_stairs",
    13: "descending_stairs",
    16: "vacuum_cleaning",
    17: "ironing",
    24: "rope_jumping",
}
_IMUS = {"hand": 3, "chest": 20, "ankle": 37}  # first column of each IMU's 17
_IMU_COLUMNS = (1, 2, 3, 7, 8, 9, 10, 11, 12)  # acc16g xyz, gyro xyz, mag xyz (offsets in the 17)
_USED = {  # columns read from the 54, by what they become
    "activity": (1,),
    **{m: tuple(base + c for c in _IMU_COLUMNS) for m, base in _IMUS.items()},
    "heart_rate": (2,),
}
_N_COLUMNS, _FS = 54, 100.0

INFO = DatasetInfo(
    summary="PAMAP2: hand/chest/ankle IMUs + heart rate, 12 protocol activities, 9 subjects (bring the files)",
    files=tuple(f"pamap2/Protocol/subject{s}.dat" for s in SUBJECTS),
    homepage="https://archive.ics.uci.edu/dataset/231/pamap2+physical+activity+monitoring",
    recipe=(
        "pamap2/1: 12 protocol activities, NaNs interpolated, 33.3 Hz, 5.12 s windows 50% overlap; "
        "IMUs acc16+gyro+mag 9ch, heart rate 1ch; test subject 106, val 105; train-only standardisation"
    ),
)


@register_dataset("pamap2", INFO)
def load_pamap2(
    data_dir: str | None = None,
    window_seconds: float = 5.12,
    overlap: float = 0.5,
    downsample: int = 3,
    test_subjects: Sequence[int] = (106,),
    val_subjects: Sequence[int] = (105,),
    use_cache: bool = True,
) -> MultimodalData:
    """Load PAMAP2 from its Protocol `.dat` files (see the module docstring for the recipe).

    Example: `load_dataset("pamap2", data_dir="~/data", overlap=0.8)`.
    """

    root = resolve_data_dir(data_dir)
    INFO.require("pamap2", root)
    if not 0 <= overlap < 1 or downsample < 1:
        raise MMRobustError(f"pamap2: need 0 <= overlap < 1 and downsample >= 1 (got {overlap}, {downsample})")
    fs = _FS / downsample
    window = round(window_seconds * fs)
    step = max(1, round(window * (1 - overlap)))
    if window < 2:
        raise MMRobustError(f"pamap2: window_seconds={window_seconds} gives fewer than 2 samples")
    options = {
        "window": window,
        "step": step,
        "downsample": downsample,
        "test_subjects": tuple(test_subjects),
        "val_subjects": tuple(val_subjects),
    }
    files = [root / f for f in INFO.files]
    return cached(
        "pamap2",
        INFO.recipe,
        files,
        options,
        lambda: _build(files, downsample, window, step, test_subjects, val_subjects),
        use_cache,
    )


def _build(
    files: list[Path],
    downsample: int,
    window: int,
    step: int,
    test_subjects: Sequence[int],
    val_subjects: Sequence[int],
) -> MultimodalData:
    class_ids = np.array(sorted(ACTIVITIES))
    fs_out = _FS / downsample
    names = (*_IMUS, "heart_rate")
    parts: dict[str, list[np.ndarray]] = {m: [] for m in (*names, "y", "subject", "present")}
    for path, subject in zip(files, SUBJECTS, strict=True):
        signals = read_dat(path)
        activity = signals.pop("activity")
        # class index of the protocol activities; -1 for 0 (transient) and anything else
        labels = np.where(np.isin(activity, class_ids), np.searchsorted(class_ids, activity), -1)
        y = resample_labels(labels, _FS, fs_out, len(activity) // downsample)
        starts = label_windows(y, window, step)
        if not len(starts):
            continue  # a subject with no complete window of any protocol activity
        seen = []
        for m in names:
            x = signals[m]
            observed = resample((~np.isnan(x).any(axis=1, keepdims=True)).astype(np.float32), _FS, fs_out)
            coverage = cut(observed, starts, window).mean(axis=(1, 2))  # (N,) share of raw samples seen
            ok = coverage > 0 if m == "heart_rate" else coverage >= 0.5
            filled = fill_gaps(x)
            if np.isnan(filled).any():  # a channel that never reported: absent throughout
                ok[:] = False
                filled = np.nan_to_num(filled)
            windows = cut(resample(filled, _FS, fs_out), starts, window)  # (N, C, W)
            windows[~ok] = 0.0  # placeholders of absent samples are never read
            parts[m].append(windows)
            seen.append(ok)
        parts["present"].append(np.stack(seen, axis=1))
        parts["y"].append(y[starts])
        parts["subject"].append(np.full(len(starts), subject))
    if not parts["y"]:
        raise MMRobustError("pamap2: no complete window of a protocol activity in any subject file")
    inputs = {m: torch.from_numpy(np.concatenate(parts[m])) for m in names}
    subjects = np.concatenate(parts["subject"])
    spec = DataSpec(
        "pamap2",
        tuple(ModalitySpec(m, "conv1d", tuple(inputs[m].shape[1:])) for m in names),
        "classification",
        len(ACTIVITIES),
        tuple(ACTIVITIES[i] for i in class_ids),
    )
    splits = subject_splits(subjects, test_subjects, val_subjects, "pamap2")
    target = torch.from_numpy(np.concatenate(parts["y"]))
    present = torch.from_numpy(np.concatenate(parts["present"]))
    return standardize(MultimodalData(spec, inputs, present, target, splits))


def read_dat(path: Path) -> dict[str, np.ndarray]:
    """One subject's Protocol file: 'activity' (T,) and each modality's raw channels (T, C), NaNs
    kept. Only the recipe's 30 of the 54 columns are converted (the parse dominates build time)."""
    raw = path.read_bytes()
    if not raw.strip():
        raise MMRobustError(f"{path}: empty file")
    if not raw.endswith(b"\n"):
        raise MMRobustError(f"{path}: truncated (the last line is incomplete)")
    first = raw[: raw.find(b"\n")].strip()
    if len(first.split()) != _N_COLUMNS:
        raise MMRobustError(f"{path}: {len(first.split())} columns, a PAMAP2 .dat row has {_N_COLUMNS}")
    single_spaced = first.count(b" ") == _N_COLUMNS - 1  # as released; the regex parser is slower
    columns = sorted(c for cs in _USED.values() for c in cs)
    try:
        table = pd.read_csv(
            io.BytesIO(raw),
            sep=" " if single_spaced else r"\s+",
            header=None,
            usecols=columns,
            dtype=np.float64,
            engine="c",
        )
    except (ValueError, pd.errors.ParserError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise MMRobustError(f"{path}: not a PAMAP2 .dat file ({reason})") from None
    x = table.to_numpy()  # (T, 30), in `columns` order
    where = {c: i for i, c in enumerate(columns)}
    out = {name: x[:, [where[c] for c in cs]] for name, cs in _USED.items()}
    if np.isnan(out["activity"]).any():
        raise MMRobustError(f"{path}: rows without an activity ID (short rows?)")
    out["activity"] = out["activity"][:, 0].astype(np.int64)
    return out
