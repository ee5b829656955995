"""Reader for LeCun's IDX format (MNIST), gzip-compressed.

Header: two zero bytes, a type code (0x08 = uint8, the only one MNIST uses), the number of
dimensions, then each dimension as a big-endian uint32; the values follow, row-major.
http://yann.lecun.com/exdb/mnist/ (section "THE IDX FILE FORMAT").
"""

from __future__ import annotations

import gzip
import zlib
from math import prod
from pathlib import Path

import numpy as np

from ..errors import MMRobustError


def read_idx(path: Path) -> np.ndarray:
    """The uint8 array stored in a gzipped IDX file, shaped as its header says."""
    try:
        with gzip.open(path) as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise MMRobustError(f"{path}: not a readable gzip file ({e})") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise MMRobustError(f"{path}: not a uint8 IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise MMRobustError(f"{path}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    if len(raw) != header + prod(shape):
        raise MMRobustError(
            f"{path}: IDX header says {shape} ({prod(shape)} bytes) but the file holds {len(raw) - header}"
        )
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)
