"""`spsw_har`: smartphone + smartwatch accelerometer and gyroscope, 5 activities (TUG test).

M. Matey-Sanz, S. Casteleyn, C. Granell, "Dataset of inertial measurements of smartphones
and smartwatches for human activity recognition", Data in Brief (2023) 109809,
doi:10.1016/j.dib.2023.109809; https://doi.org/10.5281/zenodo.8398688. 23 subjects, 223
executions of a Timed-Up-and-Go sequence (SEATED, STANDING_UP, WALKING, TURNING,
SITTING_DOWN), each device at ~100 Hz with its own UNIX-ms timestamps and per-sample labels.

Files: the official release as published, `<data dir>/sp_sw_har/DATA/sXX/sXX_YY_{sp,sw}.csv`
plus `subjects_info.csv` and `executions_info.csv` (`mmrobust data download spsw_har` fetches
and checks it; `formats.spsw_har_csv` reads it). Without it, a packed `sp_sw_har/sp_sw_har.npz`
holding the same arrays is read instead; both give identical tensors.

Recipe (`spsw_har/1`):
- Alignment: per execution, both devices are linearly interpolated onto one common grid at
  `rate_hz` (50 Hz) spanning the time both were recording. The phone delivers samples in
  bursts that share a millisecond stamp; those are averaged first so time is strictly
  increasing. Each grid step takes the label of the latest phone sample at or before it (the
  two devices' labels agree on 99.7% of aligned samples). No anti-alias filter: at 50 Hz the
  Nyquist limit (25 Hz) is above the band of these movements.
- Windows: `window_s` = 2 s (100 steps) every 1 s (`overlap` = 0.5) within each execution,
  labelled by the majority label of their steps (ties to the lower class index). Windows
  never cross two executions. With the defaults: 2,186 windows (SEATED 81, STANDING_UP 261,
  WALKING 1,161, TURNING 461, SITTING_DOWN 222; short SEATED spans rarely fill most of a window).
- Modalities (`streams`): "sensor" (default) gives four conv1d (3, 100) streams `sp_acc`,
  `sp_gyro`, `sw_acc`, `sw_gyro`; "device" gives two conv1d (6, 100) `sp`, `sw` (acc xyz then
  gyro xyz). The accelerometers include gravity; phone orientation varies between executions
  and is kept as recorded (a realistic nuisance).
- Split, subject-independent: test subjects 3, 8, 13, 18, 23 (5 of 23, 48 executions, ~22%),
  val subjects 5, 12, 19 (options `test_subjects`, `val_subjects`); train the other 15. No
  subject is in two splits. Standardised per channel with train statistics only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ..errors import MMRobustError
from .cache import cached
from .dataset import DataSpec, ModalitySpec, MultimodalData, standardize
from .formats import spsw_har_csv
from .paths import data_dir as resolve_data_dir
from .registry import DatasetInfo, Download, Release, register_dataset
from .sequences import check_ragged, majority, ramp, read_arrays, subject_splits, window_starts

_FILE = "sp_sw_har/sp_sw_har.npz"  # the packed layout (all 446 CSVs in one npz), read when no release is there
_DATA = "sp_sw_har/DATA"  # the official release's DATA folder
_COMMIT = "1408d85a512a53861de7bc4729dee283fff2ea9d"  # of the dataset's repository, archived on Zenodo
_DEVICES = ("sp", "sw")
_STREAMS = {  # modality -> channels of the aligned (sp acc, sp gyro, sw acc, sw gyro) 12-channel signal
    "sensor": {"sp_acc": slice(0, 3), "sp_gyro": slice(3, 6), "sw_acc": slice(6, 9), "sw_gyro": slice(9, 12)},
    "device": {"sp": slice(0, 6), "sw": slice(6, 12)},
}

INFO = DatasetInfo(
    summary="Smartphone + smartwatch accelerometer/gyroscope, 5 TUG activities, 23 subjects (Matey-Sanz 2023)",
    files=(_FILE,),
    homepage="https://doi.org/10.5281/zenodo.8398688",
    release=Release(
        folder="sp_sw_har",
        patterns=("DATA/*.csv", "DATA/s*/s*_*_s[pw].csv"),
        layout="sp_sw_har/DATA/sXX/sXX_YY_{sp,sw}.csv",
        count=448,
        tree_sha256="c05604880beee328fa54a086a822c33b962b025f4f5d82ff3adb9c93819b68ab",
    ),
    downloads=(  # the commit of the repository whose releases the Zenodo record archives (CC BY 4.0)
        Download(
            f"https://github.com/GeoTecINIT/sp-sw-har-dataset/archive/{_COMMIT}.zip",
            _DATA,
            unpack="zip",
            find="subjects_info.csv",
        ),
    ),
    recipe=(
        "spsw_har/1: both devices interpolated per execution onto a common 50 Hz grid over their overlap; "
        "2 s windows, 50% overlap, majority phone label; test subjects 3,8,13,18,23, val 5,12,19; "
        "train-only standardisation"
    ),
)


@register_dataset("spsw_har", INFO)
def load_spsw_har(
    data_dir: str | None = None,
    streams: Literal["sensor", "device"] = "sensor",
    rate_hz: float = 50.0,
    window_s: float = 2.0,
    overlap: float = 0.5,
    test_subjects: Sequence[int] = (3, 8, 13, 18, 23),
    val_subjects: Sequence[int] = (5, 12, 19),
    use_cache: bool = True,
) -> MultimodalData:
    """Load the smartphone/smartwatch HAR windows (see the module docstring for the recipe).

    Example: `load_dataset("spsw_har", streams="device")` for two 6-channel modalities.
    """

    root = resolve_data_dir(data_dir)
    INFO.require("spsw_har", root)
    if streams not in _STREAMS:
        raise MMRobustError(f"spsw_har: streams must be 'sensor' or 'device', not {streams!r}")
    window = round(window_s * rate_hz)
    if rate_hz <= 0 or window < 2 or not 0 <= overlap < 1:
        raise MMRobustError("spsw_har: need rate_hz > 0, at least 2 steps per window and 0 <= overlap < 1")
    options = {
        "streams": streams,
        "rate_hz": rate_hz,
        "window": window,
        "overlap": overlap,
        "test_subjects": tuple(test_subjects),
        "val_subjects": tuple(val_subjects),
    }
    return cached(
        "spsw_har",
        INFO.recipe,
        INFO.raw_files(root),
        options,
        lambda: _build(root, streams, rate_hz, window, overlap, test_subjects, val_subjects),
        use_cache,
    )


def _build(
    root: Path,
    streams: str,
    rate_hz: float,
    window: int,
    overlap: float,
    test_subjects: Sequence[int],
    val_subjects: Sequence[int],
) -> MultimodalData:
    path, raw = _read(root)
    class_names = tuple(str(n) for n in raw["label_names"])
    values, labels, lengths = _align(raw, 1000.0 / rate_hz)  # (G, 12), (G,), (S,) grid steps per execution
    if labels.max() >= len(class_names):
        raise MMRobustError(f"{path}: labels outside 0..{len(class_names) - 1}")
    start, seq = window_starts(lengths, window, max(1, round(window * (1 - overlap))))
    if not len(seq):
        raise MMRobustError(f"{path}: no execution is longer than one {window}-step window")
    rows = (np.cumsum(lengths) - lengths)[seq, None] + start[:, None] + np.arange(window)  # (W, window)
    x = torch.from_numpy(values[rows]).transpose(1, 2)  # (W, window, 12) -> (W, 12, window)
    target = torch.from_numpy(majority(labels[rows], len(class_names)))
    splits = subject_splits(raw["subject"][seq], test_subjects, val_subjects, "spsw_har")
    channels = _STREAMS[streams]
    specs = tuple(ModalitySpec(m, "conv1d", (c.stop - c.start, window)) for m, c in channels.items())
    inputs = {m: x[:, c].contiguous() for m, c in channels.items()}
    spec = DataSpec("spsw_har", specs, "classification", len(class_names), class_names)
    present = torch.ones(len(target), len(specs), dtype=torch.bool)
    return standardize(MultimodalData(spec, inputs, present, target, splits))


def _read(root: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """Where the recordings are and their arrays: from the official CSV tree when it is under
    `root`, else from the packed file (same arrays, see PROVENANCE.md), checked alike."""
    if INFO.official(root):
        path, raw = root / _DATA, spsw_har_csv.read_release(root / _DATA)
    else:
        keys = ["subject", "label_names"]
        keys += [f"{d}_{k}" for d in _DEVICES for k in ("data", "timestamp_ms", "label", "offsets", "lengths")]
        path = root / _FILE
        raw = read_arrays(path, keys)
    n_exec = len(raw["subject"])
    for d in _DEVICES:
        data, time, label = raw[f"{d}_data"], raw[f"{d}_timestamp_ms"], raw[f"{d}_label"]
        if data.ndim != 2 or data.shape[1] != 6 or time.shape != data.shape[:1] or label.shape != data.shape[:1]:
            raise MMRobustError(
                f"{path}: {d}_data must be (N, 6) with N timestamps and labels; got "
                f"{data.shape}, {time.shape}, {label.shape}"
            )
        if raw[f"{d}_offsets"].shape != (n_exec,):
            raise MMRobustError(f"{path}: {d}_offsets has {raw[f'{d}_offsets'].shape} entries for {n_exec} executions")
        check_ragged(raw[f"{d}_offsets"], raw[f"{d}_lengths"], len(data), 2, f"{path} ({d})")
        backwards = np.diff(time) < 0
        backwards[raw[f"{d}_offsets"][1:] - 1] = False  # a new execution may start earlier
        if backwards.any():
            raise MMRobustError(f"{path}: {d}_timestamp_ms goes back in time at row {np.flatnonzero(backwards)[0] + 1}")
    return path, raw


def _align(raw: dict[str, np.ndarray], step_ms: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both devices on a common grid per execution: values (G, 12), phone labels (G,), and
    the number of grid steps of each execution (S,); executions follow each other in order.

    All executions are handled in one pass by shifting each onto its own stretch of a single
    time axis (execution i at i * span), so one `np.interp` per channel does the work.
    """
    ends = {d: raw[f"{d}_offsets"] + raw[f"{d}_lengths"] - 1 for d in _DEVICES}
    first = np.maximum(*(raw[f"{d}_timestamp_ms"][raw[f"{d}_offsets"]] for d in _DEVICES))  # (S,)
    last = np.minimum(*(raw[f"{d}_timestamp_ms"][ends[d]] for d in _DEVICES))
    steps = np.where(last >= first, np.floor((last - first) / step_ms).astype(np.int64) + 1, 0)  # (S,)
    local = {  # ms since the execution's common start
        d: (raw[f"{d}_timestamp_ms"] - np.repeat(first, raw[f"{d}_lengths"])).astype(np.float64) for d in _DEVICES
    }
    span = 2 * max(np.abs(t).max() for t in local.values()) + step_ms  # no two executions' stretches overlap
    origin = np.arange(len(steps)) * span  # (S,) where each execution's stretch starts
    grid = np.repeat(origin, steps) + ramp(steps) * step_ms  # (G,)
    shifted = {d: local[d] + np.repeat(origin, raw[f"{d}_lengths"]) for d in _DEVICES}
    values = np.concatenate([_interpolate(shifted[d], raw[f"{d}_data"], grid) for d in _DEVICES], axis=1)
    latest = np.searchsorted(shifted["sp"], grid, side="right") - 1  # phone sample at or before each step
    return values, raw["sp_label"][latest].astype(np.int64), steps


def _interpolate(time: np.ndarray, values: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Linear interpolation of (N, C) `values` at sorted `time` onto `at`: (len(at), C) float32.
    Samples sharing a timestamp are averaged first, so the abscissae strictly increase."""
    starts = np.flatnonzero(np.r_[True, time[1:] != time[:-1]])
    means = np.add.reduceat(values.astype(np.float64), starts, axis=0) / np.diff(np.r_[starts, len(time)])[:, None]
    return np.stack([np.interp(at, time[starts], means[:, c]) for c in range(values.shape[1])], axis=1).astype(
        np.float32
    )
