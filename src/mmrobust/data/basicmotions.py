"""`basicmotions`: the UEA BasicMotions smartwatch data (accelerometer + gyroscope).

Bagnall et al., "The UEA multivariate time series classification archive, 2018"
(arXiv:1811.00075). 80 ten-second windows at 10 Hz, 4 activities, official split 40/40.
The `.ts` files ship inside the `sktime` package, so the demo runs offline; they are read
from there without importing sktime (or from `<data_dir>/basic_motions/`). Channels 0-2 are
the accelerometer and 3-5 the gyroscope. A validation split (20%) is carved from the official
train split, stratified and seeded; the official test split is the test split.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from ..errors import MMRobustError
from .dataset import DataSpec, ModalitySpec, MultimodalData, check_split_options, standardize, stratified_split
from .paths import data_dir
from .registry import DatasetInfo, Release, register_dataset

_FOLDER = "basic_motions"  # under the data dir
_FILES = ("BasicMotions_TRAIN.ts", "BasicMotions_TEST.ts")
RECIPE_VERSION = "basicmotions/1: per-channel standardisation on train"


def _complete(folder: Path) -> bool:
    return all((folder / f).is_file() for f in _FILES)


def sktime_copy() -> Path | None:
    """The folder of the two files in an installed sktime (found without importing it), or None."""
    sktime = importlib.util.find_spec("sktime")
    if sktime is None or not sktime.submodule_search_locations:
        return None
    folder = Path(next(iter(sktime.submodule_search_locations))) / "datasets" / "data" / "BasicMotions"
    return folder if _complete(folder) else None


def _locate(explicit_dir: str | Path | None) -> Path:
    """The folder holding the two files: under the data dir, else (with no `data_dir` given) in an
    installed sktime. The advice to install sktime is given only where it would help."""
    folder = data_dir(explicit_dir) / _FOLDER
    if _complete(folder):
        return folder
    bundled = sktime_copy() if explicit_dir is None else None
    if bundled is not None:
        return bundled
    no_sktime = explicit_dir is None and importlib.util.find_spec("sktime") is None
    or_sktime = " (or `pip install sktime`, which ships them)" if no_sktime else ""
    raise MMRobustError(
        f"BasicMotions not found: put {' and '.join(_FILES)} in {folder}{or_sktime}; download page: "
        "https://timeseriesclassification.com/description.php?Dataset=BasicMotions"
    )


def read_ts(path: Path) -> tuple[torch.Tensor, list[str]]:
    """Parse a UEA `.ts` file with equal-length series: returns X (N, D, T) and labels."""
    series, labels, in_data = [], [], False
    for line_no, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            in_data = line.lower() == "@data"
            continue
        *dims, label = line.split(":")
        try:
            series.append([[float(v) for v in d.split(",")] for d in dims])
        except ValueError as e:
            raise MMRobustError(f"{path}:{line_no}: malformed value ({e})") from None
        labels.append(label)
    if not series:
        raise MMRobustError(f"{path}: no @data section")
    return torch.tensor(series, dtype=torch.float32), labels


INFO = DatasetInfo(
    summary="UEA BasicMotions: smartwatch accelerometer + gyroscope, 4 activities (ships with sktime)",
    homepage="https://timeseriesclassification.com/description.php?Dataset=BasicMotions",
    recipe=RECIPE_VERSION,
    release=Release(_FOLDER, _FILES, f"{_FOLDER}/BasicMotions_{{TRAIN,TEST}}.ts", count=len(_FILES)),
    bundled=sktime_copy,
)


@register_dataset("basicmotions", INFO)
def load_basicmotions(
    data_dir: str | None = None, val_fraction: float = 0.2, split_seed: int = 0
) -> MultimodalData:
    check_split_options(split_seed, val_fraction)
    folder = _locate(data_dir)
    x_train, y_train = read_ts(folder / _FILES[0])
    x_test, y_test = read_ts(folder / _FILES[1])
    class_names = ("Standing", "Running", "Walking", "Badminton")
    to_id = {c: i for i, c in enumerate(class_names)}
    x = torch.cat([x_train, x_test])  # (80, 6, 100)
    y = torch.tensor([to_id[c] for c in y_train + y_test])
    n_train = len(y_train)
    g = torch.Generator().manual_seed(split_seed)
    fit, val = stratified_split(y[:n_train], (1 - val_fraction, val_fraction), g)
    splits = {"train": fit, "val": val, "test": torch.arange(n_train, len(y))}
    spec = DataSpec(
        "basicmotions",
        (ModalitySpec("accelerometer", "conv1d", (3, 100)), ModalitySpec("gyroscope", "conv1d", (3, 100))),
        "classification",
        4,
        class_names,
    )
    inputs = {"accelerometer": x[:, :3], "gyroscope": x[:, 3:]}
    present = torch.ones(len(y), 2, dtype=torch.bool)
    return standardize(MultimodalData(spec, inputs, present, y, splits))
