"""Data-parallel training (torchrun, 2 CPU processes on gloo) matches single-process training,
and only rank 0 writes files; the sharding rule and its errors, checked in-process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

import mmrobust
from mmrobust import MMRobustError
from mmrobust.distributed import check_batch_size, shard_batches

EPOCHS, BATCH = 4, 32

# The worker: a `fit` whose weights every rank saves for the test to compare, then a
# `mmrobust run` experiment, during which rank 1 records every file it opens for writing.
WORKER = """
import json, os, sys
from pathlib import Path

import torch

torch.set_num_threads(1)
import mmrobust
from mmrobust.cli import main

side, exp, config = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
rank = int(os.environ["RANK"])
data = mmrobust.load_dataset("synthetic", n_samples=200, seed=3)
method = mmrobust.create_method("joint", fusion="sum")
result = mmrobust.fit(method, data, seed=0, epochs={epochs}, batch_size={batch}, progress=False)
torch.save({{"state": method.modules().state_dict(), "val": result.val_metrics, "history": result.history}},
           side / f"fit-rank{{rank}}.pt")

writes = []
if rank != 0:
    def hook(event, args):
        if event == "open" and str(args[0]).startswith(str(exp)):
            mode, flags = args[1], args[2] or 0
            if (mode and any(c in mode for c in "wax+")) or flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                writes.append(str(args[0]))
        elif event in ("os.mkdir", "os.rename", "os.replace", "os.remove") and str(args[0]).startswith(str(exp)):
            writes.append(f"{{event}} {{args[0]}}")
    sys.addaudithook(hook)
try:
    main(["run", config, "--out", str(exp)])
except SystemExit as e:
    assert not e.code, e.code
(side / f"writes-rank{{rank}}.json").write_text(json.dumps(writes))
"""

CONFIG = """
name: ddp
data: {name: synthetic, options: {n_samples: 120}}
models:
  - {method: joint, params: {fusion: sum}}
train: {epochs: 2, batch_size: 16, loggers: LOGGERS}
audit: {scenarios: ["missing[m0@0.5]"]}
seeds: [0, 1]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def torchrun(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Run the worker under torchrun with 2 processes once; (side dir, experiment dir)."""
    root = tmp_path_factory.mktemp("ddp")
    side, exp = root / "side", root / "exp"
    side.mkdir()
    (root / "worker.py").write_text(WORKER.format(epochs=EPOCHS, batch=BATCH))
    loggers = "[tensorboard]" if _has("tensorboard") else "[]"
    (root / "c.yaml").write_text(CONFIG.replace("LOGGERS", loggers))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MMROBUST_CACHE": str(root / "cache")}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1"]
    cmd += ["--master_port", str(free_port()), str(root / "worker.py"), str(side), str(exp), str(root / "c.yaml")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return side, exp


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def test_two_processes_match_single_process_training(torchrun: tuple[Path, Path]) -> None:
    side, _ = torchrun
    data = mmrobust.load_dataset("synthetic", n_samples=200, seed=3)
    single = mmrobust.create_method("joint", fusion="sum")  # no dropout anywhere: mlp encoders, sum fusion
    reference = mmrobust.fit(single, data, seed=0, epochs=EPOCHS, batch_size=BATCH, progress=False)
    assert not dist.is_initialized()  # a single process never joins a process group
    ranks = [torch.load(side / f"fit-rank{r}.pt", weights_only=True) for r in (0, 1)]
    expected = single.modules().state_dict()
    for saved in ranks:
        assert saved["state"].keys() == expected.keys()
        for key, value in expected.items():
            torch.testing.assert_close(saved["state"][key], value, atol=1e-5, rtol=1e-4, msg=key)
        assert saved["val"].keys() == reference.val_metrics.keys()
        for key, value in reference.val_metrics.items():
            assert saved["val"][key] == pytest.approx(value, abs=1e-5), key
        losses = [row["train_loss"] for row in saved["history"]]
        assert losses == pytest.approx([row["train_loss"] for row in reference.history], abs=1e-5)
    # all-reduced gradients are identical on every rank, so are the weights
    for key in expected:
        assert torch.equal(ranks[0]["state"][key], ranks[1]["state"][key]), key


def test_only_rank_0_writes_files(torchrun: tuple[Path, Path]) -> None:
    side, exp = torchrun
    assert json.loads((side / "writes-rank1.json").read_text()) == []
    for seed in (0, 1):
        run = exp / "joint" / f"seed-{seed}"
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["status"] == "done" and manifest["config"]["train"]["batch_size"] == 16
        assert (run / "checkpoint.pt").is_file() and (run / "results.json").is_file()
        assert not (run / "training-state.pt").exists()
        if _has("tensorboard"):
            assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert (exp / "results.json").is_file() and (exp / "config.yaml").is_file()
    assert not [p for p in exp.rglob(".*") if p.is_file()]  # no stray temporary files


# --- the sharding rule, in-process --------------------------------------------------------
@pytest.mark.parametrize(("n", "batch", "world"), [(100, 32, 2), (103, 32, 4), (10, 4, 4)])
def test_ranks_split_every_global_batch_into_contiguous_slices(n: int, batch: int, world: int) -> None:
    data = mmrobust.load_dataset("synthetic", n_samples=n * 2, seed=1).split("train")
    single = list(data.batches(batch, torch.Generator().manual_seed(7)))
    shards = [list(shard_batches(data, batch, torch.Generator().manual_seed(7), r, world)) for r in range(world)]
    assert all(len(s) == len(single) for s in shards)
    for step, whole in enumerate(single):
        parts = [shards[r][step] for r in range(world)]
        assert all(rows == len(whole) for _, _, rows in parts)
        assert sum(mine for _, mine, _ in parts) == len(whole)
        got = torch.cat([b.target for b, _, _ in parts if b is not None])
        assert torch.equal(got, whole.target)  # rank order = row order of the global batch
        if len(whole) == batch:
            assert all(mine == batch // world for _, mine, _ in parts)


def test_batch_size_must_divide_by_process_count() -> None:
    check_batch_size(32, 4)
    with pytest.raises(MMRobustError, match="batch_size 30 is not divisible by the 4 processes"):
        check_batch_size(30, 4)


def test_single_process_fit_ignores_world_size_1(small_data, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "1")
    m = mmrobust.create_method("joint", fusion="sum")
    mmrobust.fit(m, small_data, seed=0, epochs=1, progress=False)
    assert not dist.is_initialized()
