"""Resuming (docs/architecture.md, invariant 5): a fit interrupted mid-training, in-process or by `kill -9`, continues
from its saved state and ends bit for bit where an uninterrupted run ends; finished runs are skipped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import mmrobust
import mmrobust.train
from mmrobust import MMRobustError, MultimodalData
from mmrobust.config import load_config
from mmrobust.run import run_experiment
from mmrobust.runfolder import TRAINING_STATE

EPOCHS = 6


class Interrupted(Exception):
    """Stands in for the process dying mid-epoch."""


def crash_after(method: mmrobust.Method, steps: int) -> mmrobust.Method:
    """Make `method.loss` raise on training step `steps + 1` (counting from 1)."""
    original, calls = method.loss, 0

    def loss(batch, generator):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls > steps:
            raise Interrupted
        return original(batch, generator)

    method.loss = loss  # type: ignore[method-assign]
    return method


def count_steps(method: mmrobust.Method) -> list[int]:
    """Count the training steps `method` takes (the returned list holds the count)."""
    original, counter = method.loss, [0]

    def loss(batch, generator):  # type: ignore[no-untyped-def]
        counter[0] += 1
        return original(batch, generator)

    method.loss = loss  # type: ignore[method-assign]
    return counter


def fit(method: mmrobust.Method, data: MultimodalData, **kw) -> mmrobust.FitResult:  # type: ignore[no-untyped-def]
    options = {"seed": 0, "epochs": EPOCHS, "batch_size": 32, "progress": False, **kw}
    return mmrobust.fit(method, data, **options)


def assert_same_weights(a: mmrobust.Method, b: mmrobust.Method) -> None:
    sa, sb = a.modules().state_dict(), b.modules().state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def steps_per_epoch(data: MultimodalData, batch_size: int = 32) -> int:
    return -(-len(data.split("train")) // batch_size)


# --- in-process interruption ------------------------------------------------------------------
# concat and transformer fusions both use dropout layers, which draw from torch's global generator
@pytest.mark.parametrize(("method", "fusion"), [("dropout", "concat"), ("dropout", "transformer"), ("joint", "sum")])
def test_interrupted_fit_resumes_to_identical_results(kinds_data, tmp_path: Path, method: str, fusion: str) -> None:
    reference = mmrobust.create_method(method, fusion=fusion)
    expected = fit(reference, kinds_data)

    state = tmp_path / "state.pt"
    steps = steps_per_epoch(kinds_data)
    crashing = crash_after(mmrobust.create_method(method, fusion=fusion), 3 * steps + 1)  # dies in epoch 3
    with pytest.raises(Interrupted):
        fit(crashing, kinds_data, state_path=state, state_every=0)
    saved = torch.load(state, weights_only=True)  # only tensors and plain containers
    assert [h["epoch"] for h in saved["history"]] == [0, 1, 2]

    resumed = mmrobust.create_method(method, fusion=fusion)
    taken = count_steps(resumed)
    result = fit(resumed, kinds_data, state_path=state, state_every=0)
    assert taken[0] == (EPOCHS - 3) * steps  # it continued; epochs 0-2 were not trained again
    assert result == expected  # best epoch, val metrics and the whole history, exactly
    assert_same_weights(resumed, reference)
    assert not state.exists()  # removed once training ended
    val = kinds_data.split("val")
    assert torch.equal(mmrobust.predict(resumed, val), mmrobust.predict(reference, val))


def test_resume_of_an_early_stopped_run(tmp_path: Path) -> None:
    # a high learning rate makes validation loss get worse after an early best epoch: early stopping
    data = mmrobust.load_dataset("synthetic", n_samples=120, informativeness=(1.0, 0.5, 0.5), seed=0)
    options = {"epochs": 40, "lr": 1e-2, "batch_size": 16, "patience": 3}
    reference = mmrobust.create_method("joint", fusion="concat")
    expected = fit(reference, data, **options)
    assert 4 <= expected.epochs_run < 40  # it stops early, after the epoch the crash hits

    state = tmp_path / "state.pt"
    with pytest.raises(Interrupted):
        crashing = crash_after(mmrobust.create_method("joint", fusion="concat"), 3 * steps_per_epoch(data, 16) + 1)
        fit(crashing, data, state_path=state, state_every=0, **options)
    resumed = mmrobust.create_method("joint", fusion="concat")
    assert fit(resumed, data, state_path=state, state_every=0, **options) == expected
    assert_same_weights(resumed, reference)


def test_killed_after_the_last_save_trains_nothing_again(small_data, tmp_path: Path, monkeypatch) -> None:
    reference = mmrobust.create_method("joint", fusion="sum")
    expected = fit(reference, small_data)
    state = tmp_path / "state.pt"
    # the last epoch's state was saved, then the process died before removing it
    monkeypatch.setattr(type(state), "unlink", lambda self, missing_ok=False: None)
    fit(mmrobust.create_method("joint", fusion="sum"), small_data, state_path=state, state_every=0)
    monkeypatch.undo()
    assert state.exists()
    again = crash_after(mmrobust.create_method("joint", fusion="sum"), 0)  # any training step raises
    assert fit(again, small_data, state_path=state, state_every=0) == expected
    assert_same_weights(again, reference)
    assert not state.exists()


def test_state_is_saved_at_most_every_state_every_seconds(small_data, tmp_path: Path) -> None:
    state = tmp_path / "state.pt"
    with pytest.raises(Interrupted):
        fit(crash_after(mmrobust.create_method("joint", fusion="sum"), 4 * steps_per_epoch(small_data)),
            small_data, state_path=state, state_every=3600)
    assert not state.exists()  # no save yet: the default keeps the cost of saving negligible


def test_state_of_another_run_is_discarded(small_data, tmp_path: Path) -> None:
    state = tmp_path / "state.pt"
    with pytest.raises(Interrupted):
        fit(crash_after(mmrobust.create_method("joint", fusion="sum"), 3 * steps_per_epoch(small_data)),
            small_data, state_path=state, state_every=0, lr=1e-3)
    assert state.exists()
    reference = mmrobust.create_method("joint", fusion="sum")
    expected = fit(reference, small_data, lr=2e-3)
    other = mmrobust.create_method("joint", fusion="sum")
    taken = count_steps(other)
    with pytest.warns(UserWarning, match="other settings or data; training starts over"):
        assert fit(other, small_data, state_path=state, state_every=0, lr=2e-3) == expected
    assert taken[0] == EPOCHS * steps_per_epoch(small_data)
    assert_same_weights(other, reference)
    assert not state.exists()


def test_unreadable_state_is_a_user_error(small_data, tmp_path: Path) -> None:
    junk = tmp_path / "state.pt"
    junk.write_bytes(b"not a training state")
    with pytest.raises(MMRobustError, match="not a readable training state"):
        fit(mmrobust.create_method("joint", fusion="sum"), small_data, state_path=junk)
    torch.save({"format": "something-else"}, junk)
    with pytest.raises(MMRobustError, match="not an mmrobust training state"):
        fit(mmrobust.create_method("joint", fusion="sum"), small_data, state_path=junk)
    assert junk.exists()  # a file fit did not write is never overwritten


# --- `kill -9` of a real run ------------------------------------------------------------------
KILL_EPOCHS = 60
CONFIG = f"""
name: killable
data: {{name: synthetic, options: {{n_samples: 160}}}}
models:
  - {{method: dropout, label: drop, params: {{fusion: transformer, dim: 16}}}}
train: {{epochs: {KILL_EPOCHS}, batch_size: 32, patience: 1000, threads: 1}}
audit: {{scenarios: ["rates[m0=0.5,m1=0.2]"]}}
seeds: [0]
"""
SCRIPT = """
import sys
from mmrobust.config import load_config
from mmrobust.run import run_experiment
run_experiment(load_config(sys.argv[1]), sys.argv[2], state_every=0)
"""
TIMEOUT_S = 120  # generous for a loaded machine; the test normally takes a few seconds


def test_run_killed_mid_training_resumes_to_identical_results(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "c.yaml").write_text(CONFIG)
    config = load_config(tmp_path / "c.yaml")
    # train.threads: the same intra-op threads in every process, so that every run sums in the same order
    args = [str(tmp_path / "c.yaml"), str(tmp_path / "killed")]
    log = tmp_path / "killed.log"
    with log.open("wb") as out:  # a file, not a pipe: a chatty child can never block on a full pipe
        proc = subprocess.Popen([sys.executable, "-c", SCRIPT, *args], stdout=out, stderr=subprocess.STDOUT)
    state = tmp_path / "killed" / "drop" / "seed-0" / TRAINING_STATE
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not state.exists():
            assert proc.poll() is None, f"the run ended before saving any state:\n{log.read_text()}"
            assert time.monotonic() < deadline, "no training state appeared"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=TIMEOUT_S)
    assert proc.returncode == -signal.SIGKILL
    done_epochs = len(torch.load(state, weights_only=True)["history"])
    assert 0 < done_epochs < KILL_EPOCHS, done_epochs
    killed_dir = state.parent
    assert not (killed_dir / "manifest.json").exists()

    expected = run_experiment(config, tmp_path / "reference")  # uninterrupted, this process, same threads

    # rerun the same command: it continues after the saved epoch and ends where the reference ends
    evaluations = count_evaluations(monkeypatch)
    events: list[str] = []
    resumed = run_experiment(config, tmp_path / "killed", events.append)
    assert events == ["done drop seed 0"]
    assert evaluations[0] == KILL_EPOCHS - done_epochs  # one validation per epoch trained
    assert not state.exists()
    pd.testing.assert_frame_equal(resumed.table, expected.table, check_exact=True)
    ref_dir = tmp_path / "reference" / "drop" / "seed-0"
    for name in ("results.csv", "report.md"):
        assert (killed_dir / name).read_bytes() == (ref_dir / name).read_bytes(), name
    a = torch.load(killed_dir / "checkpoint.pt", weights_only=True)
    b = torch.load(ref_dir / "checkpoint.pt", weights_only=True)
    assert a["config"] == b["config"] and a["state"].keys() == b["state"].keys()
    assert all(torch.equal(a["state"][k], b["state"][k]) for k in a["state"])
    ma, mb = (json.loads((d / "manifest.json").read_text()) for d in (killed_dir, ref_dir))
    for key in ("run_hash", "best_epoch", "val_metrics", "mask_hashes", "data_checksum"):
        assert ma[key] == mb[key], key

    # and repeating it once more trains nothing: the finished run is skipped
    stamp = (killed_dir / "manifest.json").stat().st_mtime_ns
    evaluations[0] = 0
    events.clear()
    again = run_experiment(config, tmp_path / "killed", events.append)
    assert events == ["skip drop seed 0 (finished)"] and evaluations[0] == 0
    assert (killed_dir / "manifest.json").stat().st_mtime_ns == stamp
    pd.testing.assert_frame_equal(again.table, expected.table, check_exact=False)


def count_evaluations(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the per-epoch validations `fit` runs (one per epoch trained)."""
    original, counter = mmrobust.train.evaluation.evaluate, [0]

    def evaluate(*args, **kwargs):  # type: ignore[no-untyped-def]
        counter[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(mmrobust.train.evaluation, "evaluate", evaluate)
    return counter
