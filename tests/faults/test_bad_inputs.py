"""Issue 18: inputs that crashed or silently changed meaning. Each ends as one line naming the
problem and what to do, exit code 2 (MMRobustError in the API), nothing written."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_npz_arrays, one_line_error, run_cli, write_npz

import mmrobust
from mmrobust import MMRobustError
from mmrobust.atomic import save_tensors
from mmrobust.checkpoint import FORMAT, with_checksum
from mmrobust.config import load_config


@pytest.fixture(scope="module")
def npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small 4-class npz with two modalities."""
    return write_npz(tmp_path_factory.mktemp("bad-inputs") / "good.npz", **make_npz_arrays(n=60))


SECTIONS = {
    "name": "t",
    "data": "{npz: data.npz}",
    "models": "[{method: joint, params: {fusion: sum, dim: 8}}]",
    "train": "{epochs: 1, batch_size: 16}",
    "seeds": "[0]",
    "audit": "{defaults: false}",
}


def config(tmp_path: Path, npz: Path, **sections: str) -> Path:
    """A one-epoch experiment on `npz`, named relative to the config's folder as the README writes
    it; `sections` replace top-level keys (YAML text)."""
    (tmp_path / "data.npz").write_bytes(npz.read_bytes())
    path = tmp_path / "exp.yaml"
    path.write_text("".join(f"{key}: {text}\n" for key, text in {**SECTIONS, **sections}.items()))
    return path


def nothing_written(out: Path) -> bool:
    return not out.exists()


# --- model labels are one safe path component ---------------------------------------------------
@pytest.mark.parametrize("label", ["../../x", "/tmp/abs", "", ".hidden", "a/b", "..", "results.csv", " x"])
def test_unsafe_labels_are_refused(label: str, npz: Path, tmp_path: Path, capsys) -> None:
    cfg = config(tmp_path, npz)
    out = tmp_path / "out"
    code, _, err = run_cli(["run", str(cfg), f"models.0.label={json.dumps(label)}", "--out", str(out)], capsys)
    one_line_error(code, err, "models.0.label", "run folder")
    assert nothing_written(out) and not (tmp_path.parent / "x").exists()


@pytest.mark.parametrize("name", ["../../esc", "", "a/b"])
def test_unsafe_config_names_are_refused(name: str, npz: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    """The name is the default output folder, runs/<name> (before: `name=../../esc` wrote outside runs/)."""
    cfg = config(tmp_path, npz)
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    code, _, err = run_cli(["run", str(cfg), f"name={json.dumps(name)}"], capsys)
    one_line_error(code, err, "name", "default output folder")
    assert list(work.iterdir()) == [] and not (tmp_path / "esc").exists()


def test_report_finds_runs_whatever_their_safe_label(npz: Path, tmp_path: Path, capsys) -> None:
    cfg = config(tmp_path, npz)
    out = tmp_path / "out"
    code, _, err = run_cli(["run", str(cfg), "models.0.label=joint+sum v2.1", "--out", str(out)], capsys)
    assert code == 0, err
    assert (out / "joint+sum v2.1" / "seed-0" / "manifest.json").is_file()
    code, out_text, err = run_cli(["report", str(out), "--out", str(tmp_path / "r.md")], capsys)
    assert code == 0 and "Read 1 runs" in out_text, err


# --- every number is range-checked when the config is read ---------------------------------------
@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("train.epochs=0", "train.epochs must be an integer >= 1"),
        ("train.epochs=-1", "train.epochs"),
        ("train.batch_size=0", "train.batch_size must be an integer >= 1"),
        ("train.batch_size=-2", "train.batch_size"),
        ("train.lr=.nan", "train.lr must be a finite number > 0"),
        ("train.lr=-1", "train.lr"),
        ("train.lr=0", "train.lr"),
        ("train.weight_decay=-0.1", "train.weight_decay must be a finite number >= 0"),
        ("train.weight_decay=.inf", "train.weight_decay"),
        ("train.patience=-1", "train.patience must be an integer >= 0"),
        ("seeds=[-1]", "seeds.0 must be an integer"),
        ("seeds=[0,0]", "lists seed 0 more than once"),
        ("audit.seed=-3", "audit.seed"),
        ("audit.max_subsets=0", "audit.max_subsets must be an integer >= 1, got 0"),
        ("train.select=bogus", "train.select must be 'none'"),
        ("train.augment={a: {crop: 1.5}}", "train.augment.a: augment crop must be in [0, 1)"),
        ("train.augment={a: 3}", "train.augment.a must be a mapping"),
        ("train.augment={a: {blur: 0.1}}", "unknown transform ['blur']"),
        ("train.augment={a: {scale: '0.2'}}", "train.augment.a.scale must be a finite number"),
        ("train.device=gpu", "train.device must be auto, cpu, cuda"),
        ("audit.scenarios=[bogus]", "audit.scenarios.0: cannot parse scenario 'bogus'"),
        ("data.name=basicmotions", "both data.name"),
        ("data.options={task: sometimes}", "task must be 'classification' or 'regression'"),
    ],
)
def test_bad_numbers_and_options_are_refused_before_anything_runs(
    override: str, needle: str, npz: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out"
    code, _, err = run_cli(["run", str(config(tmp_path, npz)), override, "--out", str(out)], capsys)
    one_line_error(code, err, needle)
    assert nothing_written(out)


@pytest.mark.parametrize(
    ("section", "needle"),
    [
        ({"models": "[{method: joint}, {method: dropout, params: {dim: 0}}]"}, "models.1 (dropout) cannot be built"),
        ({"models": "[{method: joint}, {method: dropout, params: {fusion: bogus}}]"}, "unknown fusion 'bogus'"),
        ({"audit": "{scenarios: ['missing[zz@0.3]']}"}, "audit.scenarios.0 (missing[zz@0.3]) does not fit"),
        ({"train": "{epochs: 1, select: mae}"}, "validation metric of classification"),
        ({"train": "{epochs: 1, augment: {zz: {jitter: 0.1}}}"}, "no modality 'zz'"),
        ({"train": "{epochs: 1, augment: {a: {crop: 0.1}}}"}, "crop needs a time or space axis"),
    ],
)
def test_the_whole_config_is_checked_against_the_data_before_the_first_epoch(
    section: dict[str, str], needle: str, npz: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    """The bad part comes last (the second model, the audit): still nothing trains or is written."""
    trained = []
    monkeypatch.setattr("mmrobust.run.fit", lambda *a, **k: trained.append(a))
    out = tmp_path / "out"
    code, _, err = run_cli(["run", str(config(tmp_path, npz, **section)), "--out", str(out)], capsys)
    one_line_error(code, err, needle)
    assert nothing_written(out) and not trained


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["train", "--epochs", "-1"], "--epochs must be an integer >= 1"),
        (["train", "--batch-size", "0"], "--batch-size must be an integer >= 1"),
        (["train", "--lr", "nan"], "--lr must be a finite number > 0"),
        (["train", "--seed", "-1"], "--seed must be an integer"),
        (["train", "--patience", "-1"], "--patience must be an integer >= 0"),
        (["demo", "--seeds", "0"], "--seeds must be an integer >= 1"),
        (["demo", "--epochs", "0"], "--epochs must be an integer >= 1"),
    ],
)
def test_bad_command_line_numbers_are_refused(args: list[str], needle: str, npz: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    data = ["--npz", str(npz)] if args[0] == "train" else []
    code, _, err = run_cli([*args, *data, "--out", str(out)], capsys)
    one_line_error(code, err, needle)
    assert nothing_written(out)


def test_fit_refuses_bad_numbers_in_the_api(small_data: mmrobust.MultimodalData, tmp_path: Path) -> None:
    bad = ({"epochs": 0}, {"batch_size": 0}, {"lr": float("nan")}, {"seed": -1}, {"select": "bogus"},
           {"device": "gpu"}, {"device": "meta"})  # fmt: skip
    for options in bad:
        with pytest.raises(MMRobustError, match="must be"):
            mmrobust.fit(mmrobust.create_method("joint"), small_data, progress=False, **options)
    with pytest.raises(MMRobustError, match="is a folder; give a file in it"):  # before: IsADirectoryError
        mmrobust.fit(mmrobust.create_method("joint"), small_data, progress=False, state_path=tmp_path)


# --- checkpoints and npz members declaring huge sizes -------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(npz: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    method = mmrobust.create_method("joint", fusion="sum", dim=8)
    mmrobust.fit(method, mmrobust.load_npz(npz), epochs=1, progress=False)
    return mmrobust.save_checkpoint(method, tmp_path_factory.mktemp("ckpt") / "checkpoint.pt")


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda spec: spec["modalities"][0].update(shape=[10**6, 10**6]), "declares shape [1000000, 1000000]"),
        (lambda spec: spec["modalities"][0].update(shape=[100000]), "weights do not match"),
        (lambda spec: spec.update(num_classes=10**12), "declares 1000000000000 classes"),
        (lambda spec: spec["modalities"][0].update(shape=["a"]), "declares shape ['a']"),
    ],
)
def test_a_checkpoint_declaring_a_huge_model_is_refused_before_building_it(
    edit, needle: str, checkpoint: Path, npz: Path, tmp_path: Path, capsys
) -> None:
    payload = torch.load(checkpoint, weights_only=True)
    payload.pop("sha256")
    described = json.loads(payload["config"])
    edit(described["spec"])
    payload["config"] = json.dumps(described)
    crafted = tmp_path / "crafted.pt"
    save_tensors(with_checksum(payload), crafted)
    assert payload["format"] == FORMAT
    start = time.perf_counter()
    out = tmp_path / "out"
    code, _, err = run_cli(["audit", "--checkpoint", str(crafted), "--npz", str(npz), "--out", str(out)], capsys)
    one_line_error(code, err, needle, "refusing to load it")
    assert time.perf_counter() - start < 30 and nothing_written(out)


def npz_with_member(path: Path, name: str, raw: bytes) -> Path:
    """A good npz plus one member written byte for byte (a crafted header, pickled bytes)."""
    arrays = make_npz_arrays(n=60)
    arrays.pop(name.removesuffix(".npy"), None)
    write_npz(path, **arrays)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(name, raw)
    return path


def huge_header() -> bytes:
    header = {"descr": "<f8", "fortran_order": False, "shape": (2**42, 1)}  # 32 TiB declared
    text = repr(header).encode()
    text += b" " * (63 - (10 + len(text)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + b"\x00" * 64


@pytest.mark.parametrize(
    ("name", "raw", "needle"),
    [
        ("x_a.npy", huge_header(), "declares shape (4398046511104, 1)"),
        ("x_a.npy", pickle.dumps({"a": 1}), "is not an npy array"),
        ("x_a", pickle.dumps([1, 2]), "is not an npy array"),
    ],
)
def test_npz_members_declaring_huge_sizes_or_holding_raw_pickles_are_refused(
    name: str, raw: bytes, needle: str, tmp_path: Path, capsys
) -> None:
    path = npz_with_member(tmp_path / "crafted.npz", name, raw)
    with pytest.raises(MMRobustError, match="cannot read"):
        mmrobust.load_npz(path)
    out = tmp_path / "out"
    code, _, err = run_cli(["train", "--npz", str(path), "--epochs", "1", "--out", str(out)], capsys)
    one_line_error(code, err, needle)
    assert nothing_written(out)


# --- labels and inputs ---------------------------------------------------------------------------
def edited(**changes: object) -> dict[str, np.ndarray]:
    arrays = make_npz_arrays(n=60)
    for key, value in changes.items():
        arrays[key] = value(arrays) if callable(value) else value  # type: ignore[assignment]
    return arrays


BAD_DATA = {
    "label 10^9": (edited(y=lambda a: np.where(np.arange(60) == 0, 10**9, a["y"])), "missing 4, 5, 6"),
    "labels {0, 1, 7}": (edited(y=np.array([0, 1, 7] * 20)), "missing 2, 3, 4, 5, 6"),
    "string x": (edited(x_a=np.array([["u"]] * 60)), "x_a holds <U1 values, not real numbers"),
    "complex x": (edited(x_a=lambda a: a["x_a"] * 1j), "split it into real and imaginary parts"),
    "no samples": ({"x_a": np.zeros((0, 3), np.float32), "y": np.zeros(0, np.int64)}, "holds no samples"),
    "x of shape (N,)": (edited(x_a=lambda a: a["x_a"][:, 0]), "x_a.reshape(-1, 1)"),
    "one class": (edited(y=np.zeros(60, np.int64)), "needs at least two classes"),
    "all modalities absent": (
        edited(present_a=np.arange(60) != 3, present_b=np.arange(60) != 3),
        "1 samples have every modality absent (first: sample 3)",
    ),
    "string y": (edited(y=np.array(["cat", "dog"] * 30)), "map class names to integers"),
    "y of shape (N, 2)": (edited(y=np.zeros((60, 2), np.int64)), "one label per sample"),
    "constant regression target": (edited(y=np.full(60, 0.5)), "a regression target must vary"),
}


@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_degenerate_or_misleading_data_is_refused(case: str, tmp_path: Path, capsys) -> None:
    arrays, needle = BAD_DATA[case]
    path = write_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(MMRobustError, match=r"bad\.npz"):
        mmrobust.load_npz(path)
    out = tmp_path / "out"
    code, _, err = run_cli(["train", "--npz", str(path), "--epochs", "1", "--out", str(out)], capsys)
    one_line_error(code, err, needle)
    assert nothing_written(out)


def test_the_advice_for_a_one_dimensional_modality_works(tmp_path: Path, capsys) -> None:
    arrays = edited(x_a=lambda a: a["x_a"][:, 0])
    arrays["x_a"] = arrays["x_a"].reshape(-1, 1)  # what the error says to do
    path = write_npz(tmp_path / "fixed.npz", **arrays)
    code, _, err = run_cli(["train", "--npz", str(path), "--epochs", "1", "--out", str(tmp_path / "o")], capsys)
    assert code == 0, err


def test_an_npz_without_val_rows_trains_a_fixed_budget_and_selection_says_how_to_fix(tmp_path: Path, capsys) -> None:
    arrays = make_npz_arrays(n=60)
    path = write_npz(tmp_path / "noval.npz", **arrays, split=np.array(["train"] * 45 + ["test"] * 15))
    data = mmrobust.load_npz(path)  # before: refused, "the 'val' split is empty", whatever the selection
    assert {name: len(index) for name, index in data.splits.items()} == {"train": 45, "val": 0, "test": 15}
    out = tmp_path / "out"
    code, _, err = run_cli(["train", "--npz", str(path), "--epochs", "1", "--out", str(out)], capsys)
    one_line_error(
        code,
        err,
        "dataset 'noval' has no val samples, but select='loss' picks the epoch on them: add val rows",
        "train a fixed budget with select='none' (config: train.select: none)",
    )
    assert nothing_written(out)  # refused before the first epoch
    fixed_budget = ["train", "--npz", str(path), "--epochs", "1", "--out", str(out), "train.select=none"]
    code, _, err = run_cli(fixed_budget, capsys)
    assert code == 0, err
    with pytest.raises(MMRobustError, match=r"^dataset 'noval' has no val samples, but select='accuracy' picks"):
        mmrobust.fit(mmrobust.create_method("joint", fusion="sum"), data, epochs=1, select="accuracy", progress=False)


def test_labels_of_shape_n_by_1_are_read_with_a_one_line_note(tmp_path: Path) -> None:
    """In a process of its own: pytest would record the warning instead of printing it."""
    path = write_npz(tmp_path / "column.npz", **edited(y=lambda a: a["y"].reshape(-1, 1)))
    args = ["train", "--npz", str(path), "--epochs", "1", "--out", str(tmp_path / "o")]
    done = subprocess.run(
        [sys.executable, "-c", "from mmrobust.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    warned = [line for line in done.stderr.splitlines() if "y has shape" in line]
    assert warned == ["warning: column.npz: y has shape (60, 1); read as (60,), one label per sample"], done.stderr
    assert "epoch 1/1" in done.stderr  # and progress, without a terminal


def test_whole_number_float_labels_announce_the_task_and_can_choose_it(tmp_path: Path) -> None:
    floats = edited(y=lambda a: a["y"].astype(np.float32))
    path = write_npz(tmp_path / "floats.npz", **floats)
    with pytest.warns(UserWarning, match="read as regression.*task=classification"):
        assert mmrobust.load_npz(path).spec.task == "regression"
    assert mmrobust.load_npz(path, task="classification").spec.num_classes == 4
    tagged = write_npz(tmp_path / "tagged.npz", **floats, task=np.array("classification"))
    assert mmrobust.load_npz(tagged).spec.task == "classification"
    with pytest.raises(MMRobustError, match="non-integer values"):
        mmrobust.load_npz(write_npz(tmp_path / "half.npz", **edited(y=np.full(60, 0.5))), task="classification")


# --- YAML ----------------------------------------------------------------------------------------
BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (BILLION_LAUGHS, "alias bomb"),
        ("train: {epochs: 1}\ntrain: {epochs: 2}\n", "duplicate key 'train' (line 2)"),
        ("train:\n  epochs: 1\n  lr: 0.1\n  epochs: 100\n", "duplicate key 'epochs' (line 4)"),
        ("a: &a [*a]\n", "recursive alias"),
    ],
)
def test_alias_bombs_and_duplicate_keys_are_refused(text: str, needle: str, tmp_path: Path, capsys) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    start = time.perf_counter()
    code, _, err = run_cli(["run", str(path), "--print-config"], capsys)
    one_line_error(code, err, str(path), needle)
    assert time.perf_counter() - start < 10


def test_plain_aliases_and_merge_keys_still_work(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(
        "data: {name: synthetic}\nmodels:\n  - {method: joint, label: a, params: &p {fusion: sum, dim: 8}}\n"
        "  - {method: joint, label: b, params: {<<: *p, dim: 16}}\n"
    )
    assert [m.params for m in load_config(path).models] == [{"fusion": "sum", "dim": 8}, {"fusion": "sum", "dim": 16}]


# --- paths and the README's config form -----------------------------------------------------------
def test_relative_paths_resolve_from_the_config_folder(npz: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    folder = tmp_path / "project" / "configs"
    folder.mkdir(parents=True)
    cfg = config(folder, npz)  # data: {npz: data.npz}, beside the config: the README's form
    monkeypatch.chdir(tmp_path)
    loaded = load_config(cfg)
    assert loaded.data.name is None and Path(loaded.data.npz or "").resolve() == folder / "data.npz"
    code, _, err = run_cli(["run", str(cfg.relative_to(tmp_path)), "--out", "out"], capsys)
    assert code == 0, err
    assert (tmp_path / "out" / "joint" / "seed-0" / "manifest.json").is_file()


# --- progress a user can see without a terminal --------------------------------------------------
def test_a_run_without_a_terminal_prints_plain_progress(npz: Path, tmp_path: Path, capsys) -> None:
    cfg = config(tmp_path, npz, seeds="[0, 1]")
    code, _, err = run_cli(["run", str(cfg), "--out", str(tmp_path / "out")], capsys)
    assert code == 0, err
    lines = err.splitlines()
    assert lines[0] == "run 1/2: joint seed 0" and "run 2/2: joint seed 1" in lines, err
    assert any(line.startswith("joint seed 1: epoch 1/1, val accuracy") and "ETA 0s" in line for line in lines), err
    code, _, err = run_cli(["run", str(cfg), "--out", str(tmp_path / "out")], capsys)
    assert "run 2/2: joint seed 1 had finished before; kept" in err.splitlines(), err
    # two models of one method: the epoch lines name each by its label (before: both `joint`)
    two = config(tmp_path, npz, models="[{method: joint, label: small, params: {dim: 8}}, {method: joint, label: big}]")
    code, _, err = run_cli(["run", str(two), "--out", str(tmp_path / "two")], capsys)
    epoch_lines = [line.split(":")[0] for line in err.splitlines() if ": epoch 1/1" in line]
    assert code == 0 and epoch_lines == ["small seed 0", "big seed 0"], err


def test_resuming_and_preprocessing_say_so(small_data, tmp_path: Path, monkeypatch, caplog) -> None:
    from mmrobust.data.cache import cached

    state = tmp_path / "state.pt"
    monkeypatch.setattr(type(state), "unlink", lambda self, missing_ok=False: None)  # as if killed after saving
    options = {"epochs": 2, "progress": False, "state_path": state, "state_every": 0}
    mmrobust.fit(mmrobust.create_method("joint", fusion="sum"), small_data, **options)
    caplog.set_level("INFO", logger="mmrobust")
    mmrobust.fit(mmrobust.create_method("joint", fusion="sum"), small_data, **options)
    assert "joint seed 0: resuming after epoch 2 of 2 (from its saved training state)" in caplog.messages
    cached("tiny", "r1", [], {}, lambda: small_data)
    assert any(m.startswith("preprocessing tiny (once: later loads read the cache") for m in caplog.messages)
