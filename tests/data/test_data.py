"""Data: Batch/collate, the npz loader and its errors, BasicMotions, splits, the registry."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_npz_arrays, write_npz

import mmrobust
from mmrobust import MMRobustError, MultimodalData, collate, load_dataset, load_npz
from mmrobust.data import stratified_split
from mmrobust.data.synthetic import SyntheticStream


# --- Batch and collate ------------------------------------------------------------------------
def test_collate_marks_missing_modalities_absent_with_zero_placeholders() -> None:
    samples = [
        {"inputs": {"audio": torch.ones(3), "video": torch.full((2, 2), 2.0)}, "target": 0},
        {"inputs": {"audio": torch.full((3,), 5.0)}, "target": 1},  # video missing
        {"inputs": {"audio": None, "video": torch.full((2, 2), 7.0)}, "target": 2},  # audio None
    ]
    b = collate(samples, ["video", "audio"])
    assert b.modalities == ("video", "audio")
    assert b.present.dtype == torch.bool
    assert b.present.tolist() == [[True, True], [False, True], [True, False]]
    assert b.inputs["video"].shape == (3, 2, 2) and b.inputs["audio"].shape == (3, 3)
    assert torch.equal(b.inputs["video"][1], torch.zeros(2, 2))
    assert torch.equal(b.inputs["audio"][2], torch.zeros(3))
    assert torch.equal(b.inputs["video"][2], torch.full((2, 2), 7.0))
    assert torch.equal(b.inputs["audio"][1], torch.full((3,), 5.0))
    assert b.target.tolist() == [0, 1, 2]
    assert len(b) == 3


def test_collate_accepts_numpy_and_float_targets() -> None:
    b = collate([{"inputs": {"a": np.ones(2, dtype=np.float32)}, "target": 0.5}], ["a"])
    assert torch.equal(b.inputs["a"], torch.ones(1, 2)) and b.target.dtype.is_floating_point


def test_collate_errors() -> None:
    with pytest.raises(MMRobustError, match="empty"):
        collate([], ["a"])
    with pytest.raises(MMRobustError, match="'b' is absent from every sample"):
        collate([{"inputs": {"a": torch.ones(2)}, "target": 0}], ["a", "b"])


def test_batch_helpers() -> None:
    b = collate([{"inputs": {"a": torch.ones(2), "b": torch.ones(1)}, "target": 0}] * 4, ["a", "b"])
    p = torch.zeros(4, 2, dtype=torch.bool)
    assert torch.equal(b.with_present(p).present, p) and b.present.all()  # new object, old untouched
    v = b.with_value("a", torch.zeros(4, 2))
    assert torch.equal(v.value("a"), torch.zeros(4, 2)) and torch.equal(b.value("a"), torch.ones(4, 2))
    assert v.inputs["b"] is b.inputs["b"]
    assert b.to("cpu").present.device.type == "cpu"


# --- MultimodalData ---------------------------------------------------------------------------
def test_batches_cover_every_sample_once(small_data) -> None:
    seen = torch.cat([b.target for b in small_data.batches(32)])
    assert torch.equal(seen, small_data.target)
    g = torch.Generator().manual_seed(0)
    shuffled = list(small_data.batches(32, g))
    assert sum(len(b) for b in shuffled) == len(small_data)
    assert not torch.equal(torch.cat([b.target for b in shuffled]), small_data.target)
    dropped = list(small_data.batches(32, torch.Generator().manual_seed(0), drop_last=True))
    assert all(len(b) == 32 for b in dropped) and len(dropped) == len(small_data) // 32


def test_multimodal_data_validation(small_data) -> None:
    d = small_data
    with pytest.raises(MMRobustError, match="present mask"):
        MultimodalData(d.spec, d.inputs, d.present.long(), d.target)
    with pytest.raises(MMRobustError, match="labels"):
        MultimodalData(d.spec, d.inputs, d.present, d.target[:-1])
    with pytest.raises(MMRobustError, match="out of range"):
        MultimodalData(d.spec, d.inputs, d.present, d.target + d.spec.num_classes)
    with pytest.raises(MMRobustError, match="integers"):
        MultimodalData(d.spec, d.inputs, d.present, d.target.float())
    with pytest.raises(MMRobustError, match="outside"):
        MultimodalData(d.spec, d.inputs, d.present, d.target, {"train": torch.tensor([0, len(d)])})
    with pytest.raises(MMRobustError, match="'m1' has no array"):
        MultimodalData(d.spec, {"m0": d.inputs["m0"], "m2": d.inputs["m2"]}, d.present, d.target)
    with pytest.raises(MMRobustError, match="no 'holdout' split"):
        d.split("holdout")


# --- npz --------------------------------------------------------------------------------------
def test_repr_is_one_readable_line(tmp_path: Path) -> None:
    arrays = make_npz_arrays(n=40)
    arrays["present_a"] = np.arange(40) >= 10
    data = load_npz(write_npz(tmp_path / "d.npz", **arrays))
    text = repr(data)
    assert "\n" not in text and len(text) < 200
    assert "40 samples, 4 classes; a mlp[6] 75% present, b conv1d[2, 8]," in text
    assert f"train {len(data.splits['train'])}, val {len(data.splits['val'])}" in text
    assert "regression; " in repr(load_npz(tmp_path / "d.npz", task="regression"))


def test_npz_classification_happy_path(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 100
    arrays = {
        "x_vec": rng.normal(3.0, 2.0, size=(n, 5)).astype(np.float32),
        "x_sig": rng.normal(size=(n, 2, 8)),
        "x_img": rng.normal(size=(n, 1, 4, 4)).astype(np.float32),
        "x_frames": rng.normal(size=(n, 6, 3)).astype(np.float32),
        "kind_frames": np.array("seq"),
        "y": np.arange(n) % 3,
    }
    d = load_npz(write_npz(tmp_path / "mine.npz", **arrays))
    assert d.spec.name == "mine" and d.spec.task == "classification" and d.spec.num_classes == 3
    kinds = {m.name: (m.kind, m.shape) for m in d.spec.modalities}
    assert kinds == {
        "frames": ("seq", (6, 3)),
        "img": ("conv2d", (1, 4, 4)),
        "sig": ("conv1d", (2, 8)),
        "vec": ("mlp", (5,)),
    }
    assert d.modalities == tuple(sorted(kinds))
    assert d.present.all() and d.target.dtype == torch.int64
    assert all(x.dtype == torch.float32 for x in d.inputs.values())
    assert torch.equal(d.target, torch.from_numpy(arrays["y"]))
    # default split: stratified 60/20/20, disjoint, covering every sample
    parts = [d.splits[s] for s in ("train", "val", "test")]
    assert sorted(torch.cat(parts).tolist()) == list(range(n))
    assert [len(p) for p in parts] == pytest.approx([60, 20, 20], abs=2)
    # standardised per feature with train statistics
    train = d.split("train").inputs["vec"]
    assert torch.allclose(train.mean(0), torch.zeros(5), atol=1e-5)
    assert torch.allclose(train.std(0), torch.ones(5), atol=1e-4)
    raw = load_npz(tmp_path / "mine.npz", normalize=False)
    assert torch.equal(raw.inputs["vec"], torch.from_numpy(arrays["x_vec"]))
    # same file and seed, same split; another seed, another split
    assert torch.equal(load_npz(tmp_path / "mine.npz").splits["val"], d.splits["val"])
    assert not torch.equal(load_npz(tmp_path / "mine.npz", split_seed=1).splits["val"], d.splits["val"])


def test_npz_regression_with_presence_and_explicit_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    n = 40
    present_b = np.arange(n) % 4 != 0
    split = np.array(["train"] * 24 + ["val"] * 8 + ["test"] * 8)
    x_b = rng.normal(size=(n, 3)).astype(np.float32)
    x_b[~present_b] = np.nan  # placeholders may hold anything, even NaN
    path = write_npz(
        tmp_path / "reg.npz",
        x_a=rng.normal(size=(n, 4)).astype(np.float32),
        x_b=x_b,
        present_b=present_b,
        y=rng.uniform(-3, 3, n).astype(np.float32),
        split=split,
    )
    d = load_npz(path)
    assert d.spec.task == "regression" and d.spec.num_classes == 1 and d.target.dtype == torch.float32
    assert d.present[:, 0].all() and torch.equal(d.present[:, 1], torch.from_numpy(present_b))
    for s in ("train", "val", "test"):
        assert d.splits[s].tolist() == np.flatnonzero(split == s).tolist()
    assert torch.isnan(d.inputs["b"][~torch.from_numpy(present_b)]).all()  # untouched
    assert torch.isfinite(d.inputs["b"][torch.from_numpy(present_b)]).all()
    m = mmrobust.create_method("dropout", fusion="sum")
    mmrobust.fit(m, d, epochs=1, progress=False)
    assert torch.isfinite(mmrobust.predict(m, d)).all()


def test_npz_standardisation_never_reads_test_rows(tmp_path: Path) -> None:
    arrays = make_npz_arrays(n=40)
    split = np.array(["train", "val", "test", "train", "train"] * 8)
    arrays["split"] = split
    a = load_npz(write_npz(tmp_path / "a.npz", **arrays))
    test = split == "test"
    arrays["x_a"][test] *= 1000.0
    arrays["x_b"][test] += 50.0
    arrays["y"][test] = 3 - arrays["y"][test]
    b = load_npz(write_npz(tmp_path / "b.npz", **arrays))
    for s in ("train", "val"):
        for m in ("a", "b"):
            assert torch.equal(a.split(s).inputs[m], b.split(s).inputs[m])
        assert torch.equal(a.split(s).target, b.split(s).target)


def _base(n: int = 30) -> dict[str, np.ndarray]:
    return make_npz_arrays(n=n, num_classes=3)


def _with(**changes: np.ndarray | None) -> dict[str, np.ndarray]:
    arrays = _base()
    for k, v in changes.items():
        if v is None:
            arrays.pop(k)
        else:
            arrays[k] = v
    return arrays


def _nan_present() -> dict[str, np.ndarray]:
    arrays = _base()
    arrays["x_a"][3, 1] = np.nan
    return arrays


BAD_NPZ = {
    "sample-count": (lambda: _with(x_b=np.zeros((29, 2, 8), np.float32)), "x_b has 29 samples but y has 30"),
    "no-y": (lambda: _with(y=None), "no labels array 'y'"),
    "no-modality": (lambda: {"y": np.arange(5)}, "no modality arrays"),
    "nan-present": (_nan_present, "NaN/inf in 1 present samples"),
    "negative-label": (lambda: _with(y=np.arange(30) % 3 - 1), "labels out of range"),
    "bool-label": (lambda: _with(y=np.arange(30) % 2 == 0), "integer"),
    "bad-split": (lambda: _with(split=np.array(["train", "validation", "test"] * 10)), "'split' must hold"),
    "split-length": (lambda: _with(split=np.array(["train", "val", "test"] * 9)), "'split' must hold"),
    "empty-train": (lambda: _with(split=np.array(["val", "test"] * 15)), "'train' split is empty, and standardisation"),
    "present-not-bool": (lambda: _with(present_a=np.ones(30, dtype=np.int64)), "present_a must be a bool"),
    "bad-kind": (  # before: "cannot infer an encoder for x_a ...; add kind_a", though kind_a was given
        lambda: _with(kind_a=np.array("lstm")),
        "bad.npz: kind_a: unknown encoder kind 'lstm'. Valid: conv1d, conv2d, frames, mlp, seq.",
    ),
    "kind-close": (lambda: _with(kind_a=np.array("conv1")), "unknown encoder kind 'conv1'. Did you mean 'conv1d'"),
    "rank-5": (lambda: _with(x_a=np.zeros((30, 1, 2, 2, 2), np.float32)), "cannot infer an encoder"),
    "object-array": (
        lambda: _with(x_a=np.array([{"evil": i} for i in range(30)], dtype=object)),
        "without pickling",
    ),
}


@pytest.mark.parametrize("case", list(BAD_NPZ))
def test_npz_errors(tmp_path: Path, case: str) -> None:
    build, message = BAD_NPZ[case]
    path = write_npz(tmp_path / "bad.npz", **build())
    with pytest.raises(MMRobustError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_npz(path)


NAME_TYPOS = {  # before: each was ignored, so the modality (or its mask) was silently dropped
    "capital X": (
        {"X_c": np.zeros((30, 2), np.float32)},
        r"unrecognised arrays \['X_c'\] \(names are case-sensitive: X_c -> x_c\); the format reads x_<modality>, "
        r"kind_<modality>, present_<modality>, y, task and split only: rename or remove the others",
    ),
    "metadata": ({"subject": np.arange(30)}, r"unrecognised arrays \['subject'\]; the format reads"),
    "present without x": (
        {"present_c": np.ones(30, bool)},
        r"present_c without x_c: add x_c \(the modality's values, first axis = samples\) or remove present_c$",
    ),
    "kind without x": (
        {"kind_c": np.array("mlp"), "present_c": np.ones(30, bool)},
        r"kind_c, present_c without x_c: add x_c .* or remove kind_c, present_c$",
    ),
}


@pytest.mark.parametrize("case", list(NAME_TYPOS))
def test_npz_arrays_the_format_does_not_read_are_refused_not_ignored(tmp_path: Path, case: str) -> None:
    extra, message = NAME_TYPOS[case]
    with pytest.raises(MMRobustError, match=message):
        load_npz(write_npz(tmp_path / "typo.npz", **_base(), **extra))


def test_npz_refuses_pickles_even_for_y(tmp_path: Path) -> None:
    path = write_npz(
        tmp_path / "p.npz", x_a=np.zeros((3, 2), np.float32), y=np.array([0, 1, object()], dtype=object)
    )
    with pytest.raises(MMRobustError, match="pickl"):
        load_npz(path)


def test_npz_nan_only_in_absent_rows_is_fine(tmp_path: Path) -> None:
    arrays = _base()
    present = np.ones(30, dtype=bool)
    present[[3, 7]] = False
    arrays["x_a"][[3, 7]] = np.nan
    arrays["x_a"][7, 0] = np.inf
    arrays["present_a"] = present
    d = load_npz(write_npz(tmp_path / "ok.npz", **arrays))
    assert d.present[:, 0].tolist() == present.tolist()
    assert torch.isfinite(d.inputs["a"][torch.from_numpy(present)]).all()
    arrays["x_b"][3] = np.inf  # ...but b IS present in row 3
    with pytest.raises(MMRobustError, match="'b' has NaN/inf in 1 present samples \\(first: 3\\)"):
        load_npz(write_npz(tmp_path / "bad.npz", **arrays))


def test_npz_file_problems(tmp_path: Path) -> None:
    with pytest.raises(MMRobustError, match="not found"):
        load_npz(tmp_path / "nope.npz")
    junk = tmp_path / "junk.npz"
    junk.write_text("hello")
    with pytest.raises(MMRobustError):
        load_npz(junk)


def test_npz_nan_regression_label_is_rejected(tmp_path: Path) -> None:
    y = np.linspace(-3, 3, 30).astype(np.float32)
    y[5] = np.nan
    with pytest.raises(MMRobustError):
        load_npz(write_npz(tmp_path / "nanlabel.npz", **_with(y=y)))


# --- BasicMotions -----------------------------------------------------------------------------
def _parse_ts(path: Path) -> tuple[np.ndarray, list[str]]:
    """An independent minimal reader of the UEA .ts format."""
    rows, labels, data = [], [], False
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.lower() == "@data":
            data = True
            continue
        if data:
            *dims, label = line.split(":")
            rows.append([np.array(d.split(","), dtype=np.float64) for d in dims])
            labels.append(label)
    return np.array(rows), labels


@pytest.fixture(scope="module")
def basicmotions() -> MultimodalData:
    try:
        return load_dataset("basicmotions")
    except MMRobustError as e:
        pytest.skip(f"BasicMotions files not available: {e}")


def test_basicmotions_shape_and_splits(basicmotions: MultimodalData) -> None:
    d = basicmotions
    assert d.spec.modality_names == ("accelerometer", "gyroscope")
    assert [(m.kind, m.shape) for m in d.spec.modalities] == [("conv1d", (3, 100))] * 2
    assert d.spec.task == "classification" and d.spec.num_classes == 4 and len(d.spec.class_names) == 4
    assert {k: len(v) for k, v in d.splits.items()} == {"train": 32, "val": 8, "test": 40}
    assert d.splits["test"].tolist() == list(range(40, 80))
    fit_val = torch.cat([d.splits["train"], d.splits["val"]])
    assert sorted(fit_val.tolist()) == list(range(40))  # carved from the official train split
    assert torch.bincount(d.target[d.splits["val"]], minlength=4).tolist() == [2, 2, 2, 2]  # stratified
    assert d.present.all() and len(d) == 80


def test_basicmotions_test_split_is_the_official_test_set_standardised_with_train_stats(
    basicmotions: MultimodalData,
) -> None:
    from mmrobust.data.basicmotions import _locate

    folder = _locate(None)
    x_train, y_train = _parse_ts(folder / "BasicMotions_TRAIN.ts")
    x_test, y_test = _parse_ts(folder / "BasicMotions_TEST.ts")
    assert x_test.shape == (40, 6, 100)
    d = basicmotions
    names = d.spec.class_names
    assert [names[i] for i in d.split("test").target.tolist()] == y_test
    assert [names[i] for i in d.target[:40].tolist()] == y_train
    fit_rows = d.splits["train"].numpy()
    for m, channels in (("accelerometer", slice(0, 3)), ("gyroscope", slice(3, 6))):
        ref = x_train[fit_rows][:, channels]  # only the 32 training windows
        mean = ref.mean(axis=(0, 2), keepdims=True)
        std = ref.std(axis=(0, 2), ddof=1, keepdims=True)
        expected = (x_test[:, channels] - mean) / std
        np.testing.assert_allclose(d.split("test").inputs[m].numpy(), expected, atol=1e-4, rtol=1e-4)
        train = d.split("train").inputs[m].numpy()
        np.testing.assert_allclose(train.mean(axis=(0, 2)), 0, atol=1e-5)
        np.testing.assert_allclose(train.std(axis=(0, 2), ddof=1), 1, atol=1e-4)
        # and the test split is *not* standardised with its own statistics
        assert np.abs(d.split("test").inputs[m].numpy().mean(axis=(0, 2))).max() > 1e-3


def test_basicmotions_missing_folder_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "basic_motions"
    expected = f"BasicMotions not found: put BasicMotions_TRAIN.ts and BasicMotions_TEST.ts in {folder}"
    with pytest.raises(MMRobustError, match=rf"^{re.escape(expected)}; download page: https://") as e:
        load_dataset("basicmotions", data_dir=str(tmp_path))
    assert "sktime" not in str(e.value)  # before: "or pip install sktime", which is never read given a data_dir
    monkeypatch.setenv("MMROBUST_DATA", str(tmp_path))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)  # sktime not installed
    with pytest.raises(MMRobustError, match=r"basic_motions \(or `pip install sktime`, which ships them\); download"):
        load_dataset("basicmotions")


@pytest.mark.parametrize("fraction", [1.5, -0.1, 2, 1, 0, float("nan"), "0.2", True])
@pytest.mark.parametrize("name", ["basicmotions", "avmnist", "mosi"])
def test_a_val_fraction_outside_0_1_is_refused_by_every_loader(name: str, fraction: object, shared_data: Path) -> None:
    # before: basicmotions gave train 20 / val 20 for 1.5 (negative slices) and no val for -0.1
    with pytest.raises(MMRobustError, match=r"^val_fraction must be a number in \(0, 1\), got "):
        load_dataset(name, data_dir=str(shared_data), val_fraction=fraction)


@pytest.mark.parametrize("seed", ["a", -1, 1.5, True, 2**63, None])
@pytest.mark.parametrize("name", ["basicmotions", "avmnist", "mosi", "npz"])
def test_a_split_seed_that_is_not_a_non_negative_int_is_refused(
    name: str, seed: object, shared_data: Path, tmp_path: Path
) -> None:
    # before: "a" was a RuntimeError from torch, -1 silently seeded some other split
    with pytest.raises(MMRobustError, match=r"^split_seed must be an integer in 0\.\.9223372036854775807, got "):
        if name == "npz":
            load_npz(write_npz(tmp_path / "d.npz", **_base()), split_seed=seed)  # type: ignore[arg-type]
        else:
            load_dataset(name, data_dir=str(shared_data), split_seed=seed)


def test_basicmotions_val_fraction_carves_that_share_of_the_official_train_split(shared_data: Path) -> None:
    d = load_dataset("basicmotions", data_dir=str(shared_data), val_fraction=0.5)
    assert {k: len(v) for k, v in d.splits.items()} == {"train": 20, "val": 20, "test": 40}
    assert not set(d.splits["train"].tolist()) & set(d.splits["val"].tolist())
    assert torch.bincount(d.target[d.splits["val"]], minlength=4).tolist() == [5, 5, 5, 5]


# --- splits -----------------------------------------------------------------------------------
def test_stratified_split_proportions() -> None:
    labels = torch.tensor([0] * 500 + [1] * 300 + [2] * 100 + [3] * 10)
    parts = stratified_split(labels, (0.6, 0.2, 0.2), torch.Generator().manual_seed(0))
    everything = torch.cat(parts)
    assert sorted(everything.tolist()) == list(range(len(labels)))  # disjoint and complete
    for p in parts:
        assert torch.equal(p, torch.sort(p).values)
    for c, count in ((0, 500), (1, 300), (2, 100), (3, 10)):
        for frac, p in zip((0.6, 0.2, 0.2), parts, strict=True):
            assert abs(int((labels[p] == c).sum()) - frac * count) <= 1
    again = stratified_split(labels, (0.6, 0.2, 0.2), torch.Generator().manual_seed(0))
    other = stratified_split(labels, (0.6, 0.2, 0.2), torch.Generator().manual_seed(1))
    assert all(torch.equal(a, b) for a, b in zip(parts, again, strict=True))
    assert not torch.equal(parts[1], other[1])


@pytest.mark.parametrize(
    ("fractions", "message"),
    [
        ((-0.5, 1.5), r"a split fraction must be a number in \[0, 1\], got -0.5"),
        ((0.7, 0.6), r"split fractions must sum to at most 1, got \[0.7, 0.6\] \(sum 1.3\)"),
    ],
)
def test_stratified_split_refuses_fractions_that_would_cut_overlapping_slices(
    fractions: tuple[float, ...], message: str
) -> None:
    with pytest.raises(MMRobustError, match=message):
        stratified_split(torch.tensor([0, 1] * 10), fractions, torch.Generator().manual_seed(0))


def test_synthetic_splits_are_stratified(small_data) -> None:
    d = small_data
    for name, frac in (("train", 0.6), ("val", 0.2), ("test", 0.2)):
        counts = torch.bincount(d.target[d.splits[name]], minlength=d.spec.num_classes)
        total = torch.bincount(d.target, minlength=d.spec.num_classes)
        assert ((counts - frac * total).abs() <= 1).all()


# --- synthetic and the registry ---------------------------------------------------------------
def test_synthetic_options() -> None:
    a = load_dataset("synthetic", n_samples=100, kinds=("mlp", "conv1d", "conv2d"), missing_rate=0.5, seed=2)
    b = load_dataset("synthetic", n_samples=100, kinds=("mlp", "conv1d", "conv2d"), missing_rate=0.5, seed=2)
    c = load_dataset("synthetic", n_samples=100, kinds=("mlp", "conv1d", "conv2d"), missing_rate=0.5, seed=3)
    assert [m.kind for m in a.spec.modalities] == ["mlp", "conv1d", "conv2d"]
    assert all(torch.equal(a.inputs[m], b.inputs[m]) for m in a.modalities)
    assert not torch.equal(a.inputs["m0"], c.inputs["m0"])
    assert a.present.any(dim=1).all() and not a.present.all()
    assert 0.3 < float((~a.present).float().mean()) < 0.5
    r = load_dataset("synthetic", n_samples=100, task="regression")
    assert r.spec.task == "regression" and r.target.min() >= -3 and r.target.max() <= 3
    with pytest.raises(MMRobustError, match="unknown encoder kind"):
        load_dataset("synthetic", kinds=("mlp", "lstm", "mlp"))
    with pytest.raises(MMRobustError, match="kinds for"):
        load_dataset("synthetic", kinds=("mlp",))


BAD_SYNTHETIC = {  # before: torch errors for the first two, silently generated data for the rest
    "n_samples=0": ({"n_samples": 0}, r"n_samples must be an integer >= 1, got 0"),
    "num_classes=0": ({"num_classes": 0}, r"num_classes must be an integer >= 2, got 0"),
    "num_classes=1": ({"num_classes": 1}, r"num_classes must be an integer >= 2, got 1"),
    "missing_rate=1.5": ({"missing_rate": 1.5}, r"missing_rate must be a number in \[0, 1\], got 1.5"),
    "missing_rate=-2": ({"missing_rate": -2}, r"missing_rate must be a number in \[0, 1\], got -2"),
    "noise=-1": ({"noise": -1}, r"noise must be a finite number >= 0, got -1"),
    "latent_dim=0": ({"latent_dim": 0}, r"latent_dim must be an integer >= 1, got 0"),
    "seed=-1": ({"seed": -1}, r"seed must be an integer in 0\.\.9223372036854775807, got -1"),
    "informativeness=()": ({"informativeness": ()}, r"informativeness must list a number per modality"),
    "informativeness=5": ({"informativeness": 5}, r"informativeness must list a number per modality"),
    "informativeness nan": ({"informativeness": (5, float("nan"))}, r"informativeness\[1\] must be a finite number"),
}


@pytest.mark.parametrize("case", list(BAD_SYNTHETIC))
def test_bad_synthetic_options_are_one_line_errors(case: str) -> None:
    options, message = BAD_SYNTHETIC[case]
    with pytest.raises(MMRobustError, match=f"^{message}"):
        load_dataset("synthetic", **options)
    if "n_samples" not in options:  # the stream draws the same model of the data, and may hold 0 samples
        with pytest.raises(MMRobustError, match=f"^{message}"):
            SyntheticStream(10, **options)


def test_synthetic_edge_options_that_are_valid_still_generate() -> None:
    d = load_dataset("synthetic", n_samples=8, num_classes=2, latent_dim=1, noise=0, missing_rate=1, seed=0)
    assert len(d) == 8 and (d.present.sum(dim=1) == 1).all()  # missing_rate 1: one modality kept per sample
    assert len(SyntheticStream(0)) == 0
    with pytest.raises(MMRobustError, match=r"^n_samples must be an integer >= 0, got -1"):
        SyntheticStream(-1)
    with pytest.raises(MMRobustError, match=r"^offset must be an integer >= 0, got -1"):
        SyntheticStream(10, offset=-1)


def test_unknown_dataset_names_the_valid_ones() -> None:
    with pytest.raises(MMRobustError, match="unknown dataset 'nope'") as e:
        load_dataset("nope")
    assert "basicmotions" in str(e.value) and "synthetic" in str(e.value)
    with pytest.raises(MMRobustError, match="Did you mean 'synthetic'"):
        load_dataset("synthetc")
    with pytest.raises(MMRobustError, match="Did you mean 'basicmotions'"):
        load_dataset("basic_motions")


@pytest.mark.parametrize(("name", "kind"), [(None, "NoneType"), (123, "int")])
def test_a_dataset_name_that_is_not_a_string_is_a_one_line_error(name: object, kind: str) -> None:
    expected = rf"load_dataset takes a dataset name \(a str\), not a {kind}: got {name}; give a registered name"
    with pytest.raises(MMRobustError, match=expected) as e:
        load_dataset(name)  # type: ignore[arg-type]
    assert "mmrobust data list" in str(e.value) and "\n" not in str(e.value)


def test_a_dataset_name_in_other_case_or_an_npz_file_name_gets_the_right_hint() -> None:
    with pytest.raises(MMRobustError, match="Did you mean 'utd_mhad'"):
        load_dataset("UTD_MHAD")
    with pytest.raises(MMRobustError, match=r"is a file, not a registered dataset: read it with mmrobust.load_npz"):
        load_dataset("my_data.npz")


def test_unknown_dataset_option_suggests_the_closest() -> None:
    with pytest.raises(MMRobustError, match=r"'n_sample'.*Did you mean 'n_samples'"):
        load_dataset("synthetic", n_sample=5)


@pytest.mark.filterwarnings("ignore:std\\(\\)")
@pytest.mark.parametrize("n_train_present", [0, 1])
def test_npz_modality_rarely_present_in_train_gets_a_truthful_message(
    tmp_path: Path, n_train_present: int
) -> None:
    arrays = _base()
    arrays["x_b"] = np.random.default_rng(0).normal(size=(30, 3)).astype(np.float32)  # mlp: per-feature stats
    split = np.array(["train"] * 18 + ["val"] * 6 + ["test"] * 6)
    present = np.ones(30, dtype=bool)
    present[n_train_present:18] = False  # b is (almost) never present in the train split
    path = write_npz(tmp_path / "rare.npz", **arrays, present_b=present, split=split)
    try:
        d = load_npz(path)
    except MMRobustError as e:
        assert "NaN" not in str(e), str(e)  # the file has no NaN: name the real cause
    else:
        assert torch.isfinite(d.inputs["b"][d.present[:, 1]]).all()


def test_load_npz_of_something_else_than_a_path_is_a_one_line_error() -> None:
    with pytest.raises(MMRobustError, match=r"load_npz takes a file path \(str or Path\), not a int"):
        load_npz(123)  # type: ignore[arg-type]  # before: a TypeError from pathlib


@pytest.mark.parametrize("name", ["a+b", "d@1", "x,y", "r[0]", "k=v", "two words"])
def test_modality_names_that_scenario_names_could_not_tell_apart_are_refused(tmp_path: Path, name: str) -> None:
    """Before, `x_a+b` loaded, and the audit's `subset[a+b+c]` read as three modalities: the report said
    the model relied on the wrong one."""
    arrays = make_npz_arrays(n=40)
    arrays[f"x_{name}"] = arrays.pop("x_b")
    with pytest.raises(MMRobustError, match=rf"modality name '{re.escape(name)}' contains .*rename it"):
        load_npz(write_npz(tmp_path / "d.npz", **arrays))
