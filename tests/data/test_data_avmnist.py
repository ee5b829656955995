"""AV-MNIST loader: recipe, splits, pairing, standardisation, cache and error messages."""

from __future__ import annotations

import gzip
import io
import shutil
import struct
import tarfile
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from mmrobust import MMRobustError, MultimodalData, load_dataset
from mmrobust.data import avmnist
from mmrobust.data.audio import add_noise, center_fit, log_mel, mel_filterbank, normalize_rms, read_wav
from mmrobust.data.idx import read_idx


@pytest.fixture(scope="module")
def full(shared_data: Path) -> MultimodalData:
    """The default recipe on all 3000 recordings (built once, then cached)."""
    return load_dataset("avmnist", data_dir=str(shared_data))


@pytest.fixture(scope="module")
def index(shared_data: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return avmnist.read_index(shared_data / avmnist.INDEX)


def one_line_error(excinfo: pytest.ExceptionInfo[MMRobustError]) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


# --- the real dataset ------------------------------------------------------------------------
def test_modalities_and_official_take_split(full: MultimodalData, index) -> None:
    _, digits, _, official_test = index
    spec = full.spec
    assert spec.modality_names == ("image", "audio") and spec.num_classes == 10
    assert [(m.kind, m.shape) for m in spec.modalities] == [("conv2d", (1, 28, 28)), ("conv2d", (1, 40, 63))]
    assert full.inputs["image"].dtype == full.inputs["audio"].dtype == torch.float32
    assert len(full) == 3000 and bool(full.present.all())
    assert torch.equal(full.target, torch.from_numpy(digits))  # samples in index.csv order
    s = full.splits
    assert (len(s["train"]), len(s["val"]), len(s["test"])) == (2160, 540, 300)
    assert torch.equal(torch.sort(torch.cat(list(s.values()))).values, torch.arange(3000))  # disjoint, all
    assert torch.equal(s["test"], torch.from_numpy(np.flatnonzero(official_test)))  # takes 0-4
    assert torch.bincount(full.target, minlength=10).tolist() == [300] * 10  # PROVENANCE: 300 per digit
    assert torch.bincount(full.target[s["test"]], minlength=10).tolist() == [30] * 10
    assert torch.bincount(full.target[s["val"]], minlength=10).tolist() == [54] * 10  # stratified 20%


def test_standardised_with_train_statistics_only(full: MultimodalData) -> None:
    for x in full.inputs.values():
        train = x[full.splits["train"]]
        assert abs(float(train.mean())) < 1e-5 and abs(float(train.std()) - 1) < 1e-4
        assert abs(float(x[full.splits["val"]].mean())) > 1e-4  # val was not part of the statistics


def test_images_keep_a_few_principal_components_shared_by_all_splits(full: MultimodalData) -> None:
    x = full.inputs["image"].flatten(1).double()  # (N, 784)
    train, test = x[full.splits["train"]], x[full.splits["test"]]
    mean = train.mean(0)
    _, s, vt = torch.linalg.svd(train - mean, full_matrices=False)
    rank = int((s > 1e-6 * s[0]).sum())
    assert 2 <= rank <= 10  # 25% of MNIST's variance lives in a handful of components
    basis = vt[:rank]  # (rank, 784)
    residual = (test - mean) - (test - mean) @ basis.T @ basis
    assert float(residual.abs().max()) < 1e-3  # test images were projected on the train basis


def test_keep_energy_fits_on_the_given_rows_only() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 12)) * np.linspace(3, 0.1, 12)  # decreasing variance per axis
    fit_rows = np.arange(150)
    out = avmnist.keep_energy(x, fit_rows, 0.6)
    changed = x.copy()
    changed[150:] *= 100.0  # rows outside the fit must not move the basis
    assert np.allclose(avmnist.keep_energy(changed, fit_rows, 0.6)[:150], out[:150])
    centred = x[fit_rows] - x[fit_rows].mean(0)
    share = np.linalg.svd(centred, compute_uv=False) ** 2
    share = np.cumsum(share) / share.sum()
    k = int(np.linalg.matrix_rank(out[fit_rows] - x[fit_rows].mean(0)))
    assert share[k - 1] >= 0.6 > share[k - 2]  # the fewest components reaching the energy
    assert avmnist.keep_energy(x, fit_rows, 1.0) is x


def _masks(images: np.ndarray) -> list[bytes]:
    """The set of non-background pixels of each image, as a hashable key."""
    return [row.tobytes() for row in np.packbits(images.reshape(len(images), -1), axis=1)]


def test_pairing_is_within_class_from_the_matching_mnist_split_without_reuse(shared_data: Path) -> None:
    d = load_dataset("avmnist", data_dir=str(shared_data), image_energy=1.0, audio_snr_db=None, max_per_class=8)
    assert len(d.splits["test"]) == 80 and len(d.splits["train"]) + len(d.splits["val"]) == 80
    z = d.inputs["image"].squeeze(1).numpy()  # standardised (N, 28, 28); background is its minimum
    keys = _masks(z > z.min() + 1e-4)
    for side, rows in (("train", torch.cat([d.splits["train"], d.splits["val"]])), ("test", d.splits["test"])):
        images, labels = avmnist.read_mnist(shared_data, side)
        where = {key: i for i, key in enumerate(_masks(images > 0))}
        found = [where.get(keys[r]) for r in rows.tolist()]
        assert None not in found  # every image comes from this MNIST split
        assert len(set(found)) == len(found)  # none is used twice
        assert np.array_equal(labels[found], d.target[rows].numpy())  # same digit as the recording


def test_pair_draws_distinct_images_of_the_same_label() -> None:
    pool = np.repeat(np.arange(10), 5)  # 5 images per digit
    digits = np.array([3, 3, 3, 3, 3, 7, 0])
    picks = avmnist.pair(digits, pool, np.random.default_rng(0))
    assert np.array_equal(pool[picks], digits) and len(set(picks.tolist())) == len(picks)
    assert not np.array_equal(picks, avmnist.pair(digits, pool, np.random.default_rng(1)))  # seeded
    with pytest.raises(MMRobustError, match="not enough MNIST images"):
        avmnist.pair(np.full(6, 3), pool, np.random.default_rng(0))


def test_speaker_split_holds_out_whole_speakers(shared_data: Path, index) -> None:
    _, digits, speakers, _ = index
    splits = avmnist.make_splits(digits, speakers, speakers == "theo", "speaker", 0.2, 0)
    voices = {name: set(speakers[idx.numpy()]) for name, idx in splits.items()}
    assert voices["test"] == {"theo"} and len(voices["val"]) == 1
    assert voices["train"] | voices["val"] == set(avmnist.SPEAKERS) - {"theo"}
    assert not voices["train"] & voices["val"]
    assert sum(len(i) for i in splits.values()) == 3000
    d = load_dataset("avmnist", data_dir=str(shared_data), split="speaker", max_per_class=5)
    assert len(d.splits["test"]) == 50 and len(d.splits["train"]) + len(d.splits["val"]) == 50
    with pytest.raises(MMRobustError, match="unknown FSDD speaker 'bob'"):
        load_dataset("avmnist", data_dir=str(shared_data), split="speaker", test_speaker="bob")
    with pytest.raises(MMRobustError, match="'take' or 'speaker'"):
        load_dataset("avmnist", data_dir=str(shared_data), split="subject")


def test_second_load_comes_from_the_cache(
    full: MultimodalData, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_rebuild(*args: object) -> None:
        raise AssertionError("the dataset was rebuilt")

    monkeypatch.setattr(avmnist, "read_recordings", no_rebuild)
    again = load_dataset("avmnist", data_dir=str(shared_data))
    assert all(torch.equal(again.inputs[m], full.inputs[m]) for m in full.modalities)
    assert all(torch.equal(again.splits[s], full.splits[s]) for s in full.splits)


# --- clear errors ----------------------------------------------------------------------------
def test_missing_folder_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(MMRobustError) as e:
        load_dataset("avmnist", data_dir=str(tmp_path))
    assert "dataset 'avmnist' not found" in one_line_error(e) and "fsdd/recordings/{digit}_" in str(e.value)


@pytest.mark.parametrize("seed", ["a", -1, 0.5])
def test_a_seed_that_is_not_a_non_negative_int_is_a_one_line_error(seed: object, shared_data: Path) -> None:
    with pytest.raises(MMRobustError) as e:  # before: numpy's ValueError ("unrecognized seed string")
        load_dataset("avmnist", data_dir=str(shared_data), seed=seed, max_per_class=2)
    assert one_line_error(e) == f"seed must be an integer in 0..9223372036854775807, got {seed!r}"


@pytest.fixture
def copy_of_data(shared_data: Path, tmp_path: Path) -> Path:
    for folder in ("fsdd", "mnist"):
        (tmp_path / folder).mkdir()
        for f in avmnist.INFO.files:
            if f.startswith(folder + "/"):
                shutil.copyfile(shared_data / f, tmp_path / f)
    return tmp_path


def _truncate(path: Path, fraction: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def test_truncated_recordings_archive_is_a_one_line_error(copy_of_data: Path) -> None:
    _truncate(copy_of_data / avmnist.RECORDINGS, 0.5)
    with pytest.raises(MMRobustError) as e:
        load_dataset("avmnist", data_dir=str(copy_of_data), max_per_class=5, use_cache=False)
    assert "fsdd_recordings.tar.gz: corrupt or truncated archive" in one_line_error(e)


def test_truncated_or_misshapen_mnist_is_a_one_line_error(copy_of_data: Path) -> None:
    images = copy_of_data / avmnist.MNIST["test"][0]
    _truncate(images, 0.9)
    with pytest.raises(MMRobustError) as e:
        load_dataset("avmnist", data_dir=str(copy_of_data), max_per_class=5, use_cache=False)
    assert "t10k-images-idx3-ubyte.gz: not a readable gzip file" in one_line_error(e)
    images.write_bytes(gzip.compress(struct.pack(">BBBBIII", 0, 0, 8, 3, 2, 28, 27) + bytes(2 * 28 * 27)))
    with pytest.raises(MMRobustError) as e:
        load_dataset("avmnist", data_dir=str(copy_of_data), max_per_class=5, use_cache=False)
    assert "expected images of shape (N, 28, 28), got (2, 28, 27)" in one_line_error(e)


def test_idx_reader(tmp_path: Path) -> None:
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(struct.pack(">BBBBII", 0, 0, 8, 2, 2, 3) + bytes(range(6))))
    assert read_idx(path).tolist() == [[0, 1, 2], [3, 4, 5]]
    path.write_bytes(gzip.compress(struct.pack(">BBBBII", 0, 0, 8, 2, 2, 3) + bytes(5)))
    with pytest.raises(MMRobustError, match="header says"):
        read_idx(path)
    path.write_bytes(gzip.compress(b"PK\x03\x04 not idx"))
    with pytest.raises(MMRobustError, match="bad magic number"):
        read_idx(path)


# --- the audio front end ---------------------------------------------------------------------
def _wav(samples: np.ndarray, rate: int = 8000, channels: int = 1) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())
    return buffer.getvalue()


def test_read_wav_decodes_int16_and_rejects_other_formats() -> None:
    x = read_wav(_wav(np.array([0, 16384, -32768])), "a.wav", 8000)
    assert x.dtype == np.float32 and x.tolist() == [0.0, 0.5, -1.0]
    with pytest.raises(MMRobustError, match=r"b\.wav: expected mono 16-bit 8000 Hz PCM, got 2 channel"):
        read_wav(_wav(np.zeros(4), channels=2), "b.wav", 8000)
    with pytest.raises(MMRobustError, match=r"c\.wav: not a readable WAV"):
        read_wav(b"RIFF garbage", "c.wav", 8000)
    with pytest.raises(MMRobustError, match=r"d\.wav: truncated WAV"):
        read_wav(_wav(np.ones(100))[:-50], "d.wav", 8000)


def test_center_fit_pads_and_crops_around_the_middle() -> None:
    clips, kept = center_fit([np.ones(2, np.float32), np.arange(10, dtype=np.float32)], 6)
    assert clips.tolist() == [[0, 0, 1, 1, 0, 0], [2, 3, 4, 5, 6, 7]] and kept.tolist() == [2, 6]


def test_normalize_rms_removes_the_recording_gain() -> None:
    clips, kept = center_fit([np.full(100, 0.5, np.float32), np.full(50, -0.01, np.float32), np.zeros(9)], 200)
    out = normalize_rms(clips, kept, rms=0.1)
    assert np.allclose(np.sqrt(np.square(out[:2]).sum(1) / kept[:2]), 0.1)
    assert np.array_equal(out[:, :25], np.zeros((3, 25))) and np.array_equal(out[2], np.zeros(200))


def test_add_noise_reaches_the_requested_snr_over_the_real_samples() -> None:
    clips, kept = center_fit([np.sin(np.arange(4000, dtype=np.float32)) * 0.3], 40000)
    noisy = add_noise(clips, kept, -5.0, np.random.default_rng(0))
    noise = noisy - clips
    signal_power = float((clips**2).sum() / kept[0])
    assert 10 * np.log10(signal_power / float((noise**2).mean())) == pytest.approx(-5.0, abs=0.1)
    assert float(noise[0, :1000].std()) > 0  # the padding is noisy too


def test_mel_filterbank_and_log_mel_locate_a_tone() -> None:
    fb = mel_filterbank(256, 40, 8000)
    assert fb.shape == (40, 129) and float(fb.min()) == 0.0
    assert bool((fb.max(dim=1).values > 0.5).all())  # no empty filter at this resolution
    peaks = fb.argmax(dim=1)
    assert bool((peaks[1:] >= peaks[:-1]).all()) and int(peaks[-1]) > 120  # ordered, up to Nyquist
    t = torch.arange(8000) / 8000
    spec = log_mel(torch.sin(2 * torch.pi * 1000 * t)[None], 8000, 256, 128, 40)  # (1, 40, 63)
    assert spec.shape == (1, 40, 63)
    band = int(spec[0].mean(dim=1).argmax())
    assert 1000 * 31 / 32 <= float(peaks[band]) * 8000 / 256 <= 1000 * 33 / 32  # the band of 1 kHz


# --- FSDD's own layout (recordings/*.wav) ------------------------------------------------------
@pytest.fixture(scope="module")
def official(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir with FSDD as its repository has it (recordings/*.wav, unpacked here from the
    packed archive, whose wav bytes are unchanged) and the MNIST files."""
    root = tmp_path_factory.mktemp("official")
    with tarfile.open(shared_data / avmnist.RECORDINGS) as tar:
        for member in tar:
            handle = tar.extractfile(member)
            if handle is not None:
                (root / "fsdd" / member.name).parent.mkdir(parents=True, exist_ok=True)
                (root / "fsdd" / member.name).write_bytes(handle.read())
    (root / "mnist").mkdir()
    for f in (*avmnist.MNIST["train"], *avmnist.MNIST["test"]):
        (root / f).symlink_to(shared_data / f)
    return root


def test_official_recordings_folder_gives_the_index(official: Path, index) -> None:
    scanned = avmnist.scan_recordings(official / avmnist.FOLDER)
    for got, expected in zip(scanned, index, strict=True):
        assert got.dtype == expected.dtype and np.array_equal(got, expected)


def test_both_layouts_load_to_identical_tensors(official: Path, shared_data: Path) -> None:
    options = {"max_per_class": 8, "use_cache": False}
    a = load_dataset("avmnist", data_dir=str(official), **options)
    b = load_dataset("avmnist", data_dir=str(shared_data), **options)
    assert len(a) == 160 and all(torch.equal(a.inputs[m], b.inputs[m]) for m in a.modalities)
    assert torch.equal(a.target, b.target) and all(torch.equal(a.splits[k], b.splits[k]) for k in a.splits)


def test_a_stray_file_in_recordings_is_named(official: Path, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(official / "fsdd", root / "fsdd")
    (root / "mnist").symlink_to(official / "mnist")
    (root / avmnist.FOLDER / "7_jackson_x.wav").write_bytes(b"")
    with pytest.raises(MMRobustError, match=r"recordings: unexpected file 7_jackson_x\.wav; FSDD's recordings are"):
        load_dataset("avmnist", data_dir=str(root), max_per_class=2, use_cache=False)
