"""`avmnist`: spoken digits (FSDD) paired with handwritten digits (MNIST) of the same class.

AV-MNIST as in Vielzeuf et al., "CentralNet: a multilayer approach for multimodal fusion"
(ECCV Workshops 2018, arXiv:1808.07275) and MultiBench (Liang et al., NeurIPS 2021): each
recording of the Free Spoken Digit Dataset (https://github.com/Jakobovski/free-spoken-digit-dataset)
is paired with an MNIST image (LeCun et al. 1998) of the same digit. The published version
removes most of the image energy by PCA and adds environmental noise to the audio so that
neither modality alone suffices; this loader does the same with white noise.

Files: FSDD as its repository has it, `<data dir>/fsdd/recordings/{digit}_{speaker}_{take}.wav`,
and MNIST's four `mnist/*-ubyte.gz` files (`mmrobust data download avmnist` fetches and checks
both). Without `fsdd/recordings/`, a packed `fsdd/index.csv` + `fsdd/fsdd_recordings.tar.gz`
of the same recordings is read instead; both give identical tensors.

Recipe `avmnist/1`:
- Pairing: seeded, within class; images for train recordings come from MNIST train, for
  test recordings from MNIST test; each image is used at most once.
- Audio: 8 kHz int16 -> float in [-1, 1), zero-padded or cropped around its centre to 1 s
  (8000 samples; 20 of the 3000 recordings are longer), scaled to RMS 0.1 over its real
  samples (the recording gain differs between speakers: without this, clean audio alone
  reached 0.26 test accuracy on the speaker split after 10 epochs; with it, 0.72 after 12),
  optional white noise at `audio_snr_db` relative to that power (over the whole second,
  padding included), then a log-mel spectrogram: n_fft 256 (32 ms Hann), hop 128 (16 ms),
  40 HTK mel bands 0-4 kHz, log(power + 1e-6) -> "conv2d" (1, 40, 63).
- Image: pixels / 255, optionally projected onto the fewest leading PCA components (fitted on
  the train split's images only) whose variance reaches the fraction `image_energy` ->
  "conv2d" (1, 28, 28).
- Split `"take"` (default): FSDD's official one, takes 0-4 of every speaker are the test set
  (300); the same six speakers are in train and test. Val is 20% of train, stratified by
  digit. Split `"speaker"`: all 500 recordings of `test_speaker` are the test set and val is
  one other, seeded speaker (no speaker in two splits), so both val and test measure
  generalisation to unseen voices.
- Both modalities are standardised per channel with train-split statistics.

Default recipe: `image_energy=0.25` (the 4 leading components of the train images) and
`audio_snr_db=-3`, chosen so that each modality alone is clearly weaker than both together.
Test accuracy on the take split (configs/baselines/avmnist.yaml: transformer fusion, up to 60
epochs, seeds 0 / 1 / 2, mean ± std): joint 0.897 ± 0.023, audio only 0.722 ± 0.034, image
only 0.650 ± 0.012, where "only m" is `create_method("joint", modalities=[m])`, a model that
never reads the other modality; the joint model itself scores 0.49-0.50 on either modality
alone. Other audio levels (earlier 30-epoch runs, seeds 0 / 1): 0 dB audio only 0.827 / 0.843,
joint 0.910 / 0.937; +3 dB (seed 0) audio only 0.867, joint 0.923. Image energy 0.1 / 0.2 / 0.3
keeps 2 / 3 / 5 components; image only 0.417 / 0.460 / 0.750 (seed 0, 20 epochs). Speaker
split (test "theo", default noise, seed 0): joint 0.736, audio only 0.370, image only 0.686: an
unseen voice is much harder. Commands::

    d = mmrobust.load_dataset("avmnist")
    m = mmrobust.create_method("joint", fusion="transformer")  # or, for one modality:
    m = mmrobust.create_method("joint", fusion="transformer", modalities=["audio"])
    mmrobust.fit(m, d, seed=0, epochs=60, patience=15)
    mmrobust.audit(m, d).table  # rows "clean" and "subset[audio]", metric accuracy
"""

from __future__ import annotations

import csv
import re
import tarfile
import zlib
from functools import partial
from pathlib import Path

import numpy as np
import torch

from ..errors import MMRobustError, check_int
from ..seeds import MAX_SEED
from .audio import add_noise, center_fit, log_mel, normalize_rms, read_wav
from .cache import cached
from .dataset import DataSpec, ModalitySpec, MultimodalData, check_split_options, standardize, stratified_split
from .idx import read_idx
from .paths import data_dir as resolve_data_dir
from .registry import DatasetInfo, Download, Release, register_dataset

SAMPLE_RATE, CLIP = 8000, 8000  # 1 s clips at 8 kHz
N_FFT, HOP, N_MELS = 256, 128, 40
FRAMES = 1 + CLIP // HOP  # 63, frames of torch.stft with center=True
INDEX, RECORDINGS = "fsdd/index.csv", "fsdd/fsdd_recordings.tar.gz"  # the packed layout of FSDD
FOLDER = "fsdd/recordings"  # FSDD's official layout: {digit}_{speaker}_{take}.wav, as in its repository
_FSDD_COMMIT = "26eb9aaf76e81b692f806f9140c2d2777410d7a1"  # v1.0.10 + 27 commits; its 3000 recordings are checked
_MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"  # PyTorch's copy of LeCun's original files
_MNIST_SHA256 = {  # of the decompressed IDX files, equal to the originals (MD5s 6bbc9ace..., a25bea73..., ...)
    "mnist/train-images-idx3-ubyte.gz": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "mnist/train-labels-idx1-ubyte.gz": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "mnist/t10k-images-idx3-ubyte.gz": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "mnist/t10k-labels-idx1-ubyte.gz": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
_NAME = re.compile(r"(\d)_([a-z]+)_(\d+)\.wav")
MNIST = {
    "train": ("mnist/train-images-idx3-ubyte.gz", "mnist/train-labels-idx1-ubyte.gz"),
    "test": ("mnist/t10k-images-idx3-ubyte.gz", "mnist/t10k-labels-idx1-ubyte.gz"),
}
SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")

INFO = DatasetInfo(
    summary="AV-MNIST: FSDD spoken digits paired within class with (PCA-degraded) MNIST images",
    files=(INDEX, RECORDINGS, *MNIST["train"], *MNIST["test"]),
    homepage="https://github.com/Jakobovski/free-spoken-digit-dataset",
    recipe=(
        "avmnist/1: log-mel (1, 40, 63) of 1 s RMS-normalised clips + white noise at audio_snr_db; "
        "MNIST (1, 28, 28) PCA-projected to image_energy; seeded within-class pairing; take or speaker split"
    ),
    checksums={RECORDINGS: "b8f087bc9d5c545fe5468a9febde9b9643520a6352c75be86b96328be04ef5c2"},
    release=Release(
        folder="fsdd",
        patterns=("recordings/*.wav",),
        layout="fsdd/recordings/{digit}_{speaker}_{take}.wav",
        count=3000,
        tree_sha256="6a1aafacf40d8a7aeda379f079a39ca7e165fe03f4ed5d63a2ab25f3a8420685",
        also=(*MNIST["train"], *MNIST["test"]),
    ),
    downloads=(
        Download(  # FSDD, CC BY-SA 4.0: the repository at the commit whose recordings are checked
            f"https://github.com/Jakobovski/free-spoken-digit-dataset/archive/{_FSDD_COMMIT}.tar.gz",
            FOLDER,
            unpack="tar",
            find="0_george_0.wav",
        ),
        *(Download(_MNIST_URL + Path(f).name, f, gunzipped_sha256=sha) for f, sha in _MNIST_SHA256.items()),
    ),
)


@register_dataset("avmnist", INFO)
def load_avmnist(
    data_dir: str | None = None,
    split: str = "take",
    test_speaker: str = "theo",
    image_energy: float = 0.25,
    audio_snr_db: float | None = -3.0,
    val_fraction: float = 0.2,
    seed: int = 0,
    split_seed: int = 0,
    max_per_class: int | None = None,
    use_cache: bool = True,
) -> MultimodalData:
    """Load AV-MNIST (see the module docstring for the recipe).

    `image_energy` 1.0 keeps the images intact; `audio_snr_db` None keeps the audio clean.
    `seed` draws the image pairing, the audio noise and the `max_per_class` subsample (at most
    that many recordings per digit in train+val and in test, for quick tests); `split_seed`
    draws the validation split. Example::

        mmrobust.load_dataset("avmnist", split="speaker", test_speaker="jackson")
    """
    if split not in ("take", "speaker"):
        raise MMRobustError(f"avmnist split must be 'take' or 'speaker', not '{split}'")
    if test_speaker not in SPEAKERS:
        raise MMRobustError(f"unknown FSDD speaker '{test_speaker}' (valid: {', '.join(SPEAKERS)})")
    if not 0.0 < image_energy <= 1.0:
        raise MMRobustError(f"image_energy must be in (0, 1], not {image_energy}")
    check_split_options(split_seed, val_fraction)
    check_int(seed, "seed", 0, MAX_SEED)  # else numpy raised a ValueError for "a" or -1 inside the build
    if max_per_class is not None and max_per_class < 2:
        raise MMRobustError(f"max_per_class must be at least 2, not {max_per_class}")

    root = resolve_data_dir(data_dir)
    INFO.require("avmnist", root)
    build = partial(
        _build,
        root,
        split=split,
        test_speaker=test_speaker,
        image_energy=image_energy,
        audio_snr_db=audio_snr_db,
        val_fraction=val_fraction,
        seed=seed,
        split_seed=split_seed,
        max_per_class=max_per_class,
    )
    return cached("avmnist", INFO.recipe, INFO.raw_files(root), build.keywords, build, use_cache)


def _build(
    root: Path,
    split: str,
    test_speaker: str,
    image_energy: float,
    audio_snr_db: float | None,
    val_fraction: float,
    seed: int,
    split_seed: int,
    max_per_class: int | None,
) -> MultimodalData:
    official = INFO.official(root)  # FSDD's own recordings/ folder, else the packed index + archive
    files, digits, speakers, official_test = scan_recordings(root / FOLDER) if official else read_index(root / INDEX)
    is_test = official_test if split == "take" else speakers == test_speaker
    pair_rng, noise_rng, sample_rng = (np.random.default_rng([seed, k]) for k in range(3))
    if max_per_class is not None:
        groups = 10 * is_test + digits  # (side, digit)
        keep = np.zeros(len(files), dtype=bool)
        order = sample_rng.permutation(len(files))
        keep[order[rank_within(groups[order]) < max_per_class]] = True
        files, digits, speakers, is_test = files[keep], digits[keep], speakers[keep], is_test[keep]

    recordings = read_folder(root / "fsdd", files) if official else read_recordings(root / RECORDINGS, files)
    clips, kept = center_fit(recordings, CLIP)  # (N, CLIP)
    clips = normalize_rms(clips, kept)
    if audio_snr_db is not None:
        clips = add_noise(clips, kept, audio_snr_db, noise_rng)
    audio = log_mel(torch.from_numpy(clips), SAMPLE_RATE, N_FFT, HOP, N_MELS).unsqueeze(1)  # (N, 1, 40, 63)

    images = np.empty((len(files), 28, 28), dtype=np.uint8)
    for side, rows in (("train", ~is_test), ("test", is_test)):
        pool, pool_labels = read_mnist(root, side)
        images[rows] = pool[pair(digits[rows], pool_labels, pair_rng)]
    splits = make_splits(digits, speakers, is_test, split, val_fraction, split_seed)
    flat = images.reshape(len(files), 28 * 28).astype(np.float64) / 255.0  # (N, 784)
    flat = keep_energy(flat, splits["train"].numpy(), image_energy)
    image = torch.from_numpy(flat).float().reshape(-1, 1, 28, 28)  # (N, 1, 28, 28)

    spec = DataSpec(
        "avmnist",
        (ModalitySpec("image", "conv2d", (1, 28, 28)), ModalitySpec("audio", "conv2d", (1, N_MELS, FRAMES))),
        "classification",
        10,
        tuple(str(d) for d in range(10)),
    )
    present = torch.ones(len(files), 2, dtype=torch.bool)
    data = MultimodalData(spec, {"image": image, "audio": audio}, present, torch.from_numpy(digits), splits)
    return standardize(data)


def read_index(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """FSDD's index.csv: member names, digits, speakers and the official-test flag per row."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    needed = {"file", "digit", "speaker", "split"}
    if not rows or not needed <= set(rows[0]):
        raise MMRobustError(f"{path}: expected a CSV with columns {', '.join(sorted(needed))}")
    try:
        digits = np.array([int(r["digit"]) for r in rows], dtype=np.int64)
    except (TypeError, ValueError) as e:
        raise MMRobustError(f"{path}: non-integer digit ({e})") from None
    side = np.array([r["split"] for r in rows])
    speakers = np.array([r["speaker"] for r in rows])
    if digits.min() < 0 or digits.max() > 9 or not np.isin(side, ("train", "test")).all():
        raise MMRobustError(f"{path}: digits must be 0-9 and split train/test")
    if not np.isin(speakers, SPEAKERS).all():
        raise MMRobustError(f"{path}: unknown speakers {sorted(set(speakers) - set(SPEAKERS))}")
    return np.array([r["file"] for r in rows]), digits, speakers, side == "test"


def scan_recordings(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What `read_index` gives, from the names of FSDD's own `recordings/{digit}_{speaker}_{take}.wav`
    (sorted by name, as index.csv is; takes 0-4 are FSDD's official test set)."""
    names = sorted(p.name for p in folder.glob("*.wav"))
    parsed = [_NAME.fullmatch(n) for n in names]
    bad = [n for n, m in zip(names, parsed, strict=True) if m is None or m[2] not in SPEAKERS]
    if bad or not names:
        what = f"unexpected file {bad[0]}" if bad else "no .wav files"
        raise MMRobustError(f"{folder}: {what}; FSDD's recordings are named {{digit}}_{{speaker}}_{{take}}.wav")
    fields = [m.groups() for m in parsed if m is not None]
    files = np.array([f"recordings/{n}" for n in names])
    takes = np.array([int(f[2]) for f in fields])
    return files, np.array([int(f[0]) for f in fields], dtype=np.int64), np.array([f[1] for f in fields]), takes < 5


def read_folder(folder: Path, members: np.ndarray) -> list[np.ndarray]:
    """Decode the named WAV files under `folder` (official layout), in the order given."""
    clips = []
    for member in members:
        path = folder / str(member)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise MMRobustError(f"cannot read {path}: {e.strerror or e}") from None
        clips.append(read_wav(data, str(path), SAMPLE_RATE))
    return clips


def read_recordings(path: Path, members: np.ndarray) -> list[np.ndarray]:
    """Decode the named WAV members of the tar.gz, in the order given."""
    wanted = {str(m): i for i, m in enumerate(members)}
    clips: list[np.ndarray | None] = [None] * len(members)
    try:
        with tarfile.open(path, "r:gz") as tar:
            for info in tar:
                i = wanted.get(info.name)
                handle = tar.extractfile(info) if i is not None else None
                if i is not None and handle is not None:
                    clips[i] = read_wav(handle.read(), f"{path}:{info.name}", SAMPLE_RATE)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise MMRobustError(f"{path}: corrupt or truncated archive ({e})") from None
    missing = [m for m, i in wanted.items() if clips[i] is None]
    if missing:
        raise MMRobustError(f"{path}: {len(missing)} recordings listed in the index are missing (first: {missing[0]})")
    return [c for c in clips if c is not None]


def read_mnist(root: Path, side: str) -> tuple[np.ndarray, np.ndarray]:
    """MNIST images (N, 28, 28) uint8 and labels (N,) of the 'train' or 't10k' files."""
    image_file, label_file = (root / f for f in MNIST[side])
    images, labels = read_idx(image_file), read_idx(label_file)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise MMRobustError(f"{image_file}: expected images of shape (N, 28, 28), got {images.shape}")
    if labels.shape != images.shape[:1] or labels.max() > 9:
        raise MMRobustError(f"{label_file}: expected {len(images)} labels 0-9, got shape {labels.shape}")
    return images, labels.astype(np.int64)


def rank_within(groups: np.ndarray) -> np.ndarray:
    """For each element, how many earlier elements share its group (0, 1, 2, ...)."""
    order = np.argsort(groups, kind="stable")
    sorted_groups = groups[order]
    rank = np.empty(len(groups), dtype=np.int64)
    rank[order] = np.arange(len(groups)) - np.searchsorted(sorted_groups, sorted_groups)
    return rank


def pair(digits: np.ndarray, pool_labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A distinct pool index of the same label for every digit, drawn at random (no reuse)."""
    order = rng.permutation(len(pool_labels))
    order = order[np.argsort(pool_labels[order], kind="stable")]  # grouped by label, shuffled within
    counts = np.bincount(pool_labels, minlength=10)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])  # (10,) first slot of each label
    rank = rank_within(digits)
    if (rank >= counts[digits]).any():
        raise MMRobustError("not enough MNIST images of some digit to pair every recording once")
    return order[starts[digits] + rank]


def make_splits(
    digits: np.ndarray,
    speakers: np.ndarray,
    is_test: np.ndarray,
    split: str,
    val_fraction: float,
    split_seed: int,
) -> dict[str, torch.Tensor]:
    """Test as given; val stratified by digit ("take") or one or more held-out speakers ("speaker")."""
    pool = torch.from_numpy(np.flatnonzero(~is_test))
    g = torch.Generator().manual_seed(split_seed)
    if split == "take":
        fit, val = stratified_split(torch.from_numpy(digits[pool.numpy()]), (1 - val_fraction, val_fraction), g)
        fit, val = pool[fit], pool[val]
    else:
        voices = np.unique(speakers[pool.numpy()])
        n_val = max(1, round(val_fraction * len(voices)))
        held = voices[torch.randperm(len(voices), generator=g)[:n_val].numpy()]
        in_val = np.isin(speakers[pool.numpy()], held)
        fit, val = pool[torch.from_numpy(~in_val)], pool[torch.from_numpy(in_val)]
    return {"train": fit, "val": val, "test": torch.from_numpy(np.flatnonzero(is_test))}


def keep_energy(x: np.ndarray, fit_rows: np.ndarray, energy: float) -> np.ndarray:
    """Project rows of x (N, F) onto the fewest leading principal components of x[fit_rows]
    that explain at least `energy` of its variance (1.0: x unchanged)."""
    if energy >= 1.0:
        return x
    mean = x[fit_rows].mean(axis=0)  # (F,)
    centred = x[fit_rows] - mean
    variance, vectors = np.linalg.eigh(centred.T @ centred)  # ascending; eigenvectors in columns
    variance, vectors = variance[::-1], vectors[:, ::-1]
    k = int(np.searchsorted(np.cumsum(variance) / variance.sum(), energy)) + 1
    basis = vectors[:, :k]  # (F, k)
    return mean + (x - mean) @ basis @ basis.T
