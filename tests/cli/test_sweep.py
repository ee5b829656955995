"""`mmrobust sweep`: grid expansion, capability-tag planning, local and Ray backends, progress."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch

from mmrobust import MMRobustError
from mmrobust.cli import main
from mmrobust.methods import METHODS, MethodTags
from mmrobust.sweep import SweepProgress, parse_grid_option, plan_sweep, read_sweep, run_sweep

BASE = """
  data: {name: synthetic, options: {n_samples: 120}}
  models:
    - {method: joint, params: {fusion: sum}}
  train: {epochs: 2, batch_size: 16}
  audit: {scenarios: ["rates[m0=0.5,m1=0.2]"]}
  seeds: [0]
"""


def write_sweep(tmp_path: Path, grid: str, base: str = BASE, name: str = "sweep.yaml") -> Path:
    path = tmp_path / name
    path.write_text(f"name: tiny\nbase:{base}grid:\n{grid}")
    return path


def test_grid_expands_to_the_product_with_dotted_keys_and_seeds(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, "  models.0.params.fusion: [sum, concat]\n  seeds: [3, 4]\n")
    spec = read_sweep(path, ["train.lr=0.01"], ["train.epochs=1,2,3"])
    plan = plan_sweep(spec, tmp_path / "out")
    assert len(plan.combinations) == 2 * 3 and len(plan.units) == 2 * 3 * 2 and not plan.skipped
    seen = {(c.config.models[0].params["fusion"], c.config.train.epochs) for c in plan.combinations}
    assert seen == {(f, e) for f in ("sum", "concat") for e in (1, 2, 3)}
    assert all(c.config.seeds == [3, 4] and c.config.train.lr == 0.01 for c in plan.combinations)
    unit = plan.units[0]
    assert unit.combination == "models.0.params.fusion=sum,train.epochs=1"
    assert unit.run_dir == (tmp_path / "out" / unit.combination / "joint" / "seed-3").resolve()
    assert len({u.run_dir for u in plan.units}) == len(plan.units)


def test_a_plain_experiment_config_sweeps_over_grid_options(tmp_path: Path) -> None:
    (tmp_path / "exp.yaml").write_text(BASE.replace("\n  ", "\n"))
    plan = plan_sweep(read_sweep(tmp_path / "exp.yaml", grid=["audit.scenarios=[],[\"missing[m0@0.5]\"]"]), tmp_path)
    assert [c.config.audit.scenarios for c in plan.combinations] == [[], ["missing[m0@0.5]"]]
    assert plan.combinations[0].name.startswith("audit.scenarios=__-")  # replaced characters: a hash is added


def test_base_may_be_a_path_relative_to_the_sweep_file(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text(BASE.replace("\n  ", "\n"))
    (tmp_path / "s.yaml").write_text("base: base.yaml\ngrid: {train.epochs: [1, 2]}\n")
    assert len(plan_sweep(read_sweep(tmp_path / "s.yaml"), tmp_path).units) == 2


def test_grid_paths_in_a_sweep_file_are_read_from_its_folder(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """As its base's are (before: from the current folder); a --grid option's stay relative to it."""
    (tmp_path / "sweeps").mkdir()
    path = write_sweep(tmp_path / "sweeps", "  data.npz: [a.npz, /abs/b.npz]\n")
    monkeypatch.chdir(tmp_path)
    spec = read_sweep(path, grid=["data.data_dir=here"])
    assert spec.grid["data.npz"] == [str(tmp_path / "sweeps" / "a.npz"), "/abs/b.npz"]
    assert spec.grid["data.data_dir"] == ["here"]


def test_parse_grid_option_keeps_brackets_together() -> None:
    assert parse_grid_option("train.epochs=10,20") == ("train.epochs", [10, 20])
    assert parse_grid_option("audit.scenarios=[a],[a,b]") == ("audit.scenarios", [["a"], ["a", "b"]])
    _, values = parse_grid_option("models.0.params={fusion: sum},{fusion: late}")
    assert values == [{"fusion": "sum"}, {"fusion": "late"}]


@pytest.mark.parametrize(
    ("file_grid", "option", "message"),
    [
        ("  train.epoch: [1]\n", None, "grid key 'train.epoch': unknown config key 'train.epoch'. Did you mean"),
        ("  models.3.method: [joint]\n", None, "grid key 'models.3.method'"),
        ("  train.epochs: [one, 2]\n", None, "'train.epochs' must be int"),
        ("  train.epochs: 5\n", None, "malformed grid: key 'train.epochs' must have a non-empty list"),
        ("  train.epochs: []\n", None, "non-empty list"),
        ("  train.epochs: [1, 1]\n", None, "lists a value twice"),
        ("  seeds: [a]\n", None, "takes a list of integer seeds"),
        ("  models.0.method: [jiont]\n", None, "unknown method 'jiont'. Did you mean 'joint'"),
        ("  train.epochs: [1]\n", "train.epochs", "malformed --grid 'train.epochs'"),
        ("  train.epochs: [1]\n", "a=[1,2", "malformed --grid"),
        ("  train.epochs: [1]\n", "a=1,,2", "malformed --grid"),
    ],
)
def test_bad_grids_fail_in_one_line(tmp_path: Path, file_grid: str, option: str | None, message: str) -> None:
    path = write_sweep(tmp_path, file_grid)
    with pytest.raises(MMRobustError) as info:
        plan_sweep(read_sweep(path, grid=[option] if option else []), tmp_path / "out")
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("seeds=[5]", "'seeds' is a grid key of this sweep, whose values would replace it; give them with --grid"),
        ("train.epochs=7", "'train.epochs' is a grid key"),
        ("recipe=other.yaml", "a recipe cannot be set by an override or a grid"),
    ],
)
def test_an_override_the_grid_would_drop_is_refused(tmp_path: Path, override: str, message: str) -> None:
    """Before: 'seeds=[5]' planned the grid's seeds, and recipe= was recorded but never applied."""
    path = write_sweep(tmp_path, "  train.epochs: [1, 2]\n  seeds: [0, 1]\n")
    with pytest.raises(MMRobustError, match=re.escape(message)):
        plan_sweep(read_sweep(path, [override]), tmp_path / "out")
    with pytest.raises(MMRobustError, match="a recipe cannot be set"):
        plan_sweep(read_sweep(path, grid=["recipe=a.yaml,b.yaml"]), tmp_path / "out")


def test_a_units_train_threads_win_over_the_backends(tmp_path: Path) -> None:
    """Before: a sweep trained with cores / workers threads whatever train.threads said (the manifest
    recorded both, disagreeing)."""
    from mmrobust.sweep.backends import execute

    before = torch.get_num_threads()
    try:
        path = write_sweep(tmp_path, "  train.epochs: [1]\n")
        (unit,) = plan_sweep(read_sweep(path, ["train.threads=1"]), tmp_path / "out").units
        assert execute(unit, threads=2).status == "done"
        assert json.loads((unit.run_dir / "manifest.json").read_text())["train_threads"] == 1
    finally:
        torch.set_num_threads(before)


def test_a_logger_whose_package_is_missing_fails_while_planning(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Before: `--dry-run` planned the sweep, then every run failed on the import."""
    monkeypatch.setitem(sys.modules, "mlflow", None)  # makes `import mlflow` fail
    path = write_sweep(tmp_path, "  train.epochs: [1, 2]\n")
    with pytest.raises(MMRobustError, match=r"train.epochs=1: logger 'mlflow' needs the mlflow package"):
        plan_sweep(read_sweep(path, ["train.loggers=[mlflow]"]), tmp_path / "out")


def test_malformed_sweep_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("base: {}\ngird: {train.epochs: [1]}\n")
    with pytest.raises(MMRobustError, match=r"unknown sweep key 'gird'\. Did you mean 'grid'"):
        read_sweep(tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text("base: {}\ngrid: [train.epochs]\n")
    with pytest.raises(MMRobustError, match="malformed grid: 'grid' must map dotted keys"):
        read_sweep(tmp_path / "b.yaml")


def test_impossible_combinations_are_skipped_with_a_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    restricted = MethodTags(tasks=frozenset({"classification"}), needs_complete_training_data=True)
    monkeypatch.setattr(METHODS.get("dropout"), "tags", restricted)
    grid = (
        "  models.0.method: [joint, dropout]\n  data.options.missing_rate: [0.0, 0.3]\n"
        "  data.options.task: [classification, regression]\n"
    )
    plan = plan_sweep(read_sweep(write_sweep(tmp_path, grid)), tmp_path / "out")
    assert len(plan.combinations) == 5 and len(plan.units) == 5
    kept = [c.values for c in plan.combinations if c.values["models.0.method"] == "dropout"]
    assert kept == [
        {"models.0.method": "dropout", "data.options.missing_rate": 0.0, "data.options.task": "classification"}
    ]
    assert len(plan.skipped) == 3
    assert sum("does not support regression" in s for s in plan.skipped) == 2
    assert sum("needs complete training data" in s for s in plan.skipped) == 1  # the task is checked first
    assert all(s.startswith("models.0.method=dropout,") for s in plan.skipped)

    grid = "  models.0.method: [dropout]\n  data.options.missing_rate: [0.3]\n"
    with pytest.raises(MMRobustError, match=r"no valid combination: all 1 were skipped \(first: .*complete training"):
        plan_sweep(read_sweep(write_sweep(tmp_path, grid)), tmp_path / "out")


GRID = "  models.0.params.fusion: [sum, late]\n  seeds: [0, 1]\n"


def read_table(out: Path) -> pd.DataFrame:
    table = pd.read_csv(out / "results.csv")
    return table.sort_values(list(table.columns[:-2])).reset_index(drop=True)


@pytest.fixture(scope="module")
def sequential_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: the tiny sweep (2 combinations x 1 model x 2 seeds) run in this process."""
    tmp = tmp_path_factory.mktemp("sequential")
    run_sweep(plan_sweep(read_sweep(write_sweep(tmp, GRID)), tmp / "out"), workers=1)
    return tmp / "out"


def test_sequential_run_writes_reports_and_a_combined_table(sequential_out: Path) -> None:
    table = read_table(sequential_out)
    assert set(table["models.0.params.fusion"]) == {"sum", "late"} and set(table.seed) == {0, 1}
    assert set(table.combination) == {"models.0.params.fusion=sum", "models.0.params.fusion=late"}
    for combo in ("models.0.params.fusion=sum", "models.0.params.fusion=late"):
        assert (sequential_out / combo / "report.md").is_file() and (sequential_out / combo / "config.yaml").is_file()
        assert len(list((sequential_out / combo).glob("joint/seed-*/manifest.json"))) == 2
    record = json.loads((sequential_out / "sweep.json").read_text())
    assert record["runs"] == 4 and record["failed"] == {} and len(record["combinations"]) == 2


def test_pool_gives_the_same_results_and_progress_adds_up(tmp_path: Path, sequential_out: Path) -> None:
    plan = plan_sweep(read_sweep(write_sweep(tmp_path, GRID)), tmp_path / "out")
    events: list[tuple[str, int, int, int, int, float | None]] = []

    def record(message: str, p: SweepProgress) -> None:
        assert p.done + p.running + p.failed + p.remaining == p.total == 4
        assert 0 <= p.running <= p.slots <= 2
        events.append((message.split()[0], p.done, p.running, p.failed, p.remaining, p.eta()))

    result = run_sweep(plan, workers=2, on_event=record)
    assert [e[0] for e in events].count("start") == 4 and [e[0] for e in events].count("done") == 4
    assert events[0][1:5] == (0, 1, 0, 3) and events[0][5] is None  # no ETA before a run ends
    assert events[-1][1:5] == (4, 0, 0, 0) and result.progress.executed == 4
    done_events = [e for e in events if e[0] == "done"]
    assert [e[1] for e in done_events] == [1, 2, 3, 4] and all(e[5] is not None for e in done_events)
    pd.testing.assert_frame_equal(read_table(tmp_path / "out"), read_table(sequential_out))

    # a finished sweep: every run is skipped, no worker starts, nothing is rewritten
    manifests = sorted((tmp_path / "out").glob("*/joint/seed-*/manifest.json"))
    stamps = [p.stat().st_mtime_ns for p in manifests]
    events.clear()
    again = run_sweep(plan_sweep(read_sweep(write_sweep(tmp_path, GRID)), tmp_path / "out"), workers=2, on_event=record)
    assert [e[0] for e in events] == ["skip"] * 4 and again.progress.finished_before == 4
    assert again.progress.executed == 0 and again.progress.line().startswith("4/4 done (4 before), 0 running")
    assert [p.stat().st_mtime_ns for p in manifests] == stamps
    pd.testing.assert_frame_equal(read_table(tmp_path / "out"), read_table(sequential_out))


def test_a_narrower_sweep_into_the_same_out_says_which_combinations_leave_its_table(
    tmp_path: Path, sequential_out: Path
) -> None:
    """Before, results.csv and sweep.json were silently replaced by the narrower sweep's."""
    shutil.copytree(sequential_out, tmp_path / "out")
    narrower = read_sweep(write_sweep(tmp_path, GRID), grid=["models.0.params.fusion=sum"])
    with pytest.warns(UserWarning, match=r"now list this sweep's runs only; the earlier sweep there also "
                                         r"had models.0.params.fusion=late, whose folders and reports are kept"):
        result = run_sweep(plan_sweep(narrower, tmp_path / "out"), workers=1)
    assert result.progress.finished_before == 2  # nothing retrained
    assert set(read_table(tmp_path / "out")["models.0.params.fusion"]) == {"sum"}
    assert (tmp_path / "out" / "models.0.params.fusion=late" / "report.md").is_file()  # kept
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same sweep again: nothing leaves the table, no warning
        run_sweep(plan_sweep(narrower, tmp_path / "out"), workers=1)
    fewer = read_sweep(write_sweep(tmp_path, GRID), ["models=[{method: joint, label: other, params: {fusion: sum}}]"],
                       ["models.0.params.fusion=sum"])  # fmt: skip
    with pytest.warns(UserWarning, match=r"the earlier sweep there also had models.0.params.fusion=sum/joint, "):
        run_sweep(plan_sweep(fewer, tmp_path / "out"), workers=1)  # the same combination, another model


def test_a_failed_run_is_reported_and_the_others_finish(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import mmrobust.sweep.backends as sweep

    real = sweep.run_or_skip

    def flaky(config, model, seed, *args, **kwargs):  # type: ignore[no-untyped-def]
        if config.models[0].params["fusion"] == "late" and seed == 1:
            raise RuntimeError("simulated crash")
        return real(config, model, seed, *args, **kwargs)

    monkeypatch.setattr(sweep, "run_or_skip", flaky)
    result = run_sweep(plan_sweep(read_sweep(write_sweep(tmp_path, GRID)), tmp_path / "out"), workers=1)
    assert result.progress.failed == 1 and result.progress.done == 3
    assert result.failed == {"models.0.params.fusion=late/joint/seed-1": "RuntimeError: simulated crash"}
    assert set(read_table(tmp_path / "out").combination) == {"models.0.params.fusion=sum"}  # complete ones only
    assert not (tmp_path / "out" / "models.0.params.fusion=late" / "report.md").exists()
    with pytest.raises(SystemExit) as exit_info:  # the command says which combinations got a report
        main(["sweep", str(tmp_path / "sweep.yaml"), "--out", str(tmp_path / "cli")])
    out = capsys.readouterr().out
    assert exit_info.value.code == 1 and "wrote a report for 1 of 2 combinations (those with no failed run)" in out


def test_cli_dry_run_and_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_sweep(tmp_path, GRID)
    main(["sweep", str(path), "--grid", "train.epochs=1,2", "--out", str(tmp_path / "out"), "--dry-run"])
    out = capsys.readouterr().out
    assert "4 combinations, 8 runs planned" in out and "models.0.params.fusion=late,train.epochs=2/joint/seed-1" in out
    assert not (tmp_path / "out").exists()
    for args, message in [
        (["--grid", "train.epoch=1,2"], "Did you mean 'train.epochs'"),
        (["--grid", "nonsense"], "malformed --grid 'nonsense'"),
        (["--backend", "ray", "--address", "127.0.0.1:1"], "cannot reach a Ray cluster at 127.0.0.1:1"),
        (["--address", "127.0.0.1:1"], "--address is only for --backend ray"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(["sweep", str(path), "--out", str(tmp_path / "err"), *args])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and message in err and err.strip().count("\n") == 0, err


def test_ray_missing_or_unreachable_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = plan_sweep(read_sweep(write_sweep(tmp_path, GRID)), tmp_path / "out")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.perf_counter()
    with pytest.raises(MMRobustError, match=f"cannot reach a Ray cluster at 127.0.0.1:{port}"):
        run_sweep(plan, "ray", address=f"127.0.0.1:{port}")
    assert time.perf_counter() - start < 10
    with pytest.raises(MMRobustError, match="malformed --address 'nowhere'"):
        run_sweep(plan, "ray", address="nowhere")
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(MMRobustError, match=r"needs Ray, which is not installed: pip install 'mmrobust\[ray\]'"):
        run_sweep(plan, "ray", address=f"127.0.0.1:{port}")


@pytest.fixture
def ray_cluster() -> Iterator[str]:
    """A one-node Ray cluster on loopback (`ray start --head`), in its own process group, which is
    killed afterwards (only the processes this fixture started)."""
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'mmrobust[ray]')")
    ray_cli = Path(sys.executable).with_name("ray")
    if not ray_cli.is_file():
        pytest.skip(f"no `ray` command next to {sys.executable}")
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths have a length limit
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [
        str(ray_cli), "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
        "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}",
    ]
    log = open(Path(temp) / "start.log", "w")  # noqa: SIM115 (closed below)
    head = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if head.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"ray start failed: {(Path(temp) / 'start.log').read_text()[-2000:]}")
                time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
            try:
                os.killpg(head.pid, sig)
            except ProcessLookupError:
                break
            try:
                head.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)  # any worker left in the group
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def test_ray_backend_gives_the_same_results(tmp_path: Path, sequential_out: Path, ray_cluster: str) -> None:
    path = write_sweep(tmp_path, GRID)
    start = time.perf_counter()
    main(["sweep", str(path), "--backend", "ray", "--address", ray_cluster, "--out", str(tmp_path / "out")])
    assert time.perf_counter() - start < 60
    pd.testing.assert_frame_equal(read_table(tmp_path / "out"), read_table(sequential_out))
    manifests = list((tmp_path / "out").glob("*/joint/seed-*/manifest.json"))
    assert len(manifests) == 4 and all(json.loads(p.read_text())["status"] == "done" for p in manifests)


def test_a_combination_that_does_not_fit_its_data_fails_before_any_run(tmp_path: Path) -> None:
    """A grid value that only the data can refuse (a scenario for a modality it lacks) stops the sweep
    at planning, naming the combination, before the first unit trains or writes anything."""
    path = write_sweep(tmp_path, '  audit.scenarios: [[], ["missing[zz@0.3]"]]\n')
    with pytest.raises(MMRobustError, match=r"audit.scenarios=.*audit.scenarios.0 \(missing\[zz@0.3\]\) does not fit"):
        plan_sweep(read_sweep(path), tmp_path / "out")
    assert not (tmp_path / "out").exists()
