"""Dataset registry: `load_dataset(name, **options)` for every built-in loader, plus what
each dataset needs on disk (for `mmrobust data list/info/verify/download`)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MMRobustError, wrong_argument
from ..registry import Registry, check_options
from .cache import raw_file_sha256
from .dataset import MultimodalData

Loader = Callable[..., MultimodalData]


@dataclass(frozen=True)
class Download:
    """A public file: where to fetch it, where it goes under the data folder, and how to check it.

    `sha256` is that of the bytes fetched, when the source publishes or pins one. An archive
    (`unpack` "zip" or "tar") fills the folder `path` with the archive's folder holding the file
    `find`, wherever the archive nests it. `gunzipped_sha256` checks a .gz file by its content,
    which mirrors keep while re-compressing. An archive without `sha256` is checked through the
    dataset's `Release` digest of the unpacked files, before anything lands in the data folder.
    """

    url: str
    path: str
    sha256: str = ""
    unpack: str = ""
    find: str = ""
    gunzipped_sha256: str = ""


@dataclass(frozen=True)
class Release:
    """A dataset's official release as users unpack it under the data folder: the layout the
    docs describe, recognised by its files, and checked as a whole by one SHA-256.

    `tree_sha256` is the SHA-256 of the lines "path<TAB>sha256 of the file" of the full release's
    `count` files matching `patterns`, sorted by path (relative to `folder`): one constant
    checks thousands of files, and needs no list of them in the package.
    """

    folder: str  # under the data dir, e.g. "utd_mhad"
    patterns: tuple[str, ...]  # globs under `folder` matching the release's files
    layout: str  # for people, e.g. "utd_mhad/{Inertial,Skeleton,Depth}/a{A}_s{S}_t{T}_*.mat"
    count: int = 0
    tree_sha256: str = ""
    also: tuple[str, ...] = ()  # other files the loader needs with this layout, under the data dir

    def files(self, root: Path) -> list[Path]:
        """The release's files present under `root`, sorted."""
        return sorted({p for pattern in self.patterns for p in (root / self.folder).glob(pattern) if p.is_file()})

    def present(self, root: Path) -> bool:
        """Whether any file of the release is under `root` (then this layout is the one read)."""
        return any(next((root / self.folder).glob(p), None) is not None for p in self.patterns)

    def problem(self, root: Path) -> str | None:
        """What keeps the files under `root` from being the full release, or None."""
        files = self.files(root)
        if self.count and len(files) != self.count:
            return f"{len(files)} of the release's {self.count} files are under {root / self.folder} ({self.layout})"
        if self.tree_sha256 and tree_sha256(root / self.folder, files) != self.tree_sha256:
            return (
                f"the files under {root / self.folder} differ from the official release "
                "(truncated, corrupted or another version)"
            )
        return None


def tree_sha256(folder: Path, files: list[Path]) -> str:
    """SHA-256 of the sorted lines "path<TAB>sha256" of `files` (paths relative to `folder`)."""
    lines = sorted(f"{p.relative_to(folder).as_posix()}\t{raw_file_sha256(p)}\n" for p in files)
    return hashlib.sha256("".join(lines).encode()).hexdigest()


@dataclass(frozen=True)
class DatasetInfo:
    """What a loader reads: files relative to the data directory, and where they come from.

    A dataset with a `release` is read in its official layout when any of its files are there,
    else from the packed `files` (a second, compact layout); `require` names the official one.
    """

    summary: str
    files: tuple[str, ...] = ()  # paths under the data dir, e.g. "fsdd/index.csv"
    recipe: str = ""  # preprocessing recipe with a version, e.g. "avmnist/1: log-mel 40x32, ..."
    homepage: str = ""
    downloads: tuple[Download, ...] = ()
    checksums: dict[str, str] = field(default_factory=dict)  # path -> sha256 (for `verify`)
    release: Release | None = None
    manual: str = ""  # how to get the data by hand, in one line, when it cannot be downloaded
    bundled: Callable[[], Path | None] | None = None  # a copy read when no data dir is given (sktime's)

    def official(self, root: Path) -> bool:
        """Whether the official release's layout is the one under `root`."""
        return self.release is not None and self.release.present(root)

    def needed(self, root: Path) -> tuple[str, ...]:
        """The exact files the layout under `root` needs (the release's own are found by pattern)."""
        return self.release.also if self.release is not None and self.official(root) else self.files

    def missing_files(self, root: Path) -> list[str]:
        missing = [f for f in self.needed(root) if not (root / f).is_file()]
        if self.release is not None and not self.official(root) and (missing or not self.files):
            return [self.release.layout, *self.release.also]
        return missing

    def raw_files(self, root: Path) -> list[Path]:
        """Every file the loader reads under `root` (for the cache key and the size on disk)."""
        found = self.release.files(root) if self.release is not None and self.official(root) else []
        return found + [root / f for f in self.needed(root)]

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


def load_dataset(name: str, encoders: Mapping[str, str] | None = None, **options: Any) -> MultimodalData:
    """Load a registered dataset by name; unknown options are named in the error. `encoders`
    (modality -> registered encoder) reads some modalities with another encoder than their kind's."""
    if str(name).endswith(".npz"):
        raise MMRobustError(
            f"'{name}' is a file, not a registered dataset: read it with mmrobust.load_npz('{name}') "
            "(command line: --npz; config: data: {npz: FILE})"
        )
    if not isinstance(name, str):  # None or a number would fail as an AttributeError inside the registry
        hint = f"got {name!r}; give a registered name, e.g. 'basicmotions' (`mmrobust data list` shows them)"
        raise wrong_argument("load_dataset", "a dataset name (a str)", name, hint)
    loader = DATASETS.get(name).loader
    check_options(f"dataset '{name}'", loader, options)
    data = loader(**options)
    return data.with_encoders(encoders) if encoders else data
