"""The run folder's one owner (runfolder.py): the format is written by the writer and checked by
both the reader (`mmrobust report`) and the writer's finished check (`mmrobust run`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmrobust import MMRobustError
from mmrobust.runfolder import MANIFEST, RUN_FORMAT, finished_manifest, read_manifest, write_manifest


def test_the_written_format_is_read_back_and_checked(tmp_path: Path) -> None:
    write_manifest(tmp_path, {"status": "done", "run_hash": "h", "files": {}})
    record = read_manifest(tmp_path)
    assert record["format"] == RUN_FORMAT and finished_manifest(tmp_path, "h") == record
    assert finished_manifest(tmp_path, "another hash") is None

    write_manifest(tmp_path, {"format": "mmrobust-run/9", "status": "done", "run_hash": "h"})
    with pytest.raises(MMRobustError, match="run format 'mmrobust-run/9' is not supported"):
        read_manifest(tmp_path)
    with pytest.warns(UserWarning, match="the finished run is damaged: manifest.json: run format 'mmrobust-run/9'"):
        assert finished_manifest(tmp_path, "h") is None


def test_a_manifest_of_mmrobust_0_1_has_no_format_and_is_read(tmp_path: Path) -> None:
    (tmp_path / MANIFEST).write_text(json.dumps({"status": "done", "run_hash": "h"}))
    assert read_manifest(tmp_path)["status"] == "done" and finished_manifest(tmp_path, "h") is not None
