"""Nothing mmrobust reads can run code: crafted checkpoints, training states, cache entries, npz
files and pickles are refused (or, for the cache, rebuilt) and their payload never executes.

Every malicious file here would create a marker file when unpickled by plain `pickle`; each
test checks the refusal *and* that the marker does not exist, and one test shows that the same
file does create the marker under an unrestricted load (so the payloads really are live).
"""

from __future__ import annotations

import ast
import datetime
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import make_npz_arrays, run_cli, write_npz

import mmrobust
from mmrobust import MMRobustError
from mmrobust.checkpoint import FORMAT
from mmrobust.data.cache import cache_dir, cached
from mmrobust.data.formats import wesad
from mmrobust.data.formats.safe_pickle import load_pickle
from mmrobust.data.npz import load_npz
from mmrobust.train import STATE_FORMAT

SRC = Path(mmrobust.__file__).parent


class Touch:
    """Unpickling it creates `marker` through `os.system`: a stand-in for any attacker's code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


class OpenFile:
    """Unpickling it creates `marker` through `builtins.open`, without a shell."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


PAYLOADS = {"os.system": Touch, "builtins.open": OpenFile}


def one_line(excinfo: pytest.ExceptionInfo[MMRobustError], *needles: str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, message
    return message


# --- every load path in the source is a safe one ------------------------------------------------
def _calls(tree: ast.AST) -> list[tuple[str, ast.Call]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            name = f"{owner.id}.{node.func.attr}" if isinstance(owner, ast.Name) else f"?.{node.func.attr}"
            out.append((name, node))
    return out


def _keyword(call: ast.Call, name: str) -> Any:
    for kw in call.keywords:
        if kw.arg == name and isinstance(kw.value, ast.Constant):
            return kw.value.value
    return None


def test_every_load_in_the_source_refuses_pickled_code() -> None:
    seen = {"torch.load": 0, "np.load": 0}
    for path in sorted(SRC.rglob("*.py")):
        where = path.relative_to(SRC)
        for name, call in _calls(ast.parse(path.read_text())):
            line = f"{where}:{call.lineno}"
            if name == "torch.load":
                seen[name] += 1
                assert _keyword(call, "weights_only") is True, f"{line}: torch.load without weights_only=True"
            elif name in ("np.load", "numpy.load"):
                seen["np.load"] += 1
                assert _keyword(call, "allow_pickle") is False, f"{line}: np.load without allow_pickle=False"
            elif name in ("pickle.load", "pickle.loads", "pickle.Unpickler", "yaml.load", "yaml.unsafe_load"):
                assert str(where) == "data/formats/safe_pickle.py", f"{line}: {name} outside the restricted reader"
            elif name.endswith(".load") and name.split(".")[0] in ("joblib", "dill", "marshal", "cloudpickle"):
                raise AssertionError(f"{line}: {name} can run code")
    assert seen["torch.load"] >= 3 and seen["np.load"] >= 1  # the walk did find the loaders


# --- checkpoints and training states ------------------------------------------------------------
def _evil_checkpoint(path: Path, payload_class: type, marker: Path, legacy: bool = False) -> Path:
    content = {"format": FORMAT, "config": "{}", "state": {"w": torch.zeros(2)}, "extra": payload_class(marker)}
    torch.save(content, path, _use_new_zipfile_serialization=not legacy)
    return path


def test_the_payloads_are_live_under_an_unrestricted_load(tmp_path: Path) -> None:
    for name, payload in PAYLOADS.items():
        marker = tmp_path / f"ran-{name}"
        path = _evil_checkpoint(tmp_path / f"{name}.pt", payload, marker)
        torch.load(path, weights_only=False)  # what a naive loader does
        assert marker.exists(), name


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-format"])
@pytest.mark.parametrize("payload", list(PAYLOADS))
def test_crafted_checkpoint_is_refused_and_never_runs(tmp_path: Path, payload: str, legacy: bool) -> None:
    marker = tmp_path / "pwned"
    path = _evil_checkpoint(tmp_path / "evil.pt", PAYLOADS[payload], marker, legacy)
    with pytest.raises(MMRobustError) as e:
        mmrobust.load_checkpoint(path)
    culprit = {"os.system": f"{os.system.__module__}.system", "builtins.open": "open"}[payload]
    one_line(e, str(path), "not a safe mmrobust checkpoint", culprit, "could run arbitrary code", "refusing")
    assert not marker.exists()


def test_a_plain_pickle_posing_as_a_checkpoint_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "raw.pt"
    path.write_bytes(pickle.dumps({"format": FORMAT, "x": Touch(marker)}, protocol=2))
    with pytest.raises(MMRobustError) as e:
        mmrobust.load_checkpoint(path)
    one_line(e, str(path), "not a safe mmrobust checkpoint", "arbitrary code")
    assert not marker.exists()


def test_crafted_checkpoint_through_the_cli_is_exit_2_and_never_runs(tmp_path: Path, capsys) -> None:
    marker = tmp_path / "pwned"
    path = _evil_checkpoint(tmp_path / "evil.pt", Touch, marker)
    code, _, err = run_cli(["audit", "--checkpoint", str(path), "--data", "synthetic", "--out", str(tmp_path / "o")],
                           capsys)
    assert code == 2 and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "not a safe mmrobust checkpoint" in lines[0] and "arbitrary code" in lines[0], err
    assert not marker.exists() and not (tmp_path / "o").exists()


def test_crafted_training_state_is_refused_and_never_runs(small_data, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    state = tmp_path / "training-state.pt"
    torch.save({"format": STATE_FORMAT, "fingerprint": "x", "model": OpenFile(marker)}, state)
    with pytest.raises(MMRobustError) as e:
        mmrobust.fit(mmrobust.create_method("joint", fusion="sum"), small_data, epochs=1, progress=False,
                     state_path=state)
    one_line(e, str(state), "not a safe mmrobust training state", "arbitrary code")
    assert not marker.exists() and state.exists()  # a file fit did not write is left alone


def test_legit_checkpoint_still_loads(small_data, fit_small, tmp_path: Path) -> None:
    method = fit_small(small_data, "joint", "sum")
    path = mmrobust.save_checkpoint(method, tmp_path / "ok.pt")
    loaded, _ = mmrobust.load_checkpoint(path)
    test = small_data.split("test")
    torch.testing.assert_close(mmrobust.predict(loaded, test), mmrobust.predict(method, test))


# --- the preprocessing cache --------------------------------------------------------------------
def test_crafted_cache_entry_is_rebuilt_and_never_runs(tmp_path: Path) -> None:
    raw = tmp_path / "raw.bin"
    raw.write_bytes(b"raw")
    calls: list[int] = []

    def build() -> mmrobust.MultimodalData:
        calls.append(1)
        return mmrobust.load_dataset("synthetic", n_samples=40, seed=1)

    cached("evilcache", "r/1", [raw], {}, build)
    (entry,) = cache_dir().glob("evilcache-*.pt")
    marker = tmp_path / "pwned"
    torch.save({"spec": "{}", "inputs": Touch(marker)}, entry)  # someone with write access to the cache
    data = cached("evilcache", "r/1", [raw], {}, build)
    assert len(calls) == 2 and len(data) == 40 and not marker.exists()
    assert torch.load(entry, weights_only=True)["spec"] != "{}"  # replaced by a clean entry


# --- npz ----------------------------------------------------------------------------------------
def test_npz_object_array_is_refused_and_never_runs(tmp_path: Path, capsys) -> None:
    marker = tmp_path / "pwned"
    arrays = make_npz_arrays(n=20)
    arrays["x_a"] = np.array([Touch(marker)] * 20, dtype=object)
    path = write_npz(tmp_path / "evil.npz", **arrays)
    with pytest.raises(MMRobustError) as e:
        load_npz(path)
    one_line(e, str(path), "without pickling", "pickled Python objects", "arbitrary code")
    code, _, err = run_cli(["train", "--npz", str(path), "--epochs", "1", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "pickled Python objects" in err and "Traceback" not in err, err
    assert not marker.exists()
    with np.load(path, allow_pickle=True) as f:  # the payload is live: a trusting reader runs it
        f["x_a"]
    assert marker.exists()


def test_legit_npz_loads(tmp_path: Path) -> None:
    data = load_npz(write_npz(tmp_path / "ok.npz", **make_npz_arrays(n=40)))
    assert len(data) == 40 and data.modalities == ("a", "b")


# --- pickled formats (MMSA, WESAD) --------------------------------------------------------------
RAW_EXPLOITS = {
    # hand-written protocol-0 pickles, the classic payloads (no Python class needed to make them)
    "posix.system": b"cposix\nsystem\n(S'touch {m}'\ntR.",
    "os.system": b"cos\nsystem\n(S'touch {m}'\ntR.",
    "builtins.eval": b"cbuiltins\neval\n(S'open(\"{m}\", \"w\")'\ntR.",
    "__builtin__.eval": b"c__builtin__\neval\n(S'open(\"{m}\", \"w\")'\ntR.",
    "builtins.getattr": b"cbuiltins\ngetattr\n(cbuiltins\nopen\nS'__call__'\ntR(S'{m}'\nS'w'\ntR.",
}


@pytest.mark.parametrize("name", list(RAW_EXPLOITS))
def test_hand_written_exploit_pickles_are_refused(tmp_path: Path, name: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(RAW_EXPLOITS[name].replace(b"{m}", str(marker).encode()))
    with pytest.raises(MMRobustError) as e:
        load_pickle(path)
    one_line(e, str(path), f"'{name}'", "trust_pickle=True", "arbitrary code")
    assert not marker.exists()
    if name != "posix.system" or os.name == "posix":
        load_pickle(path, trust=True)  # the payload is live: the unrestricted reader runs it
        assert marker.exists()


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_python_made_exploit_pickles_are_refused_at_every_protocol(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"x": np.zeros(2), "y": [OpenFile(marker)]}, protocol=protocol))
    with pytest.raises(MMRobustError) as e:
        load_pickle(path)
    one_line(e, "refused to unpickle", "trust_pickle=True")
    assert not marker.exists()


def _mmsa_content(n: int = 6, extra: Any = None) -> dict[str, Any]:
    rng = np.random.default_rng(0)

    def split() -> dict[str, Any]:
        out: dict[str, Any] = {
            "text": rng.normal(size=(n, 3, 8)).astype(np.float32),
            "audio": rng.normal(size=(n, 4, 5)).astype(np.float32),
            "vision": rng.normal(size=(n, 2, 6)).astype(np.float32),
            "regression_labels": rng.normal(size=n),
        }
        if extra is not None:
            out["meta"] = extra
        return out

    return {"train": split(), "valid": split(), "test": split()}


def test_mmsa_pickle_with_code_is_refused_naming_the_flag(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil_50.pkl"
    path.write_bytes(pickle.dumps(_mmsa_content(extra=Touch(marker)), protocol=4))
    with pytest.raises(MMRobustError) as e:
        mmrobust.load_dataset("mmsa", file=str(path), use_cache=False)
    one_line(e, str(path), "refused to unpickle", "trust_pickle=True", "can run arbitrary code")
    assert not marker.exists()


def test_mmsa_trust_flag_reads_a_pickle_with_other_objects(tmp_path: Path) -> None:
    path = tmp_path / "dated_50.pkl"
    path.write_bytes(pickle.dumps(_mmsa_content(extra=datetime.date(2020, 1, 2)), protocol=4))
    with pytest.raises(MMRobustError) as e:
        mmrobust.load_dataset("mmsa", file=str(path), use_cache=False)
    one_line(e, "'datetime.date'", "trust_pickle=True")
    data = mmrobust.load_dataset("mmsa", file=str(path), trust_pickle=True, use_cache=False)
    assert len(data) == 18 and data.spec.task == "regression"
    plain = tmp_path / "plain_50.pkl"
    plain.write_bytes(pickle.dumps(_mmsa_content(), protocol=4))
    assert len(mmrobust.load_dataset("mmsa", file=str(plain), use_cache=False)) == 18  # no flag needed


def _wesad_record(extra: Any = None, seconds: int = 2) -> dict[str, Any]:
    n = 700 * seconds
    chest = {k: np.zeros((n, 3 if k == "ACC" else 1)) for k in ("ACC", "ECG", "EMG", "EDA", "Resp", "Temp")}
    wrist = {
        "ACC": np.zeros((32 * seconds, 3)),
        "BVP": np.zeros((64 * seconds, 1)),
        "EDA": np.zeros((4 * seconds, 1)),
        "TEMP": np.zeros((4 * seconds, 1)),
    }
    record: dict[str, Any] = {"signal": {"chest": chest, "wrist": wrist}, "label": np.ones(n, np.int32)}
    record["subject"] = extra if extra is not None else "S2"
    return record


def test_wesad_pickle_with_code_is_refused_and_the_flag_reads_legit_objects(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "S2.pkl"
    evil.write_bytes(pickle.dumps(_wesad_record(OpenFile(marker)), protocol=2))
    with pytest.raises(MMRobustError) as e:
        wesad.read_pkl(evil)
    one_line(e, str(evil), "refused to unpickle", "trust_pickle=True", "arbitrary code")
    assert not marker.exists()

    dated = tmp_path / "S3.pkl"
    dated.write_bytes(pickle.dumps(_wesad_record(datetime.date(2018, 1, 1)), protocol=2))
    with pytest.raises(MMRobustError) as e:
        wesad.read_pkl(dated)
    one_line(e, "'datetime.date'", "trust_pickle=True")
    assert wesad.read_pkl(dated, trust=True)["subject"].year == 2018
    plain = tmp_path / "S4.pkl"
    plain.write_bytes(pickle.dumps(_wesad_record(), protocol=2))
    assert wesad.read_pkl(plain)["label"].shape == (1400,)
