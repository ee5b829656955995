"""Planning: the grid expanded into one config per combination and one `Unit` per (combination,
model, seed); a model whose method's tags rule out the combination's data is skipped with a message."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import DataConfig, ExperimentConfig, ModelConfig, config_from_dict
from ..data.dataset import MultimodalData
from ..errors import MMRobustError
from ..experiment import load_data
from ..methods import METHODS, create_method
from ..methods.external import EXTERNAL
from ..run import Tracking, check_against_data, data_checksum, model_seeds
from .spec import SEEDS, SweepSpec


@dataclass(frozen=True)
class Unit:
    """One run: a (combination, model, seed) and its run directory."""

    combination: str
    config: ExperimentConfig
    model: ModelConfig
    seed: int
    run_dir: Path
    data_sum: str | None = None  # the data's checksum when planned: a run finished on other data runs again
    sweep: str = "sweep"  # the sweep's name
    values: dict[str, Any] = dataclasses.field(default_factory=dict)  # the combination's grid values

    @property
    def name(self) -> str:
        return f"{self.combination}/{self.model.name}/seed-{self.seed}"

    @property
    def tracking(self) -> Tracking:
        """One MLflow store for the whole sweep (OUT/mlruns, experiment = the sweep's name), each run
        named `<combination>/<model>/seed-<s>` with its grid values as `grid.<key>` params."""
        out = self.run_dir.parents[2]
        return Tracking(out / "mlruns", self.sweep, self.name, {f"grid.{k}": v for k, v in self.values.items()})


@dataclass
class Combination:
    name: str  # its folder under OUT
    values: dict[str, Any]  # grid key -> value
    config: ExperimentConfig  # with only the models that can run


@dataclass
class SweepPlan:
    name: str
    out: Path
    grid: dict[str, list[Any]]
    combinations: list[Combination]
    units: list[Unit]
    skipped: list[str]  # one message per impossible (combination, model)


def plan_sweep(spec: SweepSpec, out: str | Path) -> SweepPlan:
    """Expand the grid into configs and runs; skip impossible (combination, model) pairs."""
    out = Path(out).resolve()  # workers may run elsewhere (Ray): absolute paths only
    axes = {k: v for k, v in spec.grid.items() if k != SEEDS}
    common = list(spec.overrides)
    if SEEDS in spec.grid:
        common.append(f"{SEEDS}={json.dumps(spec.grid[SEEDS])}")
    _build_config(spec.base, common, "the base config")
    for key, options in axes.items():  # an unknown key fails here, naming the grid key
        _build_config(spec.base, [*common, _override(key, options[0])], f"grid key '{key}'")
    combinations, units, skipped = [], [], []
    for combo in itertools.product(*axes.values()):
        values = dict(zip(axes, combo, strict=True))
        name = _combination_name(values)
        config = _build_config(spec.base, common + [_override(k, v) for k, v in values.items()], name)
        data = dataset(config.data)
        models = []
        for model in config.models:
            reason = why_impossible(model, data)
            if reason is None:
                models.append(model)
            else:
                skipped.append(f"{name} / {model.name}: {reason}")
        if not models:
            continue
        config = dataclasses.replace(config, models=models)
        try:  # every model built and every scenario applied on the data, before the first unit runs
            check_against_data(config, data)
        except MMRobustError as e:
            raise MMRobustError(f"{name}: {e}") from None
        combinations.append(Combination(name, values, config))
        data_sum = data_checksum(data)
        units += [
            Unit(name, config, m, s, out / name / m.name / f"seed-{s}", data_sum, spec.name, values)
            for m in config.models
            for s in model_seeds(config, m)
        ]
    if not units:
        first = f" (first: {skipped[0]})" if skipped else ""
        raise MMRobustError(f"the sweep has no valid combination: all {len(skipped)} were skipped{first}")
    return SweepPlan(spec.name, out, dict(spec.grid), combinations, units, skipped)


def why_impossible(model: ModelConfig, data: MultimodalData) -> str | None:
    """Why `model` cannot be trained on `data` according to its method's tags, or None."""
    if model.method == EXTERNAL:  # trained elsewhere: nothing to train, any task its outputs fit
        return None
    create_method(model.method, **model.params)  # unknown methods and parameters fail in one line
    tags = METHODS.get(model.method).tags
    task = data.spec.task
    if task not in tags.tasks:
        return f"method '{model.method}' does not support {task} (tasks: {', '.join(sorted(tags.tasks))})"
    present = data.split("train").present  # (N_train, M)
    if tags.needs_complete_training_data and not bool(present.all()):
        share = 1 - float(present.float().mean())
        return f"method '{model.method}' needs complete training data; {share:.1%} of the modality values are missing"
    if not tags.per_sample_masks and bool((present != present[:1]).any()):
        return f"method '{model.method}' does not support per-sample masks; the training data's missingness varies"
    return None


def _override(key: str, value: Any) -> str:
    return f"{key}={json.dumps(value)}"  # JSON is valid YAML: read back by parse_override


def _build_config(base: dict[str, Any], overrides: list[str], where: str) -> ExperimentConfig:
    try:
        return config_from_dict(json.loads(json.dumps(base)), overrides)  # a fresh copy of the tree
    except MMRobustError as e:
        raise MMRobustError(f"{where}: {e}") from None


def _combination_name(values: dict[str, Any]) -> str:
    """A folder name: `key=value,key=value`; a short hash is appended when characters had to be
    replaced or the name was shortened, so that distinct combinations never share a folder."""
    if not values:
        return "base"
    raw = ",".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in values.items())
    safe = re.sub(r"[^A-Za-z0-9._,=+@-]", "_", raw)[:100]
    if safe != raw:
        safe += "-" + hashlib.sha256(raw.encode()).hexdigest()[:8]
    return safe


def dataset(config: DataConfig) -> MultimodalData:
    """The data of `config`; a process keeps the last two datasets it loaded (an npz file rewritten
    since is read again)."""
    npz = Path(config.npz) if config.npz else None
    stamp = (npz.stat().st_mtime_ns, npz.stat().st_size) if npz is not None and npz.is_file() else None
    return _load(json.dumps(dataclasses.asdict(config), sort_keys=True), stamp)


@functools.lru_cache(maxsize=2)
def _load(key: str, stamp: tuple[int, int] | None) -> MultimodalData:
    """`stamp` (the npz file's modification time and size) is part of the cache key only."""
    config = DataConfig(**json.loads(key))
    return load_data(config.name, config.npz, config.data_dir, config.options)
