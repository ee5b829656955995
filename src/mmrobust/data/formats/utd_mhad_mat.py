"""UTD-MHAD as released: `Inertial/`, `Skeleton/` and `Depth/` folders of MATLAB `.mat` files.

Trial `a{A}_s{S}_t{T}` (action, subject, trial) has `Inertial/a{A}_s{S}_t{T}_inertial.mat`
(variable `d_iner`, T x 6), `Skeleton/..._skeleton.mat` (`d_skel`, 20 x 3 x F) and
`Depth/..._depth.mat` (`d_depth`, 240 x 320 x F uint16); 861 trials, three never recorded.
The readers here return exactly the arrays of the packed npz files (see the data's
PROVENANCE.md): per modality `data` concatenated over the trials in (action, subject, trial)
order, plus `offsets`, `lengths`, `action`, `subject`, `trial`; skeletons as (F, 20, 3)
float32 and depth as (F, 120, 160), every 2nd row and column, streamed one trial at a time so
the 9 GB of decompressed full-resolution video never sit in memory.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ...errors import MMRobustError

FOLDERS = {"inertial": "Inertial", "skeleton": "Skeleton", "depth": "Depth"}
JOINT_ORDER = "Skeleton/Skeleton_joint_order.txt"
HIP_CENTER, SHOULDER_CENTER = 3, 1  # 0-based: "4. hip_center;", "2. shoulder_center;" in the joint-order text
MISSING_TRIALS = ((8, 1, 4), (23, 6, 4), (27, 8, 4))  # absent from the release
ACTIONS = (
    "swipe_left", "swipe_right", "wave", "clap", "throw", "arm_cross", "basketball_shoot", "draw_x",
    "draw_circle_CW", "draw_circle_CCW", "draw_triangle", "bowling", "boxing", "baseball_swing", "tennis_swing",
    "arm_curl", "tennis_serve", "push", "knock", "catch", "pickup_throw", "jog", "walk", "sit2stand", "stand2sit",
    "lunge", "squat",
)  # fmt: skip
_VARIABLES = {"inertial": "d_iner", "skeleton": "d_skel", "depth": "d_depth"}
_FRAME = {"inertial": (6,), "skeleton": (20, 3), "depth": (240, 320)}  # per-step shape as stored
_READ_ERRORS = (OSError, ValueError, TypeError, KeyError, EOFError, IndexError, zlib.error, struct.error)


def release_files() -> list[str]:
    """Every file of the full release, relative to its top folder (2,583 .mat files + the joint order)."""
    missing = set(MISSING_TRIALS)
    trials = [(a, s, t) for a in range(1, 28) for s in range(1, 9) for t in range(1, 5) if (a, s, t) not in missing]
    return [f"{FOLDERS[m]}/a{a}_s{s}_t{t}_{m}.mat" for m in FOLDERS for a, s, t in trials] + [JOINT_ORDER]


def trial_files(folder: Path, modality: str) -> list[tuple[tuple[int, int, int], Path]]:
    """((action, subject, trial), file) of every trial in a modality folder, in that order."""
    if not folder.is_dir():
        raise MMRobustError(
            f"{folder} not found: the official UTD-MHAD layout has {', '.join(FOLDERS.values())} folders "
            "(run `mmrobust data download utd_mhad`, or load only the modalities you have with `modalities=`)"
        )
    pattern = re.compile(rf"a(\d+)_s(\d+)_t(\d+)_{modality}\.mat")
    found = []
    for path in folder.iterdir():
        match = pattern.fullmatch(path.name)
        if match:
            found.append(((int(match[1]), int(match[2]), int(match[3])), path))
    if not found:
        raise MMRobustError(f"{folder}: no a*_s*_t*_{modality}.mat files; re-extract the release there")
    return sorted(found)


def read_index(folder: Path, modality: str) -> dict[str, np.ndarray]:
    """`offsets`, `lengths` (int64) and `action`, `subject`, `trial` (int16) of a modality folder,
    as in the packed file; the lengths are read from the .mat headers, not the data."""
    trials = trial_files(folder, modality)
    lengths = np.array([_steps(path, modality) for _, path in trials], dtype=np.int64)
    ids = np.array([key for key, _ in trials], dtype=np.int16).reshape(-1, 3)
    return {
        "offsets": np.cumsum(lengths) - lengths,
        "lengths": lengths,
        "action": ids[:, 0],
        "subject": ids[:, 1],
        "trial": ids[:, 2],
    }


def read_data(folder: Path, modality: str) -> np.ndarray:
    """`data` of the inertial (T, 6) float64 or skeleton (F, 20, 3) float32 trials, concatenated."""
    if modality == "depth":
        raise MMRobustError("utd_mhad: read depth with open_depth (it streams)")
    return np.concatenate([read_trial(path, modality) for _, path in trial_files(folder, modality)])


@contextmanager
def open_depth(folder: Path) -> Iterator[tuple[tuple[int, ...], Iterator[tuple[int, np.ndarray]]]]:
    """The shape (F, 120, 160) of all depth frames, and an iterator over (first row, frames)
    blocks, one trial at a time: the same interface as the packed file's chunked reader."""
    paths = [path for _, path in trial_files(folder, "depth")]
    lengths = [_steps(path, "depth") for path in paths]

    def blocks() -> Iterator[tuple[int, np.ndarray]]:
        start = 0
        for path, length in zip(paths, lengths, strict=True):
            frames = read_trial(path, "depth")
            if len(frames) != length:
                raise MMRobustError(f"{path}: {len(frames)} frames, its header says {length}; re-extract the file")
            yield start, frames
            start += length

    yield (sum(lengths), 120, 160), blocks()


def read_trial(path: Path, modality: str) -> np.ndarray:
    """One trial in the packed file's row layout: inertial (T, 6) float64, skeleton (F, 20, 3)
    float32, depth (F, 120, 160) uint16 (every 2nd row and column)."""
    import scipy.io  # imported when a release is read, not by every `import mmrobust`

    name = _VARIABLES[modality]
    try:
        value = scipy.io.loadmat(path, variable_names=[name])[name]
    except MMRobustError:
        raise
    except (*_READ_ERRORS, scipy.io.matlab.MatReadError, NotImplementedError) as e:
        raise MMRobustError(f"cannot read {path}: {_reason(e)}; re-download or re-extract it") from None
    frame = _FRAME[modality]
    if modality != "inertial" and value.ndim == len(frame):  # MATLAB drops a trailing 1 (one frame)
        value = value[..., None]
    if (value.shape[1:] if modality == "inertial" else value.shape[:-1]) != frame or value.ndim != len(frame) + 1:
        raise MMRobustError(f"{path}: {name} has shape {value.shape}, expected {_expected(modality)}")
    if modality == "inertial":
        return np.asarray(value, dtype=np.float64)
    steps_first = np.moveaxis(value, -1, 0)  # (F, ...) from (..., F)
    if modality == "skeleton":
        return np.ascontiguousarray(steps_first, dtype=np.float32)
    if value.dtype != np.uint16:
        raise MMRobustError(f"{path}: d_depth is {value.dtype}, expected uint16 depth readings")
    return np.ascontiguousarray(steps_first[:, ::2, ::2])


def _steps(path: Path, modality: str) -> int:
    """Time steps of a trial from the .mat header alone (decompressing a few bytes, not the data)."""
    import scipy.io

    try:
        shape = _header_shape(path)
    except (*_READ_ERRORS, scipy.io.matlab.MatReadError) as e:
        raise MMRobustError(f"cannot read {path}: {_reason(e)}; re-download or re-extract it") from None
    frame = _FRAME[modality]
    if modality == "inertial" and len(shape) == 2 and shape[1] == 6:
        return shape[0]
    if modality != "inertial" and shape[: len(frame)] == frame and len(shape) <= len(frame) + 1:
        return shape[len(frame)] if len(shape) > len(frame) else 1
    raise MMRobustError(f"{path}: {_VARIABLES[modality]} has shape {shape}, expected {_expected(modality)}")


def _header_shape(path: Path) -> tuple[int, ...]:
    """Dimensions of the first variable of a MATLAB v5 file: a 128-byte header, then data
    elements (tag: type, byte count); a compressed one is a zlib stream whose first bytes are
    the matrix tag, its array-flags element and its dimensions element."""
    with path.open("rb") as f:
        header = f.read(136)
        if len(header) < 136 or header[126:128] != b"IM":
            raise ValueError("not a little-endian MATLAB 5 file (truncated, or saved as v7.3/HDF5)")
        kind, size = struct.unpack("<II", header[128:136])
        if kind == 15:  # miCOMPRESSED
            body = zlib.decompressobj().decompress(f.read(min(size, 4096)), 64)
        elif kind == 14:  # miMATRIX, uncompressed: its tag is the one just read
            body = header[128:136] + f.read(56)
        else:
            raise ValueError(f"unexpected first element type {kind}")
    if len(body) < 32:
        raise ValueError("header ends early")
    dims_type, dims_size = struct.unpack("<II", body[24:32])  # after the matrix tag (8) and array flags (16)
    if dims_type != 5 or dims_size % 4 or len(body) < 32 + dims_size:  # miINT32 dimensions
        raise ValueError("unexpected matrix header")
    return tuple(int(d) for d in np.frombuffer(body[32 : 32 + dims_size], dtype="<i4"))


def _expected(modality: str) -> str:
    return {"inertial": "(T, 6)", "skeleton": "(20, 3, F)", "depth": "(240, 320, F)"}[modality]


def _reason(error: Exception) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
