"""`mmrobust data list | info | verify | download`."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_cli

import mmrobust


def test_list_shows_every_registered_dataset(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    import mmrobust

    code, out, _ = run_cli(["data", "list", "--data-dir", str(tmp_path)], capsys)
    assert code == 0
    for name in mmrobust.data.DATASETS.names():
        assert name in out


def test_list_says_basicmotions_is_available_only_where_its_loader_finds_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: "available: yes" under any --data-dir, though with one the sktime copy is never read."""
    monkeypatch.setenv("COLUMNS", "400")
    monkeypatch.delenv("MMROBUST_DATA", raising=False)  # the CLI reads it as --data-dir
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # an empty default data dir
    rows = {}
    for args in ([], ["--data-dir", str(tmp_path)]):
        code, out, _ = run_cli(["data", "list", *args], capsys)
        assert code == 0
        rows[bool(args)] = next(line for line in out.splitlines() if line.startswith("│ basicmotions "))
    assert rows[False].rstrip(" │").endswith("yes") and "0.0 MB" not in rows[False]  # sktime (pyproject) has it
    assert rows[True].rstrip(" │").endswith("no")
    mmrobust.load_dataset("basicmotions")  # what the list says holds
    with pytest.raises(mmrobust.MMRobustError, match="BasicMotions not found"):
        mmrobust.load_dataset("basicmotions", data_dir=tmp_path)


def test_info_shows_splits_and_class_balance(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["data", "info", "basicmotions"], capsys)
    assert code == 0
    assert "accelerometer: conv1d [3, 100]" in out
    assert "Standing: 10, Running: 10, Walking: 10, Badminton: 10" in out  # the official test split
    assert "recipe: basicmotions/" in out


def test_verify_prints_checksums_and_loads(capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("MMROBUST_DATA", raising=False)  # the CLI reads it as --data-dir
    monkeypatch.setenv("HOME", str(tmp_path))  # nothing in the default data dir: sktime's copy is read
    code, out, _ = run_cli(["data", "verify", "basicmotions"], capsys)
    assert code == 0 and "read from the copy at" in out and "loads (80 samples)" in out


def test_unknown_dataset_is_one_line_with_suggestion(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["data", "info", "basicmotion"], capsys)
    assert code == 2
    assert "Did you mean 'basicmotions'" in err and len(err.strip().splitlines()) == 1


def test_download_without_public_url_says_where_to_get_it(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run_cli(["data", "download", "basicmotions", "--data-dir", str(tmp_path)], capsys)
    assert code == 2
    assert "timeseriesclassification.com" in err and "Traceback" not in err
    assert f"put basic_motions/BasicMotions_{{TRAIN,TEST}}.ts under {tmp_path}, then" in err  # the folder read


def test_verify_counts_the_basicmotions_files_under_the_data_dir(
    capsys: pytest.CaptureFixture[str], shared_data: Path, tmp_path: Path
) -> None:
    code, out, _ = run_cli(["data", "verify", "basicmotions", "--data-dir", str(shared_data)], capsys)
    assert code == 0 and "basic_motions/BasicMotions_{TRAIN,TEST}.ts: 2 files of the official release" in out
    code, _, err = run_cli(["data", "verify", "basicmotions", "--data-dir", str(tmp_path)], capsys)
    assert code == 2 and f"expected basic_motions/BasicMotions_{{TRAIN,TEST}}.ts under {tmp_path}" in err
