"""The run folder: the one place that knows what `mmrobust run` leaves on disk per (model, seed).

    OUT/<model>/seed-<s>/
        manifest.json        written last (sealed with its own SHA-256): the run is finished
        checkpoint.pt ...    the run's files, listed with their SHA-256 in the manifest
        training-state.pt    only while the run trains (a killed run resumes from it)
        .lock                only while a process works on the run

The manifest carries `format` (`RUN_FORMAT`); readers refuse another format, or another major
version of mmrobust, rather than misread it. `run.py` writes run folders; `mmrobust report`
(audit/compare.py) and the sweep read them through this module.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .atomic import WriteError, atomic_write, files_problem, seal_json, seal_ok, write_error_message
from .errors import MMRobustError
from .filelock import exclusive_lock
from .version import __version__

MANIFEST = "manifest.json"
CHECKPOINT = "checkpoint.pt"
RESULTS = "results.json"
TRAINING_STATE = "training-state.pt"
LOCK = ".lock"
PREDICTIONS = "predictions.pt"  # per-sample predictions (audit/paired.py)
TRAIN_METRICS = "val_metrics.json"  # what `mmrobust train` writes beside its checkpoint
UNFINISHED = (TRAINING_STATE, LOCK, PREDICTIONS)  # files that only a run of `mmrobust run` holds
RUN_FORMAT = "mmrobust-run/1"  # manifests of mmrobust 0.1 carry no `format` key: they are this one
RERUN = "re-run it with `mmrobust run`"


def write_manifest(run_dir: Path, record: Mapping[str, Any]) -> None:
    """Seal and write the manifest: the last write of a run, which makes it finished."""
    sealed = seal_json({"format": RUN_FORMAT, **record})
    atomic_write(run_dir / MANIFEST, lambda p: p.write_text(sealed))


def clear_manifest(run_dir: Path) -> None:
    """Mark the run unfinished before its files are (re)written."""
    try:
        (run_dir / MANIFEST).unlink(missing_ok=True)
    except OSError as e:
        raise WriteError(write_error_message(run_dir / MANIFEST, e)) from e


def read_manifest(run_dir: Path) -> dict[str, Any]:
    """The run's manifest, or a one-line error saying why it cannot be trusted (for readers)."""
    record, problem = _parse(run_dir)
    if record is None:
        advice = "report it with the matching version" if problem.startswith("written by") else RERUN
        raise MMRobustError(f"{run_dir / MANIFEST}: {problem}; {advice}")
    return record


def finished_manifest(run_dir: Path, run_hash: str, warn: bool = True) -> dict[str, Any] | None:
    """The manifest if the run finished under `run_hash` and its files match their checksums; None
    (run it) otherwise, with a warning (unless `warn` is off) when a finished run is found damaged
    (for the writer)."""
    if not (run_dir / MANIFEST).is_file():
        return None
    record, problem = _parse(run_dir)
    if record is None:
        if warn:
            warn_damaged(run_dir, f"{MANIFEST}: {problem}")
        return None
    if record.get("status") != "done" or record.get("run_hash") != run_hash:
        return None
    damage = files_problem(run_dir, record.get("files") or {})  # manifests of mmrobust 0.1 list none
    if damage is not None:
        if warn:
            warn_damaged(run_dir, damage)
        return None
    return record


def warn_damaged(run_dir: Path, problem: str) -> None:
    """Warn that the finished run in `run_dir` is damaged, so it runs again."""
    warnings.warn(f"{run_dir}: the finished run is damaged: {problem}; running it again", stacklevel=3)


def _parse(run_dir: Path) -> tuple[dict[str, Any] | None, str]:
    """(the manifest, "") or (None, what is wrong with it)."""
    try:
        record = json.loads((run_dir / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        return None, f"not a readable run manifest, truncated or corrupt ({e})"
    if not isinstance(record, dict):
        return None, "not a run manifest (expected a JSON object)"
    if seal_ok(record) is False:
        return None, "damaged run manifest (its content does not match its checksum: corrupted or edited)"
    fmt = record.get("format", RUN_FORMAT)
    if fmt != RUN_FORMAT:
        return None, f"run format '{fmt}' is not supported (mmrobust {__version__} reads {RUN_FORMAT})"
    written_by = str(record.get("versions", {}).get("mmrobust") or __version__)
    if written_by.split(".")[0] != __version__.split(".")[0]:
        return None, f"written by mmrobust {written_by}, incompatible with this mmrobust {__version__}"
    return record, ""


def find_run_dirs(paths: Sequence[str | Path]) -> tuple[list[Path], list[Path]]:
    """(runs, unfinished) below `paths`, each once. Runs: folders holding a manifest (a run of `mmrobust
    run`) or, without one, a results.json and no run below them (the output of `mmrobust audit`).
    Unfinished: folders of `mmrobust run` without a manifest (training, or killed before the manifest was
    rewritten: an old results.json there is not the run's), which are not read."""
    found: list[Path] = []
    unfinished: list[Path] = []
    trained_only: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise MMRobustError(f"{p}: no such directory")
        if not p.is_dir():
            raise MMRobustError(f"{p}: not a directory; pass folders written by `mmrobust run ... --out DIR`")
        runs = [m.parent.resolve() for m in sorted(p.rglob(MANIFEST))]
        folders = {f.parent.resolve() for name in (RESULTS, CHECKPOINT, *UNFINISHED) for f in p.rglob(name)}
        unfinished += sorted(d for d in folders - set(runs) if is_unfinished(d))
        audits = [  # not an experiment's combined results, above its runs
            r.parent.resolve()
            for r in sorted(p.rglob(RESULTS))
            if not is_unfinished(r.parent)
            and not any(run.is_relative_to(r.parent.resolve()) for run in runs + unfinished)
        ]
        found += runs + audits
        trained_only += [c.parent for c in sorted(p.rglob(CHECKPOINT)) if not (c.parent / RESULTS).exists()]
    unique, unfinished = list(dict.fromkeys(found)), list(dict.fromkeys(unfinished))
    if not unique and not unfinished:
        where = ", ".join(str(p) for p in paths)
        if trained_only:
            raise MMRobustError(
                f"{trained_only[0]} holds a trained model but no audit: run `mmrobust audit --checkpoint "
                f"{trained_only[0] / CHECKPOINT} --data NAME --out {trained_only[0]}` first, then report it"
            )
        raise MMRobustError(
            f"no runs found under {where}: expected run folders with {MANIFEST} and {RESULTS}, "
            "as `mmrobust run CONFIG --out DIR` writes, or audits written by `mmrobust audit --out DIR`"
        )
    return unique, unfinished


def is_unfinished(folder: Path) -> bool:
    """Whether `folder` is a run of `mmrobust run` without its manifest: it holds what only `mmrobust run`
    leaves (training state, lock, predictions, or a checkpoint without the val_metrics.json of `mmrobust train`)."""
    if (folder / MANIFEST).exists():
        return False
    return any((folder / name).exists() for name in UNFINISHED) or (
        (folder / CHECKPOINT).exists() and not (folder / TRAIN_METRICS).exists()
    )


def training_settings(manifest: Mapping[str, Any]) -> dict[str, Any] | None:
    """What trained the run apart from its seed, as dotted keys (`model.params.fusion`, `train.epochs`,
    `data.options.n_samples`), so that runs averaged as seeds of one model can be checked to be alike;
    None for a folder without a recorded config (`mmrobust audit --out`). Not where metrics were
    logged, the thread count nor where the data lie (folder, npz path), which `run.training_hash`
    leaves out too; the data's content is `data.checksum`."""
    config, model = manifest.get("config"), manifest.get("model")
    if not isinstance(config, Mapping) or not isinstance(model, Mapping):
        return None
    train = {k: v for k, v in (config.get("train") or {}).items() if k not in ("loggers", "threads")}
    data = {k: v for k, v in (config.get("data") or {}).items() if k not in ("data_dir", "npz")}
    if manifest.get("data_checksum"):
        data["checksum"] = manifest["data_checksum"]
    return {k: v for key, part in (("data", data), ("train", train), ("model", model))
            for k, v in _flatten(part, key).items()}  # fmt: skip


def _flatten(value: Any, prefix: str) -> dict[str, Any]:
    if not isinstance(value, Mapping) or not value:
        return {prefix: value}
    return {k: v for key, item in value.items() for k, v in _flatten(item, f"{prefix}.{key}").items()}


def run_lock(run_dir: Path) -> contextlib.AbstractContextManager[None]:
    """Hold an exclusive lock on `run_dir` (waiting, with a warning, while another process holds
    it): an flock on `run_dir/.lock` (`filelock.exclusive_lock`)."""
    return exclusive_lock(run_dir / LOCK, f"{run_dir} is being worked on by another process; waiting for it")
