"""Read published pickles without letting them run code.

`pickle.load` calls whatever callable the file names, so a crafted file can run arbitrary
code on load. Benchmark releases (WESAD, MMSA) ship pickles anyway, so they are read with an
unpickler whose `find_class` admits only what an array-and-container pickle needs: numpy
array, dtype and scalar reconstruction (under their numpy 1.x and 2.x module names) and a few
plain builtin containers. Anything else is refused by name *before* it is imported or
called. See "Restricting Globals" in the `pickle` documentation.
"""

from __future__ import annotations

import codecs
import collections
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import MMRobustError

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _numeric  # type: ignore[no-redef]

_FROMBUFFER = _numeric._frombuffer  # type: ignore[attr-defined]  # ndarray.__reduce_ex__(5)
_ARRAY_GLOBALS: dict[str, Any] = {
    "_reconstruct": _multiarray._reconstruct,  # ndarray.__reduce__ (protocols 0-4)
    "scalar": _multiarray.scalar,  # numpy scalars
}
_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy._core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy.core.numeric", "_frombuffer"): _FROMBUFFER,
    ("_codecs", "encode"): codecs.encode,  # bytes in protocol-2 pickles written by py3
    ("collections", "OrderedDict"): collections.OrderedDict,
}
for _module in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED.update({(_module, name): fn for name, fn in _ARRAY_GLOBALS.items()})
for _module in ("builtins", "__builtin__"):  # py3 and py2 names
    _ALLOWED.update({(_module, t.__name__): t for t in (set, frozenset, bytearray, complex)})


_READ_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    ImportError,
    ValueError,
    TypeError,
    AttributeError,
    IndexError,
    KeyError,
    OverflowError,
    RecursionError,
    MemoryError,
    OSError,
)


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only allow-listed globals (numpy arrays, plain containers)."""

    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file, encoding="latin1")  # latin1: py2 byte strings, as numpy advises
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise MMRobustError(
                f"{self.source}: refused to unpickle '{module}.{name}' (only numpy arrays and plain "
                "containers are allowed); pass trust_pickle=True (in a config: data.options.trust_pickle=true) to "
                "load it anyway, only if you trust the file: unpickling it can run arbitrary code"
            ) from None


def load_pickle(path: Path, trust: bool = False) -> Any:
    """Unpickle `path` with the restricted unpickler (or the full one when `trust`).

    Unreadable files raise a one-line `MMRobustError` naming the file.
    """
    try:
        f = path.open("rb")
    except OSError as e:
        raise MMRobustError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        with f:
            if trust:
                return pickle.Unpickler(f, encoding="latin1").load()
            return RestrictedUnpickler(f, str(path)).load()
    except MMRobustError:
        raise
    except _READ_ERRORS as e:
        raise MMRobustError(f"{path}: not a readable pickle, truncated or corrupt ({e})") from None
