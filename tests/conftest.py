"""Shared fixtures: small synthetic datasets, briefly trained methods, npz and CLI helpers."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

import mmrobust
from mmrobust.cli import main as cli_main

# The models here are tiny: one intra-op thread per process is as fast, keeps `pytest -n 2` from
# oversubscribing the cores, and avoids OpenMP spin-waiting when the machine is busy. OMP_NUM_THREADS
# too: without it, `run_experiment` and the CLI take the idle cores, which vary with the machine's
# load, and runs compared bit for bit (a killed run resumed in another process) would differ.
TEST_THREADS = os.environ.get("MMROBUST_TEST_THREADS", "1")
os.environ["OMP_NUM_THREADS"] = TEST_THREADS
torch.set_num_threads(int(TEST_THREADS))

KINDS = ("mlp", "conv1d", "seq")
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Preprocessed-data caches go to a temporary folder, never the user's home."""
    os.environ["MMROBUST_CACHE"] = str(tmp_path_factory.mktemp("mmrobust-cache"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real datasets beside the project (../shared/data); tests needing them skip without it."""
    root = Path(os.environ.get("MMROBUST_DATA", SHARED_DATA))
    if not root.is_dir():
        pytest.skip(f"real datasets not found at {root}")
    return root


@pytest.fixture(scope="session")
def small_data() -> mmrobust.MultimodalData:
    """200 samples, three `mlp` modalities, all present."""
    return mmrobust.load_dataset("synthetic", n_samples=200, seed=3)


@pytest.fixture(scope="session")
def kinds_data() -> mmrobust.MultimodalData:
    """200 samples over three encoder kinds, ~20% naturally missing modalities."""
    return mmrobust.load_dataset("synthetic", n_samples=200, kinds=KINDS, missing_rate=0.2, seed=4)


@pytest.fixture(scope="session")
def regression_data() -> mmrobust.MultimodalData:
    return mmrobust.load_dataset("synthetic", n_samples=200, task="regression", seed=5)


_FITTED: dict[tuple, mmrobust.Method] = {}


def fitted(
    data: mmrobust.MultimodalData,
    method: str = "dropout",
    fusion: str = "sum",
    *,
    seed: int = 0,
    epochs: int = 2,
    **fit_options,
) -> mmrobust.Method:
    """A briefly trained method, cached per (data, configuration). Treat it as read-only."""
    key = (id(data), method, fusion, seed, epochs, tuple(sorted(fit_options.items())))
    if key not in _FITTED:
        m = mmrobust.create_method(method, fusion=fusion)
        mmrobust.fit(m, data, seed=seed, epochs=epochs, progress=False, **fit_options)
        _FITTED[key] = m
    return _FITTED[key]


@pytest.fixture(scope="session")
def fit_small() -> Callable[..., mmrobust.Method]:
    return fitted


def write_npz(path: Path, **arrays: np.ndarray) -> Path:
    """Write arrays as an .npz (object arrays are pickled by numpy, as a hostile file would be)."""
    np.savez(path, **arrays)
    return path


def make_npz_arrays(
    n: int = 60,
    num_classes: int = 4,
    shape_a: tuple[int, ...] = (6,),
    shape_b: tuple[int, ...] = (2, 8),
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """A small, learnable bring-your-own dataset: labels shift the mean of both modalities."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % num_classes
    rng.shuffle(y)
    x_a = rng.normal(size=(n, *shape_a)) + y.reshape(-1, *[1] * len(shape_a))
    x_b = rng.normal(size=(n, *shape_b)) - y.reshape(-1, *[1] * len(shape_b))
    return {"x_a": x_a.astype(np.float32), "x_b": x_b.astype(np.float32), "y": y.astype(np.int64)}


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the CLI in-process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    try:
        cli_main(list(args))
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str, *needles: str) -> str:
    """Assert a CLI user error: exit code 2 and exactly one line, `error: ...`, holding `needles`."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:"), err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def load_script(name: str) -> ModuleType:
    """scripts/NAME.py as a module (the scripts are not a package), registered under NAME so that
    what it defines (dataclasses, pickled objects) resolves."""
    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
