"""Readers for published benchmarks' own file formats (users bring the files).

Each module registers one dataset: `pamap2` (Protocol `.dat` text), `wesad` (Python 2
pickles), `sleep_edf` (EDF/EDF+ pairs, optional `mmrobust[edf]`), `mmsa` (MMSA's processed
MOSI/MOSEI pickles). Pickles go through `safe_pickle`, which refuses anything but numpy
arrays and plain containers.
"""

from . import mmsa, pamap2, sleep_edf, wesad  # noqa: F401  (register the loaders)
