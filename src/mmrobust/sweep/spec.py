"""The sweep file: a base experiment config and a grid of dotted config keys (see the package docstring)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import apply_recipe, check_label, read_yaml_mapping, resolve_paths
from ..errors import MMRobustError, unknown_name
from ..safe_yaml import load_yaml

SWEEP_KEYS = ("name", "base", "grid")
SEEDS = "seeds"  # grid key that lists the seeds of every combination instead of being an axis


@dataclass
class SweepSpec:
    name: str
    base: dict[str, Any]  # an experiment config as read from YAML
    grid: dict[str, list[Any]]  # dotted key -> values, in the order given
    overrides: list[str] = field(default_factory=list)  # `key=value` applied to the base


def read_sweep(path: str | Path, overrides: Sequence[str] = (), grid: Sequence[str] = ()) -> SweepSpec:
    """A sweep file (with `base` and/or `grid`) or a plain experiment config, plus `--grid` options
    (`key=v1,v2`; they replace the file's values of the same key)."""
    path = Path(path)
    tree = read_yaml_mapping(path)
    if not {"base", "grid"} & set(tree):  # a plain experiment config: sweep it with --grid only
        tree = {"base": tree}
    for key in tree:
        if key not in SWEEP_KEYS:
            raise MMRobustError(f"{path}: {unknown_name('sweep key', str(key), SWEEP_KEYS)}")
    base, folder = tree.get("base") or {}, path.parent
    if isinstance(base, str):  # relative data paths of a base file are read from its own folder
        folder = (path.parent / base).parent
        base = read_yaml_mapping(path.parent / base)
    if not isinstance(base, dict):
        raise MMRobustError(f"{path}: 'base' must be an experiment config (a mapping) or the path of one")
    base = resolve_paths(apply_recipe(base, folder), folder)
    file_grid = tree.get("grid") or {}
    if not isinstance(file_grid, dict):
        raise MMRobustError(f"{path}: malformed grid: 'grid' must map dotted keys to lists of values")
    values = {str(k): _check_values(str(k), v) for k, v in file_grid.items()}
    for key in ("data.npz", "data.data_dir"):  # read from the sweep file's folder, as its base's are
        if key in values:
            field = key.partition(".")[2]
            values[key] = [resolve_paths({"data": {field: v}}, path.parent)["data"][field] for v in values[key]]
    for text in grid:
        key, vals = parse_grid_option(text)
        values[key] = _check_values(key, vals)
    for text in overrides:  # the grid's values are applied after the overrides: one would be dropped silently
        key = text.partition("=")[0]
        if key in values:
            raise MMRobustError(
                f"{text}: '{key}' is a grid key of this sweep, whose values would replace it; give them with "
                f"--grid {key}=A,B instead"
            )
    name = str(tree.get("name") or base.get("name") or path.stem)
    check_label(name, f"{path}: name", "the default output folder (runs/<name>)")
    return SweepSpec(name, base, values, list(overrides))


def parse_grid_option(text: str) -> tuple[str, list[Any]]:
    """`train.epochs=10,20` -> ("train.epochs", [10, 20]); each value is read as YAML, and commas
    inside brackets or braces do not split (`audit.scenarios=[a],[a,b]` is two values)."""
    key, sep, raw = text.partition("=")
    malformed = f"malformed --grid '{text}': write key=v1,v2,..., e.g. train.epochs=10,20"
    if not sep or not key or not raw or any(not part for part in key.split(".")):
        raise MMRobustError(malformed)
    pieces, depth, start = [], 0, 0
    for i, ch in enumerate(raw):
        depth += ch in "[{"
        depth -= ch in "]}"
        if depth < 0:
            raise MMRobustError(malformed)
        if ch == "," and depth == 0:
            pieces.append(raw[start:i])
            start = i + 1
    pieces.append(raw[start:])
    if depth != 0 or any(not p.strip() for p in pieces):
        raise MMRobustError(malformed)
    return key, [load_yaml(p, f"--grid '{text}'") for p in pieces]


def _check_values(key: str, values: Any) -> list[Any]:
    if not key or any(not part for part in key.split(".")):
        raise MMRobustError(f"malformed grid key '{key}': write a dotted config key, e.g. train.epochs")
    if not isinstance(values, list) or not values:
        raise MMRobustError(f"malformed grid: key '{key}' must have a non-empty list of values, got {values!r}")
    seen = [json.dumps(v, sort_keys=True) for v in values]
    if len(set(seen)) != len(seen):
        raise MMRobustError(f"malformed grid: key '{key}' lists a value twice ({values!r})")
    if key == SEEDS and not all(isinstance(s, int) and not isinstance(s, bool) for s in values):
        raise MMRobustError(f"malformed grid: '{SEEDS}' takes a list of integer seeds, got {values!r}")
    return values
