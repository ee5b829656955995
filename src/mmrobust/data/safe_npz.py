"""Reading `.npz` archives safely: pickling disabled, and every way a file can be bad (empty,
truncated, a bit flipped, a single `.npy` array saved under an `.npz` name, object arrays) turned
into one line naming the file, for every loader that reads npz files.

The file's first bytes are checked before `np.load` sees it: given anything but a zip archive,
`np.load` would read it as a bare `.npy` array or a pickle, and its errors would not say which.
"""

from __future__ import annotations

import math
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import MMRobustError

READ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)  # a bad npz raises these
_ZIP_MAGIC, _NPY_MAGIC = b"PK\x03\x04", b"\x93NUM"


def read_npz(path: Path, keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """The arrays `keys` of an npz archive (all of them when None; only those are decompressed),
    or a one-line `MMRobustError` naming the file and what is wrong with it."""
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise MMRobustError(f"cannot read {path}: {e.strerror or e}") from None
    if magic != _ZIP_MAGIC:  # every npz is a zip archive (an empty one is refused too)
        if magic == _NPY_MAGIC:
            what = "it is a single .npy array, not an archive of named arrays (write one with np.savez)"
        else:
            what = f"{'the file is empty' if not magic else 'not a zip archive'} (truncated, corrupt or another format)"
        raise MMRobustError(f"cannot read {path} as npz: {what}")
    try:
        with np.load(path, allow_pickle=False) as f:
            wanted = list(f.files if keys is None else keys)
            missing = [k for k in wanted if k not in f.files]
            if missing:
                raise MMRobustError(f"{path}: missing arrays {missing} (has {sorted(f.files)})")
            _check_members(path, f.zip, wanted)
            return {k: f[k] for k in wanted}
    except MMRobustError:  # a ValueError too: not to be taken for a read error below
        raise
    except READ_ERRORS as e:
        if "pickle" in str(e):  # an object array: never unpickled
            raise _pickled(path) from None
        raise MMRobustError(f"cannot read {path} as npz: truncated or corrupt ({str(e) or type(e).__name__})") from None


def _pickled(path: Path) -> MMRobustError:
    return MMRobustError(
        f"cannot read {path} as npz without pickling: it holds pickled Python objects (object arrays), "
        "refused because unpickling can run arbitrary code; save numbers, bools and strings only"
    )


def _check_members(path: Path, archive: zipfile.ZipFile, keys: Sequence[str]) -> None:
    """Read each member's npy header before its data: a member that is not an npy array (raw bytes,
    e.g. a pickle, which `np.load` would hand back as bytes) is refused, and so is one whose header
    declares more data than the member holds (a crafted 29 TiB shape would be allocated first)."""
    names = set(archive.namelist())
    for key in keys:
        member = f"{key}.npy" if f"{key}.npy" in names else key
        info = archive.getinfo(member)
        with archive.open(member) as fp:
            if fp.read(len(_NPY_MAGIC)) != _NPY_MAGIC:
                raise MMRobustError(
                    f"cannot read {path} as npz: member '{member}' is not an npy array (raw bytes, e.g. a pickle); "
                    "refused: write the file with np.savez"
                )
            fp.seek(0)
            version = np.lib.format.read_magic(fp)
            header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = header(fp)
            if dtype.hasobject:
                raise _pickled(path)
            declared = math.prod(shape) * dtype.itemsize
            held = info.file_size - fp.tell()
        if declared > held:
            raise MMRobustError(
                f"cannot read {path} as npz: member '{member}' declares shape {tuple(shape)} of {dtype} "
                f"({declared / 2**30:,.1f} GiB) but holds {held:,} bytes: truncated or crafted; refusing to allocate it"
            )
