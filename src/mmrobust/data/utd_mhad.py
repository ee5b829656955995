"""`utd_mhad`: UTD Multimodal Human Action Dataset — wearable inertial, Kinect skeleton, depth.

C. Chen, R. Jafari, N. Kehtarnavaz, "UTD-MHAD: A Multimodal Dataset for Human Action
Recognition Utilizing a Depth Camera and a Wearable Inertial Sensor", ICIP 2015;
https://personal.utdallas.edu/~kehtar/UTD-MHAD.html. 27 actions x 8 subjects x 4 trials =
861 sequences (3 missing in the release). Files: the official release's folders as published,
`<data dir>/utd_mhad/{Inertial,Skeleton,Depth}/a{A}_s{S}_t{T}_{inertial,skeleton,depth}.mat`
(`mmrobust data download utd_mhad` fetches and checks them; `formats.utd_mhad_mat` reads
them). Without them, packed npz files holding the same arrays are read instead (see the data
folder's PROVENANCE.md); both give identical tensors.

Recipe (`utd_mhad/2`), chosen so every modality has one fixed shape and is cheap on a CPU:
- `inertial` conv1d (6, 128): acc xyz + gyro xyz, each trial (107-326 samples at ~50 Hz)
  linearly resampled to 128 steps over its full duration.
- `skeleton` seq (32, 60): 20 joints x xyz, each trial (41-125 frames) linearly resampled to
  32 frames. Joints are taken relative to the hip centre of the same frame (removing where
  the subject stood); the hip-centre slot, otherwise always zero, carries the hip's
  displacement from its first-frame position, so whole-body motion (jog, sit2stand) stays
  visible. Kind `seq`, read by the sequence encoder. Options: `skeleton_scale` divides the
  coordinates by the trial's mean torso length (hip centre to shoulder centre), removing the
  subject's size; `skeleton_velocity` appends each joint's frame-to-frame displacement (60 more
  features); `skeleton_kind="conv1d"` lays the features out as channels (F, 32) for the temporal CNN.
- `depth` conv2d (2, 48, 32): the 120x160 frames are average-pooled 2x2 and read in chunks,
  so the 2.2 GB of decompressed video never sits in memory. `depth="motion"` (default): a
  depth-motion map, log(1 + mean |frame_t - frame_t-1|) (front view only, in the spirit of
  Chen et al.'s DMMs; the log tames the large jumps at silhouette edges), and the mean frame
  (the static pose). `depth="dmm3"`: the three depth motion maps of Chen et al. (front, side,
  top: each frame's readings also projected onto a (height x depth) and a (depth x width) plane
  in 25 mm depth bins, a 1.2 m window around the trial's mean depth), then the mean frame:
  (4, 48, 32). `depth="frames"`: kind `frames` (T, 1, 48, 32), `depth_frames` frames
  evenly spaced over the trial, read by the space-time encoder (per-frame CNN + temporal
  transformer). Either is then cropped to a box around the subject (where the subject stood and
  how far from the camera vary between subjects) and resampled to `depth_size` (48, 32); on
  the full image the small conv encoder reached ~15-20% test accuracy, ~35-40% cropped.
- Split: the standard cross-subject protocol, test = subjects 2, 4, 6, 8 (430 sequences);
  val = subject 7 (option `val_subjects`), so train (1, 3, 5: 323), val (108) and test share
  no subject. `val_subjects=[]` trains on all four training subjects (the final models of a
  fixed-budget recipe, whose budget was chosen on validation). Every modality is standardised
  per channel with train statistics only; the cached features are split-independent.

`modalities` loads a subset (e.g. `("inertial", "skeleton")` skips the depth video, which is
most of the build time).
"""

from __future__ import annotations

import csv
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from math import prod
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import MMRobustError
from .cache import cached
from .dataset import DataSpec, ModalitySpec, MultimodalData, standardize
from .formats import utd_mhad_mat as mat
from .paths import data_dir as resolve_data_dir
from .registry import DatasetInfo, Download, Release, register_dataset
from .sequences import READ_ERRORS, check_ragged, positions, read_arrays, stretch, subject_splits

MODALITIES = ("inertial", "skeleton", "depth")
_FILES = {
    "inertial": "utd_mhad/utd_mhad_inertial.npz",
    "skeleton": "utd_mhad/utd_mhad_skeleton.npz",
    "depth": "utd_mhad/utd_mhad_depth_120x160.npz",
}
_ACTIONS, _JOINTS = "utd_mhad/actions.csv", "utd_mhad/skeleton_joint_order.txt"
_ROOT_JOINT, _TORSO_JOINT = "hip_center", "shoulder_center"  # the torso's length is the body's scale
_TEST_SUBJECTS = (2, 4, 6, 8)  # the standard cross-subject protocol
_INDEX_KEYS = ("offsets", "lengths", "action", "subject", "trial")
_CHUNK_FRAMES = 2048  # depth frames decompressed at a time (~80 MB)

INFO = DatasetInfo(
    summary="UTD-MHAD: wearable inertial + Kinect skeleton + depth, 27 actions, 8 subjects (861 trials)",
    files=(*_FILES.values(), _ACTIONS, _JOINTS),
    homepage="https://personal.utdallas.edu/~kehtar/UTD-MHAD.html",
    release=Release(
        folder="utd_mhad",
        patterns=tuple(f"{folder}/*_{m}.mat" for m, folder in mat.FOLDERS.items()),
        layout="utd_mhad/{Inertial,Skeleton,Depth}/a{A}_s{S}_t{T}_{inertial,skeleton,depth}.mat",
        count=2583,
        tree_sha256="fe930fededdd85c26768565f849d2dad948af0ec0198fd8bf2e7b2e459dcde73",
    ),
    downloads=tuple(  # the dataset page's archives (research use; cite Chen et al., ICIP 2015)
        Download(
            f"https://www.utdallas.edu/~kehtar/UTD-MAD/{folder}.zip",
            f"utd_mhad/{folder}",
            unpack="zip",
            find=f"a1_s1_t1_{m}.mat",
        )
        for m, folder in mat.FOLDERS.items()
    ),
    recipe=(
        "utd_mhad/2: inertial 6x128 + hip-centred skeleton 32x60 by linear resampling; depth 2x2-pooled "
        "log motion + mean map (or evenly spaced frames) cropped to the subject, 48x32; "
        "test subjects 2,4,6,8, val subject 7; train-only standardisation"
    ),
)


@register_dataset("utd_mhad", INFO)
def load_utd_mhad(
    data_dir: str | None = None,
    modalities: Sequence[str] = MODALITIES,
    depth: Literal["motion", "dmm3", "frames"] = "motion",
    inertial_steps: int = 128,
    skeleton_frames: int = 32,
    skeleton_kind: Literal["seq", "conv1d"] = "seq",
    skeleton_velocity: bool = False,
    skeleton_scale: bool = False,
    depth_frames: int = 8,
    depth_size: tuple[int, int] = (48, 32),
    val_subjects: Sequence[int] = (7,),
    use_cache: bool = True,
) -> MultimodalData:
    """Load UTD-MHAD (see the module docstring for the recipe and the split).

    Example: `load_dataset("utd_mhad", modalities=("inertial", "skeleton"))`.
    """

    root = resolve_data_dir(data_dir)
    INFO.require("utd_mhad", root)
    chosen = tuple(m for m in MODALITIES if m in modalities)  # canonical order
    unknown = sorted(set(modalities) - set(MODALITIES))
    if unknown or not chosen:
        raise MMRobustError(f"utd_mhad: modalities must be a non-empty subset of {MODALITIES}, got {modalities!r}")
    if depth not in ("motion", "dmm3", "frames"):
        raise MMRobustError(f"utd_mhad: depth must be 'motion', 'dmm3' or 'frames', not {depth!r}")
    if skeleton_kind not in ("seq", "conv1d"):
        raise MMRobustError(f"utd_mhad: skeleton_kind must be 'seq' or 'conv1d', not {skeleton_kind!r}")
    size = (int(depth_size[0]), int(depth_size[-1]))  # (H, W)
    if len(depth_size) != 2 or min(inertial_steps, skeleton_frames, depth_frames, *size) < 2:
        raise MMRobustError("utd_mhad: inertial_steps, skeleton_frames, depth_frames and depth_size must be >= 2")
    options: dict[str, Any] = {
        "modalities": chosen,
        "depth": depth,
        "inertial_steps": inertial_steps,
        "skeleton_frames": skeleton_frames,
        "depth_frames": depth_frames,
        "depth_size": size,
        "skeleton": {"kind": skeleton_kind, "velocity": bool(skeleton_velocity), "scale": bool(skeleton_scale)},
    }
    # the features do not depend on the split: one cache entry serves every choice of val subjects
    built = cached(
        "utd_mhad", INFO.recipe, INFO.raw_files(root), options, lambda: _build(root, **options), use_cache
    )
    subjects = torch.zeros(len(built), dtype=torch.long)
    for name, rows in built.splits.items():
        subjects[rows] = int(name.removeprefix("subject-"))
    splits = subject_splits(subjects.numpy(), _TEST_SUBJECTS, val_subjects, "utd_mhad")
    return standardize(MultimodalData(built.spec, built.inputs, built.present, built.target, splits))


def _build(
    root: Path,
    modalities: tuple[str, ...],
    depth: str,
    inertial_steps: int,
    skeleton_frames: int,
    depth_frames: int,
    depth_size: tuple[int, int],
    skeleton: dict[str, Any],
) -> MultimodalData:
    """The unstandardised features of every trial, with one split per subject (`subject-S`)."""
    index = {m: _raw_index(root, m) for m in modalities}
    first = index[modalities[0]]
    for m in modalities[1:]:  # every file must list the same trials in the same order
        for key in ("action", "subject", "trial"):
            if not np.array_equal(index[m][key], first[key]):
                raise MMRobustError(f"{_source(root, m)}: '{key}' differs from {_source(root, modalities[0])}")
    if (
        "skeleton" in index
        and "depth" in index
        and not np.array_equal(index["skeleton"]["lengths"], index["depth"]["lengths"])
    ):
        raise MMRobustError(f"{_source(root, 'depth')}: frame counts differ from the skeleton's")
    class_names = mat.ACTIONS if INFO.official(root) else _read_actions(root / _ACTIONS)
    labels = first["action"].astype(np.int64) - 1
    if labels.min() < 0 or labels.max() >= len(class_names):
        raise MMRobustError(f"{_source(root, modalities[0])}: action ids outside 1..{len(class_names)}")

    specs, inputs = [], {}
    if "inertial" in modalities:
        x = _inertial(_source(root, "inertial"), index["inertial"], inertial_steps)
        specs.append(ModalitySpec("inertial", "conv1d", tuple(x.shape[1:])))
        inputs["inertial"] = x
    if "skeleton" in modalities:
        x = _skeleton(_source(root, "skeleton"), index["skeleton"], skeleton_frames, _joints(root), skeleton)
        specs.append(ModalitySpec("skeleton", skeleton["kind"], tuple(x.shape[1:])))
        inputs["skeleton"] = x
    if "depth" in modalities:
        x = _depth(_source(root, "depth"), index["depth"], depth, depth_frames, depth_size)
        if depth == "frames":  # (N, T, H, W) -> (N, T, 1, H, W) for the space-time encoder
            x = x.unsqueeze(2)
        kind = "frames" if depth == "frames" else "conv2d"
        specs.append(ModalitySpec("depth", kind, tuple(x.shape[1:])))
        inputs["depth"] = x

    subjects = first["subject"].astype(np.int64)
    splits = {f"subject-{s}": torch.from_numpy(np.flatnonzero(subjects == s)) for s in np.unique(subjects)}
    spec = DataSpec("utd_mhad", tuple(specs), "classification", len(class_names), class_names)
    target = torch.from_numpy(labels)
    present = torch.ones(len(target), len(specs), dtype=torch.bool)
    return MultimodalData(spec, inputs, present, target, splits)


# --- where the raw arrays come from: the official release's folders, else the packed npz files ---
def _source(root: Path, modality: str) -> Path:
    """A modality's raw data: its release folder (`utd_mhad/Inertial` ...) when the official
    layout is under `root`, else its packed npz."""
    return root / "utd_mhad" / mat.FOLDERS[modality] if INFO.official(root) else root / _FILES[modality]


def _raw_index(root: Path, modality: str) -> dict[str, np.ndarray]:
    """`offsets`, `lengths`, `action`, `subject`, `trial` of a modality, from either layout."""
    path = _source(root, modality)
    return mat.read_index(path, modality) if INFO.official(root) else read_arrays(path, _INDEX_KEYS)


def _raw_data(path: Path) -> np.ndarray:
    """The `data` rows of an inertial or skeleton `_source` (a release folder or an npz)."""
    if path.is_dir():
        return mat.read_data(path, next(m for m, folder in mat.FOLDERS.items() if folder == path.name))
    return read_arrays(path, ("data",))["data"]


def _joints(root: Path) -> dict[str, int]:
    """Joint indices by name, from the joint-order text of either layout (the documented order
    if a release came without its text file)."""
    if not INFO.official(root):
        return _joint_numbers(root / _JOINTS)
    joints = root / "utd_mhad" / mat.JOINT_ORDER
    if joints.is_file():
        return _joint_numbers(joints)
    return {_ROOT_JOINT: mat.HIP_CENTER, _TORSO_JOINT: mat.SHOULDER_CENTER}


def _read_data(path: Path, index: dict[str, np.ndarray], frame_shape: tuple[int, ...]) -> np.ndarray:
    """The `data` array of a sequence file, checked against its index and per-row shape."""
    data = _raw_data(path)
    if data.shape[1:] != frame_shape:
        raise MMRobustError(f"{path}: data has rows of shape {data.shape[1:]}, expected {frame_shape}")
    check_ragged(index["offsets"], index["lengths"], len(data), 2, str(path))
    return data


def _inertial(path: Path, index: dict[str, np.ndarray], steps: int) -> torch.Tensor:
    data = _read_data(path, index, (6,))
    x = stretch(data, index["offsets"], index["lengths"], steps)  # (S, T, 6)
    return torch.from_numpy(x).transpose(1, 2).contiguous()  # (S, 6, T)


def _skeleton(
    path: Path, index: dict[str, np.ndarray], frames: int, joints: dict[str, int], options: dict[str, Any]
) -> torch.Tensor:
    """Hip-centred joints (S, T, 60), optionally in torso lengths (`scale`: the subject's size
    removed), with per-frame joint velocities appended (`velocity`: (S, T, 120)), and laid out
    channels-first for a temporal CNN (`kind="conv1d"`: (S, 60 or 120, T))."""
    data = _read_data(path, index, (20, 3))
    x = stretch(data, index["offsets"], index["lengths"], frames)  # (S, T, 20, 3)
    root = joints[_ROOT_JOINT]
    hip = x[:, :, root : root + 1]  # (S, T, 1, 3)
    rel = x - hip
    rel[:, :, root] = hip[:, :, 0] - hip[:, :1, 0]  # hip slot: displacement from the first frame
    if options["scale"]:
        torso = np.linalg.norm(x[:, :, joints[_TORSO_JOINT]] - hip[:, :, 0], axis=-1).mean(axis=1)  # (S,)
        rel /= np.maximum(torso, 1e-3)[:, None, None, None]
    feats = rel.reshape(len(x), frames, -1)
    if options["velocity"]:
        velocity = np.diff(feats, axis=1, prepend=feats[:, :1])  # the first frame has none
        feats = np.concatenate([feats, velocity], axis=2)
    out = torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32))
    return out.transpose(1, 2).contiguous() if options["kind"] == "conv1d" else out


def _depth(path: Path, index: dict[str, np.ndarray], mode: str, frames: int, size: tuple[int, int]) -> torch.Tensor:
    """Depth video -> (S, 2, *size) motion+mean maps, (S, 4, *size) front/side/top motion + mean
    maps (`dmm3`) or (S, frames, *size) frames, cropped to the subject."""
    offsets, lengths = index["offsets"], index["lengths"]
    try:
        with _open_depth(path) as (shape, blocks):
            check_ragged(offsets, lengths, shape[0], 2, str(path))
            pooled = (len(lengths), shape[1] // 2, shape[2] // 2)
            front_mode = "motion" if mode == "dmm3" else mode
            maps, occupancy = _depth_maps(blocks, offsets, lengths, front_mode, frames, pooled)
        if mode == "dmm3":  # a second pass for the side and top views (the first one's code stays simple)
            with _open_depth(path) as (_, blocks):
                side, top, centre = _side_top_maps(blocks, lengths, pooled)
    except MMRobustError:  # a ValueError too: already says what is wrong
        raise
    except READ_ERRORS as e:
        raise MMRobustError(f"cannot read {path}: {type(e).__name__}: {e}") from None
    box = _body_box(torch.from_numpy(occupancy), size)
    front = _resample_box(torch.from_numpy(maps), box, size)
    if mode != "dmm3":
        return front
    depth_box = (torch.from_numpy(centre), torch.full((len(centre),), float(_DEPTH_WINDOW)))
    side_view = _resample_box(torch.from_numpy(side)[:, None], (box[0], depth_box), size)  # rows x depth
    top_view = _resample_box(torch.from_numpy(top)[:, None], (depth_box, box[1]), size)  # depth x columns
    return torch.cat([front[:, :1], side_view, top_view, front[:, 1:]], dim=1)


@contextmanager
def _open_depth(path: Path) -> Iterator[tuple[tuple[int, ...], Iterator[tuple[int, np.ndarray]]]]:
    """The shape of `data` (F, H, W) in a depth npz, and an iterator over (first row, frames)
    blocks of it, decompressed a chunk at a time so the whole video is never in memory."""
    if path.is_dir():  # the official release's Depth folder, read one trial at a time
        with mat.open_depth(path) as opened:
            yield opened
        return
    with zipfile.ZipFile(path) as zf, zf.open("data.npy") as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        if fortran or len(shape) != 3 or shape[1] % 2 or shape[2] % 2 or dtype.kind not in "ui":
            raise MMRobustError(
                f"{path}: depth must be C-ordered integer (frames, H, W), H and W even; got {dtype}{shape}"
            )
        frame_bytes = prod(shape[1:]) * dtype.itemsize

        def blocks() -> Iterator[tuple[int, np.ndarray]]:
            for start in range(0, shape[0], _CHUNK_FRAMES):
                n = min(_CHUNK_FRAMES, shape[0] - start)
                buf = f.read(n * frame_bytes)
                if len(buf) != n * frame_bytes:
                    raise MMRobustError(f"{path}: depth data ends after {start + len(buf) // frame_bytes} frames")
                yield start, np.frombuffer(buf, dtype).reshape(n, *shape[1:])

        yield shape, blocks()


def _pool(frames: np.ndarray) -> np.ndarray:
    """2x2 average pooling: (n, H, W) integers -> (n, H/2, W/2) float32."""
    total = frames[:, ::2, ::2].astype(np.float32)  # converting a quarter at a time is ~2x faster
    total += frames[:, 1::2, ::2]
    total += frames[:, ::2, 1::2]
    total += frames[:, 1::2, 1::2]
    return total * 0.25


def _depth_maps(
    blocks: Iterator[tuple[int, np.ndarray]],
    offsets: np.ndarray,
    lengths: np.ndarray,
    mode: str,
    frames: int,
    pooled: tuple[int, int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """One pass over the 2x2-pooled video: per trial the maps (S, C, h, w) — `motion`: log(1 +
    mean |frame_t - frame_(t-1)|) and the mean frame; `frames`: the frames nearest `frames`
    evenly spaced times — and the occupancy (S, h, w), the fraction of frames with a reading."""
    owner = np.repeat(np.arange(len(lengths)), lengths)  # row -> trial (rows tile the trials in order)
    picks = np.rint(positions(offsets, lengths, frames)).astype(np.int64)  # (S, frames) rows
    occupancy, motion, mean = np.zeros((3, *pooled), dtype=np.float32)
    chosen = np.zeros((pooled[0], frames, *pooled[1:]), dtype=np.float32) if mode == "frames" else None
    previous: np.ndarray | None = None  # last pooled frame of the previous block
    for start, block in blocks:
        x = _pool(block)  # (n, h, w)
        seq = owner[start : start + len(x)]
        _add_segments(occupancy, (x > 0).astype(np.float32), seq)
        if chosen is not None:
            sel = (picks >= start) & (picks < start + len(x))
            chosen[sel] = x[picks[sel] - start]
            continue
        _add_segments(mean, x, seq)
        _add_motion(motion, x, previous, owner, start)
        previous = x[-1]
    n = lengths.astype(np.float32)[:, None, None]  # (S, 1, 1)
    occupancy /= n
    if chosen is not None:
        return chosen, occupancy
    motion = np.log1p(motion / (n - 1))  # the log tames the large jumps at silhouette edges
    return np.stack([motion, mean / n], axis=1), occupancy


_Span = tuple[torch.Tensor, torch.Tensor]  # per trial: centre and extent along one axis, in pixels
_DEPTH_BIN, _DEPTH_BINS, _DEPTH_WINDOW = 25.0, 160, 48  # side/top views: 25 mm bins to 4 m; 1.2 m shown


def _body_box(occupancy: torch.Tensor, size: tuple[int, int]) -> tuple[_Span, _Span]:
    """The (row, column) spans of a box around the subject in each trial's front view.

    The box spans the rows where the subject ever was (pixels with a reading in over 5% of the
    frames; the stored depth has its background zeroed), plus 5% above and below, with the
    aspect of `size`, centred on the occupancy centroid's column. This removes where the
    subject stood and how far from the camera, which vary between subjects.
    """
    _, h, w = occupancy.shape
    body = occupancy > 0.05  # (S, h, w)
    rows, cols_mass = body.any(dim=2).float(), (occupancy * body).sum(dim=1)  # (S, h), (S, w)
    found = rows.any(dim=1)
    top, bottom = rows.argmax(dim=1), h - rows.flip(1).argmax(dim=1)  # pixel-edge coordinates
    height = torch.where(found, (bottom - top) * 1.1, torch.tensor(float(h)))
    cy = torch.where(found, (top + bottom) / 2, torch.tensor(h / 2))
    centres = torch.arange(w) + 0.5
    cx = torch.where(found, (cols_mass * centres).sum(1) / cols_mass.sum(1).clamp_min(1e-6), torch.tensor(w / 2))
    return (cy, height), (cx, height * size[1] / size[0])


def _resample_box(maps: torch.Tensor, box: tuple[_Span, _Span], size: tuple[int, int]) -> torch.Tensor:
    """Bilinearly resample each trial's maps (S, C, h, w) over its (row, column) box to `size`."""
    n, _, h, w = maps.shape
    (cy, height), (cx, width) = box
    theta = torch.zeros(n, 2, 3)  # output [-1, 1] -> input box, in normalised coordinates
    theta[:, 0, 0], theta[:, 0, 2] = width / w, 2 * cx / w - 1
    theta[:, 1, 1], theta[:, 1, 2] = height / h, 2 * cy / h - 1
    grid = F.affine_grid(theta, [n, maps.shape[1], *size], align_corners=False)  # (S, *size, 2)
    return F.grid_sample(maps, grid, align_corners=False)  # zeros outside the frame


def _side_top_maps(
    blocks: Iterator[tuple[int, np.ndarray]], lengths: np.ndarray, pooled: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Side and top depth motion maps (Chen et al.'s DMMs from the two other projections): each
    frame's readings binned by depth into a (rows x depth) and a (depth x columns) occupancy
    image, then log(1 + mean |image_t - image_t-1|) per trial; and each trial's mean depth bin."""
    s, h, w = pooled
    owner = np.repeat(np.arange(s), lengths)
    side, top = np.zeros((s, h, _DEPTH_BINS), np.float32), np.zeros((s, _DEPTH_BINS, w), np.float32)
    depth_sum, readings = np.zeros(s), np.zeros(s)
    previous: tuple[np.ndarray, np.ndarray] | None = None
    for start, block in blocks:
        z = block[:, ::2, ::2]  # (n, h, w) raw readings (pooling would blend body and background)
        n = len(z)
        valid = (z > 0) & (z < _DEPTH_BIN * _DEPTH_BINS)
        bins = np.minimum(z // _DEPTH_BIN, _DEPTH_BINS - 1).astype(np.int64)
        frame, row, col = np.nonzero(valid)
        zb = bins[frame, row, col]
        side_now = np.bincount((frame * h + row) * _DEPTH_BINS + zb, minlength=n * h * _DEPTH_BINS)
        top_now = np.bincount((frame * _DEPTH_BINS + zb) * w + col, minlength=n * _DEPTH_BINS * w)
        views = (
            side_now.reshape(n, h, _DEPTH_BINS).astype(np.float32),
            top_now.reshape(n, _DEPTH_BINS, w).astype(np.float32),
        )
        seq = owner[start : start + n]
        _add_segments(depth_sum, np.bincount(frame, weights=zb, minlength=n), seq)
        _add_segments(readings, np.bincount(frame, minlength=n).astype(np.float64), seq)
        for acc, now, before in zip((side, top), views, previous or (None, None), strict=True):
            _add_motion(acc, now, before, owner, start)
        previous = (views[0][-1], views[1][-1])
    steps = np.maximum(lengths - 1, 1).astype(np.float32)[:, None, None]
    centre = (depth_sum / np.maximum(readings, 1) + 0.5).astype(np.float32)  # pixel-centre coordinates
    return np.log1p(side / steps), np.log1p(top / steps), centre


def _add_motion(acc: np.ndarray, x: np.ndarray, previous: np.ndarray | None, owner: np.ndarray, start: int) -> None:
    """acc[trial] += |x_t - x_(t-1)| for the frames `x` (rows start.. of the video), never
    across two trials; `previous` is the frame before `start`, if any."""
    with_prev = x if previous is None else np.concatenate([previous[None], x])
    diff = np.abs(np.diff(with_prev, axis=0))  # row r minus row r-1, for the last len(diff) rows r
    cur = owner[start + len(x) - len(diff) : start + len(x)]  # trial of row r
    before = owner[start + len(x) - len(diff) - 1 : start + len(x) - 1]  # trial of row r-1
    diff[cur != before] = 0  # no difference across two trials
    _add_segments(acc, diff, cur)


def _add_segments(acc: np.ndarray, rows: np.ndarray, owner: np.ndarray) -> None:
    """acc[owner[i]] += rows[i], for `owner` sorted (runs of equal trials summed at once)."""
    if not len(rows):
        return
    starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    acc[owner[starts]] += np.add.reduceat(rows, starts, axis=0)


def _read_actions(path: Path) -> tuple[str, ...]:
    """Class names in action-id order from actions.csv (`action,action_name`, ids 1..K)."""
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        ids = [int(r["action"]) for r in rows]
        names = tuple(r["action_name"] for r in rows)
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise MMRobustError(f"cannot read {path}: {type(e).__name__}: {e}") from None
    if ids != list(range(1, len(ids) + 1)):
        raise MMRobustError(f"{path}: action ids must be 1..K in order")
    return names


def _joint_numbers(path: Path) -> dict[str, int]:
    """0-based joint indices by name from the documented joint order ("4. hip_center;")."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise MMRobustError(f"cannot read {path}: {type(e).__name__}: {e}") from None
    joints = {}
    for line in lines:
        number, _, name = line.partition(".")
        if number.strip().isdigit():
            joints[name.strip(" ;")] = int(number) - 1
    missing = [j for j in (_ROOT_JOINT, _TORSO_JOINT) if j not in joints]
    if missing:
        raise MMRobustError(f"{path}: no {missing} joint listed")
    return joints
