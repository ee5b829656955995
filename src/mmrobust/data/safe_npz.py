"""Reading `.npz` archives safely: pickling disabled, and every way a file can be bad (empty,
truncated, a bit flipped, a single `.npy` array saved under an `.npz` name, object arrays) turned
into one line naming the file, for every loader that reads npz files.

The file's first bytes are checked before `np.load` sees it: given anything but a zip archive,
`np.load` would read it as a bare `.npy` array or a pickle, and its errors would not say which.
"""

from __future__ import annotations

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
            return {k: f[k] for k in wanted}
    except MMRobustError:  # a ValueError too: not to be taken for a read error below
        raise
    except READ_ERRORS as e:
        if "pickle" in str(e):  # an object array: never unpickled
            raise MMRobustError(
                f"cannot read {path} as npz without pickling: it holds pickled Python objects (object arrays), "
                "refused because unpickling can run arbitrary code; save numbers, bools and strings only"
            ) from None
        raise MMRobustError(f"cannot read {path} as npz: truncated or corrupt ({str(e) or type(e).__name__})") from None
