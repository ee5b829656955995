"""Standardisation statistics travel with data and models: a model is fed inputs on the scale it
was trained on, whatever file or split the data at hand were standardised with."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_npz_arrays, one_line_error, run_cli, write_npz

import mmrobust
from mmrobust.checkpoint import FORMAT, with_checksum
from mmrobust.data import rescaled, standardize
from mmrobust.data.cache import cache_dir, cached
from mmrobust.data.synthetic import SyntheticStream
from mmrobust.methods.base import inputs_as_trained


def _raw(data: mmrobust.MultimodalData, m: str) -> torch.Tensor:
    mean, std = data.scaling[m]
    return data.inputs[m] * std + mean


@pytest.fixture(scope="module")
def split_npz(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same rows twice: a file with train/val/test rows, and a file of its test rows alone."""
    folder = tmp_path_factory.mktemp("scaling")
    arrays = make_npz_arrays(n=120, seed=5)
    arrays["x_a"] = arrays["x_a"] * 40 + 300  # far from standard: a model fed them unscaled answers nonsense
    split = np.array(["train"] * 72 + ["val"] * 24 + ["test"] * 24)
    full = write_npz(folder / "full.npz", **arrays, split=split)
    test = write_npz(folder / "test_rows.npz", **{k: v[96:] for k, v in arrays.items()}, split=split[96:])
    return full, test


def test_standardize_records_statistics_that_map_the_stored_arrays(kinds_data: mmrobust.MultimodalData) -> None:
    stored = kinds_data  # synthetic data are not standardised: as stored
    assert stored.scaling == {}
    data = standardize(stored)
    for j, m in enumerate(data.modalities):
        present = data.present[:, j]
        assert torch.allclose(_raw(data, m)[present], stored.inputs[m][present], atol=1e-4)
        assert torch.equal(data.inputs[m][~present], stored.inputs[m][~present].float())  # placeholders untouched
    twice = standardize(data, reference="val")  # composed: still maps the stored arrays
    assert torch.allclose(_raw(twice, "m1")[twice.present[:, 1]], stored.inputs["m1"][twice.present[:, 1]], atol=1e-3)
    assert data.split("test").scaling is data.scaling
    assert data.with_encoders({}).scaling is data.scaling


def test_rescaled_gives_what_standardising_on_the_other_statistics_gives(small_data: mmrobust.MultimodalData) -> None:
    on_train, on_val = standardize(small_data), standardize(small_data, reference="val")
    moved = rescaled(on_val, on_train.scaling)
    for m in small_data.modalities:
        assert not torch.allclose(on_val.inputs[m], on_train.inputs[m], atol=1e-2)
        assert torch.allclose(moved.inputs[m], on_train.inputs[m], atol=1e-4)
    assert moved.scaling == on_train.scaling
    assert rescaled(on_train, on_train.scaling) is on_train  # the same statistics: nothing copied
    back = rescaled(on_train, {})  # as stored
    assert torch.allclose(back.inputs["m0"], small_data.inputs["m0"], atol=1e-4)


@pytest.mark.parametrize(
    ("scaling", "needle"),
    [
        ({"nope": (torch.zeros(1), torch.ones(1))}, "'nope', which is not a modality"),
        ({"m0": (torch.zeros(3), torch.ones(3))}, "do not fit samples of shape"),
        ({"m0": (torch.zeros(1), torch.zeros(1))}, "std > 0"),
        ({"m0": torch.zeros(1)}, "(mean, std) pair"),
    ],
)
def test_statistics_that_cannot_scale_the_data_are_refused(
    small_data: mmrobust.MultimodalData, scaling: dict, needle: str
) -> None:
    with pytest.raises(mmrobust.MMRobustError, match="cannot rescale") as e:
        rescaled(small_data, scaling)
    assert needle in str(e.value)


def test_the_cache_keeps_the_statistics_and_rebuilds_an_entry_without_them(tmp_path: Path) -> None:
    raw = tmp_path / "raw.bin"
    raw.write_bytes(b"v")
    calls: list[int] = []

    def build() -> mmrobust.MultimodalData:
        calls.append(1)
        return standardize(mmrobust.load_dataset("synthetic", n_samples=60, seed=1))

    first = cached("scaled", "r/1", [raw], {}, build)
    second = cached("scaled", "r/1", [raw], {}, build)
    assert len(calls) == 1
    for m in first.modalities:
        assert all(torch.equal(a, b) for a, b in zip(first.scaling[m], second.scaling[m], strict=True))
    entry = next(cache_dir().glob("scaled-*.pt"))
    payload = torch.load(entry, weights_only=True)
    del payload["scaling"], payload["sha256"]  # as an older version wrote it
    torch.save(payload, entry)
    third = cached("scaled", "r/1", [raw], {}, build)
    assert len(calls) == 2 and third.scaling.keys() == first.scaling.keys()


def test_a_checkpoint_keeps_the_statistics_fit_recorded(split_npz: tuple[Path, Path], tmp_path: Path) -> None:
    data = mmrobust.load_npz(split_npz[0])
    model = mmrobust.create_method("dropout", fusion="sum")
    mmrobust.fit(model, data, epochs=3, progress=False)
    assert model.input_scaling == data.scaling
    loaded, _ = mmrobust.load_checkpoint(mmrobust.save_checkpoint(model, tmp_path / "m.pt"))
    assert loaded.input_scaling is not None and loaded.input_scaling.keys() == data.scaling.keys()
    for m in data.modalities:
        assert all(torch.equal(a, b) for a, b in zip(loaded.input_scaling[m], data.scaling[m], strict=True))


def test_a_checkpoint_without_statistics_loads_and_sees_data_as_given(
    small_data: mmrobust.MultimodalData, fit_small, tmp_path: Path
) -> None:
    model = fit_small(small_data)  # trained on data as stored: it recorded no statistics, {}
    scaled = standardize(small_data)
    assert torch.allclose(mmrobust.predict(model, scaled), mmrobust.predict(model, small_data), atol=1e-4)
    path = mmrobust.save_checkpoint(model, tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    del payload["scaling"], payload["sha256"]  # as saved before checkpoints recorded statistics
    torch.save(with_checksum(payload), path)
    loaded, _ = mmrobust.load_checkpoint(path)
    assert loaded.input_scaling is None
    assert not torch.allclose(mmrobust.predict(loaded, scaled), mmrobust.predict(loaded, small_data), atol=1e-2)


def test_a_checkpoint_with_malformed_statistics_is_refused(
    small_data: mmrobust.MultimodalData, fit_small, tmp_path: Path
) -> None:
    path = mmrobust.save_checkpoint(fit_small(small_data), tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    del payload["sha256"]
    assert payload["format"] == FORMAT
    payload["scaling"] = {"m0": {"mean": torch.zeros(5), "std": torch.ones(5)}}
    torch.save(with_checksum(payload), path)
    with pytest.raises(mmrobust.MMRobustError, match=r"malformed mmrobust checkpoint \(scaling: 'm0'"):
        mmrobust.load_checkpoint(path)


def test_predictions_do_not_depend_on_the_statistics_the_data_were_scaled_with(split_npz: tuple[Path, Path]) -> None:
    full, test_rows = split_npz
    data = mmrobust.load_npz(full)
    model = mmrobust.create_method("dropout", fusion="sum")
    mmrobust.fit(model, data, epochs=5, progress=False)
    expected = mmrobust.predict(model, data, split="test")
    as_stored = mmrobust.load_npz(test_rows, normalize=False)  # no train rows: scaled with the model's statistics
    assert torch.allclose(mmrobust.predict(model, as_stored, split="test"), expected, atol=1e-4)
    other = mmrobust.load_npz(full, split_seed=0)
    other = standardize(other, reference="val")  # standardised on other rows
    assert torch.allclose(mmrobust.predict(model, other, split="test"), expected, atol=1e-4)
    audited = mmrobust.audit(model, as_stored, defaults=False)
    assert audited.table.query("scenario == 'clean' and metric == 'accuracy'")["value"].item() == pytest.approx(
        mmrobust.evaluate(model, data, split="test")["accuracy"]
    )


def test_cli_audits_a_checkpoint_on_a_file_of_test_rows_alone(
    split_npz: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    full, test_rows = split_npz
    ckpt = tmp_path / "t"
    train = ["train", "--npz", str(full), "--method", "dropout", "--epochs", "4", "--out", str(ckpt)]
    assert run_cli(train, capsys)[0] == 0
    values = {}
    for name, npz in (("full", full), ("rows", test_rows)):
        code, _, err = run_cli(["audit", "--checkpoint", str(ckpt / "checkpoint.pt"), "--npz", str(npz),
                                "--out", str(tmp_path / name)], capsys)  # fmt: skip
        assert code == 0, err
        with open(tmp_path / name / "results.csv") as f:
            values[name] = {(r["scenario"], r["metric"]): float(r["value"]) for r in csv.DictReader(f)}
        inputs = json.loads((tmp_path / name / "results.json").read_text())["inputs"]
        assert inputs == "scaled with the statistics of the checkpoint's training data"
    assert values["rows"] == pytest.approx(values["full"], abs=1e-6)
    model, _ = mmrobust.load_checkpoint(ckpt / "checkpoint.pt")
    clean = mmrobust.evaluate(model, mmrobust.load_npz(full), split="test")  # standardised as in training
    assert values["rows"][("clean", "accuracy")] == pytest.approx(clean["accuracy"])
    code, _, err = run_cli(["audit", "--checkpoint", str(ckpt / "checkpoint.pt"), "--npz", str(test_rows),
                            "--no-standardize", "--out", str(tmp_path / "x")], capsys)  # fmt: skip
    one_line_error(code, err, "records the statistics its training data were standardised with")


def test_a_file_of_test_rows_is_refused_only_where_statistics_are_needed(split_npz: tuple[Path, Path]) -> None:
    with pytest.raises(mmrobust.MMRobustError, match="load with normalize=False"):
        mmrobust.load_npz(split_npz[1])
    rows = mmrobust.load_npz(split_npz[1], normalize=False)
    with pytest.raises(mmrobust.MMRobustError, match="no train samples to fit on"):
        mmrobust.fit(mmrobust.create_method("dropout"), rows, select="none", progress=False)


def test_statistics_equal_to_the_datas_leave_it_as_it_is(split_npz: tuple[Path, Path], tmp_path: Path) -> None:
    data = mmrobust.load_npz(split_npz[0])
    model = mmrobust.create_method("dropout", fusion="sum")
    mmrobust.fit(model, data, epochs=1, progress=False)
    loaded, _ = mmrobust.load_checkpoint(mmrobust.save_checkpoint(model, tmp_path / "m.pt"))
    assert loaded.input_scaling is not None and loaded.input_scaling["a"] is not data.scaling["a"]
    assert inputs_as_trained(loaded, data) is data  # equal statistics read back from a file: nothing copied
    one_off = dict(data.scaling, a=(data.scaling["a"][0] + 1, data.scaling["a"][1]))
    moved = rescaled(data, one_off)
    assert moved.inputs["b"] is data.inputs["b"]  # only the modality whose statistics differ is scaled again
    assert torch.allclose(moved.inputs["a"], data.inputs["a"] - 1 / data.scaling["a"][1], atol=1e-4)


def test_placeholders_of_absent_samples_are_never_touched(kinds_data: mmrobust.MultimodalData) -> None:
    absent = ~kinds_data.present[:, 0]
    inputs = dict(kinds_data.inputs, m0=kinds_data.inputs["m0"].clone())
    inputs["m0"][absent] = float("nan")  # a placeholder may be anything: it is never read
    data = standardize(mmrobust.MultimodalData(kinds_data.spec, inputs, kinds_data.present, kinds_data.target,
                                               kinds_data.splits))  # fmt: skip
    moved = rescaled(data, standardize(data, reference="val").scaling)
    assert absent.any() and torch.isnan(moved.inputs["m0"][absent]).all()
    assert torch.isfinite(moved.inputs["m0"][~absent]).all()


@pytest.mark.parametrize(
    ("scaling", "needle"),
    [
        ({"m0": torch.zeros(1)}, "scaling is not modality -> {mean, std}"),
        ({"m0": {"mean": torch.zeros(1, dtype=torch.bool), "std": torch.ones(1, dtype=torch.bool)}}, "floating-point"),
    ],
)
def test_checkpoint_statistics_of_the_wrong_form_are_refused(
    small_data: mmrobust.MultimodalData, fit_small, tmp_path: Path, scaling: dict, needle: str
) -> None:
    path = mmrobust.save_checkpoint(fit_small(small_data), tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    del payload["sha256"]
    payload["scaling"] = scaling
    torch.save(with_checksum(payload), path)
    with pytest.raises(mmrobust.MMRobustError, match="malformed mmrobust checkpoint") as e:
        mmrobust.load_checkpoint(path)
    assert needle in str(e.value)


def test_predicting_on_data_for_another_model_says_so(
    small_data: mmrobust.MultimodalData, kinds_data: mmrobust.MultimodalData, fit_small
) -> None:
    with pytest.raises(mmrobust.MMRobustError, match=r"the model was trained for other data \(modality 'm1'"):
        mmrobust.predict(fit_small(small_data), kinds_data)


def test_a_stream_is_audited_as_it_comes_with_a_warning(kinds_data: mmrobust.MultimodalData) -> None:
    model = mmrobust.create_method("dropout", fusion="sum")
    mmrobust.fit(model, standardize(kinds_data), epochs=1, progress=False)
    stream = SyntheticStream(256, kinds=("mlp", "conv1d", "seq"), seed=4)
    with pytest.warns(UserWarning, match="a stream is audited as it comes"):
        mmrobust.audit(model, stream, defaults=False)


def test_cli_says_a_checkpoint_trained_on_arrays_as_stored_sees_them_so(
    split_npz: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "t"
    train = ["train", "--npz", str(split_npz[0]), "--epochs", "1", "--out", str(out), "data.options.normalize=false"]
    assert run_cli(train, capsys)[0] == 0
    assert mmrobust.load_checkpoint(out / "checkpoint.pt")[0].input_scaling == {}
    code, _, err = run_cli(["audit", "--checkpoint", str(out / "checkpoint.pt"), "--npz", str(split_npz[1]),
                            "--out", str(tmp_path / "a")], capsys)  # fmt: skip
    assert code == 0, err
    inputs = json.loads((tmp_path / "a" / "results.json").read_text())["inputs"]
    assert inputs == "as stored, as the checkpoint's training data were"


def test_cli_audits_every_row_of_a_file_with_split_all(
    split_npz: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    full, test_rows = split_npz
    out = tmp_path / "t"
    assert run_cli(["train", "--npz", str(full), "--epochs", "1", "--out", str(out)], capsys)[0] == 0
    audit = ["audit", "--checkpoint", str(out / "checkpoint.pt"), "--npz", str(full)]
    code, _, err = run_cli([*audit, "--split", "all", "--out", str(tmp_path / "a")], capsys)
    assert code == 0, err
    record = json.loads((tmp_path / "a" / "results.json").read_text())
    assert (record["split"], record["samples"]) == ("all", 120)
    assert "split: `all`; samples: `120`." in (tmp_path / "a" / "report.md").read_text()  # said to the reader too
    model, _ = mmrobust.load_checkpoint(out / "checkpoint.pt")
    everything = mmrobust.evaluate(model, mmrobust.load_npz(full))["accuracy"]
    clean = next(r for r in record["results"] if r["scenario"] == "clean" and r["metric"] == "accuracy")
    assert clean["value"] == pytest.approx(everything)
    code, _, err = run_cli([*audit[:-1], str(test_rows), "--split", "val", "--out", str(tmp_path / "b")], capsys)
    one_line_error(code, err, "nothing to audit: the 'val' split of 'test_rows' is empty")
