"""The command line: help texts, one-line user errors with exit code 2, --debug, end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_npz_arrays, run_cli, write_npz

from mmrobust import MMRobustError
from mmrobust.audit.report import FILES
from mmrobust.checkpoint import load_checkpoint
from mmrobust.cli import cli, main

COMMANDS = sorted(cli.commands)
LAUNCH = "from mmrobust.cli import main; main()"


def run_subprocess(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", LAUNCH, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        env={**__import__("os").environ, "COLUMNS": "80"},
    )


def assert_one_line_error(code: int, err: str, expected: str) -> None:
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("error:")
    assert expected in lines[0], lines[0]


# --- help -------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [None, *COMMANDS], ids=["mmrobust", *COMMANDS])
def test_help_exits_zero_and_shows_an_example(command: str | None, capsys) -> None:
    args = ([command] if command else []) + ["--help"]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    assert "Usage:" in out and "Example" in out


def test_expected_commands_exist() -> None:
    assert {"demo", "train", "audit", "list"} <= set(COMMANDS)


def test_version_and_list(capsys) -> None:
    code, out, _ = run_cli(["--version"], capsys)
    assert code == 0 and "0.1.0" in out
    code, out, _ = run_cli(["list"], capsys)
    assert code == 0
    for name in ("synthetic", "basicmotions", "joint", "dropout", "transformer", "concat", "conv1d"):
        assert name in out


# --- user errors: exit 2, one line, no traceback ----------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Small npz files and a checkpoint trained (1 epoch) on a 4-class npz."""
    d = tmp_path_factory.mktemp("cli")
    good = make_npz_arrays(n=60, num_classes=4)
    out = {"dir": d, "good": write_npz(d / "good.npz", **good)}
    five = make_npz_arrays(n=60, num_classes=5)
    out["five_classes"] = write_npz(d / "five.npz", **five)
    negative = dict(good, y=good["y"] - 1)
    out["negative"] = write_npz(d / "negative.npz", **negative)
    out["mismatch"] = write_npz(d / "mismatch.npz", **dict(good, x_b=good["x_b"][:50]))
    out["no_y"] = write_npz(d / "no_y.npz", x_a=good["x_a"], x_b=good["x_b"])
    nan = {k: v.copy() for k, v in good.items()}
    nan["x_a"][5, 2] = np.nan
    out["nan"] = write_npz(d / "nan.npz", **nan)
    out["other_shapes"] = write_npz(d / "other.npz", **make_npz_arrays(n=60, num_classes=4, shape_a=(9,)))
    try:
        main(
            [
                "train",
                "--npz",
                str(out["good"]),
                "--method",
                "joint",
                "--fusion",
                "sum",
                "--epochs",
                "1",
                "--out",
                str(d / "run"),
            ]
        )
    except SystemExit as e:
        assert not e.code, e
    out["checkpoint"] = d / "run" / "checkpoint.pt"
    assert out["checkpoint"].is_file()
    return out


ERRORS = {
    "unknown-dataset": (["train", "--data", "synthetc", "--out", "{dir}/x"], "Did you mean 'synthetic'?"),
    "unknown-dataset-audit": (
        ["audit", "--checkpoint", "{checkpoint}", "--data", "basicmotion", "--out", "{dir}/x"],
        "Did you mean 'basicmotions'?",
    ),
    "unknown-method": (
        ["train", "--data", "synthetic", "--method", "dropot", "--epochs", "1", "--out", "{dir}/x"],
        "Did you mean 'dropout'?",
    ),
    "unknown-fusion": (
        ["train", "--data", "synthetic", "--fusion", "transfomer", "--epochs", "1", "--out", "{dir}/x"],
        "Did you mean 'transformer'?",
    ),
    "unknown-device": (
        ["train", "--data", "synthetic", "--device", "gpu", "--epochs", "1", "--out", "{dir}/x"],
        "--device must be auto, cpu, cuda or cuda:N, got 'gpu'",
    ),
    "npz-sample-count": (
        ["train", "--npz", "{mismatch}", "--epochs", "1", "--out", "{dir}/x"],
        "x_b has 50 samples but y has 60",
    ),
    "npz-no-y": (["train", "--npz", "{no_y}", "--epochs", "1", "--out", "{dir}/x"], "no labels array 'y'"),
    "npz-nan": (["train", "--npz", "{nan}", "--epochs", "1", "--out", "{dir}/x"], "NaN/inf"),
    "npz-nan-audit": (
        ["audit", "--checkpoint", "{checkpoint}", "--npz", "{nan}", "--out", "{dir}/x"],
        "NaN/inf",
    ),
    "labels-five-classes": (
        ["audit", "--checkpoint", "{checkpoint}", "--npz", "{five_classes}", "--out", "{dir}/x"],
        "4 classes vs 5",
    ),
    "labels-negative": (
        ["audit", "--checkpoint", "{checkpoint}", "--npz", "{negative}", "--out", "{dir}/x"],
        "labels out of range",
    ),
    "other-model-config": (
        ["audit", "--checkpoint", "{checkpoint}", "--npz", "{other_shapes}", "--out", "{dir}/x"],
        "trained for other data",
    ),
    "missing-checkpoint": (
        ["audit", "--checkpoint", "{dir}/nope/checkpoint.pt", "--data", "synthetic", "--out", "{dir}/x"],
        "checkpoint not found",
    ),
    "not-a-checkpoint": (
        ["audit", "--checkpoint", "{good}", "--data", "synthetic", "--out", "{dir}/x"],
        "not a safe mmrobust checkpoint",
    ),
    "missing-policy-with-checkpoint": (  # before: --missing silently ignored
        ["audit", "--checkpoint", "{checkpoint}", "--npz", "{good}", "--missing", "mean", "--out", "{dir}/x"],
        "--weights, --missing, --no-mask-check and --inputs go with --model, not --checkpoint",
    ),
    "override-of-a-flag": (  # before: train.epochs=5 silently beat --epochs 1
        ["train", "--data", "synthetic", "--epochs", "1", "--out", "{dir}/x", "train.epochs=5"],
        "train.epochs=5: train.epochs has a flag of its own: use --epochs",
    ),
    "data-option-typo": (  # before: a TypeError traceback from load_npz, exit 1
        ["train", "--npz", "{good}", "--epochs", "1", "--out", "{dir}/x", "data.options.taks=regression"],
        "unknown option for data.options (an npz file) 'taks'. Did you mean 'task'?",
    ),
    "npz-path-as-an-option": (  # before: listed as valid, then load_npz got the path twice (a TypeError)
        ["train", "--npz", "{good}", "--epochs", "1", "--out", "{dir}/x", "data.options.path=other.npz"],
        "unknown option for data.options (an npz file) 'path'. Valid: encoders, normalize, split_seed, task",
    ),
    "dataset-option-typo": (
        ["train", "--data", "synthetic", "--epochs", "1", "--out", "{dir}/x", "data.options.n_sample=50"],
        "unknown option for dataset 'synthetic' 'n_sample'. Did you mean 'n_samples'?",
    ),
    "missing-npz": (["train", "--npz", "{dir}/nope.npz", "--out", "{dir}/x"], "npz file not found"),
    "no-data": (["train", "--out", "{dir}/x"], "exactly one of --data NAME or --npz FILE"),
    "two-data": (["train", "--data", "synthetic", "--npz", "{good}", "--out", "{dir}/x"], "exactly one of"),
}


def _format(args: list[str], files: dict[str, Path]) -> list[str]:
    return [a.format(**{k: str(v) for k, v in files.items()}) for a in args]


@pytest.mark.parametrize("case", list(ERRORS))
def test_user_errors_are_one_line_with_exit_code_2(case: str, files, capsys) -> None:
    args, expected = ERRORS[case]
    code, _, err = run_cli(_format(args, files), capsys)
    assert_one_line_error(code, err, expected)
    assert not (files["dir"] / "x" / "checkpoint.pt").exists()


@pytest.mark.parametrize("name", ["[v2]", "[bold]", "[red]x[/]"])
def test_error_messages_are_printed_verbatim(files, capsys, name: str) -> None:
    """Square brackets in a message (paths, scenario names) are text, not rich markup."""
    path = files["dir"] / name / "data.npz"
    code, _, err = run_cli(["train", "--npz", str(path), "--out", str(files["dir"] / "x")], capsys)
    assert_one_line_error(code, err, str(path))


def test_user_error_in_a_real_process(files) -> None:
    r = run_subprocess(["train", "--data", "synthetc", "--out", "x"], files["dir"])
    assert_one_line_error(r.returncode, r.stderr, "Did you mean 'synthetic'?")
    assert r.stdout == ""


def test_debug_shows_the_traceback(files, capsys) -> None:
    with pytest.raises(MMRobustError, match="synthetc"):
        main(["--debug", "train", "--data", "synthetc", "--out", str(files["dir"] / "x")])
    r = run_subprocess(["--debug", "train", "--data", "synthetc", "--out", "x"], files["dir"])
    assert r.returncode not in (0, 2)
    assert "Traceback" in r.stderr and "MMRobustError" in r.stderr and "synthetc" in r.stderr


def test_click_usage_errors_exit_2(capsys) -> None:
    code, _, err = run_cli(["train", "--data", "synthetic"], capsys)  # --out is required
    assert code == 2 and "--out" in err and "Traceback" not in err
    code, _, err = run_cli(["frobnicate"], capsys)
    assert code == 2 and "Traceback" not in err


# --- end to end -------------------------------------------------------------------------------
def test_train_then_audit_end_to_end(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    code, out, err = run_cli(
        [
            "train",
            "--data",
            "synthetic",
            "--method",
            "dropout",
            "--fusion",
            "sum",
            "--epochs",
            "3",
            "--device",
            "cpu",
            "--out",
            str(run),
        ],
        capsys,
    )
    assert code == 0, err
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt", "val_metrics.json"]
    record = json.loads((run / "val_metrics.json").read_text())
    assert record["epochs_run"] == 3 and 0 <= record["best_epoch"] < 3
    assert 0.0 <= record["val"]["accuracy"] <= 1.0 and "loss" in record["val"]
    assert "checkpoint.pt" in out

    report = tmp_path / "audit"
    code, out, err = run_cli(
        ["audit", "--checkpoint", str(run / "checkpoint.pt"), "--data", "synthetic", "--out", str(report)],
        capsys,
    )
    assert code == 0, err
    assert sorted(p.name for p in report.iterdir()) == sorted(FILES)
    csv = pd.read_csv(report / "results.csv")
    assert set(csv.method) == {"dropout"} and set(csv.fusion) == {"sum"} and set(csv.seed) == {0}
    assert set(csv.dataset) == {"synthetic"}
    assert {"clean", "subset[m1+m2]", "missing[m0@0.3]"} <= set(csv.scenario)
    assert (report / "heatmap.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert json.loads((report / "results.json").read_text())["checkpoint"] == str(run / "checkpoint.pt")
    assert "dropout" in out  # the summary table

    # the same audit seed gives the same numbers; the audit is reproducible
    again = tmp_path / "audit2"
    code, _, err = run_cli(
        ["audit", "--checkpoint", str(run / "checkpoint.pt"), "--data", "synthetic", "--out", str(again)],
        capsys,
    )
    assert code == 0, err
    pd.testing.assert_frame_equal(pd.read_csv(again / "results.csv"), csv)


def test_train_and_audit_an_npz(files, tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(
        [
            "audit",
            "--checkpoint",
            str(files["checkpoint"]),
            "--npz",
            str(files["good"]),
            "--seed",
            "3",
            "--out",
            str(tmp_path / "a"),
        ],
        capsys,
    )
    assert code == 0, err
    j = json.loads((tmp_path / "a" / "results.json").read_text())
    assert {s["audit_seed"] for s in j["scenarios"]} == {3}
    assert {r["method"] for r in j["results"]} == {"joint"}


@pytest.mark.parametrize(("method", "fusion"), [("features", None), ("crossl", "mlp"), ("mma", "late")])
def test_train_without_fusion_keeps_the_method_default(files, tmp_path: Path, capsys, method: str,
                                                       fusion: str | None) -> None:  # fmt: skip
    """`features` takes no fusion (before: always refused), CroSSL's default is the paper's mlp."""
    args = ["train", "--npz", str(files["good"]), "--method", method, "--epochs", "1", "--out", str(tmp_path / "m")]
    code, _, err = run_cli([*args, "params.pretrain_epochs=1"] if method == "crossl" else args, capsys)
    assert code == 0, err
    trained, _ = load_checkpoint(tmp_path / "m" / "checkpoint.pt")
    assert trained.name == method and getattr(trained, "fusion", None) == fusion


# --- audit --scenario -------------------------------------------------------------------------
def test_audit_extra_scenarios(files, tmp_path: Path, capsys) -> None:
    extra = ["rates[a=0.2,b=0.8]", "noise[b,sigma=2,p=0.5]@token", "missing[b@0.7]"]
    args = [
        "audit",
        "--checkpoint",
        str(files["checkpoint"]),
        "--npz",
        str(files["good"]),
        "--out",
        str(tmp_path),
    ]
    for name in extra:
        args += ["--scenario", name]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    scen = {s["name"]: s for s in json.loads((tmp_path / "results.json").read_text())["scenarios"]}
    assert scen["rates[a=0.2,b=0.8]"]["kind"] == "custom"
    assert scen["noise[b,sigma=2,p=0.5]@token"]["corruption"]["stage"] == "token"
    assert scen["missing[b@0.7]"]["corruption"] == {
        "type": "Missing",
        "modality": "b",
        "proportion": 0.7,
        "if_all_missing": "keep_one",
        "stage": "input",
    }
    assert [s["kind"] for s in scen.values()].count("custom") == 3
    csv = pd.read_csv(tmp_path / "results.csv")
    assert set(extra) <= set(csv.scenario)


@pytest.mark.parametrize(
    ("scenario", "expected"),
    [
        ("bogus", "cannot parse scenario 'bogus'"),
        ("missing[a@1.5]", "proportion must be a number in [0, 1]"),
        ("missing[c@0.5]", "unknown modality 'c'"),
        ("rates[a=0.5,q=0.1]", "unknown modality 'q'"),
        ("missing[a@0.3]", "duplicate scenarios"),
        pytest.param("noise[aa,sigma=1,p=0.3]", "unknown modality 'aa'"),
    ],
)
def test_audit_bad_scenarios_are_user_errors(
    files, tmp_path: Path, capsys, scenario: str, expected: str
) -> None:
    try:
        code, _, err = run_cli(
            [
                "audit",
                "--checkpoint",
                str(files["checkpoint"]),
                "--npz",
                str(files["good"]),
                "--scenario",
                scenario,
                "--out",
                str(tmp_path),
            ],
            capsys,
        )
    except Exception as e:  # an escaped non-user error is exactly what this test guards against
        pytest.fail(f"uncaught {type(e).__name__}: {e}")
    assert_one_line_error(code, err, expected)


def test_demo_runs_end_to_end_with_tiny_settings(tmp_path: Path, capsys) -> None:
    try:
        from mmrobust import load_dataset

        load_dataset("basicmotions")
    except MMRobustError as e:
        pytest.skip(f"BasicMotions not available: {e}")
    code, out, err = run_cli(["demo", "--out", str(tmp_path), "--seeds", "1", "--epochs", "1"], capsys)
    assert code == 0, err
    written = {p.name for p in tmp_path.iterdir()}
    assert set(FILES) <= written
    assert {"joint-sum", "dropout-transformer"} <= written  # one folder per model, each with its runs
    assert (tmp_path / "joint-sum" / "seed-0" / "manifest.json").is_file()
    csv = pd.read_csv(tmp_path / "results.csv")
    assert set(csv.method) == {"joint", "dropout"}
    assert set(csv.fusion) == {"sum", "concat", "transformer"}
    assert set(csv.dataset) == {"basicmotions"}
    assert "BasicMotions" in out


def test_python_dash_m_runs_the_same_command_line(tmp_path: Path) -> None:
    as_module = subprocess.run(
        [sys.executable, "-m", "mmrobust", "list"], capture_output=True, text=True, cwd=tmp_path, timeout=120,
        env={**__import__("os").environ, "COLUMNS": "80"},
    )
    assert as_module.returncode == 0 and as_module.stdout == run_subprocess(["list"], tmp_path).stdout
    bad = subprocess.run(
        [sys.executable, "-m", "mmrobust", "train", "--data", "synthetc", "--out", "x"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert_one_line_error(bad.returncode, bad.stderr, "synthetic")
