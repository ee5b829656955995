"""`train` -> `audit` -> `report` as one workflow: KEY=VALUE overrides for `train`, `--label` for
`audit`, and `report` reading audit folders (and saying what to do with a train-only folder)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import make_npz_arrays, one_line_error, run_cli, write_npz

import mmrobust


@pytest.fixture
def npz(tmp_path: Path) -> Path:
    return write_npz(tmp_path / "data.npz", **make_npz_arrays(n=80))


def test_train_takes_key_value_overrides(npz: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "m"
    args = ["train", "--npz", str(npz), "--method", "dropout", "--fusion", "sum", "--epochs", "2", "--out", str(out),
            "params.dim=8", "train.select=accuracy", "train.weight_decay=0", "train.augment.a.scale=0.1"]  # fmt: skip
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    method, _ = mmrobust.load_checkpoint(out / "checkpoint.pt")
    assert method.get_params()["dim"] == 8
    assert json.loads((out / "val_metrics.json").read_text())["val"]["accuracy"] >= 0


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("epochs=3", "unknown override 'epochs=3'"),
        ("train.momentum=0.9", "unknown training option train.momentum"),
        ("params.nope=1", "method 'dropout'"),
        ("train.select=mae", "must be 'none' (a fixed budget) or a validation metric"),
        ("data.name=x", "unknown override 'data.name=x'"),
    ],
)
def test_bad_train_overrides_are_one_line_errors(npz: Path, tmp_path: Path, capsys, override: str, needle: str) -> None:
    args = ["train", "--npz", str(npz), "--epochs", "1", "--out", str(tmp_path / "m"), override]
    code, _, err = run_cli(args, capsys)
    one_line_error(code, err, needle)
    assert not (tmp_path / "m").exists()


def test_report_reads_audit_folders_and_explains_train_only_ones(npz: Path, tmp_path: Path, capsys) -> None:
    for method in ("joint", "dropout"):
        code, _, err = run_cli(["train", "--npz", str(npz), "--method", method, "--fusion", "sum", "--epochs", "2",
                                "--out", str(tmp_path / method)], capsys)  # fmt: skip
        assert code == 0, err
    code, _, err = run_cli(["report", str(tmp_path / "joint"), "--out", str(tmp_path / "r.html")], capsys)
    one_line_error(code, err, "holds a trained model but no audit", "mmrobust audit --checkpoint")
    for method, out in (("joint", tmp_path / "joint"), ("dropout", tmp_path / "dropout" / "audit")):
        checkpoint = str(tmp_path / method / "checkpoint.pt")  # joint: audited into its own training folder
        code, _, err = run_cli(["audit", "--checkpoint", checkpoint, "--npz", str(npz), "--label", f"my-{method}",
                                "--out", str(out)], capsys)  # fmt: skip
        assert code == 0, err
    report = tmp_path / "report.html"
    code, _, err = run_cli(["report", str(tmp_path / "joint"), str(tmp_path / "dropout"), "--out", str(report)], capsys)
    assert code == 0, err
    text = report.read_text()
    assert "my-joint" in text and "my-dropout" in text
    args = ["report", str(tmp_path / "joint"), str(tmp_path / "dropout"), "--out", str(report), "--resample-seeds"]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    assert "so the bootstrap resamples" in report.read_text()  # audits keep no per-sample predictions: seeds only


def test_threads_are_set_for_train_and_checked_in_configs(npz: Path, tmp_path: Path, capsys) -> None:
    import torch

    before = torch.get_num_threads()
    try:
        code, _, err = run_cli(["train", "--npz", str(npz), "--epochs", "1", "--threads", "1", "--out",
                                str(tmp_path / "m")], capsys)  # fmt: skip
        assert code == 0 and torch.get_num_threads() == 1, err
    finally:
        torch.set_num_threads(before)
    config = tmp_path / "c.yaml"
    config.write_text(f"data: {{npz: {npz}}}\ntrain: {{epochs: 1, threads: 0}}\n")
    code, _, err = run_cli(["run", str(config), "--out", str(tmp_path / "runs")], capsys)
    one_line_error(code, err, "train.threads must be an integer >= 1, got 0")


def test_audit_refuses_to_write_into_a_run_folder(npz: Path, tmp_path: Path, capsys) -> None:
    """`mmrobust audit --out <a run of mmrobust run>` replaced the run's results.json, after which
    `mmrobust report` called the run damaged; now it is refused before anything is loaded or written."""
    (tmp_path / "c.yaml").write_text(
        f"name: one\ndata: {{npz: {npz}}}\nmodels: [{{method: joint, params: {{fusion: sum}}}}]\n"
        "train: {epochs: 1}\nseeds: [0]\n"
    )
    code, _, err = run_cli(["run", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "exp")], capsys)
    assert code == 0, err
    run_dir = tmp_path / "exp" / "joint" / "seed-0"
    before = {p.name: p.read_bytes() for p in (run_dir / "results.json", tmp_path / "exp" / "results.json")}
    audit = ["audit", "--checkpoint", str(run_dir / "checkpoint.pt"), "--npz", str(npz), "--out"]
    code, _, err = run_cli([*audit, str(run_dir)], capsys)
    one_line_error(code, err, f"--out {run_dir} is a run folder of `mmrobust run`: the audit's", "another --out")
    code, _, err = run_cli([*audit, str(tmp_path / "exp")], capsys)
    one_line_error(code, err, f"--out {tmp_path / 'exp'} holds a run folder of `mmrobust run` ({run_dir})")
    after = {p.name: p.read_bytes() for p in (run_dir / "results.json", tmp_path / "exp" / "results.json")}
    assert after == before
    code, _, err = run_cli([*audit, str(tmp_path / "elsewhere")], capsys)
    assert code == 0, err
    code, _, err = run_cli(["report", str(tmp_path / "exp"), "--out", str(tmp_path / "r.md")], capsys)
    assert code == 0, err


def test_report_refuses_to_write_into_a_run_folder_and_a_negative_seed(npz: Path, tmp_path: Path, capsys) -> None:
    """`mmrobust report --out <a file in a run of mmrobust run>` replaced its checksummed report.md, after which
    `mmrobust run` trained the run again; `--seed -1` was a numpy traceback. Both are refused, nothing written."""
    (tmp_path / "c.yaml").write_text(
        f"name: one\ndata: {{npz: {npz}}}\nmodels: [{{method: joint, params: {{fusion: sum}}}}]\n"
        "train: {epochs: 1}\nseeds: [0]\n"
    )
    run = ["run", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "exp")]
    code, _, err = run_cli(run, capsys)
    assert code == 0, err
    run_dir = tmp_path / "exp" / "joint" / "seed-0"
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    report = ["report", str(tmp_path / "exp"), "--out"]
    code, _, err = run_cli([*report, str(run_dir / "report.md")], capsys)
    one_line_error(code, err, f"--out {run_dir / 'report.md'} is inside a run folder of `mmrobust run` ({run_dir})")
    code, _, err = run_cli([*report, str(run_dir / "sub" / "r.html")], capsys)
    one_line_error(code, err, f"is inside a run folder of `mmrobust run` ({run_dir.resolve()})", "another --out")
    code, _, err = run_cli([*report, str(tmp_path / "r.md"), "--seed", "-1"], capsys)
    one_line_error(code, err, "--seed must be an integer >= 0, got -1")
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before and not (tmp_path / "r.md").exists()
    code, _, err = run_cli(run, capsys)
    assert code == 0 and "damaged" not in err, err  # the run is still finished: nothing retrains
    code, _, err = run_cli([*report, str(tmp_path / "exp" / "r.md")], capsys)  # beside the runs: allowed
    assert code == 0, err


def test_report_refuses_runs_of_one_label_trained_differently_and_names_stale_models(
    npz: Path, tmp_path: Path, capsys
) -> None:
    """A config run again into the same --out with a changed model and another seed: the report averaged
    the old run (sum fusion) and the new one (concat) as two seeds of one model; a model dropped from the
    config stayed in the report unnamed. Now the first is refused and the second named in a warning."""
    config, exp = tmp_path / "c.yaml", tmp_path / "exp"
    config.write_text(
        f"name: one\ndata: {{npz: {npz}}}\nmodels: [{{method: joint, params: {{fusion: sum}}}}]\n"
        "train: {epochs: 1}\nseeds: [0]\n"
    )
    for overrides in ([], ["seeds=[1]", "models.0.params.fusion=concat"]):
        code, _, err = run_cli(["run", str(config), *overrides, "--out", str(exp)], capsys)
        assert code == 0, err
    report = ["report", str(exp), "--out", str(tmp_path / "r.md")]
    code, _, err = run_cli(report, capsys)
    one_line_error(
        code, err, f"model 'joint' on data: runs {exp / 'joint' / 'seed-0'} and {exp / 'joint' / 'seed-1'} were "
        "trained differently (model.params.fusion='sum' and 'concat')", "its own --out folder, or give the models"
    )  # fmt: skip
    assert not (tmp_path / "r.md").exists()
    code, _, err = run_cli(["run", str(config), "models.0.label=renamed", "--out", str(exp)], capsys)
    assert code == 0, err
    shutil.rmtree(exp / "joint" / "seed-1")
    stale = re.escape(f"joint ({exp / 'joint'}): not in the latest config run into that folder")
    with pytest.warns(UserWarning, match=stale) as caught:  # in-process, pytest records it (the CLI prints it)
        code, out, err = run_cli(report, capsys)
    assert code == 0 and len([w for w in caught if "latest config" in str(w.message)]) == 1, err
    assert "Read 2 runs of 2 models" in out
    code, _, err = run_cli(["run", str(config), "train.threads=1", "--out", str(exp)], capsys)  # threads: alike
    assert code == 0, err
    with pytest.warns(UserWarning, match=r"^renamed \("):
        code, out, err = run_cli(report, capsys)
    assert code == 0 and "Read 2 runs of 2 models" in out, err
