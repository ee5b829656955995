"""One way to turn a run's seed into the seed of one of its parts.

Every random stream a run draws besides its root generator (a later training stage, a
data-parallel rank's epoch, a block of synthetic data, CroSSL's label subset) is seeded by
`derive_seed(root, *coordinates)`: streams with different coordinates are independent, and the
same coordinates give the same stream in every process (so a resumed or data-parallel run draws
what an uninterrupted single process draws without saving extra generator state).
"""

from __future__ import annotations

import zlib

import numpy as np

MAX_SEED = 2**63 - 1  # what torch's generators accept
SEEDING = "derive_seed/1"  # recorded in resume and cache keys: a change of scheme invalidates them


def derive_seed(root: int, *coordinates: int | str) -> int:
    """A seed in [0, 2^63) for the stream named by `coordinates` within run `root` (numpy's
    SeedSequence mixing; strings enter by their CRC-32, so `("stage", 1)` reads as what it is)."""
    words = [int(root)] + [zlib.crc32(c.encode()) if isinstance(c, str) else int(c) for c in coordinates]
    if any(w < 0 for w in words):
        raise ValueError(f"seeds and coordinates must be non-negative, got {words}")
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0] >> np.uint64(1))
