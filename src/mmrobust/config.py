"""Typed experiment configs: YAML in, validated dataclasses out, `key.sub=value` overrides.

Unknown keys and wrong types fail with one line that names the key (as a dotted path) and
the closest valid one. The resolved config (defaults filled in) is what gets saved with the
results, and its hash identifies a run.

    name: utd_mhad_baselines
    data: {name: utd_mhad, options: {depth: motion}}
    models:
      - {method: joint, params: {fusion: transformer}}
      - {method: dropout, label: inertial-only, params: {corruption: {type: Subset, keep: [inertial]}}}
    train: {epochs: 60}
    seeds: [0, 1, 2]
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import os
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import MMRobustError, check_int, unknown_name
from .safe_yaml import load_yaml
from .trackers import check_loggers

DEFAULT_DATASET = "basicmotions"  # when the config names neither a dataset nor an npz file


@dataclass
class DataConfig:
    name: str | None = None  # None with no npz: DEFAULT_DATASET
    npz: str | None = None
    data_dir: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelConfig:
    method: str = "dropout"
    label: str | None = None  # how the model is named in results (default: the method)
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.label or self.method


@dataclass
class TrainConfig:
    epochs: int = 100
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-2
    patience: int = 20
    select: str = "loss"  # a val metric, or "none": a fixed budget of `epochs`, last epoch kept
    augment: dict[str, Any] = field(default_factory=dict)  # modality -> {crop, scale, jitter, rotate}
    device: str = "auto"
    loggers: list[str] = field(default_factory=list)  # experiment trackers: tensorboard, mlflow
    threads: int | None = None  # torch threads of this process (null: the idle cores, mmrobust/threads.py)


@dataclass
class AuditConfig:
    seed: int = 0
    defaults: bool = True  # all subsets + 30% missing + 30% noise per modality
    scenarios: list[str] = field(default_factory=list)  # extra scenario names, e.g. "missing[a@0.5]"
    max_subsets: int | None = 126  # above it, a fixed sample of the subsets (audit/scenarios.py); null: all


@dataclass
class ExperimentConfig:
    name: str = "experiment"
    data: DataConfig = field(default_factory=DataConfig)
    models: list[ModelConfig] = field(default_factory=lambda: [ModelConfig()])
    train: TrainConfig = field(default_factory=TrainConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    recipe: str | None = None  # the recipe file merged in (`apply_recipe`), recorded for the reader

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def to_yaml(self) -> str:
        """The resolved config as a file that runs again as it stands (--print-config, OUT/config.yaml):
        its recipe is merged in already, so the recipe is named in a comment, not as a key to merge again
        (relative to the original file's folder, it would not be found from another)."""
        import yaml

        tree = {k: v for k, v in self.to_dict().items() if k != "recipe"}
        merged = f"# recipe {self.recipe}: merged below\n" if self.recipe else ""
        return merged + yaml.safe_dump(tree, sort_keys=False)


def _check(value: Any, hint: Any, path: str) -> Any:
    """Validate (and convert) `value` against the type `hint`; errors name the dotted `path`."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if not isinstance(value, dict):
            raise MMRobustError(f"config key '{path}' must be a mapping, got {type(value).__name__}")
        return _build(hint, value, path)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        return _check(value, next(o for o in options if o is not type(None)), path)
    if origin is list:
        if not isinstance(value, list):
            raise MMRobustError(f"config key '{path}' must be a list, got {type(value).__name__}")
        (item,) = typing.get_args(hint)
        return [_check(v, item, f"{path}.{i}") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise MMRobustError(f"config key '{path}' must be a mapping, got {type(value).__name__}")
        return dict(value)
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise MMRobustError(f"config key '{path}' must be {hint.__name__}, got {value!r}")
    return value


def _build(cls: type, values: dict[str, Any], path: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in names:
            raise MMRobustError(str(unknown_name("config key", where, [f"{path}.{n}" if path else n for n in names])))
        kwargs[key] = _check(value, hints[key], where)
    return cls(**kwargs)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.epochs=10` -> (["train", "epochs"], 10); the value is read as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        hint = ""
        if not sep and text.endswith((".yaml", ".yml")):  # e.g. `mmrobust train config.yaml`
            hint = " (a config file is run by `mmrobust run CONFIG` or `mmrobust sweep CONFIG`)"
        raise MMRobustError(f"malformed override '{text}': write key.sub=value, e.g. train.epochs=10{hint}")
    return key.split("."), load_yaml(raw, f"override '{text}'") if raw else ""


def apply_override(tree: dict[str, Any], keys: list[str], value: Any) -> None:
    """Set `value` at the dotted path in a plain dict tree (list items by index)."""
    node: Any = tree
    for depth, key in enumerate(keys[:-1]):
        nxt = node[int(key)] if isinstance(node, list) and key.isdigit() and int(key) < len(node) else None
        if isinstance(node, dict):
            nxt = node.setdefault(key, {})
        if nxt is None:
            raise MMRobustError(f"override key '{'.'.join(keys[: depth + 1])}' does not exist")
        node = nxt
    last = keys[-1]
    if isinstance(node, list):
        if not (last.isdigit() and int(last) < len(node)):
            raise MMRobustError(f"override key '{'.'.join(keys)}': index out of range")
        node[int(last)] = value
    else:
        node[last] = value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a YAML config (or start from defaults), merge its recipe, apply overrides, validate
    everything. Relative data paths in the file are read from the file's folder (those in overrides
    from the current one)."""
    if path is None:
        return config_from_dict({}, overrides)
    folder = Path(path).parent
    tree = read_yaml_mapping(path)
    if {"base", "grid"} & set(tree):  # before: "unknown config key 'base'. Did you mean 'name'?"
        raise MMRobustError(f"{path} is a sweep file (it has {' and '.join(sorted({'base', 'grid'} & set(tree)))}): "
                            f"run it with `mmrobust sweep {path}`")  # fmt: skip
    tree = resolve_paths(apply_recipe(tree, folder), folder)
    return config_from_dict(tree, overrides, default_data=False)  # an empty file would train the default data



RECIPE_KEYS = ("data", "train", "audit", "params")


def apply_recipe(tree: dict[str, Any], folder: Path) -> dict[str, Any]:
    """`tree` with its `recipe` (a YAML file, relative to `folder`) merged in: the recipe's `data`,
    `train` and `audit` keys are defaults under the config's own, and its `params` go to every model
    whose method takes them and does not set them itself. A recipe is what every method in a
    comparison shares (optimiser, budget, selection, label smoothing, augmentation, input features,
    and the scenarios every model is audited under, so runs of several studies pair per sample), so
    studies name one instead of repeating it (docs/recipes.md)."""
    if not tree.get("recipe"):
        return tree
    path = folder / str(tree["recipe"])
    if not path.is_file():
        where = f"{path.resolve()} (a recipe path is relative to its config)"
        raise MMRobustError(f"recipe {tree['recipe']!r} not found: {where}")
    recipe = read_yaml_mapping(path)
    unknown = sorted(set(recipe) - set(RECIPE_KEYS))
    if unknown:
        raise MMRobustError(f"{path}: a recipe holds only {', '.join(RECIPE_KEYS)}; not {', '.join(unknown)}")
    from .methods.external import EXTERNAL  # configs are read before any method is needed

    merged = {**tree, "recipe": str(tree["recipe"])}
    for key in ("data", "train", "audit"):
        merged[key] = layered(recipe.get(key) or {}, tree.get(key) or {})
    params = recipe.get("params") or {}
    models = []
    for model in tree.get("models") or [ModelConfig().__dict__]:
        method = model.get("method", ModelConfig.method)
        shared = {} if method == EXTERNAL else params_taken(method, params)
        models.append({**model, "params": {**shared, **(model.get("params") or {})}})
    merged["models"] = models
    return merged


def params_taken(method: str, params: dict[str, Any]) -> dict[str, Any]:
    """The shared `params` (a recipe's) that `method`'s constructor takes: a recipe element such as
    label smoothing goes to every model that has it, and a model without it (`features` has no
    fusion) is left as it is."""
    from .methods import METHODS

    accepted = inspect.signature(METHODS.get(method).__init__).parameters
    return {k: v for k, v in params.items() if k in accepted}


def layered(base: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """`own` over `base`, mappings merged key by key."""
    out = dict(base)
    for key, value in own.items():
        out[key] = layered(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def resolve_paths(tree: dict[str, Any], folder: Path) -> dict[str, Any]:
    """`tree` with its relative paths taken from `folder` (where the config file is), as a user reading
    the file expects: `data.npz`, `data.data_dir`, and an external model's file and weights
    (`params.model: my_model.py:build`, `params.weights`); they stay relative when `folder` is."""

    def beside(value: Any) -> Any:
        relative = isinstance(value, str) and value and not Path(value).expanduser().is_absolute()
        return os.path.normpath(folder / value) if relative else value

    data = tree.get("data")
    if isinstance(data, dict):
        tree = {**tree, "data": {**data, **{k: beside(data[k]) for k in ("npz", "data_dir") if k in data}}}
    models = tree.get("models")
    if isinstance(models, list):
        tree = {**tree, "models": [_external_paths(m, beside) for m in models]}
    return tree


def _external_paths(model: Any, beside: Callable[[Any], Any]) -> Any:
    """An external model entry with its model file (FILE.py:FUNCTION, not a module) and weights read
    from the config's folder."""
    if not isinstance(model, dict) or model.get("method") != "external" or not isinstance(model.get("params"), dict):
        return model
    params = dict(model["params"])
    where, sep, function = str(params.get("model", "")).rpartition(":")
    if sep and where.endswith(".py"):
        params["model"] = f"{beside(where)}:{function}"
    if "weights" in params:
        params["weights"] = beside(params["weights"])
    return {**model, "params": params}


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """The top-level mapping of a YAML file (empty file: {}); one-line errors otherwise."""
    path = Path(path)
    if not path.is_file():
        raise MMRobustError(f"config file not found: {path}")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise MMRobustError(f"cannot read the config file {path} ({e})") from None
    loaded = load_yaml(text, str(path))
    if loaded is not None and not isinstance(loaded, dict):
        raise MMRobustError(f"{path}: the top level must be a mapping of keys")
    return loaded or {}


def _check_methods(models: list[ModelConfig]) -> None:
    """Unknown methods and parameters fail when the config is read, not hours into a run."""
    from .methods import METHODS
    from .methods.external import EXTERNAL, check_external_params
    from .registry import check_options

    for i, model in enumerate(models):
        if model.method == EXTERNAL:  # a model trained elsewhere, audited beside the others
            check_external_params(model.params, f"models.{i}")
        else:
            cls = METHODS.get(model.method)  # an unknown name: one line with the closest valid one
            check_options(f"models.{i} (method '{model.method}')", cls.__init__, model.params)
        if model.label is not None:
            check_label(model.label, f"models.{i}.label")


def check_label(label: str, where: str, names: str = "the run folder") -> None:
    """A model label names its run folder (OUT/<label>/seed-<s>/), a config's or sweep's name its
    default output folder (runs/<name>): it must be one safe path component, so nothing is written
    outside the output folder or over the experiment's own files."""
    from .audit.report import FILES

    problem = None
    if not label.strip() or label != label.strip():
        problem = "is empty or starts or ends with a space"
    elif "/" in label or "\\" in label or label.startswith("."):
        problem = "contains a path separator or starts with a dot ('..', hidden folders)"
    elif any(ord(c) < 32 or ord(c) == 127 for c in label) or len(label) > 128:
        problem = "holds control characters or is longer than 128 characters"
    elif label in (*FILES, "config.yaml", "mlruns"):
        problem = "is the name of a file the experiment writes beside the runs"
    if problem:
        raise MMRobustError(
            f"{where} {label!r} {problem}; it names {names}: use letters, digits, '-', '_', '+' and inner dots, "
            "e.g. joint-sum"
        )


def _check_data(data: DataConfig) -> None:
    """One data source, an existing loader, and options that loader takes."""
    from .data import DATASETS
    from .data.npz import load_npz
    from .registry import check_options

    if data.name is not None and data.npz is not None:
        raise MMRobustError(
            f"the config gives both data.name ({data.name!r}) and data.npz ({data.npz!r}); keep one "
            "(override with data.name=null to use the npz file)"
        )
    if data.npz is not None:
        check_options("data.options (an npz file)", load_npz, data.options)
    else:
        assert data.name is not None
        check_options(f"data.options (dataset '{data.name}')", DATASETS.get(data.name).loader, data.options)


def _check_train_and_audit(config: ExperimentConfig) -> None:
    """Every number, seed, selection, augmentation and scenario, checked before any training."""
    from .audit.scenarios import check_audit_options
    from .corruption import corruption_from_name
    from .data.augment import check_augment_options
    from .train import MAX_SEED, check_fit_options
    from .train.options import check_device

    t = config.train
    options = {k: getattr(t, k) for k in ("epochs", "batch_size", "lr", "weight_decay", "patience", "select")}
    check_fit_options(options, name=lambda key: f"train.{key}")
    check_augment_options(t.augment)
    check_device(t.device, "train.device")
    for i, seed in enumerate(config.seeds):
        check_int(seed, f"seeds.{i}", 0, MAX_SEED)
    twice = sorted({s for s in config.seeds if config.seeds.count(s) > 1})
    if twice:
        raise MMRobustError(f"seeds {config.seeds} lists seed {twice[0]} more than once; list each seed once")
    check_audit_options(config.audit.seed, config.audit.max_subsets, lambda key: f"audit.{key}")
    if config.train.threads is not None:
        check_int(config.train.threads, "train.threads", 1)
    for i, name in enumerate(config.audit.scenarios):
        try:
            corruption_from_name(name)
        except MMRobustError as e:
            raise MMRobustError(f"audit.scenarios.{i}: {e}") from None


def config_from_dict(
    tree: dict[str, Any], overrides: list[str] | None = None, *, default_data: bool = True
) -> ExperimentConfig:
    """Validate a config given as a mapping (as read from YAML), apply overrides, validate again.
    Without a dataset it runs on DEFAULT_DATASET, or (`default_data=False`) is an error."""
    resolved = dataclasses.asdict(_build(ExperimentConfig, tree))
    for text in overrides or []:
        keys, value = parse_override(text)
        if keys[0] == "recipe":  # it would be recorded but not applied: recipes merge as the file is read
            raise MMRobustError(
                f"{text}: a recipe cannot be set by an override or a grid (it is merged when the config file is "
                "read); name it in the file (`recipe: FILE`), one config file per recipe"
            )
        apply_override(resolved, keys, value)
    config = _build(ExperimentConfig, resolved)
    unnamed = config.data.name is None and config.data.npz is None
    if unnamed:
        config.data.name = DEFAULT_DATASET
    check_config(config)
    if unnamed and not default_data:
        raise MMRobustError(
            "the config names no dataset: add `data: {name: NAME}` (`mmrobust list` shows them) or "
            "`data: {npz: FILE}`, or give data.name=NAME"
        )
    return config


def check_config(config: ExperimentConfig) -> None:
    """Everything that can be checked without the data; `run.check_against_data` does the rest."""
    if not config.models:
        raise MMRobustError("config key 'models' is empty: list at least one model")
    if not config.seeds:
        raise MMRobustError("config key 'seeds' is empty: list at least one seed")
    check_label(config.name, "name", "the default output folder (runs/<name>)")
    check_loggers(config.train.loggers)
    _check_methods(config.models)
    labels = [m.name for m in config.models]
    if len(set(labels)) != len(labels):
        raise MMRobustError(f"two models share a name ({labels}); give them distinct 'label's")
    _check_data(config.data)
    _check_train_and_audit(config)
