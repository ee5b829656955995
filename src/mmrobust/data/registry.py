"""Dataset registry: `load_dataset(name, **options)` for every built-in loader, plus what
each dataset needs on disk (for `mmrobust data list/info/verify/download`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MMRobustError
from ..registry import Registry, check_options
from .dataset import MultimodalData

Loader = Callable[..., MultimodalData]


@dataclass(frozen=True)
class Download:
    """A public file: where to fetch it, where it goes under the data folder, its SHA-256."""

    url: str
    path: str
    sha256: str


@dataclass(frozen=True)
class DatasetInfo:
    """What a loader reads: files relative to the data directory, and where they come from."""

    summary: str
    files: tuple[str, ...] = ()  # paths under the data dir, e.g. "fsdd/index.csv"
    recipe: str = ""  # preprocessing recipe with a version, e.g. "avmnist/1: log-mel 40x32, ..."
    homepage: str = ""
    downloads: tuple[Download, ...] = ()
    checksums: dict[str, str] = field(default_factory=dict)  # path -> sha256 (for `verify`)

    def missing_files(self, root: Path) -> list[str]:
        return [f for f in self.files if not (root / f).is_file()]

    def require(self, name: str, root: Path) -> None:
        """One-line error naming the files expected, where to put them and where to get them."""
        missing = self.missing_files(root)
        if missing:
            where = f"; official page: {self.homepage}" if self.homepage else ""
            fetch = f"; or run `mmrobust data download {name}`" if self.downloads else ""
            raise MMRobustError(
                f"dataset '{name}' not found: expected {', '.join(missing)} under {root} "
                f"(set --data-dir or MMROBUST_DATA){where}{fetch}"
            )


@dataclass(frozen=True)
class Dataset:
    """A registry entry: the loader and what it reads."""

    loader: Loader
    info: DatasetInfo


DATASETS: Registry[Dataset] = Registry("dataset")


def register_dataset(name: str, info: DatasetInfo | None = None) -> Callable[[Loader], Loader]:
    def decorator(loader: Loader) -> Loader:
        summary = (loader.__doc__ or "").strip().split("\n")[0]
        DATASETS.register(name)(Dataset(loader, info or DatasetInfo(summary=summary)))
        return loader

    return decorator


def dataset_info(name: str) -> DatasetInfo:
    return DATASETS.get(name).info  # unknown names fail with a suggestion


def load_dataset(name: str, **options: Any) -> MultimodalData:
    """Load a registered dataset by name; unknown options are named in the error."""
    loader = DATASETS.get(name).loader
    check_options(f"dataset '{name}'", loader, options)
    return loader(**options)
