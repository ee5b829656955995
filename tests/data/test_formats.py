"""Readers of published benchmarks' own formats: PAMAP2 `.dat`, WESAD py2 pickles, Sleep-EDF
EDF pairs, MMSA pickles, and the restricted unpickler. Every fixture file is generated here,
small, in the release's exact layout."""

from __future__ import annotations

import io
import itertools
import os
import pickle
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import mmrobust
from mmrobust.data.formats import mmsa, pamap2, sleep_edf, wesad
from mmrobust.data.formats._windows import cut, fill_gaps, label_windows, resample, resample_labels
from mmrobust.data.formats.safe_pickle import load_pickle


def split_subjects(subjects: np.ndarray, data: mmrobust.MultimodalData) -> dict[str, set[int]]:
    return {name: set(subjects[idx.numpy()].tolist()) for name, idx in data.splits.items()}


def assert_partition(data: mmrobust.MultimodalData) -> None:
    parts = [set(data.splits[s].tolist()) for s in ("train", "val", "test")]
    assert all(parts) and sum(map(len, parts)) == len(data)
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])


def assert_train_standardised(data: mmrobust.MultimodalData) -> None:
    """Train statistics are 0/1 per channel; val+test, not used for them, are not exactly so."""
    train = data.splits["train"]
    for spec in data.spec.modalities:
        j = data.modalities.index(spec.name)
        x = data.inputs[spec.name][train][data.present[train, j]]
        dims = (0, 2) if spec.kind == "conv1d" else (0, 1)
        assert torch.allclose(x.mean(dim=dims), torch.zeros(1), atol=1e-3), spec.name
        assert torch.allclose(x.std(dim=dims), torch.ones(1), atol=1e-2), spec.name


def one_line_error(excinfo: pytest.ExceptionInfo[mmrobust.MMRobustError], *needles: str) -> None:
    msg = str(excinfo.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, msg


# --- shared signal helpers ------------------------------------------------------------------


def test_resample_down_is_exact_bin_mean_and_up_is_linear() -> None:
    ramp = np.arange(12, dtype=np.float64)[:, None]
    np.testing.assert_allclose(resample(ramp, 3, 1)[:, 0], [1, 4, 7, 10])
    x = np.random.default_rng(0).normal(size=(7000, 2))
    down = resample(x, 700, 32)  # fractional ratio 21.875
    assert down.shape == (320, 2)
    edges = np.floor(np.arange(321) * 21.875).astype(int)  # bins of 21 or 22 input rows
    np.testing.assert_allclose(down, [x[a:b].mean(axis=0) for a, b in itertools.pairwise(edges)], rtol=1e-5)
    np.testing.assert_allclose(resample(np.full((40, 1), 5.0), 4, 32), 5.0)  # up: (320, 1)
    up = resample(np.array([[0.0], [8.0]]), 1, 4)
    np.testing.assert_allclose(up[:, 0], [0, 0, 1, 3, 5, 7, 8, 8])  # at bin centres, held at the ends


def test_windows_never_straddle_labels_and_gaps_are_interpolated() -> None:
    labels = np.array([0] * 10 + [1] * 5 + [-1] * 3 + [2] * 12)
    starts = label_windows(labels, window=4, step=3)
    assert (labels[starts[:, None] + np.arange(4)] == labels[starts][:, None]).all()
    assert set(labels[starts].tolist()) == {0, 1, 2}
    np.testing.assert_array_equal(resample_labels(np.array([0, 0, 1, 1, 1, 1, 2, 1, 1]), 3, 1, 3), [-1, 1, -1])
    x = np.arange(20.0).reshape(10, 2)
    assert cut(x, np.array([0, 5]), 3).shape == (2, 2, 3)
    holes = np.array([[0.0, np.nan], [np.nan, np.nan], [2.0, np.nan]])
    filled = fill_gaps(holes)
    np.testing.assert_allclose(filled[:, 0], [0, 1, 2])
    assert np.isnan(filled[:, 1]).all()  # nothing to interpolate from: the caller marks it absent


# --- the restricted unpickler ---------------------------------------------------------------


class _RunsShell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"label": np.zeros(3), "x": _RunsShell(marker)}, protocol=2))
    with pytest.raises(mmrobust.MMRobustError) as e:
        load_pickle(path)
    one_line_error(e, str(path), f"'{os.system.__module__}.system'", "trust_pickle=True")
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_arrays_and_containers_roundtrip(tmp_path: Path, protocol: int) -> None:
    content = {
        "x": np.arange(6, dtype=np.float32).reshape(2, 3),
        "ids": np.array(["a$_$1", "b$_$2"], dtype=object),
        "n": np.int64(7),
        "s": {1, 2},
        "t": (1.5, "u", None),
    }
    path = tmp_path / "ok.pkl"
    path.write_bytes(pickle.dumps(content, protocol=protocol))
    back = load_pickle(path)
    np.testing.assert_array_equal(back["x"], content["x"])
    assert back["ids"].tolist() == ["a$_$1", "b$_$2"] and back["n"] == 7 and back["s"] == {1, 2}
    assert back["t"] == (1.5, "u", None)


def test_trust_pickle_admits_other_classes_and_corrupt_files_are_one_line(tmp_path: Path) -> None:
    import datetime

    path = tmp_path / "date.pkl"
    path.write_bytes(pickle.dumps({"when": datetime.date(2018, 10, 16)}))
    with pytest.raises(mmrobust.MMRobustError) as e:
        load_pickle(path)
    one_line_error(e, "'datetime.date'")
    assert load_pickle(path, trust=True)["when"].year == 2018
    path.write_bytes(pickle.dumps({"x": np.zeros(100)})[:60])
    with pytest.raises(mmrobust.MMRobustError) as e:
        load_pickle(path)
    one_line_error(e, str(path), "truncated or corrupt")


# --- PAMAP2 ---------------------------------------------------------------------------------

_PROTOCOL_IDS = sorted(pamap2.ACTIVITIES)


def _pamap2_subject(subject: int, rng: np.random.Generator, hand_lost: bool) -> np.ndarray:
    """Transient (0) between four 8 s bouts; chest acc x = activity id (+ noise); sparse HR."""
    k = subject - 101
    activities = [_PROTOCOL_IDS[(4 * k + j) % 12] for j in range(4)]
    blocks = []
    for j, activity in enumerate(activities):
        blocks += [(0, 150), (activity, 800)]
        if j == 1:
            blocks.append((9, 120))  # an optional activity: dropped like the transient
    labels = np.concatenate([np.full(n, a) for a, n in blocks])
    t = len(labels)
    x = np.full((t, 54), np.nan)
    x[:, 0] = 5.0 + np.arange(t) / 100
    x[:, 1] = labels
    x[::11, 2] = 80 + labels[::11]  # heart rate ~9 Hz, NaN between readings
    for base in (3, 20, 37):
        x[:, base] = 31.0 + rng.normal(0, 0.1, t)  # temperature
        x[:, base + 1 : base + 13] = rng.normal(0, 1, (t, 12))
        x[:, base + 13 : base + 17] = (1, 0, 0, 0)  # orientation (invalid in the release)
    x[:, 21] = labels + rng.normal(0, 0.05, t)  # chest acc16 x
    dropped = rng.random(t) < 0.01  # lost wireless packets: whole IMU rows NaN
    x[np.ix_(dropped, range(3, 20))] = np.nan
    if hand_lost:  # the hand IMU is off for the whole first bout
        x[150:950, 3:20] = np.nan
    return x


@pytest.fixture(scope="module")
def pamap2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pamap2")
    (root / "pamap2" / "Protocol").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for subject in pamap2.SUBJECTS:
        buf = io.StringIO()
        np.savetxt(buf, _pamap2_subject(subject, rng, hand_lost=subject == 102), fmt="%.6g")
        (root / f"pamap2/Protocol/subject{subject}.dat").write_text(buf.getvalue().replace("nan", "NaN"))
    return root


@pytest.fixture(scope="module")
def pamap2_data(pamap2_dir: Path) -> mmrobust.MultimodalData:
    return mmrobust.load_dataset("pamap2", data_dir=str(pamap2_dir))


def test_pamap2_modalities_windows_and_labels(pamap2_data: mmrobust.MultimodalData) -> None:
    d = pamap2_data
    assert [(m.name, m.kind, m.shape) for m in d.spec.modalities] == [
        ("hand", "conv1d", (9, 171)),
        ("chest", "conv1d", (9, 171)),
        ("ankle", "conv1d", (9, 171)),
        ("heart_rate", "conv1d", (1, 171)),
    ]
    assert d.spec.num_classes == 12 and d.spec.class_names[-1] == "rope_jumping"
    assert len(d) == 9 * 4 * 2  # two 5.12 s windows (50% overlap) per 8 s bout; 0 and 9 dropped
    assert torch.bincount(d.target, minlength=12).tolist() == [6] * 12
    # chest acc x carries the activity id: windows are aligned with their labels
    level = d.inputs["chest"][:, 0].mean(dim=1)
    means = torch.stack([level[d.target == c].mean() for c in range(12)])
    assert (means.diff() > 0).all()
    assert torch.isfinite(d.inputs["heart_rate"]).all()


def test_pamap2_split_by_subject_and_natural_missingness(pamap2_data: mmrobust.MultimodalData) -> None:
    d = pamap2_data
    subjects = np.repeat(np.array(pamap2.SUBJECTS), 8)  # windows are in subject order
    assert split_subjects(subjects, d) == {
        "train": {101, 102, 103, 104, 107, 108, 109},
        "val": {105},
        "test": {106},
    }
    assert_partition(d)
    assert_train_standardised(d)
    hand_absent = (~d.present[:, 0]).nonzero().flatten().tolist()
    assert hand_absent == [8, 9]  # subject 102's first bout; sparse packet loss is interpolated
    assert d.present[:, 1:].all()


def test_pamap2_options_and_cache(
    pamap2_dir: Path, pamap2_data: mmrobust.MultimodalData, monkeypatch: pytest.MonkeyPatch
) -> None:
    denser = mmrobust.load_dataset("pamap2", data_dir=str(pamap2_dir), overlap=0.8, test_subjects=(109,))
    assert len(denser) == 9 * 4 * 3
    monkeypatch.setattr(pamap2, "_build", lambda *a: pytest.fail("rebuilt instead of read from the cache"))
    again = mmrobust.load_dataset("pamap2", data_dir=str(pamap2_dir))
    assert again.inputs["hand"].equal(pamap2_data.inputs["hand"])


def test_pamap2_missing_and_corrupt_files(pamap2_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(mmrobust.MMRobustError) as e:
        mmrobust.load_dataset("pamap2", data_dir=str(tmp_path))
    one_line_error(e, "pamap2/Protocol/subject101.dat", "archive.ics.uci.edu")
    path = pamap2_dir / "pamap2/Protocol/subject103.dat"
    text = path.read_text()
    bad = tmp_path / "bad.dat"
    cases = {
        "truncated": text[:-3],  # the last line cut short
        "columns": "\n".join(" ".join(line.split()[:53]) for line in text.splitlines()) + "\n",
        "PAMAP2": text.replace("NaN", "abc", 1),
    }
    for needle, content in cases.items():
        bad.write_text(content)
        with pytest.raises(mmrobust.MMRobustError) as e:
            pamap2.read_dat(bad)
        one_line_error(e, str(bad), needle)


# --- WESAD ----------------------------------------------------------------------------------


_PY2_GLOBALS = {np.ndarray: b"numpy\nndarray\n", np.dtype: b"numpy\ndtype\n"}


class _Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes what Python 2 wrote for WESAD: py2 `str` (BINSTRING) for text and array bytes,
    numpy globals under their numpy 1.x names."""

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def _save_py2_str(self, obj: bytes | str) -> None:
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str
    dispatch[str] = _save_py2_str

    def save_global(self, obj: Any, name: str | None = None) -> None:
        module_name = _PY2_GLOBALS.get(obj, b"numpy.core.multiarray\n" + obj.__name__.encode() + b"\n")
        self.write(pickle.GLOBAL + module_name)
        self.memoize(obj)


def _py2_pickle(obj: Any) -> bytes:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


_WESAD_CONDITIONS = ((0, 4), (1, 9), (2, 9), (6, 4), (3, 9), (4, 9))  # (label, seconds)


def _wesad_record(subject: int, rng: np.random.Generator) -> dict[str, Any]:
    """chest Temp and wrist EDA carry the label; every signal at its native rate."""
    seconds = sum(s for _, s in _WESAD_CONDITIONS)

    def by_label(rate: float) -> np.ndarray:
        return np.concatenate([np.full(int(s * rate), float(lab)) for lab, s in _WESAD_CONDITIONS])[:, None]

    n = seconds * 700
    chest = {key: rng.normal(size=(n, 3 if key == "ACC" else 1)) for key in ("ACC", "ECG", "EMG", "EDA", "Resp")}
    chest["Temp"] = 33 + by_label(700) + rng.normal(0, 0.01, (n, 1))
    wrist = {
        "ACC": rng.normal(size=(seconds * 32, 3)),
        "BVP": rng.normal(size=(seconds * 64, 1)),
        "EDA": by_label(4),
        "TEMP": rng.normal(size=(seconds * 4, 1)),
    }
    label = by_label(700)[:, 0].astype(np.int32)
    return {"signal": {"chest": chest, "wrist": wrist}, "label": label, "subject": f"S{subject}"}


@pytest.fixture(scope="module")
def wesad_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("wesad")
    rng = np.random.default_rng(1)
    for s in wesad.SUBJECTS:
        (root / f"wesad/S{s}").mkdir(parents=True)
        (root / f"wesad/S{s}/S{s}.pkl").write_bytes(_py2_pickle(_wesad_record(s, rng)))
    return root


def test_py2_pickle_fixture_is_what_python2_wrote(wesad_dir: Path) -> None:
    raw = (wesad_dir / "wesad/S2/S2.pkl").read_bytes()
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in raw and b"_codecs" not in raw
    assert wesad.read_pkl(wesad_dir / "wesad/S2/S2.pkl")["subject"] == "S2"


def test_wesad_devices_windows_and_subject_split(wesad_dir: Path) -> None:
    d = mmrobust.load_dataset("wesad", data_dir=str(wesad_dir), window_seconds=4, step_seconds=2)
    assert [(m.name, m.kind, m.shape) for m in d.spec.modalities] == [
        ("chest", "conv1d", (8, 128)),
        ("wrist", "conv1d", (6, 128)),
    ]
    assert d.spec.class_names == ("baseline", "stress", "amusement", "meditation")
    assert torch.bincount(d.target).tolist() == [15 * 3] * 4  # labels 0 and 6 dropped
    for device, channel in (("chest", 6), ("wrist", 4)):  # Temp (700 Hz), EDA (4 Hz) carry the label
        level = d.inputs[device][:, channel].mean(dim=1)
        assert (torch.stack([level[d.target == c].mean() for c in range(4)]).diff() > 0).all()
    subjects = np.repeat(np.array(wesad.SUBJECTS), 12)
    groups = split_subjects(subjects, d)
    assert groups["test"] == {15, 16, 17} and len(groups["val"]) == 2
    assert not groups["train"] & groups["val"]
    assert_partition(d)
    assert_train_standardised(d)


def test_wesad_malicious_pickle_is_refused_without_running(wesad_dir: Path, tmp_path: Path) -> None:
    import shutil

    shutil.copytree(wesad_dir / "wesad", tmp_path / "wesad")
    marker = tmp_path / "pwned"
    record = {"signal": {}, "label": np.zeros(3), "subject": _RunsShell(marker)}
    (tmp_path / "wesad/S2/S2.pkl").write_bytes(pickle.dumps(record, protocol=2))
    with pytest.raises(mmrobust.MMRobustError) as e:
        mmrobust.load_dataset("wesad", data_dir=str(tmp_path), use_cache=False)
    one_line_error(e, "S2.pkl", "refused", "trust_pickle=True")
    assert not marker.exists()
    (tmp_path / "wesad/S3/S3.pkl").write_bytes((wesad_dir / "wesad/S3/S3.pkl").read_bytes()[:5000])
    with pytest.raises(mmrobust.MMRobustError) as e:
        wesad.read_pkl(tmp_path / "wesad/S3/S3.pkl")
    one_line_error(e, "S3.pkl", "truncated")
    with pytest.raises(mmrobust.MMRobustError) as e:
        mmrobust.load_dataset("wesad", data_dir=str(tmp_path / "nowhere"))
    one_line_error(e, "wesad/S2/S2.pkl")


# --- Sleep-EDF ------------------------------------------------------------------------------

_PSG_CHANNELS = (  # as in the sleep-cassette PSG files: (label, Hz)
    ("EEG Fpz-Cz", 100),
    ("EEG Pz-Oz", 100),
    ("EOG horizontal", 100),
    ("Resp oro-nasal", 1),
    ("EMG submental", 1),
    ("Temp rectal", 1),
    ("Event marker", 1),
)
# (annotation, epochs): 40 min wake, one cycle of sleep, 35 min wake, unscored tail
_HYPNOGRAM = (
    ("Sleep stage W", 80),
    ("Sleep stage 1", 2),
    ("Sleep stage 2", 4),
    ("Sleep stage 3", 2),
    ("Sleep stage 4", 2),
    ("Movement time", 1),
    ("Sleep stage R", 3),
    ("Sleep stage W", 70),
    ("Sleep stage ?", 20),
)
_RECORDINGS = ("SC4001E0/EC", "SC4011E0/EH", "SC4021E0/EH", "SC4031E0/EC", "SC4041E0/EC", "SC4042E0/EC")


def _write_night(folder: Path, name: str, rng: np.random.Generator, lost_epochs: int = 0) -> None:
    """A PSG + Hypnogram pair; the PSG stops `lost_epochs` early (the scoring runs past it)."""
    pyedflib = pytest.importorskip("pyedflib")
    psg, scorer = name.split("/")
    stage_of = {"Sleep stage W": 0, "Sleep stage 1": 1, "Sleep stage 2": 2, "Sleep stage 3": 3, "Sleep stage 4": 3}
    stage_of |= {"Sleep stage R": 4}
    epochs = np.concatenate([np.full(n, stage_of.get(a, -5)) for a, n in _HYPNOGRAM])
    epochs = epochs[: len(epochs) - lost_epochs]
    seconds = len(epochs) * 30
    writer = pyedflib.EdfWriter(str(folder / f"{psg}-PSG.edf"), len(_PSG_CHANNELS), pyedflib.FILETYPE_EDF)
    writer.setSignalHeaders(
        [
            {"label": label, "dimension": "uV", "sample_frequency": hz, "physical_max": 200.0}
            | {"physical_min": -200.0, "digital_max": 32767, "digital_min": -32768}
            for label, hz in _PSG_CHANNELS
        ]
    )
    signals = []
    for label, hz in _PSG_CHANNELS:
        x = rng.normal(0, 1, seconds * hz)
        if label == "EEG Fpz-Cz":  # the scored stage, epoch by epoch
            x += 10.0 * np.repeat(epochs, 30 * hz)
        signals.append(x)
    writer.writeSamples(signals)
    writer.close()
    hyp = pyedflib.EdfWriter(str(folder / f"{psg[:7]}{scorer[1]}-Hypnogram.edf"), 0, pyedflib.FILETYPE_EDFPLUS)
    onset = 0
    for text, n in _HYPNOGRAM:
        hyp.writeAnnotation(onset, n * 30, text)
        onset += n * 30
    hyp.close()


@pytest.fixture(scope="module")
def sleep_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("pyedflib")
    root = tmp_path_factory.mktemp("sleep")
    folder = root / "sleep_edf/sleep-cassette"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(2)
    for name in _RECORDINGS:
        _write_night(folder, name, rng, lost_epochs=60 if name.startswith("SC4042") else 0)
    return root


def test_sleep_edf_epochs_stages_and_split(sleep_dir: Path) -> None:
    d = mmrobust.load_dataset("sleep_edf", data_dir=str(sleep_dir), subjects=range(5))
    assert [(m.name, m.kind, m.shape) for m in d.spec.modalities] == [
        ("eeg", "conv1d", (2, 3000)),
        ("eog", "conv1d", (1, 3000)),
        ("emg", "conv1d", (1, 30)),
    ]
    # per night: 30 min (60 epochs) of wake kept on each side; 3+4 merged; movement and '?' dropped
    # SC4042's PSG stops 60 epochs early: only 30 of its 60 wake epochs after sleep are recorded
    assert torch.bincount(d.target).tolist() == [6 * 120 - 30, 6 * 2, 6 * 4, 6 * 4, 6 * 3]
    assert d.spec.class_names == ("W", "N1", "N2", "N3", "REM")
    fpz = d.inputs["eeg"][:, 0]
    assert (torch.stack([fpz[d.target == c].mean() for c in range(5)]).diff() > 0).all()
    assert fpz.std(dim=1).max() < 0.5  # each epoch lies inside one scored stage (aligned to 30 s)
    subjects = np.repeat([0, 1, 2, 3, 4, 4], [133] * 5 + [103])  # nights in file order
    groups = split_subjects(subjects, d)
    assert groups["test"] == {4} and len(groups["val"]) == 1 and not groups["train"] & groups["val"]
    assert_partition(d)
    assert_train_standardised(d)


def test_sleep_edf_options(sleep_dir: Path) -> None:
    d = mmrobust.load_dataset(
        "sleep_edf",
        data_dir=str(sleep_dir),
        subjects=(0, 1, 2),
        test_subjects=(2,),
        sample_rate=50,
        wake_margin_minutes=None,
    )
    assert d.spec.modalities[0].shape == (2, 1500) and d.spec.modalities[2].shape == (1, 30)
    assert int((d.target == 0).sum()) == 3 * 150  # all scored wake kept
    assert len(d.splits["test"]) == 150 + 2 + 4 + 4 + 3
    for test_subjects, needle in ((None, "pass test_subjects="), ((7,), "unknown subjects [7]")):
        with pytest.raises(mmrobust.MMRobustError) as e:  # no subject id % 5 == 4 among 0, 1, 2
            mmrobust.load_dataset("sleep_edf", data_dir=str(sleep_dir), subjects=(0, 1, 2), test_subjects=test_subjects)
        one_line_error(e, needle)


def test_sleep_edf_missing_corrupt_and_no_library(
    sleep_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(mmrobust.MMRobustError) as e:
        mmrobust.load_dataset("sleep_edf", data_dir=str(tmp_path))
    one_line_error(e, "sleep_edf/sleep-cassette/SC4001E0-PSG.edf", "physionet.org")
    with pytest.raises(mmrobust.MMRobustError) as e:
        mmrobust.load_dataset("sleep_edf", data_dir=str(sleep_dir), subjects=(5,))
    one_line_error(e, "no recording of subject 5")
    psg = sleep_dir / "sleep_edf/sleep-cassette/SC4001E0-PSG.edf"
    bad = tmp_path / psg.name
    bad.write_bytes(psg.read_bytes()[: psg.stat().st_size // 3])
    with pytest.raises(mmrobust.MMRobustError) as e:
        sleep_edf.read_epochs(bad, np.array([0.0, 30.0]), 100.0)
    one_line_error(e, str(bad), "not a readable EDF")
    monkeypatch.setitem(sys.modules, "pyedflib", None)  # as if not installed
    with pytest.raises(mmrobust.MMRobustError) as e:
        mmrobust.load_dataset("sleep_edf", data_dir=str(sleep_dir), subjects=(0,), use_cache=False)
    one_line_error(e, "pip install 'mmrobust[edf]'")


# --- MMSA -----------------------------------------------------------------------------------

_MMSA_SIZES = {"train": 40, "valid": 10, "test": 12}


def _mmsa_split(n: int, rng: np.random.Generator, text_key: str = "text") -> dict[str, Any]:
    """One split as MMSA's processed unaligned_50.pkl holds it (tiny feature sizes)."""
    labels = rng.uniform(-3, 3, n).round(1)
    audio = rng.normal(size=(n, 9, 5)).astype(np.float32)
    audio[0, 0, 0] = -np.inf  # COVAREP's -inf, as in the real MOSEI files
    split = {
        "raw_text": np.array([f"utterance {i}" for i in range(n)], dtype=object),
        "audio": audio,
        "vision": rng.normal(size=(n, 12, 20)).astype(np.float32),
        "id": np.array([f"vid{i // 4}$_${i % 4}" for i in range(n)], dtype=object),
        "text_bert": rng.integers(0, 30000, size=(n, 3, 8)).astype(np.float64),
        "annotations": np.array(["Positive" if y >= 0 else "Negative" for y in labels], dtype=object),
        "classification_labels": (labels >= 0).astype(np.float64),
        "regression_labels": labels,
        "audio_lengths": [9] * n,
        "vision_lengths": [12] * n,
    }
    if text_key == "text":
        split["text"] = rng.normal(size=(n, 8, 768)).astype(np.float32)
    return split


@pytest.fixture(scope="module")
def mmsa_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mmsa")
    folder = root / "mmsa/MOSI/Processed"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(3)
    content = {key: _mmsa_split(n, rng) for key, n in _MMSA_SIZES.items()}
    (folder / "unaligned_50.pkl").write_bytes(pickle.dumps(content, protocol=4))
    ids_only = {key: _mmsa_split(n, rng, text_key="text_bert") for key, n in _MMSA_SIZES.items()}
    (folder / "bert_ids_only.pkl").write_bytes(pickle.dumps(ids_only, protocol=4))
    return root


def test_mmsa_sequences_labels_and_official_splits(mmsa_dir: Path) -> None:
    d = mmrobust.load_dataset("mmsa", data_dir=str(mmsa_dir))
    assert [(m.name, m.kind, m.shape) for m in d.spec.modalities] == [
        ("text", "seq", (8, 768)),
        ("audio", "seq", (9, 5)),
        ("vision", "seq", (12, 20)),
    ]
    assert d.spec.task == "regression" and d.spec.num_classes == 1
    assert {k: len(v) for k, v in d.splits.items()} == {"train": 40, "val": 10, "test": 12}
    assert d.splits["val"].tolist() == list(range(40, 50))  # 'valid' -> val, in file order
    raw = pickle.loads((mmsa_dir / "mmsa/MOSI/Processed/unaligned_50.pkl").read_bytes())
    np.testing.assert_allclose(d.target[d.splits["test"]].numpy(), raw["test"]["regression_labels"], atol=1e-6)
    assert torch.isfinite(d.inputs["audio"]).all()  # -inf -> 0 before standardising
    assert_partition(d)
    assert_train_standardised(d)


def test_mmsa_errors(mmsa_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(mmrobust.MMRobustError) as e:
        mmrobust.load_dataset("mmsa", data_dir=str(mmsa_dir), file="mmsa/MOSI/Processed/bert_ids_only.pkl")
    one_line_error(e, "text_bert", "BERT")
    with pytest.raises(mmrobust.MMRobustError) as e:
        mmrobust.load_dataset("mmsa", data_dir=str(mmsa_dir), variant="mosei")
    one_line_error(e, "mmsa/MOSEI/Processed/unaligned_50.pkl", "github.com/thuiar/MMSA")
    bad = tmp_path / "evil.pkl"
    marker = tmp_path / "pwned"
    bad.write_bytes(pickle.dumps({"train": {"text": _RunsShell(marker)}}))
    with pytest.raises(mmrobust.MMRobustError) as e:
        mmrobust.load_dataset("mmsa", file=str(bad))
    one_line_error(e, "refused", "trust_pickle=True")
    assert not marker.exists()
    good = (mmsa_dir / "mmsa/MOSI/Processed/unaligned_50.pkl").read_bytes()
    bad.write_bytes(good[: len(good) // 2])
    with pytest.raises(mmrobust.MMRobustError) as e:
        mmrobust.load_dataset("mmsa", file=str(bad))
    one_line_error(e, str(bad), "truncated")
    assert mmsa.MODALITIES == ("text", "audio", "vision")
