"""The `mmrobust` command line: demo, train, audit, run, sweep, report, list, data.

Problems with the user's input, and file-system errors (disk full, read-only folder), print one
line and exit with code 2; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import torch
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from .atomic import atomic_write, write_error_message
from .audit import AuditResult, audit, write_report
from .audit.report import summary_rows
from .audit.scenarios import MAX_SUBSETS
from .checkpoint import load_checkpoint, save_checkpoint
from .config import ExperimentConfig, apply_override, check_label, load_config, parse_override
from .corruption import corruption_from_name
from .data import DATASETS
from .data.download import download, verify
from .data.paths import data_dir as resolve_data_dir
from .data.registry import dataset_info
from .errors import MMRobustError, check_int
from .experiment import load_data
from .methods import METHODS, Method, create_method
from .methods.external import load_external, wrap
from .models import ENCODERS, FUSIONS
from .registry import check_options
from .run import demo_config, run_experiment
from .runfolder import MANIFEST, TRAIN_METRICS
from .threads import set_threads
from .train import check_fit_options, fit
from .train.options import check_device

console = Console()
if not console.is_terminal:  # piped output: keep the summary table on one line per row
    console.width = 160
err_console = Console(stderr=True)

data_options = [
    click.option("--data", "data_name", metavar="NAME", help="A registered dataset (see `mmrobust list`)."),
    click.option(
        "--npz", type=click.Path(dir_okay=False), help="A bring-your-own .npz file (format in the README)."
    ),
    click.option(
        "--data-dir", envvar="MMROBUST_DATA", help="Folder holding the datasets [env: MMROBUST_DATA]."
    ),
]


def with_data_options(f):
    for option in reversed(data_options):
        f = option(f)
    return f


def print_summary(result: AuditResult, title: str) -> None:
    header, rows = summary_rows(result)
    table = Table(title=title, header_style="bold")
    for h in header:
        table.add_column(h)
    for row in rows:
        table.add_row(*row)
    console.print(table)


class _ProgressLines(logging.Handler):
    """Shows the library's progress messages (run k/n, epochs, ETA, resuming, preprocessing): as
    plain lines on stderr, or through `sink` (the description of a terminal's progress bar)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.sink: Callable[[str], None] | None = None

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if self.sink is not None:
            self.sink(message)
        else:
            err_console.print(message, highlight=False, markup=False, soft_wrap=True)


progress_lines = _ProgressLines()


def _run_with_progress(config: ExperimentConfig, out_dir: Path) -> AuditResult:
    total = len(config.models) * len(config.seeds)
    terminal = err_console.is_terminal
    with Progress(console=err_console, disable=not terminal, transient=True) as bar:
        task = bar.add_task(config.name, total=total)
        if terminal:  # one live display: the latest message becomes the bar's description
            progress_lines.sink = lambda message: bar.update(task, description=escape(message))
        try:
            return run_experiment(config, out_dir, lambda _: bar.advance(task))
        finally:
            progress_lines.sink = None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks for errors.")
@click.version_option(package_name="mmrobust")
def cli(debug: bool) -> None:
    """Train and audit multimodal models under missing and noisy modalities.

    \b
    Example:
      mmrobust demo --out demo_out
    """


@cli.command()
@click.option(
    "--out",
    default="demo_out",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where to write the report.",
)
@click.option("--seeds", default=3, show_default=True, help="Seeds per model.")
@click.option("--epochs", default=60, show_default=True, help="Maximum epochs per model.")
def demo(out: str, seeds: int, epochs: int) -> None:
    """Train {sum, concat, transformer} x {joint, dropout} on real smartwatch data and audit them.

    \b
    Uses UEA BasicMotions (accelerometer + gyroscope, 4 activities), which ships with an
    installed package, so no download is needed.
    Example:
      mmrobust demo --out demo_out
    """
    check_int(seeds, "--seeds", 1)
    check_int(epochs, "--epochs", 1)
    start = time.perf_counter()
    config = demo_config(seeds, epochs)
    result = _run_with_progress(config, Path(out))
    print_summary(result, f"BasicMotions: accuracy under missing and noisy modalities ({seeds} seeds)")
    elapsed = time.perf_counter() - start
    console.print(f"Wrote report.md, results.csv, results.json, heatmap.png to {out}/ in {elapsed:.0f} s")


THREADS_HELP = "torch threads [default: the idle cores (cores minus the load average), or OMP_NUM_THREADS]."


@cli.command()
@with_data_options
@click.option("--method", default="dropout", show_default=True, help=f"One of: {', '.join(METHODS.names())}.")
@click.option("--fusion", help=f"One of: {', '.join(FUSIONS.names())} [default: the method's own].")
@click.option("--seed", default=0, show_default=True)
@click.option("--epochs", default=100, show_default=True)
@click.option("--batch-size", default=32, show_default=True)
@click.option("--lr", default=1e-3, show_default=True)
@click.option("--patience", default=20, show_default=True, help="Epochs without a better val loss before stopping.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--threads", type=click.IntRange(min=1), help=THREADS_HELP)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory.")
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
def train(
    data_name, npz, data_dir, method, fusion, seed, epochs, batch_size, lr, patience, device, threads, out, overrides
) -> None:
    """Train one model; writes OUT/checkpoint.pt and OUT/val_metrics.json.

    KEY=VALUE sets what has no flag, as in experiment configs: `params.NAME` (a method parameter),
    `train.select` / `train.weight_decay` / `train.augment.MODALITY.crop` (training options),
    `data.options.NAME` (a loader option).

    \b
    Example:
      mmrobust train --data basicmotions --method dropout --fusion sum --out runs/bm
      mmrobust train --data utd_mhad --method joint --out runs/u params.dim=128 train.select=accuracy
    """
    if fusion is not None:
        FUSIONS.get(fusion)
    check_device(device, "--device")
    set_threads(threads)
    options: dict[str, Any] = dict(seed=seed, epochs=epochs, batch_size=batch_size, lr=lr, patience=patience)
    params: dict[str, Any] = {} if fusion is None else {"fusion": fusion}  # e.g. `features` takes none
    data_options: dict[str, Any] = {}
    tree: dict[str, Any] = {"params": params, "train": options, "data": {"options": data_options}}
    for text in overrides:
        keys, value = parse_override(text)
        if keys[0] == "train" and len(keys) == 2 and keys[1] in options:  # before: silently beat the flag
            raise MMRobustError(f"{text}: train.{keys[1]} has a flag of its own: use --{keys[1].replace('_', '-')}")
        if keys[0] not in tree or len(keys) < 2 or (keys[0] == "data" and (keys[1] != "options" or len(keys) < 3)):
            raise MMRobustError(
                f"unknown override '{text}': use params.NAME=V (method parameters), train.NAME=V (training "
                "options: select, weight_decay, augment.MODALITY.crop ...) or data.options.NAME=V"
            )
        apply_override(tree, keys, value)
    unknown = sorted(set(options) - {"seed", "epochs", "batch_size", "lr", "patience", "select", "weight_decay",
                                     "augment"})  # fmt: skip
    if unknown:
        raise MMRobustError(f"unknown training option train.{unknown[0]}: valid are select, weight_decay, augment")
    check_fit_options(options, name=lambda key: f"--{key.replace('_', '-')}")
    data = load_data(data_name, npz, data_dir, data_options)
    check_options(f"method '{method}'", METHODS.get(method).__init__, params)
    m = create_method(method, **params)
    result = fit(m, data, **options, device=device)
    out_dir = Path(out)
    save_checkpoint(m, out_dir / "checkpoint.pt", {"data": data_name or str(npz)})
    record = {"best_epoch": result.best_epoch, "epochs_run": result.epochs_run, "val": result.val_metrics}
    atomic_write(out_dir / TRAIN_METRICS, lambda p: p.write_text(json.dumps(record, indent=1)))
    console.print(f"val: {json.dumps({k: round(v, 4) for k, v in result.val_metrics.items()})}")
    console.print(f"Wrote {out_dir / 'checkpoint.pt'} and {out_dir / 'val_metrics.json'}")


@cli.command(name="audit")
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="A checkpoint from `mmrobust train`.")
@click.option(
    "--model",
    "external",
    metavar="MODULE:FUNCTION",
    help="Instead of --checkpoint: a model trained elsewhere, built by FUNCTION() in MODULE (or FILE.py).",
)
@click.option(
    "--missing",
    type=click.Choice(["zeros", "mean", "mask"]),
    help="With --model: what an absent modality looks like to it (mask: it receives present=) [default: zeros].",
)
@click.option("--weights", type=click.Path(dir_okay=False), help="With --model: a state dict to load (tensors only).")
@click.option("--no-mask-check", is_flag=True, help="With --model: audit even if masking changes no output.")
@click.option(
    "--inputs",
    metavar="A,B,...",
    help="With --model: call it as model(x_A, x_B, ...) in this order [default: model({name: x}), one dict].",
)
@click.option(
    "--standardize/--no-standardize",
    default=None,
    help="Scale each --npz modality on its train split, as load_npz does [default for --model: no, it sees the "
    "arrays as stored; a --checkpoint is fed inputs scaled with its training data's statistics, which it records "
    "(one saved before they were recorded: yes)].",
)
@click.option(
    "--split",
    "split_name",
    type=click.Choice(["test", "val", "train", "all"]),
    default="test",
    show_default=True,
    help="The samples audited: one split of the data, or all of them (e.g. a file of rows to evaluate a model on; "
    "an npz without a split array is split 60/20/20).",
)
@click.option("--all-subsets", is_flag=True, help="Audit every modality subset even above 126 (8+ modalities).")
@click.option("--label", help="The model's name in the report [default: the method, or FUNCTION (missing=...)].")
@click.option("--threads", type=click.IntRange(min=1), help=THREADS_HELP)
@with_data_options
@click.option(
    "--seed", default=0, show_default=True, help="Seed of the scenario masks (same seed, same masks)."
)
@click.option(
    "--scenario",
    "extra",
    multiple=True,
    metavar="NAME",
    help="Extra scenario (repeatable): subset[a+b], missing[a@0.3], rates[a=0.2,b=0.8], "
    "noise[a,sigma=1,p=0.3].",
)
@click.option("--out", default="audit_out", show_default=True, type=click.Path(file_okay=False))
def audit_cmd(
    checkpoint, external, missing, weights, no_mask_check, inputs, standardize, split_name, all_subsets, label, threads,
    data_name, npz, data_dir, seed, extra, out,
) -> None:
    """Audit a trained model under every modality subset, missing proportion and noise.

    \b
    Example:
      mmrobust audit --checkpoint runs/bm/checkpoint.pt --data basicmotions --out runs/bm/audit \\
          --scenario "rates[accelerometer=0.2,gyroscope=0.8]"
      mmrobust audit --model my_pkg.models:build_model --weights model.pt --data basicmotions --missing mean
    """
    check_int(seed, "--seed", 0)
    set_threads(threads)
    if (checkpoint is None) == (external is None):
        raise MMRobustError("give exactly one of --checkpoint FILE or --model MODULE:FUNCTION")
    if checkpoint is not None and (weights or no_mask_check or inputs or missing):
        raise MMRobustError("--weights, --missing, --no-mask-check and --inputs go with --model, not --checkpoint")
    missing = missing or "zeros"
    _check_out(Path(out), Path(out), "the audit's results.json and report.md would replace the ones written there")
    scenarios = [corruption_from_name(name) for name in extra]
    if standardize is not None and npz is None:
        raise MMRobustError("--standardize and --no-standardize go with --npz (registered datasets are standardised)")
    method: Method
    recorded = False  # the checkpoint records its training data's statistics: its inputs are scaled with them
    if checkpoint is not None:
        (method, _), source = load_checkpoint(checkpoint), {"checkpoint": str(checkpoint)}
        recorded = method.input_scaling is not None
        if recorded and standardize is not None:
            raise MMRobustError(
                "--standardize / --no-standardize: this checkpoint records the statistics its training data were "
                "standardised with, and its inputs are scaled with them (so a file of test rows alone works too)"
            )
    standardize = checkpoint is not None and not recorded if standardize is None else standardize
    data = load_data(data_name, npz, data_dir, {"normalize": standardize} if npz is not None else None)
    if external is not None:
        order = None if inputs is None else [name.strip() for name in inputs.split(",")]
        method = wrap(load_external(external, weights), data, missing=missing, inputs=order)
        source = {"model": external}
    if label is not None:
        check_label(label, "--label")
    elif external:
        label = f"{external.rpartition(':')[2]} (missing={missing})"
    split = None if split_name == "all" else split_name
    result = audit(
        method, data, scenarios, seed=seed, split=split, progress=err_console.is_terminal, label=label,
        mask_check=not no_mask_check, max_subsets=None if all_subsets else MAX_SUBSETS,
    )  # fmt: skip
    samples = len(data) if split is None else len(data.splits.get(split, ()))
    if recorded:
        inputs_seen = ("scaled with the statistics of the checkpoint's training data" if method.input_scaling
                       else "as stored, as the checkpoint's training data were")  # fmt: skip
    else:
        inputs_seen = "standardised on the train split" if standardize or npz is None else "as stored in the npz"
    write_report(result, out, {"command": "mmrobust audit", **source, **({"missing": missing} if external else {}),
                               "inputs": inputs_seen, "split": split_name, "samples": samples})  # fmt: skip
    print_summary(result, f"{data.spec.name}: audit of {checkpoint or external}")
    if external is not None and weights is None:
        warnings.warn(f"no --weights: audited the model as {external}() returns it (untrained, unless that "
                      "function loads its weights)", stacklevel=1)  # fmt: skip
    console.print(f"Wrote report.md, results.csv, results.json, heatmap.png to {out}/")


def _check_out(out: Path, folder: Path, writes: str, *, within: bool = False) -> None:
    """Refuse an --out whose `folder` is, or holds (with `within`: lies inside), a run folder of `mmrobust run`:
    `writes` would replace or join the run's checksummed files (or its experiment's results.json), after
    which `mmrobust report` calls the run damaged and `mmrobust run` trains it again."""
    run = "a run folder of `mmrobust run`"
    if (folder / MANIFEST).is_file():
        what = f"is {run}" if folder == out else f"is inside {run} ({folder})"
    elif within and (inside := next((p for p in folder.resolve().parents if (p / MANIFEST).is_file()), None)):
        what = f"is inside {run} ({inside})"
    elif not within and (manifest := next(folder.rglob(MANIFEST), None)) is not None:
        what = f"holds {run} ({manifest.parent})"
    else:
        return
    raise MMRobustError(f"--out {out} {what}: {writes}; give another --out")


@cli.command(name="run")
@click.argument("config_file", metavar="CONFIG", type=click.Path(dir_okay=False))
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("--out", type=click.Path(file_okay=False), help="Output folder [default: runs/<config name>].")
@click.option("--print-config", is_flag=True, help="Print the resolved config and exit.")
def run_cmd(config_file: str, overrides: tuple[str, ...], out: str | None, print_config: bool) -> None:
    """Train and audit every model x seed of an experiment CONFIG (YAML); finished runs are skipped.

    \b
    Example:
      mmrobust run configs/baselines/utd_mhad.yaml train.epochs=20 seeds=[0] --out runs/utd
    """
    config = load_config(config_file, list(overrides))
    if print_config:
        console.print(config.to_yaml(), highlight=False, markup=False)
        return
    out_dir = Path(out or Path("runs") / config.name)
    result = _run_with_progress(config, out_dir)
    print_summary(result, f"{config.name} (config {config.hash()})")
    console.print(f"Wrote the report and one folder per run to {out_dir}/")


@cli.command(name="sweep")
@click.argument("sweep_file", metavar="SWEEP", type=click.Path(dir_okay=False))
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
@click.option(
    "--grid",
    "grid",
    multiple=True,
    metavar="KEY=V1,V2",
    help="A grid axis (repeatable), e.g. --grid models.0.method=joint,dropout; `seeds=0,1,2` sets every "
    "combination's seeds.",
)
@click.option("--backend", type=click.Choice(["local", "ray"]), default="local", show_default=True)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="local: processes (1: in this process) [default: 1]; ray: runs at once [default: cluster CPUs / threads].",
)
@click.option(
    "--threads", type=click.IntRange(min=1), help="torch threads per run [default: cores / workers; 1 on Ray]."
)
@click.option("--address", metavar="HOST:PORT", help="The Ray cluster [default: RAY_ADDRESS, else a new local one].")
@click.option("--out", type=click.Path(file_okay=False), help="Output folder [default: runs/<sweep name>].")
@click.option("--dry-run", is_flag=True, help="Print the planned runs and skipped combinations, and exit.")
def sweep_cmd(
    sweep_file: str,
    overrides: tuple[str, ...],
    grid: tuple[str, ...],
    backend: str,
    workers: int | None,
    threads: int | None,
    address: str | None,
    out: str | None,
    dry_run: bool,
) -> None:
    """Train and audit a grid of experiments (SWEEP: a sweep file or an experiment config).

    \b
    Every combination of grid values is one experiment; each (combination, model, seed) is one run
    in OUT/<combination>/<model>/seed-<s>/. Combinations a method cannot handle (by its capability
    tags) are skipped with a message; finished runs are skipped and interrupted ones resume.
    Example:
      mmrobust sweep configs/demo.yaml --grid train.epochs=10,20 --grid seeds=0,1 --workers 2
      mmrobust sweep sweep.yaml --backend ray --address 10.0.0.1:6379 --out runs/sweep
    """
    from .sweep import plan_sweep, read_sweep, run_sweep

    spec = read_sweep(sweep_file, list(overrides), list(grid))
    plan = plan_sweep(spec, out or Path("runs") / spec.name)
    for message in plan.skipped:
        err_console.print(f"skip {message}", highlight=False, markup=False)
    combos = f"{len(plan.combinations)} combinations, {len(plan.units)} runs"
    if dry_run:
        for unit in plan.units:
            console.print(unit.name, highlight=False, markup=False)
        console.print(f"{combos} planned in {plan.out}/", highlight=False)
        return
    result = run_sweep(
        plan,
        backend,
        workers,
        address,
        threads,
        lambda message, p: err_console.print(f"[{p.line()}] {message}", highlight=False, markup=False, soft_wrap=True),
    )  # soft_wrap: a piped log keeps one line per event, run names whole (grep-able)
    failed_combos = {u.combination for u in plan.units if u.name in result.failed}
    reported = len(plan.combinations) - len(failed_combos)
    console.print(f"{combos}; wrote a report for {reported} of {len(plan.combinations)} combinations (those with no "
                  f"failed run) and results.csv to {plan.out}/", highlight=False)  # fmt: skip
    if result.failed:
        err_console.print(f"[red]{len(result.failed)} runs failed[/]; repeat the command to retry them")
        raise click.exceptions.Exit(1)


@cli.command(name="report")
@click.argument("run_dirs", nargs=-1, required=True, metavar="RUN_DIRS...")
@click.option("--out", default="report.html", show_default=True, type=click.Path(dir_okay=False))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["html", "md"]),
    help="html: one self-contained file; md: Markdown plus PNGs beside it [default: from --out's suffix].",
)
@click.option("--reference", metavar="LABEL", help="Model label that robustness is measured against [default: first].")
@click.option("--seed", default=0, show_default=True, help="Seed of the bootstrap resampling.")
@click.option(
    "--resample-seeds",
    is_flag=True,
    help="Paired intervals that resample the training seeds as well as the test samples: a difference "
    "that holds does not rest on the particular seeds (wider; needs several seeds).",
)
def report_cmd(
    run_dirs: tuple[str, ...], out: str, fmt: str | None, reference: str | None, seed: int, resample_seeds: bool
) -> None:
    """Compare every run found under RUN_DIRS (folders written by `mmrobust run`) in one report.

    \b
    Per dataset: mean ± std per model and scenario, the per-subset heatmap, metric-vs-severity
    curves, robustness against --reference, Shapley values of the modalities and paired
    differences with bootstrap CIs.
    Example:
      mmrobust report runs/demo --out report.html --reference joint-sum
    """
    from .audit.compare import load_runs, unfinished_note
    from .audit.compare_report import write_comparison

    check_int(seed, "--seed", 0)
    path = Path(out)
    _check_out(path, path.parent, "the report would be written among the run's checksummed files", within=True)
    fmt = fmt or ("md" if path.suffix.lower() in (".md", ".markdown") else "html")
    runs = load_runs(run_dirs)
    written = write_comparison(runs, path, fmt, reference, seed=seed, resample_seeds=resample_seeds)
    skipped = f" ({unfinished_note(runs.skipped)})" if runs.skipped else ""
    console.print(f"Read {len(runs.run_dirs)} runs{skipped} of {len(runs.models)} models; wrote {written[0]}")
    if len(written) > 1:
        console.print(f"and {len(written) - 1} figures beside it: {', '.join(p.name for p in written[1:])}")


@cli.command(name="list")
def list_cmd() -> None:
    """List the registered datasets, methods, fusions and encoder kinds.

    \b
    Example:
      mmrobust list
    """
    for title, reg in (
        ("datasets", DATASETS),
        ("methods", METHODS),
        ("fusions", FUSIONS),
        ("encoders", ENCODERS),
    ):
        console.print(f"[bold]{title}[/]: {', '.join(reg.names())}")


@cli.group()
def data() -> None:
    """Inspect, verify and download datasets.

    \b
    Example:
      mmrobust data list --data-dir DATA_DIR
    """


def _data_dir_option(f):
    return click.option(
        "--data-dir", envvar="MMROBUST_DATA", help="Folder holding the datasets [env: MMROBUST_DATA]."
    )(f)


@data.command(name="list")
@_data_dir_option
def data_list(data_dir: str | None) -> None:
    """Every dataset, what it holds, its size on disk and whether it is available here.

    \b
    Example:
      mmrobust data list --data-dir DATA_DIR
    """
    root = resolve_data_dir(data_dir)
    table = Table(title=f"datasets (data dir: {root})", header_style="bold")
    for column in ("name", "what", "on disk", "available"):
        table.add_column(column)
    for name in DATASETS.names():
        info = dataset_info(name)
        missing = info.missing_files(root)
        bundled = info.bundled() if missing and data_dir is None and info.bundled else None  # read when no dir is set
        files = list(bundled.iterdir()) if bundled is not None else info.raw_files(root)
        size = sum(p.stat().st_size for p in files if p.is_file())
        on_disk = f"{size / 1e6:.1f} MB" if info.files or info.release else "built in"
        on_disk += f" ({bundled})" if bundled is not None else ""
        table.add_row(name, info.summary, on_disk, "[red]no[/]" if missing and bundled is None else "[green]yes[/]")
    console.print(table)


@data.command(name="info")
@click.argument("name")
@_data_dir_option
def data_info(name: str, data_dir: str | None) -> None:
    """Modalities, shapes, split sizes, class balance and preprocessing recipe of NAME.

    \b
    Example:
      mmrobust data info basicmotions
    """
    info = dataset_info(name)
    dataset = load_data(name, None, data_dir)
    spec = dataset.spec
    console.print(f"[bold]{name}[/]: {info.summary}")
    if info.recipe:
        console.print(f"recipe: {info.recipe}")
    console.print(
        f"task: {spec.task}" + (f", {spec.num_classes} classes" if spec.task == "classification" else "")
    )
    for j, m in enumerate(spec.modalities):
        share = float(dataset.present[:, j].float().mean())
        console.print(f"  modality {m.name}: {m.kind} {list(m.shape)}, present in {share:.0%} of samples")
    table = Table(header_style="bold")
    table.add_column("split")
    table.add_column("samples")
    table.add_column("classes" if spec.task == "classification" else "target mean ± std")
    for split, index in dataset.splits.items():
        target = dataset.target[index]
        if spec.task == "classification":
            counts = torch.bincount(target, minlength=spec.num_classes).tolist()
            names = spec.class_names or tuple(str(c) for c in range(spec.num_classes))
            balance = ", ".join(f"{n}: {c}" for n, c in zip(names, counts, strict=True))
        else:
            balance = f"{float(target.mean()):.3f} ± {float(target.std()):.3f}"
        table.add_row(split, str(len(index)), balance)
    console.print(table)


@data.command(name="verify")
@click.argument("name")
@_data_dir_option
def data_verify(name: str, data_dir: str | None) -> None:
    """Check NAME's files (the official release: every file, by SHA-256), then load it.

    \b
    Example:
      mmrobust data verify utd_mhad --data-dir DATA_DIR
    """
    for line in verify(name, dataset_info(name), resolve_data_dir(data_dir), bundled=data_dir is None):
        console.print(line, highlight=False)
    dataset = load_data(name, None, data_dir)
    console.print(f"[green]ok[/]: {name} loads ({len(dataset)} samples)")


@data.command(name="download")
@click.argument("name")
@_data_dir_option
def data_download(name: str, data_dir: str | None) -> None:
    """Fetch NAME from its official source, check its SHA-256 and unpack it into the official layout.

    An interrupted download resumes when the command is repeated. Sources that need a manual
    step (a licence form, no direct link) say where to get the files and where to put them.

    \b
    Example:
      mmrobust data download spsw_har --data-dir ~/data
    """
    root = resolve_data_dir(data_dir)
    installed = download(name, dataset_info(name), root, err_console)
    if installed:
        console.print(f"[green]ok[/]: {name} is in {root}; `mmrobust data verify {name}` loads it")


def _format_warning(message: Warning | str, *_: Any, **__: Any) -> str:
    """A warning as one line (Python's default adds the file, line and source of the call)."""
    return f"warning: {message}\n"


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    if not debug:
        warnings.formatwarning = _format_warning
    logger = logging.getLogger("mmrobust")
    level = logger.level
    logger.addHandler(progress_lines)
    logger.setLevel(logging.INFO)
    try:
        _main(args, debug)
    finally:
        logger.removeHandler(progress_lines)
        logger.setLevel(level)


def _main(args: list[str], debug: bool) -> None:
    """Run the command; user errors and file-system refusals end as one line and exit code 2."""
    try:
        code = cli.main(args=args, prog_name="mmrobust", standalone_mode=False)
        if isinstance(code, int) and code:  # click returns (not raises) a command's Exit(n) here
            sys.exit(code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        err_console.print("aborted")
        sys.exit(1)
    except MMRobustError as e:
        if debug:
            raise
        err_console.print(f"[red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except OSError as e:  # the file system refused (disk full, read-only, no permission ...): not a bug
        if debug or e.errno is None:
            raise
        err_console.print(f"[red]error:[/] {escape(write_error_message(None, e))}", highlight=False, soft_wrap=True)
        sys.exit(2)
