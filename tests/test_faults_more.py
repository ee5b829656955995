"""More injected faults: a bit-flipped training state, a stage-reuse cache that cannot be written or
read back, bad npz files in the dataset loaders, and a download onto a full or read-only disk.

Real code and real files throughout: damage is done to the bytes of files the code wrote, a full
disk is the kernel's own ENOSPC from /dev/full; only a read-only file system and a dropped network
connection are simulated (an OSError raised where the real one would be).
"""

from __future__ import annotations

import errno
import hashlib
import os
import struct
import warnings
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_npz
from torch import Tensor

import mmrobust
import mmrobust.data.download
import mmrobust.train
from mmrobust import MMRobustError
from mmrobust.atomic import save_tensors
from mmrobust.checkpoint import with_checksum
from mmrobust.data.batch import Batch
from mmrobust.data.download import WORK, download
from mmrobust.data.mosi import _FEATURES as MOSI_FILE
from mmrobust.data.npz import load_npz
from mmrobust.data.registry import DatasetInfo, Download
from mmrobust.data.sequences import read_arrays
from mmrobust.methods.base import Stage
from mmrobust.methods.supervised import SupervisedMethod, task_loss


class Interrupted(Exception):
    """Stands in for the process dying mid-training."""


def temps(folder: Path) -> list[Path]:
    """Temporary files of atomic writes left in `folder` or below."""
    return [p for p in folder.rglob(".*") if ".tmp-" in p.name]


def flip_tensor_byte(path: Path, tensor: Tensor) -> None:
    """Flip one byte of `tensor`'s stored bytes in the file: its structure stays readable."""
    data = bytearray(path.read_bytes())
    at = bytes(data).find(tensor.numpy().tobytes())
    assert at > 0
    data[at + 5] ^= 0xFF
    path.write_bytes(bytes(data))


def largest(tensors: dict[str, Tensor]) -> Tensor:
    return max(tensors.values(), key=lambda t: t.numel())


# --- 1. the training state carries a checksum -------------------------------------------------
def test_bit_flipped_training_state_is_a_clear_error(small_data, tmp_path: Path) -> None:
    state = tmp_path / "training-state.pt"
    method = mmrobust.create_method("joint", fusion="sum")
    steps, original = [0], method.loss
    per_epoch = -(-len(small_data.split("train")) // 32)

    def loss(batch: Batch, generator: torch.Generator) -> Tensor:
        steps[0] += 1
        if steps[0] > 3 * per_epoch + 1:  # dies in epoch 3, its state saved after epoch 2
            raise Interrupted
        return original(batch, generator)

    method.loss = loss  # type: ignore[method-assign]
    with pytest.raises(Interrupted):
        mmrobust.fit(method, small_data, epochs=5, progress=False, state_path=state, state_every=0)
    saved = torch.load(state, weights_only=True)
    assert "sha256" in saved
    flip_tensor_byte(state, largest(saved["model"]))
    torch.load(state, weights_only=True)  # torch does not notice
    with pytest.raises(MMRobustError) as e:
        mmrobust.fit(mmrobust.create_method("joint", fusion="sum"), small_data, epochs=5, progress=False,
                     state_path=state, state_every=0)
    assert str(e.value) == (
        f"{state}: this training state is damaged (its content does not match the checksum saved with it: "
        "corrupted on disk or edited); delete it to start over"
    )
    assert state.exists()  # left for the user to look at and delete
    state.unlink()  # as the message says: the run starts over
    result = mmrobust.fit(mmrobust.create_method("joint", fusion="sum"), small_data, epochs=5, progress=False,
                          state_path=state, state_every=0)
    assert result.epochs_run == 5 and not state.exists()


# --- 1. the stage-reuse cache only saves time ---------------------------------------------------
class Pretrained(SupervisedMethod):
    """A label-free pretraining stage of the encoders, reused across runs, then fine-tuning."""

    name = "pretrained-faults-test"

    def __init__(self) -> None:
        super().__init__(fusion="sum", dim=16)
        self.pretrain_steps = 0

    def get_params(self) -> dict[str, object]:
        return {"fusion": "sum", "dim": 16}

    def stages(self) -> Sequence[Stage]:
        model = self.fitted_model
        return (
            Stage("pretrain", self._pretrain, module=model.encoders, select=False, epochs=2, reuse_key={"t": "faults"}),
            Stage("finetune", lambda b, g: task_loss(self.fitted_model(b), b.target, self.fitted_model.spec.task)),
        )

    def _pretrain(self, batch: Batch, generator: torch.Generator) -> Tensor:
        self.pretrain_steps += 1
        return self.fitted_model.encode(batch).z.pow(2).mean()


def fit_pretrained(data: mmrobust.MultimodalData) -> tuple[Pretrained, mmrobust.FitResult]:
    method = Pretrained()
    return method, mmrobust.fit(method, data, seed=0, epochs=2, batch_size=32, progress=False)


def same_weights(a: mmrobust.Method, b: mmrobust.Method) -> bool:
    sa, sb = a.modules().state_dict(), b.modules().state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture
def stage_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private cache folder; returns where stage entries go."""
    monkeypatch.setenv("MMROBUST_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "stages"


def _to_dev_full(payload: object, path: Path) -> None:
    save_tensors(payload, Path("/dev/full"))  # the kernel answers ENOSPC


def _read_only(payload: object, path: Path) -> None:
    raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))


@pytest.mark.parametrize(
    ("writer", "cause"), [(_to_dev_full, "No space left on device"), (_read_only, "Read-only file system")]
)
def test_stage_cache_that_cannot_be_written_warns_and_training_goes_on(
    small_data, stage_cache: Path, monkeypatch: pytest.MonkeyPatch, writer: Callable[[object, Path], None], cause: str
) -> None:
    if writer is _to_dev_full and not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    reference, expected = fit_pretrained(small_data)  # cached
    for entry in stage_cache.iterdir():
        entry.unlink()
    monkeypatch.setattr(mmrobust.train, "save_tensors", writer)
    with pytest.warns(UserWarning) as caught:
        method, result = fit_pretrained(small_data)
    (message,) = [str(w.message) for w in caught]
    assert message.startswith(f"stage 'pretrain' not cached for reuse: cannot write {stage_cache}/")
    assert f".pt: {cause};" in message and "\n" not in message
    assert result == expected and same_weights(method, reference) and method.pretrain_steps > 0
    assert not list(stage_cache.iterdir())  # neither an entry nor a temporary file


def test_stage_cache_in_an_unusable_folder_warns_and_training_goes_on(
    small_data, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("MMROBUST_CACHE", str(tmp_path / "file" / "cache"))  # below a file: cannot exist
    with pytest.warns(UserWarning, match=r"stage 'pretrain' not cached for reuse: cannot write .*/file/cache/stages/"
                      r".*\.pt: Not a directory"):
        _, result = fit_pretrained(small_data)
    assert result.epochs_run == 4


def _flip(path: Path) -> None:
    flip_tensor_byte(path, largest(torch.load(path, weights_only=True)["module"]))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _legacy(path: Path) -> None:
    """An entry of mmrobust before this format: no format field, no checksum."""
    saved = torch.load(path, weights_only=True)
    torch.save({k: saved[k] for k in ("module", "history", "best_epoch", "val_metrics")}, path)


def _other_weights(path: Path) -> None:
    """A well-formed entry (format, valid checksum) whose weights do not fit: all changed, one reshaped."""
    saved = torch.load(path, weights_only=True)
    saved.pop("sha256")
    module = {k: v + 1 for k, v in saved["module"].items()}
    last = sorted(module)[-1]
    module[last] = torch.zeros(module[last].numel() + 1)
    torch.save(with_checksum({**saved, "module": module}), path)


DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "byte flipped": (_flip, "this stage cache entry is damaged (its content does not match the checksum"),
    "truncated": (_truncate, "is not a readable stage cache entry ("),
    "emptied": (lambda p: p.write_bytes(b""), "is not a readable stage cache entry ("),
    "legacy": (_legacy, "is not an mmrobust stage cache entry (expected format mmrobust-stage/1)"),
    "other weights": (_other_weights, "does not hold this stage's weights"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_stage_cache_entry_warns_and_is_trained_again(small_data, stage_cache: Path, damage: str) -> None:
    hurt, says = DAMAGE[damage]
    reference, expected = fit_pretrained(small_data)
    (entry,) = stage_cache.iterdir()
    hurt(entry)
    with pytest.warns(UserWarning) as caught:
        method, result = fit_pretrained(small_data)
    (message,) = [str(w.message) for w in caught]
    assert message.startswith(str(entry)) and says in message and message.endswith("; training the stage again")
    assert method.pretrain_steps > 0  # trained again, from the same initial weights (none half-loaded)
    assert result == expected and same_weights(method, reference)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again, result = fit_pretrained(small_data)  # the entry was rewritten whole: reused
    assert again.pretrain_steps == 0 and result == expected and same_weights(again, reference)


# --- 2. bad npz files in the dataset loaders: the messages `load_npz` gives -------------------------
MOSI_KEYS = ("text_feat", "audio_feat", "video_feat", "sentiment", "split", "video_id", "text")


def mosi_like(text: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Arrays named as the mosi loader reads them, `text_feat` first (the archive's first member)."""
    rng, n = np.random.default_rng(0), 30
    return {
        "text_feat": rng.normal(size=(n, 100)),
        "audio_feat": rng.normal(size=(n, 73)),
        "video_feat": rng.normal(size=(n, 100)),
        "sentiment": rng.uniform(-3, 3, size=n),
        "split": np.arange(n) % 2,
        "video_id": np.arange(n) // 3,
        "text": np.array([f"utterance {i}" for i in range(n)]) if text is None else text,
    }


def _zip_data_offset(path: Path, index: int = 0) -> int:
    """Where the (compressed) bytes of the archive's `index`-th member start."""
    with zipfile.ZipFile(path) as z:
        header = z.infolist()[index].header_offset
    raw = path.read_bytes()
    name_len, extra_len = struct.unpack("<HH", raw[header + 26 : header + 30])
    return header + 30 + name_len + extra_len


def _npy_named_npz(path: Path) -> None:
    np.save(path.with_suffix(".npy"), np.zeros(3))
    path.with_suffix(".npy").rename(path)


def _zlib_error(path: Path) -> None:
    np.savez_compressed(path, **mosi_like())
    raw = bytearray(path.read_bytes())
    raw[_zip_data_offset(path)] = 0xFF  # deflate block type 3 (reserved): zlib refuses the stream
    path.write_bytes(bytes(raw))


def _truncated_npz(path: Path) -> None:
    good = write_npz(path, **mosi_like()).read_bytes()
    path.write_bytes(good[: len(good) // 2])


def _crc_error(path: Path) -> None:
    good = write_npz(path, **mosi_like()).read_bytes()
    at = _zip_data_offset(path) + 200  # inside text_feat's data (stored, not compressed)
    path.write_bytes(good[:at] + bytes([good[at] ^ 0xFF]) + good[at + 1 :])


BAD_NPZ: dict[str, tuple[Callable[[Path], object], str]] = {
    "npy under an npz name": (_npy_named_npz, "as npz: it is a single .npy array, not an archive of named arrays"),
    "empty": (lambda p: p.write_bytes(b""), "as npz: the file is empty (truncated, corrupt or another format)"),
    "not a zip": (lambda p: p.write_text("x,y\n1,2\n"), "as npz: not a zip archive (truncated, corrupt"),
    "truncated": (_truncated_npz, "as npz: truncated or corrupt ("),
    "bit flipped": (_crc_error, "as npz: truncated or corrupt (Bad CRC-32"),
    "zlib error": (_zlib_error, "as npz: truncated or corrupt (Error -3 while decompressing data: invalid block type)"),
    "object array": (
        lambda p: write_npz(p, **mosi_like(text=np.array([{"a": 1}, None] * 15, dtype=object))),
        "as npz without pickling: it holds pickled Python objects (object arrays), refused",
    ),
}


def _read_sequences(path: Path) -> None:
    read_arrays(path, MOSI_KEYS)


def _read_mosi(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    mmrobust.load_dataset("mosi", data_dir=str(path.parents[1]), use_cache=False)


@pytest.mark.parametrize("reader", [_read_sequences, _read_mosi], ids=["sequences", "mosi"])
@pytest.mark.parametrize("bad", list(BAD_NPZ))
def test_bad_npz_gives_the_message_load_npz_gives(tmp_path: Path, bad: str, reader: Callable[[Path], None]) -> None:
    make, says = BAD_NPZ[bad]
    path = tmp_path / MOSI_FILE  # where the mosi loader looks; any name for the others
    path.parent.mkdir(parents=True)
    make(path)
    with pytest.raises(MMRobustError) as e:
        reader(path)
    message = str(e.value)
    assert message.startswith(f"cannot read {path} ") and says in message and "\n" not in message, message
    with pytest.raises(MMRobustError) as expected:
        load_npz(path)
    assert message == str(expected.value)


@pytest.mark.parametrize("reader", [_read_sequences, _read_mosi], ids=["sequences", "mosi"])
def test_npz_missing_arrays_names_them(tmp_path: Path, reader: Callable[[Path], None]) -> None:
    path = tmp_path / MOSI_FILE
    path.parent.mkdir(parents=True)
    write_npz(path, y=np.zeros(3))
    with pytest.raises(MMRobustError) as e:
        reader(path)
    assert str(e.value) == f"{path}: missing arrays {list(MOSI_KEYS)} (has ['y'])"


# --- 3. downloads onto a full or read-only disk ---------------------------------------------------
@pytest.fixture
def source(tmp_path: Path) -> tuple[DatasetInfo, Path, bytes]:
    """A dataset with one 'public' 3 MiB file (a file:// URL), and the data folder to fetch it to."""
    content = np.random.default_rng(0).bytes(3 << 20)
    remote = tmp_path / "remote.bin"
    remote.write_bytes(content)
    item = Download(remote.as_uri(), "ds/data.bin", hashlib.sha256(content).hexdigest())
    info = DatasetInfo("test", files=("ds/data.bin",), homepage="https://example.org", downloads=(item,))
    return info, tmp_path / "data", content


def test_download_writes_the_file(source) -> None:
    info, root, content = source
    assert download("ds", info, root) == [root / "ds" / "data.bin"]
    assert (root / "ds" / "data.bin").read_bytes() == content and not temps(root)


def test_download_to_a_full_disk_says_so_and_leaves_no_file(source, monkeypatch: pytest.MonkeyPatch) -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    info, root, _ = source
    part = root / WORK / "ds" / "remote.bin"  # the download's partial file points at /dev/full: writes get ENOSPC
    part.parent.mkdir(parents=True)
    part.symlink_to("/dev/full")
    target = root / "ds" / "data.bin"
    with pytest.raises(MMRobustError) as e:
        download("ds", info, root)
    assert str(e.value) == (
        f"cannot write {part}: No space left on device; free some disk space (or write elsewhere) and repeat "
        "the command; finished work is kept"
    )
    assert not target.exists() and not temps(root)


def test_download_to_a_read_only_folder_says_so(source, monkeypatch: pytest.MonkeyPatch) -> None:
    info, root, _ = source

    def mkdir(self: Path, *args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

    monkeypatch.setattr(Path, "mkdir", mkdir)
    with pytest.raises(MMRobustError, match=r"^cannot write .*/ds/staging: Read-only file system; the folder is "
                       "read-only or not yours"):
        download("ds", info, root)
    assert not (root / "ds" / "data.bin").exists()


def test_download_below_a_file_says_so(source, tmp_path: Path) -> None:
    info, _, _ = source
    (tmp_path / "file").write_text("")
    with pytest.raises(MMRobustError, match=r"^cannot write .*/file/\.mmrobust-download/ds/staging: Not a directory"):
        download("ds", info, tmp_path / "file")


def test_download_network_failures_still_say_offline(source, monkeypatch: pytest.MonkeyPatch) -> None:
    info, root, content = source
    gone = Download((root / "missing.bin").as_uri(), "ds/data.bin", "0" * 64)
    with pytest.raises(MMRobustError, match=r"^cannot download file://.*missing\.bin \(.*\); if offline, download "
                       r"file://.* by hand \(official page: https://example\.org\), save it as .*/ds/data\.bin, then"):
        download("ds", DatasetInfo("t", files=info.files, homepage=info.homepage, downloads=(gone,)), root)

    class Dropped:  # the connection drops after the first MiB
        def __init__(self) -> None:
            self.sent = 0

        def __enter__(self) -> Dropped:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def read(self, size: int) -> bytes:
            if self.sent:
                raise ConnectionResetError(errno.ECONNRESET, os.strerror(errno.ECONNRESET))
            self.sent = size
            return content[:size]

    monkeypatch.setattr(mmrobust.data.download.urllib.request, "urlopen", lambda url, timeout: Dropped())
    with pytest.raises(MMRobustError, match=r"^download of file://.* interrupted after 1\.0 MB \(ConnectionResetError: "
                       r".*Connection reset by peer\); run the same command again to resume it$"):
        download("ds", info, root)
    assert not (root / "ds" / "data.bin").exists() and not temps(root)


def test_download_with_a_wrong_checksum_leaves_no_file(source) -> None:
    info, root, _ = source
    (item,) = info.downloads
    tampered = DatasetInfo("t", files=info.files, downloads=(Download(item.url, item.path, "0" * 64),))
    with pytest.raises(MMRobustError, match=r"^checksum mismatch for file://.*: got [0-9a-f]{64}, expected 0{64}; "):
        download("ds", tampered, root)
    assert not (root / "ds" / "data.bin").exists() and not temps(root)
