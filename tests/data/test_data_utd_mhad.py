"""`utd_mhad`: shapes, the cross-subject split, standardisation, the cache, resampling and
skeleton centring, the chunked depth reader, and one-line errors for bad files."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import mmrobust
from mmrobust import MMRobustError
from mmrobust.data import utd_mhad
from mmrobust.data.formats import utd_mhad_mat as mat
from mmrobust.data.sequences import read_arrays, stretch

FILES = (*utd_mhad._FILES.values(), utd_mhad._ACTIONS, utd_mhad._JOINTS)
FAST = ("inertial", "skeleton")
JOINTS = {"shoulder_center": 1, "hip_center": 3}
PLAIN = {"kind": "seq", "velocity": False, "scale": False}


@pytest.fixture(scope="module")
def full(shared_data: Path) -> mmrobust.MultimodalData:
    """All three modalities from the real files: the one slow (~15 s) build of this module."""
    return mmrobust.load_dataset("utd_mhad", data_dir=str(shared_data))


@pytest.fixture(scope="module")
def subjects(shared_data: Path) -> np.ndarray:
    with np.load(shared_data / utd_mhad._FILES["inertial"], allow_pickle=False) as f:
        return f["subject"]


def _link_all(src: Path, dst: Path, skip: str = "") -> Path:
    """A data dir of symlinks to the real files (except `skip`, which the test writes)."""
    (dst / "utd_mhad").mkdir(parents=True)
    for f in FILES:
        if f != skip:
            (dst / f).symlink_to(src / f)
    return dst


# --- the real dataset ---------------------------------------------------------------------------
def test_modalities_kinds_and_shapes(full: mmrobust.MultimodalData) -> None:
    assert [(m.name, m.kind, m.shape) for m in full.spec.modalities] == [
        ("inertial", "conv1d", (6, 128)),
        ("skeleton", "seq", (32, 60)),
        ("depth", "conv2d", (2, 48, 32)),
    ]
    assert len(full) == 861 and full.present.all()
    assert all(
        x.dtype == torch.float32 and x.shape[1:] == s.shape
        for x, s in zip(full.inputs.values(), full.spec.modalities, strict=True)
    )
    assert full.spec.num_classes == 27 and full.spec.class_names[0] == "swipe_left"
    assert full.spec.class_names[-1] == "squat"


def test_class_counts_match_provenance(full: mmrobust.MultimodalData) -> None:
    counts = torch.bincount(full.target, minlength=27).tolist()
    expected = [31 if action in (8, 23, 27) else 32 for action in range(1, 28)]
    assert counts == expected


def test_cross_subject_split_with_a_held_out_val_subject(full: mmrobust.MultimodalData, subjects: np.ndarray) -> None:
    splits = {k: v.numpy() for k, v in full.splits.items()}
    assert {k: len(v) for k, v in splits.items()} == {"train": 323, "val": 108, "test": 430}
    assert len(np.unique(np.concatenate(list(splits.values())))) == 861  # disjoint and complete
    assert set(subjects[splits["train"]]) == {1, 3, 5}
    assert set(subjects[splits["val"]]) == {7}
    assert set(subjects[splits["test"]]) == {2, 4, 6, 8}


def test_val_subjects_option_and_its_errors(shared_data: Path, subjects: np.ndarray) -> None:
    d = mmrobust.load_dataset("utd_mhad", data_dir=str(shared_data), modalities=FAST, val_subjects=(1, 3))
    assert set(subjects[d.splits["val"].numpy()]) == {1, 3}
    assert set(subjects[d.splits["train"].numpy()]) == {5, 7}
    with pytest.raises(MMRobustError, match=r"\[2\] are in both"):
        mmrobust.load_dataset("utd_mhad", data_dir=str(shared_data), modalities=FAST, val_subjects=(2,))
    with pytest.raises(MMRobustError, match="at least one subject"):
        mmrobust.load_dataset("utd_mhad", data_dir=str(shared_data), modalities=FAST, val_subjects=(1, 3, 5, 7))


def test_standardised_with_train_statistics_only(shared_data: Path, full: mmrobust.MultimodalData) -> None:
    train = full.split("train")
    for spec in full.spec.modalities:
        x = train.inputs[spec.name]
        dims = (0, *range(2, x.dim())) if spec.kind != "seq" else (0, 1)  # all but the channel axis
        assert torch.allclose(x.mean(dim=dims), torch.zeros(1), atol=1e-3), spec.name
        assert torch.allclose(x.std(dim=dims), torch.ones(1), atol=1e-3), spec.name
    # Another train set (val subject 1 instead of 7) gives other statistics, so the same test
    # samples come out differently: the statistics follow the train split alone.
    other = mmrobust.load_dataset("utd_mhad", data_dir=str(shared_data), modalities=FAST, val_subjects=(1,))
    test = full.splits["test"]
    assert torch.equal(other.splits["test"], test)
    for m in FAST:
        assert (other.inputs[m][test] - full.inputs[m][test]).abs().max() > 0.01, m


def test_modalities_option_loads_only_what_is_asked(shared_data: Path, full: mmrobust.MultimodalData) -> None:
    fast = mmrobust.load_dataset("utd_mhad", data_dir=str(shared_data), modalities=("skeleton", "inertial"))
    assert fast.modalities == FAST  # canonical order whatever the order asked
    assert torch.allclose(fast.inputs["inertial"], full.inputs["inertial"])
    assert torch.equal(fast.splits["test"], full.splits["test"])
    with pytest.raises(MMRobustError, match="non-empty subset"):
        mmrobust.load_dataset("utd_mhad", data_dir=str(shared_data), modalities=("rgb",))


def test_second_load_comes_from_the_cache(
    shared_data: Path, full: mmrobust.MultimodalData, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_rebuild(*args: object) -> None:
        raise AssertionError("_build ran although the dataset is cached")

    monkeypatch.setattr(utd_mhad, "_build", no_rebuild)
    start = time.perf_counter()
    again = mmrobust.load_dataset("utd_mhad", data_dir=str(shared_data))
    assert time.perf_counter() - start < 5.0
    assert all(torch.equal(again.inputs[m], full.inputs[m]) for m in full.modalities)
    assert torch.equal(again.target, full.target)


# --- recipe details on small generated data -----------------------------------------------------
def test_stretch_is_linear_interpolation_over_the_whole_sequence() -> None:
    lengths = np.array([3, 5])
    offsets = np.cumsum(lengths) - lengths
    data = np.concatenate([np.arange(3.0), 10 + 2 * np.arange(5.0)])[:, None] * [1.0, -1.0]  # (8, 2)
    out = stretch(data, offsets, lengths, 5)  # (2, 5, 2)
    assert np.allclose(out[0, :, 0], [0, 0.5, 1, 1.5, 2])
    assert np.allclose(out[1, :, 0], [10, 12, 14, 16, 18])
    assert np.allclose(out[..., 1], -out[..., 0]) and out.dtype == np.float32


def test_skeleton_is_centred_on_the_hip_and_keeps_hip_displacement(tmp_path: Path) -> None:
    lengths = np.array([4, 6])
    offsets = np.cumsum(lengths) - lengths
    pose = np.random.default_rng(0).normal(size=(20, 3))
    hip = np.zeros((10, 3))
    hip[:, 1] = np.arange(10.0)  # the whole body rises by 1 per frame
    data = (pose[None] + hip[:, None]).astype(np.float32)  # (10, 20, 3): a rigid, translating body
    path = tmp_path / "skel.npz"
    np.savez(path, data=data)
    index = {"offsets": offsets, "lengths": lengths}
    x = utd_mhad._skeleton(path, index, 3, JOINTS, PLAIN).numpy()  # (2, 3, 60)
    joints = x.reshape(2, 3, 20, 3)
    others = np.delete(joints, 3, axis=2)
    assert np.allclose(others, (np.delete(pose, 3, axis=0) - pose[3])[None, None], atol=1e-5)
    assert np.allclose(joints[0, :, 3, 1], [0, 1.5, 3]) and np.allclose(joints[1, :, 3, 1], [0, 2.5, 5])


def test_skeleton_options_scale_by_torso_add_velocity_and_lay_out_channels(tmp_path: Path) -> None:
    lengths = np.array([5])
    pose = np.random.default_rng(0).normal(size=(20, 3))
    pose[1] = pose[3] + [0.0, 2.0, 0.0]  # shoulder centre 2 above the hip centre: torso length 2
    moving = np.zeros((5, 20, 3))
    moving[:, 7, 0] = np.arange(5.0)  # one joint moves by 1 per frame along x
    path = tmp_path / "skel.npz"
    np.savez(path, data=(pose[None] + moving).astype(np.float32))
    index = {"offsets": np.array([0]), "lengths": lengths}
    plain = utd_mhad._skeleton(path, index, 5, JOINTS, PLAIN).numpy()
    options = {"kind": "conv1d", "velocity": True, "scale": True}
    x = utd_mhad._skeleton(path, index, 5, JOINTS, options).numpy()  # (1, 120, 5): channels first
    assert x.shape == (1, 120, 5)
    positions, velocity = x[0, :60].T, x[0, 60:].T  # (5, 60) each
    assert np.allclose(positions, plain[0] / 2, atol=1e-5)
    assert np.allclose(velocity[0], 0) and np.allclose(velocity[1:, 7 * 3], 0.5, atol=1e-5)
    assert np.allclose(np.delete(velocity[1:], 7 * 3, axis=1), 0, atol=1e-5)


def test_side_and_top_depth_motion_maps_bin_readings_by_depth(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One pixel at a fixed depth that moves one row down per frame: the side view sees it move
    between rows at its depth bin, the top view sees nothing move (same column, same depth)."""
    monkeypatch.setattr(utd_mhad, "_CHUNK_FRAMES", 2)  # a trial straddles chunks
    video = np.zeros((4, 8, 6), dtype=np.uint16)  # (frames, H, W); subsampled to (4, 3)
    for t in range(3):
        video[t, 2 * t, 2] = 1010  # depth bin 40 (25 mm bins), subsampled row t, column 1
    video[3, 2, 4] = 2000  # a one-frame second trial
    np.savez(tmp_path / "depth.npz", data=video)
    with utd_mhad._open_depth(tmp_path / "depth.npz") as (_, blocks):
        side, top, centre = utd_mhad._side_top_maps(blocks, np.array([3, 1]), (2, 4, 3))
    assert side.shape == (2, 4, utd_mhad._DEPTH_BINS) and top.shape == (2, utd_mhad._DEPTH_BINS, 3)
    expected = np.zeros((4, utd_mhad._DEPTH_BINS))
    expected[[0, 2], 40] = 1 / 2  # |diff| summed over 2 steps: rows 0 and 2 change once each
    expected[1, 40] = 2 / 2  # row 1 turns on, then off
    assert np.allclose(side[0], np.log1p(expected))
    assert np.allclose(top[0], 0) and np.allclose(side[1], 0)  # a static pixel; a single frame
    assert np.allclose(centre, [40.5, 80.5])


def test_split_independent_cache_and_training_on_all_four_training_subjects(shared_data: Path) -> None:
    fold = mmrobust.load_dataset("utd_mhad", data_dir=str(shared_data), modalities=FAST, val_subjects=(1,))
    final = mmrobust.load_dataset("utd_mhad", data_dir=str(shared_data), modalities=FAST, val_subjects=())
    assert len(fold.splits["val"]) == 107 and len(final.splits["val"]) == 0  # a8_s1_t4 is missing
    assert len(final.splits["train"]) == 431 and torch.equal(final.splits["test"], fold.splits["test"])
    train = final.split("train").inputs["inertial"]  # standardised on all four subjects
    assert abs(float(train.mean())) < 1e-4 and abs(float(train.std()) - 1) < 1e-2


def _depth_file(path: Path, lengths: np.ndarray) -> np.ndarray:
    video = np.random.default_rng(1).integers(0, 4000, size=(int(lengths.sum()), 4, 6), dtype=np.uint16)
    video[video < 800] = 0  # some pixels without a reading
    np.savez_compressed(path, data=video)
    return video


def _maps(path: Path, lengths: np.ndarray, mode: str, frames: int = 8) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.cumsum(lengths) - lengths
    with utd_mhad._open_depth(path) as (_, blocks):
        return utd_mhad._depth_maps(blocks, offsets, lengths, mode, frames, (len(lengths), 2, 3))


def test_chunked_depth_motion_map_matches_a_per_trial_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(utd_mhad, "_CHUNK_FRAMES", 3)  # trials straddle chunk boundaries
    lengths = np.array([2, 5, 4, 7])
    video = _depth_file(tmp_path / "depth.npz", lengths)
    maps, occupancy = _maps(tmp_path / "depth.npz", lengths, "motion")
    assert maps.shape == (4, 2, 2, 3) and occupancy.shape == (4, 2, 3)
    assert maps.dtype == occupancy.dtype == np.float32
    pooled = video.astype(np.float64).reshape(-1, 2, 2, 3, 2).mean(axis=(2, 4))  # (F, 2, 3)
    for i, trial in enumerate(np.split(pooled, np.cumsum(lengths)[:-1])):
        assert np.allclose(maps[i, 0], np.log1p(np.abs(np.diff(trial, axis=0)).mean(axis=0)), rtol=1e-5)
        assert np.allclose(maps[i, 1], trial.mean(axis=0), rtol=1e-5)
        assert np.allclose(occupancy[i], (trial > 0).mean(axis=0))


def test_depth_frames_are_evenly_spaced_pooled_frames(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(utd_mhad, "_CHUNK_FRAMES", 4)
    lengths = np.array([5, 9, 3])
    video = _depth_file(tmp_path / "depth.npz", lengths)
    maps, _ = _maps(tmp_path / "depth.npz", lengths, "frames", frames=3)
    pooled = video.astype(np.float32).reshape(-1, 2, 2, 3, 2).mean(axis=(2, 4))
    expected_rows = [[0, 2, 4], [5, 9, 13], [14, 15, 16]]  # first, middle, last frame of each trial
    assert np.allclose(maps, pooled[expected_rows])


def test_depth_crop_follows_the_subject_wherever_they_stand() -> None:
    occupancy = torch.zeros(2, 60, 80)
    occupancy[0, 10:30, 20:30] = 1.0  # a 20 x 10 body ...
    occupancy[1, 25:45, 47:57] = 1.0  # ... elsewhere in the frame
    maps = occupancy[:, None].clone()  # (2, 1, 60, 80)
    box = utd_mhad._body_box(occupancy, (44, 24))  # 22 rows high, 12 columns wide
    out = utd_mhad._resample_box(maps, box, (44, 24))
    assert out.shape == (2, 1, 44, 24)
    assert torch.allclose(out[0], out[1], atol=1e-5)  # the same crop, whatever the position
    body_rows = out[0, 0].mean(dim=1)
    assert body_rows[3:41].min() > 0.5 and body_rows[[0, 43]].max() < 0.05  # 2 rows of margin each side
    body_cols = out[0, 0].mean(dim=0)
    assert body_cols[3:21].min() > 0.5 and body_cols[[0, 23]].max() < 0.05  # centred, 1 column margin


# --- errors -------------------------------------------------------------------------------------
def test_missing_folder_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(MMRobustError, match="dataset 'utd_mhad' not found: expected utd_mhad/") as e:
        mmrobust.load_dataset("utd_mhad", data_dir=str(tmp_path))
    assert "\n" not in str(e.value) and "UTD-MHAD.html" in str(e.value)


@pytest.mark.parametrize("name", ["inertial", "depth"])
def test_truncated_file_is_a_one_line_error_naming_it(shared_data: Path, tmp_path: Path, name: str) -> None:
    file = utd_mhad._FILES[name]
    root = _link_all(shared_data, tmp_path, skip=file)
    raw = (shared_data / file).read_bytes()
    (root / file).write_bytes(raw[: len(raw) // 2])
    with pytest.raises(MMRobustError, match=f"cannot read .*{Path(file).name}") as e:
        mmrobust.load_dataset("utd_mhad", data_dir=str(root), modalities=(name,), use_cache=False)
    assert "\n" not in str(e.value)


def test_wrong_shape_file_is_a_one_line_error(shared_data: Path, tmp_path: Path) -> None:
    file = utd_mhad._FILES["inertial"]
    root = _link_all(shared_data, tmp_path, skip=file)
    with np.load(shared_data / file, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["data"] = arrays["data"][:, :5]  # five channels instead of six
    np.savez(root / file, **arrays)
    with pytest.raises(MMRobustError, match=r"utd_mhad_inertial.npz: data has rows of shape \(5,\), expected \(6,\)"):
        mmrobust.load_dataset("utd_mhad", data_dir=str(root), modalities=("inertial",), use_cache=False)


# --- the official .mat layout -------------------------------------------------------------------
SAMPLE_TRIALS = [(a, s, 1) for a in (1, 2) for s in (1, 2, 3)]  # actions 1-2, subjects 1-3, trial 1


@pytest.fixture
def official(shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data dir holding the release sample in the official layout (links to its three folders);
    the sample has subjects 1-3, so subject 2 stands for the test subjects."""
    monkeypatch.setattr(utd_mhad, "_TEST_SUBJECTS", (2,))
    sample = shared_data / "utd_mhad" / "official_sample"
    if not sample.is_dir():
        pytest.skip(f"no official sample at {sample}")
    root = tmp_path / "official"
    (root / "utd_mhad").mkdir(parents=True)
    for folder in mat.FOLDERS.values():
        (root / "utd_mhad" / folder).symlink_to(sample / folder)
    return root


def _packed_rows(shared_data: Path, modality: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The packed file's index and data rows of the sample's trials (depth read in chunks)."""
    path = shared_data / utd_mhad._FILES[modality]
    full = read_arrays(path, utd_mhad._INDEX_KEYS)
    trials = list(zip(full["action"].tolist(), full["subject"].tolist(), full["trial"].tolist(), strict=True))
    keep = [trials.index(t) for t in SAMPLE_TRIALS]
    index = {k: full[k][keep] for k in ("lengths", "action", "subject", "trial")}
    index["offsets"] = np.cumsum(index["lengths"]) - index["lengths"]
    rows = np.concatenate([np.arange(o, o + n) for o, n in zip(full["offsets"][keep], index["lengths"], strict=True)])
    if modality != "depth":
        return index, read_arrays(path, ("data",))["data"][rows]
    parts = []
    with utd_mhad._open_depth(path) as (_, blocks):
        for start, block in blocks:  # the sample's trials are among the first frames
            parts.append(block[rows[(rows >= start) & (rows < start + len(block))] - start])
            if start + len(block) > rows.max():
                break
    return index, np.concatenate(parts)


@pytest.mark.parametrize("modality", utd_mhad.MODALITIES)
def test_official_mat_files_give_the_packed_arrays_exactly(shared_data: Path, official: Path, modality: str) -> None:
    expected_index, expected = _packed_rows(shared_data, modality)
    index = utd_mhad._raw_index(official, modality)
    assert index.keys() == expected_index.keys()
    assert all(index[k].dtype == v.dtype and np.array_equal(index[k], v) for k, v in expected_index.items())
    folder = utd_mhad._source(official, modality)
    if modality == "depth":
        with utd_mhad._open_depth(folder) as (shape, blocks):
            got = np.concatenate([block for _, block in blocks])
        assert shape == got.shape
    else:
        got = utd_mhad._raw_data(folder)
    assert got.dtype == expected.dtype and got.shape == expected.shape and np.array_equal(got, expected)


def test_both_layouts_load_to_identical_tensors(shared_data: Path, official: Path, tmp_path: Path) -> None:
    packed = tmp_path / "packed"
    (packed / "utd_mhad").mkdir(parents=True)
    for m in utd_mhad.MODALITIES:
        index, data = _packed_rows(shared_data, m)
        np.savez(packed / utd_mhad._FILES[m], data=data, **index)
    for f in (utd_mhad._ACTIONS, utd_mhad._JOINTS):
        (packed / f).symlink_to(shared_data / f)
    for depth in ("motion", "frames"):
        options = {"depth": depth, "val_subjects": (3,), "use_cache": False}
        a = mmrobust.load_dataset("utd_mhad", data_dir=str(official), **options)
        b = mmrobust.load_dataset("utd_mhad", data_dir=str(packed), **options)
        assert len(a) == 6 and a.spec == b.spec
        assert all(torch.equal(a.inputs[m], b.inputs[m]) for m in a.modalities)
        assert torch.equal(a.target, b.target) and all(torch.equal(a.splits[k], b.splits[k]) for k in a.splits)


def test_release_file_names_match_the_published_list(shared_data: Path) -> None:
    listed = shared_data / "utd_mhad" / "official_sha256.csv"
    if not listed.is_file():
        pytest.skip(f"no {listed}")
    names = {line.split(",")[0] for line in listed.read_text().splitlines()[1:]}
    assert set(mat.release_files()) == names and len(names) == 2584


def test_a_missing_modality_folder_is_a_one_line_error(official: Path) -> None:
    (official / "utd_mhad" / "Depth").unlink()
    fast = mmrobust.load_dataset(
        "utd_mhad", data_dir=str(official), modalities=FAST, val_subjects=(3,), use_cache=False
    )
    assert len(fast) == 6  # the other modalities still load
    with pytest.raises(MMRobustError, match=r"utd_mhad/Depth not found: the official UTD-MHAD layout has") as e:
        mmrobust.load_dataset("utd_mhad", data_dir=str(official), val_subjects=(3,), use_cache=False)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("modality", ["inertial", "depth"])
def test_a_truncated_mat_file_is_a_one_line_error_naming_it(official: Path, modality: str) -> None:
    folder = official / "utd_mhad" / mat.FOLDERS[modality]
    copy = folder.with_name(folder.name + "_copy")
    shutil.copytree(folder.resolve(), copy)
    folder.unlink()
    copy.rename(folder)
    victim = folder / f"a2_s2_t1_{modality}.mat"
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    with pytest.raises(MMRobustError, match=rf"cannot read .*a2_s2_t1_{modality}\.mat: .*re-download") as e:
        mmrobust.load_dataset(
            "utd_mhad", data_dir=str(official), modalities=(modality,), val_subjects=(3,), use_cache=False
        )
    assert "\n" not in str(e.value)
