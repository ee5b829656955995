"""The smartphone + smartwatch HAR release as published: `DATA/sXX/sXX_YY_{sp,sw}.csv`.

Each execution YY of subject XX has one CSV per device with the columns `x_acc, y_acc, z_acc,
x_gyro, y_gyro, z_gyro, timestamp, label` (UNIX ms, activity name per sample). `read_release`
returns the recordings as the arrays of the packed `sp_sw_har.npz` (the same keys, dtypes and
execution order, sorted by execution id), so the loader treats both layouts alike: the values
are float32 printed in full, so parsing them back to float32 is exact.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from ...errors import MMRobustError

DEVICES = ("sp", "sw")
COLUMNS = ("x_acc", "y_acc", "z_acc", "x_gyro", "y_gyro", "z_gyro", "timestamp", "label")
LABELS = ("SEATED", "STANDING_UP", "WALKING", "TURNING", "SITTING_DOWN")
_NAME = re.compile(r"(s(\d+)_\d+)_(sp|sw)\.csv")


def execution_files(data: Path) -> dict[str, dict[str, Path]]:
    """{execution id: {device: csv}} of every execution under `data` (the release's DATA folder),
    sorted by id; an execution recorded by one device only is an error, not silently dropped."""
    found: dict[str, dict[str, Path]] = {}
    for path in sorted(data.glob("s*/s*_*_s[pw].csv")):
        match = _NAME.fullmatch(path.name)
        if match and path.parent.name == f"s{match[2]}":
            found.setdefault(match[1], {})[match[3]] = path
    if not found:
        raise MMRobustError(
            f"{data}: no recordings found; expected the official layout DATA/sXX/sXX_YY_sp.csv and sXX_YY_sw.csv"
        )
    for execution, devices in found.items():
        if len(devices) != len(DEVICES):
            (have,) = devices.values()
            other = "sw" if "sp" in devices else "sp"
            raise MMRobustError(f"{have}: the {other} file of execution {execution} is missing; re-extract the release")
    return found


def read_release(data: Path) -> dict[str, np.ndarray]:
    """Every execution under `data` as the packed file's arrays (see the module docstring)."""
    executions = execution_files(data)
    parts = {d: [read_recording(files[d]) for files in executions.values()] for d in DEVICES}
    raw: dict[str, np.ndarray] = {
        "execution_id": np.array(list(executions)),
        "subject": np.array([int(e[1:].split("_")[0]) for e in executions], dtype=np.int16),
        "label_names": np.array(LABELS),
    }
    for d in DEVICES:
        lengths = np.array([len(p[0]) for p in parts[d]], dtype=np.int64)
        raw[f"{d}_offsets"], raw[f"{d}_lengths"] = np.cumsum(lengths) - lengths, lengths
        for k, key in enumerate(("data", "timestamp_ms", "label")):
            raw[f"{d}_{key}"] = np.concatenate([p[k] for p in parts[d]])
    return raw


def read_recording(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One device's CSV: values (N, 6) float32, timestamps (N,) int64 ms, labels (N,) uint8."""
    try:
        frame = pd.read_csv(path, float_precision="round_trip")
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as e:
        raise MMRobustError(f"cannot read {path}: {type(e).__name__}: {str(e).strip()}") from None
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise MMRobustError(
            f"{path}: missing column(s) {', '.join(missing)}; the release's CSVs have {','.join(COLUMNS)}"
        )
    values = frame[list(COLUMNS[:6])]
    if not all(pd.api.types.is_numeric_dtype(t) for t in values.dtypes) or values.isna().any().any():
        raise MMRobustError(f"{path}: non-numeric or empty sensor values; re-extract the release")
    if not pd.api.types.is_integer_dtype(frame["timestamp"]):
        raise MMRobustError(f"{path}: timestamp must be integer UNIX milliseconds")
    label = frame["label"].map({name: i for i, name in enumerate(LABELS)})
    if label.isna().any():
        bad = frame["label"][label.isna()].iloc[0]
        raise MMRobustError(f"{path}: unknown label {bad!r} (expected one of {', '.join(LABELS)})")
    return (
        values.to_numpy(np.float64).astype(np.float32),
        frame["timestamp"].to_numpy(np.int64),
        label.to_numpy(np.uint8),
    )
