"""Injected faults: every one ends in a clear error or a clean resume, never in a half-written
file read as valid, and never in lost finished runs.

Faults: a read-only output folder, a write that dies mid-file (an OS error, Ctrl-C), a full disk
(temporary files that point at /dev/full, so the kernel itself answers ENOSPC), `kill -9` of a
run at seeded random points (before/after a file is renamed into place, or after a random delay)
and of a sweep, a second process on the same run, stale temporary files, damaged run files
(truncated, edited, replaced, missing), corrupt checkpoints, training states and cache entries,
truncated data files. Real code and tiny synthetic data throughout; nothing is mocked but the
fault itself.

Also: a bit-flipped training state, a stage-reuse cache that cannot be written or
read back, bad npz files in the dataset loaders, and a download onto a full or read-only disk.

Real code and real files throughout: damage is done to the bytes of files the code wrote, a full
disk is the kernel's own ENOSPC from /dev/full; only a read-only file system and a dropped network
connection are simulated (an OSError raised where the real one would be).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_npz_arrays, run_cli, write_npz
from torch import Tensor

import mmrobust
import mmrobust.data.download
import mmrobust.train
from mmrobust import MMRobustError
from mmrobust.atomic import WriteError, _temp_prefix, atomic_write, save_tensors, seal_ok
from mmrobust.audit import AuditResult, write_report
from mmrobust.checkpoint import with_checksum
from mmrobust.config import load_config
from mmrobust.data.batch import Batch
from mmrobust.data.cache import cache_dir, cached
from mmrobust.data.download import WORK, download
from mmrobust.data.formats.safe_pickle import load_pickle
from mmrobust.data.mosi import _FEATURES as MOSI_FILE
from mmrobust.data.npz import load_npz
from mmrobust.data.registry import DatasetInfo, Download
from mmrobust.data.sequences import read_arrays
from mmrobust.methods.base import Stage
from mmrobust.methods.losses import task_loss
from mmrobust.methods.supervised import SupervisedMethod
from mmrobust.run import finished_run, run_experiment, run_or_skip
from mmrobust.runfolder import MANIFEST, TRAINING_STATE

CONFIG = """
name: faults
data: {name: synthetic, options: {n_samples: 120}}
models:
  - {method: joint, params: {fusion: sum, dim: 16}}
train: {epochs: 3, batch_size: 32}
audit: {scenarios: []}
seeds: [0, 1]
"""
SEEDS = (0, 1)
TIMEOUT_S = 120  # a subprocess normally needs a few seconds; generous for a loaded machine


def temps(root: Path) -> list[Path]:
    """Temporary files of atomic writes left anywhere below `root`."""
    return [p for p in root.rglob(".*") if ".tmp-" in p.name]


def run_dir(out: Path, seed: int) -> Path:
    return out / "joint" / f"seed-{seed}"


def manifest_stamps(out: Path) -> dict[int, int]:
    """Seed -> mtime of its manifest, for the runs that have one."""
    return {s: (run_dir(out, s) / MANIFEST).stat().st_mtime_ns for s in SEEDS if (run_dir(out, s) / MANIFEST).exists()}


def assert_consistent(out: Path, config: mmrobust.ExperimentConfig) -> set[int]:
    """Every file at its final name is complete and every run is finished (all its files intact)
    or unfinished (no manifest); returns the finished seeds."""
    for path in set(out.rglob("*.json")) - set(temps(out)):  # a killed write's temporary may be partial
        record = json.loads(path.read_text())  # never half-written
        assert seal_ok(record) is not False, path
    for path in out.rglob("checkpoint.pt"):
        mmrobust.load_checkpoint(path)
    for path in out.rglob(TRAINING_STATE):
        assert "history" in torch.load(path, weights_only=True)
    finished = set()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a finished run found damaged would warn
        for seed in SEEDS:
            if (run_dir(out, seed) / MANIFEST).exists():
                assert finished_run(config, config.models[0], seed, run_dir(out, seed)) is not None
                finished.add(seed)
    return finished


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> mmrobust.ExperimentConfig:
    path = tmp_path_factory.mktemp("config") / "c.yaml"
    path.write_text(CONFIG)
    return load_config(path)


@pytest.fixture(scope="module")
def reference(config, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, AuditResult, int, float]:
    """An uninterrupted run (saving the training state every epoch): its folder, its result, how
    many files it renamed into place and how long it took."""
    out = tmp_path_factory.mktemp("reference") / "out"
    real, count = os.replace, [0]

    def counting(src, dst):  # type: ignore[no-untyped-def]
        count[0] += 1
        return real(src, dst)

    os.replace = counting
    try:
        start = time.perf_counter()
        result = run_experiment(config, out, state_every=0)
        seconds = time.perf_counter() - start
    finally:
        os.replace = real
    return out, result, count[0], seconds


@pytest.fixture
def finished_copy(reference, tmp_path: Path) -> Path:
    """A private copy of the finished reference experiment (modification times kept)."""
    out = tmp_path / "out"
    shutil.copytree(reference[0], out)
    return out


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[[Path], bool]], None]:
    """`full_disk(when)`: from then on, the temporary file of every atomic write whose temporary
    path satisfies `when` is a symlink to /dev/full, so writing it fails with the kernel's own
    ENOSPC, whatever the writer (Python files, pandas, matplotlib, torch)."""
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    real = tempfile.mkstemp
    armed: list[Callable[[Path], bool]] = [lambda _: False]

    def mkstemp(*args, **kwargs):  # type: ignore[no-untyped-def]
        fd, name = real(*args, **kwargs)
        if armed[0](Path(name)):
            os.unlink(name)
            os.symlink("/dev/full", name)
        return fd, name

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    return lambda when: armed.__setitem__(0, when)


def one_line_cli_error(code: int, err: str, *needles: str) -> str:
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip() and not line.lstrip().startswith(("warn", "/"))]
    assert "Traceback" not in err, err
    line = next((x for x in lines if x.startswith("error:")), "")
    for needle in needles:
        assert needle in line, err
    return line


# --- the output folder is read-only -------------------------------------------------------------
def test_read_only_output_folder_is_a_one_line_error(config_file: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        if os.access(out, os.W_OK):  # root ignores permissions: the file system says it instead
            real = tempfile.mkstemp

            def mkstemp(*args, **kwargs):  # type: ignore[no-untyped-def]
                if Path(kwargs.get("dir", "")).is_relative_to(out):
                    raise OSError(errno.EROFS, "Read-only file system", str(kwargs["dir"]))
                return real(*args, **kwargs)

            monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
        code, _, err = run_cli(["run", str(config_file), "--out", str(out)], capsys)
    finally:
        out.chmod(0o755)
    line = one_line_cli_error(code, err, "cannot write", str(out), "choose a writable output folder")
    assert "Permission denied" in line or "Read-only file system" in line
    assert not [p for p in out.rglob("*") if p.is_file() and p.name != ".lock"]  # nothing half-written


# --- a write dies mid-file ----------------------------------------------------------------------
def half_then(exc: BaseException, target: str) -> Callable:
    """A Path.write_text that writes half of the text of `target`'s temporary file, then raises."""
    real = Path.write_text

    def write_text(self: Path, data: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        if not self.name.startswith(f".{target}."):
            return real(self, data, *args, **kwargs)
        real(self, data[: len(data) // 2], *args, **kwargs)
        raise exc

    return write_text


@pytest.mark.parametrize(
    "exc", [OSError(errno.EIO, "Input/output error"), KeyboardInterrupt()], ids=["io-error", "ctrl-c"]
)
def test_a_write_dying_mid_file_leaves_the_old_report_intact(reference, tmp_path: Path, monkeypatch, exc) -> None:
    _, result, _, _ = reference
    out = tmp_path / "report"
    write_report(result, out)
    before = (out / "results.json").read_bytes()
    smaller = AuditResult(result.table.head(10), result.task, result.scenarios, result.models)
    monkeypatch.setattr(Path, "write_text", half_then(exc, "results.json"))
    with pytest.raises(WriteError if isinstance(exc, OSError) else KeyboardInterrupt) as e:
        write_report(smaller, out)
    if isinstance(exc, OSError):
        assert "Input/output error" in str(e.value) and str(out / "results.json") in str(e.value)
    monkeypatch.undo()
    assert (out / "results.json").read_bytes() == before  # the old file, complete
    assert len(AuditResult.read(out / "results.json").table) == len(result.table)
    assert not temps(out)


def test_a_manifest_write_dying_mid_file_leaves_the_run_unfinished(config, reference, tmp_path, monkeypatch) -> None:
    out = tmp_path / "out"
    real = Path.write_text
    seed1 = run_dir(out, 1)

    def write_text(self: Path, data: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        if self.parent == seed1 and self.name.startswith(f".{MANIFEST}."):
            real(self, data[: len(data) // 2], *args, **kwargs)
            raise OSError(errno.EIO, "Input/output error")
        return real(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    with pytest.raises(WriteError, match=r"manifest.json: Input/output error"):
        run_experiment(config, out, state_every=0)
    monkeypatch.undo()
    assert assert_consistent(out, config) == {0} and not temps(out)
    events: list[str] = []
    result = run_experiment(config, out, events.append, state_every=0)
    assert events == ["skip joint seed 0 (finished)", "done joint seed 1"]
    pd.testing.assert_frame_equal(result.table, reference[1].table, check_dtype=False)


# --- the disk fills up --------------------------------------------------------------------------
def test_full_disk_mid_experiment_is_a_clear_error_and_keeps_finished_runs(
    config, config_file: Path, reference, tmp_path: Path, capsys, full_disk
) -> None:
    out = tmp_path / "out"
    # the disk fills up once the first run has finished
    full_disk(lambda tmp: tmp.is_relative_to(out) and (run_dir(out, 0) / MANIFEST).exists())
    code, _, err = run_cli(["run", str(config_file), "--out", str(out)], capsys)
    # "No space left on device" from Python's writers; torch's own (the training state) says less
    one_line_cli_error(code, err, "cannot write", str(run_dir(out, 1)), "disk space")
    assert assert_consistent(out, config) == {0}
    assert not temps(out)
    stamps = manifest_stamps(out)
    full_disk(lambda _: False)  # space was freed
    code, _, err = run_cli(["run", str(config_file), "--out", str(out)], capsys)
    assert code == 0, err
    assert manifest_stamps(out)[0] == stamps[0]  # the finished run was kept, not redone
    assert assert_consistent(out, config) == {0, 1}
    pd.testing.assert_frame_equal(AuditResult.read(out / "results.json").table, reference[1].table, check_dtype=False)


def test_full_disk_while_saving_tensors(small_data, fit_small, tmp_path: Path, full_disk) -> None:
    method = fit_small(small_data, "joint", "sum")
    path = mmrobust.save_checkpoint(method, tmp_path / "m.pt")
    before = path.read_bytes()
    full_disk(lambda _: True)
    with pytest.raises(WriteError, match=r"m.pt: No space left on device; free some disk space"):
        mmrobust.save_checkpoint(method, path)
    # torch.save to a path (as the training state is written) fails inside torch's C++ writer
    with pytest.raises(WriteError, match=r"state.pt: the file could not be written .*check the free disk space"):
        atomic_write(tmp_path / "state.pt", lambda p: torch.save({"w": torch.zeros(1000)}, p))
    full_disk(lambda _: False)
    assert path.read_bytes() == before and mmrobust.load_checkpoint(path)[0].name == "joint"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]
    with pytest.raises(OSError) as e:  # the real thing: save_tensors gets the kernel's ENOSPC
        save_tensors({"w": torch.zeros(1000)}, Path("/dev/full"))
    assert e.value.errno == errno.ENOSPC


def test_full_disk_while_caching_still_returns_the_data(tmp_path: Path, full_disk) -> None:
    raw = tmp_path / "raw.bin"
    raw.write_bytes(b"raw")
    full_disk(lambda tmp: tmp.is_relative_to(cache_dir()))
    with pytest.warns(UserWarning, match="not cached: cannot write .*No space left on device"):
        data = cached("fullcache", "r/1", [raw], {}, lambda: mmrobust.load_dataset("synthetic", n_samples=40))
    assert len(data) == 40
    assert not list(cache_dir().glob("fullcache-*")) and not list(cache_dir().glob(".fullcache-*"))


# --- kill -9 at random points ---------------------------------------------------------------------
KILL_SEED = 20240611
# the windows that matter most, always covered: a run's results half-published, its manifest not
# yet written (all its other files are), and a fresh checkpoint whose report is not written yet
NAMED_POINTS: list[tuple[str, int | str]] = [
    ("before", "seed-0/results.json"),
    ("before", "seed-1/manifest.json"),
    ("after", "seed-1/checkpoint.pt"),
]
KILL_POINTS = len(NAMED_POINTS) + 4


def kill_points(events: int, seconds: float) -> list[tuple[str, int | str | float]]:
    """Where to SIGKILL the run: ('before' | 'after', k): just before / after the k-th file (or the
    file whose path ends with k) is renamed into place; ('timer', s): after s seconds. The named
    points, then seeded random ones."""
    rng = random.Random(KILL_SEED)
    points: list[tuple[str, int | str | float]] = list(NAMED_POINTS)
    points += [(rng.choice(["before", "after"]), rng.randint(1, events)) for _ in range(2)]
    points += [("timer", rng.uniform(0.05, seconds)) for _ in range(2)]
    return points


def run_and_kill(config: mmrobust.ExperimentConfig, out: Path, point: tuple[str, int | str | float]) -> int:
    """Run the experiment in a forked process that SIGKILLs itself at `point`; its wait status."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 3
        try:
            kind, at = point
            if kind == "timer":
                threading.Timer(float(at), os.kill, (os.getpid(), signal.SIGKILL)).start()
            else:
                real, count = os.replace, [0]

                def replace(src, dst):  # type: ignore[no-untyped-def]
                    count[0] += 1
                    hit = count[0] == at or (isinstance(at, str) and str(dst).endswith(at))
                    if hit and kind == "before":
                        os.kill(os.getpid(), signal.SIGKILL)
                    real(src, dst)
                    if hit and kind == "after":
                        os.kill(os.getpid(), signal.SIGKILL)

                os.replace = replace
            run_experiment(config, out, state_every=0)
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return status


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.parametrize("index", range(KILL_POINTS))
def test_run_killed_at_a_random_point_resumes_and_keeps_finished_runs(config, reference, tmp_path, index) -> None:
    _, expected, events, seconds = reference
    point = kill_points(events, seconds)[index]
    out = tmp_path / "out"
    status = run_and_kill(config, out, point)
    killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert killed or (point[0] == "timer" and os.WEXITSTATUS(status) == 0), (point, status)
    finished = assert_consistent(out, config) if out.exists() else set()
    stamps = manifest_stamps(out) if out.exists() else {}

    log: list[str] = []
    result = run_experiment(config, out, log.append, state_every=0)
    expected_log = [f"skip joint seed {s} (finished)" if s in finished else f"done joint seed {s}" for s in SEEDS]
    assert log == expected_log, point
    assert {s: manifest_stamps(out)[s] for s in stamps} == stamps  # finished runs were not redone
    assert assert_consistent(out, config) == set(SEEDS)
    assert not temps(out) and not list(out.rglob(TRAINING_STATE)) and not list(out.rglob(".lock"))
    pd.testing.assert_frame_equal(result.table, expected.table, check_exact=True, check_dtype=False)


SWEEP = """name: killsweep
base:
  data: {name: synthetic, options: {n_samples: 120}}
  models: [{method: joint, params: {fusion: sum, dim: 16}}]
  train: {epochs: 1, batch_size: 32}
  audit: {scenarios: []}
grid:
  train.lr: [0.001, 0.002]
  seeds: [0, 1]
"""
CLI = "import sys; from mmrobust.cli import main; main(sys.argv[1:])"


def test_sweep_killed_midway_resumes_and_keeps_finished_runs(tmp_path: Path, capsys) -> None:
    rng = random.Random(KILL_SEED)
    after, delay = rng.randint(1, 2), rng.uniform(0.0, 0.2)
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(SWEEP)
    out = tmp_path / "out"
    args = ["sweep", str(sweep), "--out", str(out), "--workers", "1", "--threads", "1"]
    log = tmp_path / "sweep.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-c", CLI, *args], stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while len(list(out.glob(f"*/joint/seed-*/{MANIFEST}"))) < after:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "no run finished in time"
            time.sleep(0.02)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=TIMEOUT_S)
    assert proc.returncode == -signal.SIGKILL
    before = {p: p.stat().st_mtime_ns for p in out.glob(f"*/joint/seed-*/{MANIFEST}")}
    assert after <= len(before) < 4

    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    assert err.count("(finished)") == len(before), err
    assert {p: p.stat().st_mtime_ns for p in before} == before  # finished runs kept as they were
    manifests = list(out.glob(f"*/joint/seed-*/{MANIFEST}"))
    assert len(manifests) == 4 and all(seal_ok(json.loads(p.read_text())) for p in manifests)
    table = pd.read_csv(out / "results.csv")
    assert table.groupby(["combination", "seed"]).ngroups == 4
    assert not temps(out)


# --- two processes, one run ---------------------------------------------------------------------
HOLD = (
    "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
    "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(float(sys.argv[2]))"
)


def test_a_run_locked_by_another_process_is_waited_for(config, small_data, tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    hold = 1.0
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder / ".lock"), str(hold)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"locked"
        start = time.monotonic()
        with pytest.warns(UserWarning, match="being worked on by another process; waiting"):
            _, skipped = run_or_skip(config, config.models[0], 0, lambda: small_data, folder, state_every=0)
        assert time.monotonic() - start >= hold * 0.5 and not skipped
    finally:
        holder.kill()
        holder.wait(timeout=TIMEOUT_S)
    assert (folder / MANIFEST).is_file() and not (folder / ".lock").exists()


def test_a_killed_process_never_leaves_a_stale_lock(config, small_data, tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder / ".lock"), "60"], stdout=subprocess.PIPE)
    assert holder.stdout is not None and holder.stdout.readline().strip() == b"locked"
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=TIMEOUT_S)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_or_skip(config, config.models[0], 0, lambda: small_data, folder, state_every=0)
    assert not [w for w in caught if "another process" in str(w.message)]  # it did not wait
    assert (folder / MANIFEST).is_file() and not (folder / ".lock").exists()


# --- temporary files of killed writers ------------------------------------------------------------
def test_stale_temporary_files_of_dead_writers_are_removed(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    target = tmp_path / "results.json"
    stale = tmp_path / f"{_temp_prefix(target)}{gone.pid}-abc.json"
    alive = tmp_path / f"{_temp_prefix(target)}{os.getpid()}-def.json"  # a writer still at work
    other = tmp_path / f"{_temp_prefix(tmp_path / 'report.md')}{gone.pid}-ghi.md"  # another target's
    for p in (stale, alive, other):
        p.write_text("half")
    atomic_write(target, lambda p: p.write_text("{}"))
    assert not stale.exists() and alive.exists() and other.exists()
    umask = os.umask(0)
    os.umask(umask)
    assert target.read_text() == "{}" and target.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


# --- damaged files of a finished run --------------------------------------------------------------
def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _edit_json(path: Path) -> None:
    record = json.loads(path.read_text())
    if "results" in record:
        record["results"][0]["value"] += 0.25
    else:
        record["best_epoch"] += 1
    path.write_text(json.dumps(record, indent=1))  # valid JSON, the old checksum kept


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _flip_tensor_byte(path: Path) -> None:
    """Flip one byte inside the largest tensor's stored bytes (not in the file's structure)."""
    flip_tensor_byte(path, largest(torch.load(path, weights_only=True)["state"]))


DAMAGE: dict[str, tuple[str, Callable[[Path], None], str | None]] = {
    # name: (file of seed 1, how, what `mmrobust report` says; None: the report does not read it)
    "results.json truncated": ("results.json", _truncate, "results.json: damaged"),
    "results.json edited": ("results.json", _edit_json, "results.json: damaged"),
    "results.json of another run": (
        "results.json",
        lambda p: shutil.copy(p.parents[1] / "seed-0" / "results.json", p),
        "results.json: damaged",
    ),
    "manifest truncated": (MANIFEST, _truncate, "not a readable run manifest, truncated or corrupt"),
    "manifest edited": (MANIFEST, _edit_json, "damaged run manifest"),
    "checkpoint byte flipped": ("checkpoint.pt", _flip_byte, None),
    "heatmap deleted": ("heatmap.png", lambda p: p.unlink(), None),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_finished_run_is_reported_and_run_again(
    config, reference, finished_copy: Path, damage: str, capsys
) -> None:
    name, hurt, report_error = DAMAGE[damage]
    out = finished_copy
    hurt(run_dir(out, 1) / name)
    if report_error is not None:
        code, _, err = run_cli(["report", str(out), "--out", str(out.parent / "r.md")], capsys)
        one_line_cli_error(code, err, report_error, "re-run it with `mmrobust run`")
    if damage in ("results.json truncated", "results.json edited"):
        with pytest.raises(MMRobustError, match=r"results.json: (damaged|not a readable)"):
            AuditResult.read(run_dir(out, 1) / name)
    stamps = manifest_stamps(out)
    events: list[str] = []
    with pytest.warns(UserWarning, match=f"seed-1: the finished run is damaged: .*{name.split('.')[0]}") as caught:
        result = run_experiment(config, out, events.append, state_every=0)
    assert len([w for w in caught if "is damaged" in str(w.message)]) == 1  # before: twice
    assert events == ["skip joint seed 0 (finished)", "done joint seed 1"]
    assert manifest_stamps(out)[0] == stamps[0]
    assert assert_consistent(out, config) == {0, 1}
    pd.testing.assert_frame_equal(result.table, reference[1].table, check_dtype=False)


def test_the_combined_results_file_is_checked_too(reference, tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    shutil.copy(reference[0] / "results.json", path)
    assert len(AuditResult.read(path).table) == len(reference[1].table)
    _edit_json(path)
    with pytest.raises(MMRobustError, match=r"damaged results file .*re-run"):
        AuditResult.read(path)


def test_a_run_without_its_manifest_is_unfinished_and_named_by_the_report(finished_copy: Path, capsys) -> None:
    """A run killed between clearing its manifest and writing the new one keeps an old results.json, and a
    run still training has a lock and a training state: the report read the first as a finished
    `mmrobust audit` folder and ignored the second. Both are now skipped, counted and named."""
    out = finished_copy
    (run_dir(out, 1) / MANIFEST).unlink()
    training = out / "other" / "seed-0"
    training.mkdir(parents=True)
    (training / ".lock").touch()
    (training / "training-state.pt").write_bytes(b"state")
    report = out.parent / "r.md"
    code, stdout, err = run_cli(["report", str(out), "--out", str(report)], capsys)
    assert code == 0, err
    unfinished = f"2 unfinished skipped: {run_dir(out, 1).resolve()}, {training.resolve()}"
    assert f"Read 1 runs ({unfinished}) of 1 models".replace(" ", "") in "".join(stdout.split())
    assert unfinished in report.read_text() and "seeds 0;" in report.read_text()
    (run_dir(out, 0) / MANIFEST).unlink()
    code, _, err = run_cli(["report", str(out), "--out", str(report)], capsys)
    one_line_cli_error(code, err, f"no finished runs under {out} (3 unfinished skipped: {run_dir(out, 0).resolve()}")


# --- corrupt checkpoints and training states ------------------------------------------------------
def test_corrupt_checkpoint_is_a_clear_error(reference, tmp_path: Path, capsys) -> None:
    path = tmp_path / "checkpoint.pt"
    shutil.copy(run_dir(reference[0], 0) / "checkpoint.pt", path)
    _flip_tensor_byte(path)  # torch.load itself does not notice
    torch.load(path, weights_only=True)
    with pytest.raises(MMRobustError) as e:
        mmrobust.load_checkpoint(path)
    assert "checkpoint is damaged (its content does not match the checksum" in str(e.value)
    code, _, err = run_cli(
        ["audit", "--checkpoint", str(path), "--data", "synthetic", "--out", str(tmp_path / "o")], capsys
    )
    one_line_cli_error(code, err, str(path), "damaged")
    _truncate(path)
    with pytest.raises(MMRobustError, match="not a safe mmrobust checkpoint \\(unreadable: truncated, corrupt"):
        mmrobust.load_checkpoint(path)


def test_corrupt_training_state_stops_the_run_with_a_clear_error(config, config_file, tmp_path, capsys) -> None:
    """Decision: a damaged training state is not silently discarded (it is mmrobust's own file,
    written atomically, so damage means a disk problem the user should see): the run stops with an
    error naming the file; deleting it, as the message says, starts that run over."""
    out = tmp_path / "out"
    state = run_dir(out, 0) / TRAINING_STATE
    state.parent.mkdir(parents=True)
    torch.save({"format": "mmrobust-training-state", "w": torch.zeros(1000)}, state)
    _truncate(state)
    code, _, err = run_cli(["run", str(config_file), "--out", str(out)], capsys)
    one_line_cli_error(code, err, str(state), "not a readable training state", "delete it to start over")
    assert not list(out.rglob(MANIFEST))
    state.unlink()
    code, _, err = run_cli(["run", str(config_file), "--out", str(out)], capsys)
    assert code == 0, err
    assert assert_consistent(out, config) == {0, 1}


# --- corrupt cache entries --------------------------------------------------------------------------
def test_cache_entry_with_flipped_bytes_is_rebuilt(tmp_path: Path) -> None:
    raw = tmp_path / "raw.bin"
    raw.write_bytes(b"raw")
    calls: list[int] = []

    def build() -> mmrobust.MultimodalData:
        calls.append(1)
        return mmrobust.load_dataset("synthetic", n_samples=60, seed=0)

    first = cached("flipcache", "r/1", [raw], {}, build)
    (entry,) = cache_dir().glob("flipcache-*.pt")
    payload = torch.load(entry, weights_only=True)
    payload["inputs"]["m0"][0, 0] += 1.0  # same size, one value changed: torch.load would not notice
    torch.save(payload, entry)
    again = cached("flipcache", "r/1", [raw], {}, build)
    assert len(calls) == 2 and torch.equal(again.inputs["m0"], first.inputs["m0"])
    assert cached("flipcache", "r/1", [raw], {}, build) is not None and len(calls) == 2  # the rebuilt entry is good


# --- truncated data files ----------------------------------------------------------------------------
def _cuts(size: int) -> list[int]:
    return sorted({0, 1, 4, 30, size // 3, size // 2, size - 22, size - 1})


def test_truncated_npz_is_a_clear_error_at_every_cut(tmp_path: Path, capsys) -> None:
    good = write_npz(tmp_path / "good.npz", **make_npz_arrays(n=30)).read_bytes()
    for cut in _cuts(len(good)):
        path = tmp_path / f"cut{cut}.npz"
        path.write_bytes(good[:cut])
        with pytest.raises(MMRobustError) as e:
            load_npz(path)
        message = str(e.value)
        assert str(path) in message and "\n" not in message, message
        assert "truncated" in message or "empty" in message, message
    bare = tmp_path / "bare.npz"  # np.save's single array under an .npz name
    np.save(bare.with_suffix(".npy"), np.zeros(3))
    bare.with_suffix(".npy").rename(bare)
    with pytest.raises(MMRobustError, match=r"as npz: it is a single \.npy array, not an archive of named arrays"):
        load_npz(bare)
    flipped = tmp_path / "flipped.npz"
    flipped.write_bytes(good[:200] + bytes([good[200] ^ 0xFF]) + good[201:])
    with pytest.raises(MMRobustError, match="truncated or corrupt \\(Bad CRC-32"):
        load_npz(flipped)
    code, _, err = run_cli(
        ["train", "--npz", str(tmp_path / f"cut{len(good) // 2}.npz"), "--out", str(tmp_path / "o")], capsys
    )
    one_line_cli_error(code, err, f"cut{len(good) // 2}.npz", "truncated")


def test_truncated_npz_in_a_run_config_is_exit_2(tmp_path: Path, capsys) -> None:
    good = write_npz(tmp_path / "good.npz", **make_npz_arrays(n=30)).read_bytes()
    (tmp_path / "data.npz").write_bytes(good[: len(good) // 2])
    data = f"{{name: null, npz: {tmp_path / 'data.npz'}}}"
    (tmp_path / "c.yaml").write_text(CONFIG.replace("{name: synthetic, options: {n_samples: 120}}", data))
    code, _, err = run_cli(["run", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "o")], capsys)
    one_line_cli_error(code, err, "data.npz", "truncated")
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").rglob("*.json"))


def test_truncated_pickle_is_a_clear_error_at_every_cut(tmp_path: Path) -> None:
    import pickle

    good = pickle.dumps({"train": {"x": np.arange(200.0).reshape(20, 10), "ids": ["a"] * 20}}, protocol=4)
    for cut in _cuts(len(good)):
        path = tmp_path / f"cut{cut}.pkl"
        path.write_bytes(good[:cut])
        with pytest.raises(MMRobustError) as e:
            load_pickle(path)
        assert str(path) in str(e.value) and "truncated or corrupt" in str(e.value), str(e.value)


# --- more faults: training states, the stage cache, dataset files, downloads --------------------
class Interrupted(Exception):
    """Stands in for the process dying mid-training."""


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
        mmrobust.fit(
            mmrobust.create_method("joint", fusion="sum"),
            small_data,
            epochs=5,
            progress=False,
            state_path=state,
            state_every=0,
        )
    assert str(e.value) == (
        f"{state}: this training state is damaged (its content does not match the checksum saved with it: "
        "corrupted on disk or edited); delete it to start over"
    )
    assert state.exists()  # left for the user to look at and delete
    state.unlink()  # as the message says: the run starts over
    result = mmrobust.fit(
        mmrobust.create_method("joint", fusion="sum"),
        small_data,
        epochs=5,
        progress=False,
        state_path=state,
        state_every=0,
    )
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

    def stages(self, seed: int) -> Sequence[Stage]:
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
    monkeypatch.setattr(mmrobust.train.stage_cache, "save_tensors", writer)
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
    with pytest.warns(
        UserWarning,
        match=r"stage 'pretrain' not cached for reuse: cannot write .*/file/cache/stages/"
        r".*\.pt: Not a directory",
    ):
        _, result = fit_pretrained(small_data)
    assert result.epochs_run == 4


def _flip(path: Path) -> None:
    flip_tensor_byte(path, largest(torch.load(path, weights_only=True)["module"]))


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


STAGE_CACHE_DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "byte flipped": (_flip, "this stage cache entry is damaged (its content does not match the checksum"),
    "truncated": (_truncate, "is not a readable stage cache entry ("),
    "emptied": (lambda p: p.write_bytes(b""), "is not a readable stage cache entry ("),
    "legacy": (_legacy, "is not an mmrobust stage cache entry (expected format mmrobust-stage/1)"),
    "other weights": (_other_weights, "does not hold this stage's weights"),
}


@pytest.mark.parametrize("damage", list(STAGE_CACHE_DAMAGE))
def test_damaged_stage_cache_entry_warns_and_is_trained_again(small_data, stage_cache: Path, damage: str) -> None:
    hurt, says = STAGE_CACHE_DAMAGE[damage]
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
    with pytest.raises(
        MMRobustError,
        match=r"^cannot write .*/ds/staging: Read-only file system; the folder is read-only or not yours",
    ):
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
    with pytest.raises(
        MMRobustError,
        match=r"^cannot download file://.*missing\.bin \(.*\); if offline, download "
        r"file://.* by hand \(official page: https://example\.org\), save it as .*/ds/data\.bin, then",
    ):
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
