"""`spsw_har`: streams, windows, the subject-independent split, standardisation, time
alignment of the two devices, the cache, and one-line errors for bad files."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import mmrobust
from mmrobust import MMRobustError
from mmrobust.data import spsw_har
from mmrobust.data.sequences import majority, subject_splits, window_starts

CLASSES = ("SEATED", "STANDING_UP", "WALKING", "TURNING", "SITTING_DOWN")
# Samples per label in PROVENANCE.md (phone, ~102.5 Hz median rate).
PROVENANCE_SP_SAMPLES = (32_764, 27_303, 115_069, 52_209, 31_868)


@pytest.fixture(scope="module")
def data(shared_data: Path) -> mmrobust.MultimodalData:
    return mmrobust.load_dataset("spsw_har", data_dir=str(shared_data))


# --- the real dataset ---------------------------------------------------------------------------
def test_four_sensor_streams_of_two_second_windows(data: mmrobust.MultimodalData) -> None:
    assert [(m.name, m.kind, m.shape) for m in data.spec.modalities] == [
        (name, "conv1d", (3, 100)) for name in ("sp_acc", "sp_gyro", "sw_acc", "sw_gyro")
    ]
    assert data.spec.class_names == CLASSES and data.present.all()
    assert all(x.dtype == torch.float32 for x in data.inputs.values())


def test_window_and_class_counts(data: mmrobust.MultimodalData) -> None:
    counts = torch.bincount(data.target, minlength=5).tolist()
    assert counts == [81, 261, 1161, 461, 222]  # 2,186 windows; pinned so a recipe change is noticed
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 1441, "val": 285, "test": 460}
    assert len(torch.cat(list(data.splits.values())).unique()) == len(data)  # disjoint and complete


def test_aligned_grid_keeps_the_time_share_of_every_activity(shared_data: Path) -> None:
    """At 50 Hz, each label fills about 50/102.5 as many steps as the phone has samples."""
    _, raw = spsw_har._read(shared_data)
    values, labels, steps = spsw_har._align(raw, 20.0)
    assert len(steps) == 223 and (steps >= 8.5 * 50).all() and steps.sum() == len(values) == len(labels)
    grid = np.bincount(labels, minlength=5)
    expected = np.array(PROVENANCE_SP_SAMPLES) * 50 / 102.5
    assert np.allclose(grid, expected, rtol=0.06), (grid, expected)


def test_device_streams_are_the_sensor_streams_side_by_side(shared_data: Path, data: mmrobust.MultimodalData) -> None:
    dev = mmrobust.load_dataset("spsw_har", data_dir=str(shared_data), streams="device")
    assert [(m.name, m.shape) for m in dev.spec.modalities] == [("sp", (6, 100)), ("sw", (6, 100))]
    for d in ("sp", "sw"):
        assert torch.allclose(dev.inputs[d], torch.cat([data.inputs[f"{d}_acc"], data.inputs[f"{d}_gyro"]], 1))
    assert torch.equal(dev.target, data.target)


def test_standardised_with_train_statistics_only(shared_data: Path, data: mmrobust.MultimodalData) -> None:
    train = data.split("train")
    for m in data.modalities:
        x = train.inputs[m]
        assert torch.allclose(x.mean(dim=(0, 2)), torch.zeros(3), atol=1e-4), m
        assert torch.allclose(x.std(dim=(0, 2)), torch.ones(3), atol=1e-4), m
    # Other val subjects mean another train set, other statistics, and so other values for the
    # very same test windows: the statistics follow the train split alone.
    other = mmrobust.load_dataset("spsw_har", data_dir=str(shared_data), val_subjects=(1, 2))
    test = data.splits["test"]
    assert torch.equal(other.splits["test"], test)
    assert all((other.inputs[m][test] - data.inputs[m][test]).abs().max() > 0.01 for m in data.modalities)


def test_second_load_comes_from_the_cache(
    shared_data: Path, data: mmrobust.MultimodalData, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_rebuild(*args: object) -> None:
        raise AssertionError("_build ran although the dataset is cached")

    monkeypatch.setattr(spsw_har, "_build", no_rebuild)
    start = time.perf_counter()
    again = mmrobust.load_dataset("spsw_har", data_dir=str(shared_data))
    assert time.perf_counter() - start < 5.0
    assert torch.equal(again.inputs["sw_gyro"], data.inputs["sw_gyro"]) and torch.equal(again.target, data.target)


# --- generated recordings: alignment and subject independence ----------------------------------
def _write_recordings(root: Path, n_subjects: int = 6, per_subject: int = 2, seed: int = 0) -> Path:
    """Fake executions of 10-12 s: both devices sample the same signals of absolute time, the
    phone starting later, with a jittery clock and bursts sharing one timestamp; channel 1
    holds the subject id so the test can tell subjects apart after loading."""
    rng = np.random.default_rng(seed)
    arrays: dict[str, list[np.ndarray]] = {}
    subject = np.repeat(np.arange(1, n_subjects + 1), per_subject).astype(np.int16)
    for i, sid in enumerate(subject):
        t0 = 1_700_000_000_000 + i * 60_000
        duration = int(rng.integers(10_000, 12_000))
        for dev, start, step in (("sp", 300, rng.integers(0, 20, 2000)), ("sw", 0, np.full(2000, 10))):
            t = t0 + start + np.cumsum(step)
            if dev == "sp":
                t[1::7] = t[0::7][: len(t[1::7])]  # a burst: two samples with one timestamp
            t = t[t < t0 + duration]
            s = (t - t0) / 1000.0
            x = np.stack([np.sin(s), np.full_like(s, sid), np.cos(0.7 * s), s % 3, np.sin(2 * s), -s], 1)
            label = np.searchsorted([2.0, 3.5, 6.0, 7.5, 9.0], s) % 5  # five activities in turn
            for key, value in (("data", x.astype(np.float32)), ("timestamp_ms", t), ("label", label.astype(np.uint8))):
                arrays.setdefault(f"{dev}_{key}", []).append(value)
    packed: dict[str, np.ndarray] = {k: np.concatenate(v) for k, v in arrays.items()}
    for dev in ("sp", "sw"):
        lengths = np.array([len(v) for v in arrays[f"{dev}_label"]])
        packed[f"{dev}_lengths"], packed[f"{dev}_offsets"] = lengths, np.cumsum(lengths) - lengths
    packed["subject"], packed["label_names"] = subject, np.array(CLASSES)
    packed["execution_id"] = np.array([f"s{s:02d}_{i:02d}" for i, s in enumerate(subject)])
    (root / "sp_sw_har").mkdir(parents=True)
    np.savez_compressed(root / spsw_har._FILE, **packed)
    return root


def test_devices_are_aligned_by_time_not_by_sample_index(tmp_path: Path) -> None:
    root = _write_recordings(tmp_path)
    d = mmrobust.load_dataset(
        "spsw_har", data_dir=str(root), streams="device", test_subjects=(1, 2), val_subjects=(3,), use_cache=False
    )
    sp, sw = d.inputs["sp"], d.inputs["sw"]
    for channel in (0, 2, 4, 5):  # the same function of time on both devices
        assert torch.allclose(sp[:, channel], sw[:, channel], atol=0.02), channel
    assert sp.shape[1:] == (6, 100) and len(d) >= 12 * 8


def test_no_subject_is_in_two_splits(tmp_path: Path) -> None:
    root = _write_recordings(tmp_path)
    d = mmrobust.load_dataset("spsw_har", data_dir=str(root), test_subjects=(2, 5), val_subjects=(3,), use_cache=False)
    subject_code = d.inputs["sp_acc"][:, 1, 0]  # channel 1 is the subject id, standardised
    ranks = torch.unique(subject_code, return_inverse=True)[1] + 1  # 1..6, in subject order
    assert {k: sorted(set(ranks[v].tolist())) for k, v in d.splits.items()} == {
        "train": [1, 4, 6],
        "val": [3],
        "test": [2, 5],
    }


def test_split_helpers() -> None:
    splits = subject_splits(np.array([1, 1, 2, 3, 3, 4]), [4], [2], "toy")
    assert {k: v.tolist() for k, v in splits.items()} == {"train": [0, 1, 3, 4], "val": [2], "test": [5]}
    with pytest.raises(MMRobustError, match=r"unknown subjects \[9\]"):
        subject_splits(np.array([1, 2, 3]), [9], [2], "toy")
    start, seq = window_starts(np.array([5, 2, 7]), window=3, step=2)
    assert start.tolist() == [0, 2, 0, 2, 4] and seq.tolist() == [0, 0, 2, 2, 2]
    assert majority(np.array([[0, 2, 2], [1, 0, 1], [3, 0, 1]]), 4).tolist() == [2, 1, 0]


# --- errors -------------------------------------------------------------------------------------
def test_missing_folder_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(MMRobustError, match=r"dataset .spsw_har. not found: expected sp_sw_har/DATA/sXX/") as e:
        mmrobust.load_dataset("spsw_har", data_dir=str(tmp_path))
    assert "\n" not in str(e.value)


def test_truncated_file_is_a_one_line_error_naming_it(shared_data: Path, tmp_path: Path) -> None:
    (tmp_path / "sp_sw_har").mkdir()
    raw = (shared_data / spsw_har._FILE).read_bytes()
    (tmp_path / spsw_har._FILE).write_bytes(raw[: len(raw) // 3])
    with pytest.raises(MMRobustError, match=r"cannot read .*sp_sw_har\.npz") as e:
        mmrobust.load_dataset("spsw_har", data_dir=str(tmp_path), use_cache=False)
    assert "\n" not in str(e.value)


def test_wrong_shape_and_backwards_time_are_one_line_errors(tmp_path: Path) -> None:
    root = _write_recordings(tmp_path)
    path = root / spsw_har._FILE
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    np.savez(path, **{**arrays, "sw_data": arrays["sw_data"][:, :5]})
    with pytest.raises(MMRobustError, match=r"sp_sw_har.npz: sw_data must be \(N, 6\)"):
        mmrobust.load_dataset("spsw_har", data_dir=str(root), use_cache=False)
    time_ms = arrays["sp_timestamp_ms"].copy()
    time_ms[10] = time_ms[9] - 5
    np.savez(path, **{**arrays, "sp_timestamp_ms": time_ms})
    with pytest.raises(MMRobustError, match="sp_timestamp_ms goes back in time at row 10"):
        mmrobust.load_dataset("spsw_har", data_dir=str(root), use_cache=False)


def test_bad_options_are_one_line_errors(shared_data: Path) -> None:
    with pytest.raises(MMRobustError, match="streams must be"):
        mmrobust.load_dataset("spsw_har", data_dir=str(shared_data), streams="phone")
    with pytest.raises(MMRobustError, match=r"\[3\] are in both"):
        mmrobust.load_dataset("spsw_har", data_dir=str(shared_data), val_subjects=(3,))


# --- the official CSV layout --------------------------------------------------------------------
@pytest.fixture
def official(shared_data: Path, tmp_path: Path) -> Path:
    """A data dir holding the release sample (subjects 1-3, executions 1-2) in the official layout."""
    sample = shared_data / "sp_sw_har" / "official_sample" / "DATA"
    if not sample.is_dir():
        pytest.skip(f"no official sample at {sample}")
    root = tmp_path / "official"
    (root / "sp_sw_har").mkdir(parents=True)
    (root / spsw_har._DATA).symlink_to(sample)
    return root


@pytest.fixture
def packed_sample(shared_data: Path, official: Path, tmp_path: Path) -> Path:
    """A data dir holding the shared packed file restricted to the sample's executions."""
    with np.load(shared_data / spsw_har._FILE, allow_pickle=False) as f:
        full = {k: f[k] for k in f.files}
    ids = sorted(p.name[:6] for p in (official / spsw_har._DATA).glob("s*/*_sp.csv"))
    keep = np.flatnonzero(np.isin(full["execution_id"], ids))
    part = {"execution_id": full["execution_id"][keep], "subject": full["subject"][keep]}
    part["label_names"] = full["label_names"]
    for d in ("sp", "sw"):
        offsets, lengths = full[f"{d}_offsets"][keep], full[f"{d}_lengths"][keep]
        rows = np.concatenate([np.arange(o, o + n) for o, n in zip(offsets, lengths, strict=True)])
        for key in ("data", "timestamp_ms", "label"):
            part[f"{d}_{key}"] = full[f"{d}_{key}"][rows]
        part[f"{d}_lengths"], part[f"{d}_offsets"] = lengths, np.cumsum(lengths) - lengths
    root = tmp_path / "packed"
    (root / "sp_sw_har").mkdir(parents=True)
    np.savez(root / spsw_har._FILE, **part)
    return root


def test_official_csvs_give_the_packed_arrays_exactly(official: Path, packed_sample: Path) -> None:
    (source, raw), (_, packed) = spsw_har._read(official), spsw_har._read(packed_sample)
    assert source == official / spsw_har._DATA
    assert raw["execution_id"].tolist() == ["s01_01", "s01_02", "s02_01", "s02_02", "s03_01", "s03_02"]
    for key, value in packed.items():
        assert raw[key].dtype == value.dtype and np.array_equal(raw[key], value), key


def test_both_layouts_load_to_identical_tensors(official: Path, packed_sample: Path) -> None:
    options = {"streams": "device", "test_subjects": (3,), "val_subjects": (2,), "use_cache": False}
    a = mmrobust.load_dataset("spsw_har", data_dir=str(official), **options)
    b = mmrobust.load_dataset("spsw_har", data_dir=str(packed_sample), **options)
    assert len(a) > 50 and a.modalities == b.modalities
    assert all(torch.equal(a.inputs[m], b.inputs[m]) for m in a.modalities)
    assert torch.equal(a.target, b.target) and all(torch.equal(a.splits[k], b.splits[k]) for k in a.splits)


def _copy_sample(official: Path, tmp_path: Path) -> Path:
    root = tmp_path / "copy"
    (root / "sp_sw_har").mkdir(parents=True)
    shutil.copytree(official / spsw_har._DATA, root / spsw_har._DATA)
    return root


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("y_gyro,", "", 1), r"s01_01_sp\.csv: missing column\(s\) y_gyro; the release's CSVs"),
        (lambda t: t.replace("WALKING", "RUNNING", 1), r"s01_01_sp\.csv: unknown label 'RUNNING'"),
        (lambda t: t[: len(t) // 2] + "oops\n", r"s01_01_sp\.csv: non-numeric or empty sensor values"),
    ],
    ids=["missing-column", "unknown-label", "bad-row"],
)
def test_bad_csv_is_a_one_line_error_naming_it(official: Path, tmp_path: Path, edit, message: str) -> None:
    root = _copy_sample(official, tmp_path)
    csv = root / spsw_har._DATA / "s01" / "s01_01_sp.csv"
    csv.write_text(edit(csv.read_text()))
    with pytest.raises(MMRobustError, match=message) as e:
        mmrobust.load_dataset("spsw_har", data_dir=str(root), use_cache=False)
    assert "\n" not in str(e.value)


def test_an_execution_without_its_watch_file_is_named(official: Path, tmp_path: Path) -> None:
    root = _copy_sample(official, tmp_path)
    (root / spsw_har._DATA / "s02" / "s02_02_sw.csv").unlink()
    with pytest.raises(MMRobustError, match=r"s02_02_sp\.csv: the sw file of execution s02_02 is missing"):
        mmrobust.load_dataset("spsw_har", data_dir=str(root), use_cache=False)
