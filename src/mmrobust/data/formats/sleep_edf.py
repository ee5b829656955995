"""`sleep_edf`: Sleep-EDF Expanded, sleep-cassette study, read from its PSG/Hypnogram EDF pairs.

B. Kemp, A. H. Zwinderman, B. Tuk, H. A. C. Kamphuisen, J. J. L. Oberye, "Analysis of a
sleep-dependent neuronal feedback loop", IEEE Trans. Biomed. Eng. 2000;
https://physionet.org/content/sleep-edfx/1.0.0/. Users bring `sleep-cassette/SC4ssNE0-PSG.edf`
(subject ss, night N) with its scorer's `SC4ssNEx-Hypnogram.edf` (EDF+ annotations) and put
them under `<data_dir>/sleep_edf/sleep-cassette/`. EDF is read with pyedflib, an optional
dependency: `pip install 'mmrobust[edf]'`.

Recipe (`sleep_edf/1`), the common one of DeepSleepNet (Supratak et al., IEEE TNSRE 2017):
- 30 s epochs scored W, N1, N2, N3 (R&K stages 3 and 4 merged), REM; "Movement time" and
  "Sleep stage ?" epochs are dropped, and only `wake_margin_minutes` (30) of wake before the
  first and after the last sleep epoch are kept (the recordings span ~20 h of mostly wake).
- Modalities: `eeg` conv1d (2, 30 fs) = Fpz-Cz and Pz-Oz; `eog` conv1d (1, 30 fs) =
  horizontal EOG; `emg` conv1d (1, 30) = submental EMG (recorded at 1 Hz in this study).
  `sample_rate` (default 100 Hz, native) lowers the EEG/EOG rate by bin averaging.
- Subjects: by default the Sleep-EDF-20 subset (subjects 0-19, 39 nights) most papers use;
  `subjects=` picks others (files are then found by name).
- Split by subject, both nights of a subject together: test = subjects with id % 5 == 4
  (4, 9, 14, 19 in Sleep-EDF-20; papers use k-fold over subjects, this is one fixed fold,
  `test_subjects=` to choose); val = a seeded `val_fraction` of the remaining subjects.
  Per-channel standardisation with train statistics only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import MMRobustError
from ..cache import cached
from ..dataset import MultimodalData, check_split_options
from ..paths import data_dir as resolve_data_dir
from ..registry import DatasetInfo, register_dataset
from ._windows import cut, resample, windowed_dataset

STAGES = ("W", "N1", "N2", "N3", "REM")
_ANNOTATION_STAGE = {
    "Sleep stage W": 0,
    "Sleep stage 1": 1,
    "Sleep stage 2": 2,
    "Sleep stage 3": 3,
    "Sleep stage 4": 3,
    "Sleep stage R": 4,
}  # anything else ("Sleep stage ?", "Movement time") is dropped
_CHANNELS = {"eeg": ("EEG Fpz-Cz", "EEG Pz-Oz"), "eog": ("EOG horizontal",), "emg": ("EMG submental",)}
_EPOCH = 30.0  # seconds
_FOLDER = "sleep_edf/sleep-cassette"
# Sleep-EDF-20: recording SC4<ss><night> -> its hypnogram's scorer letter (PSG files all end "E0")
_SC20 = (  # noqa: SIM905  (a table is easier to check as text)
    "4001C 4002C 4011H 4012C 4021H 4022J 4031C 4032P 4041C 4042C 4051C 4052C 4061C 4062C 4071C 4072H "
    "4081C 4082P 4091C 4092C 4101C 4102C 4111C 4112C 4121C 4122V 4131C 4141U 4142U 4151C 4152C 4161C "
    "4162C 4171U 4172C 4181C 4182C 4191P 4192V"
).split()
_SC20_PAIRS = tuple((f"SC{r[:4]}E0-PSG.edf", f"SC{r[:4]}E{r[4]}-Hypnogram.edf") for r in _SC20)

INFO = DatasetInfo(
    summary="Sleep-EDF (cassette): EEG + EOG + EMG, 5 sleep stages per 30 s epoch; Sleep-EDF-20 by default "
    "(bring the files; needs pyedflib, the 'edf' extra)",
    files=tuple(f"{_FOLDER}/{name}" for pair in _SC20_PAIRS for name in pair),
    homepage="https://physionet.org/content/sleep-edfx/1.0.0/",
    recipe=(
        "sleep_edf/1: 30 s epochs W/N1/N2/N3(3+4)/REM, 30 min wake margins; EEG Fpz-Cz+Pz-Oz, EOG, EMG; "
        "test subjects id%5==4, val by subject; train-only standardisation"
    ),
)


@register_dataset("sleep_edf", INFO)
def load_sleep_edf(
    data_dir: str | None = None,
    subjects: Sequence[int] | None = None,
    sample_rate: float = 100.0,
    wake_margin_minutes: float | None = 30.0,
    test_subjects: Sequence[int] | None = None,
    val_fraction: float = 0.15,
    split_seed: int = 0,
    use_cache: bool = True,
) -> MultimodalData:
    """Load sleep-cassette recordings (see the module docstring for the recipe and the split).

    Example: `load_dataset("sleep_edf", subjects=range(10), sample_rate=50)`.
    """

    root = resolve_data_dir(data_dir)
    if subjects is None:
        INFO.require("sleep_edf", root)
        pairs = [(root / _FOLDER / psg, root / _FOLDER / hyp) for psg, hyp in _SC20_PAIRS]
    else:
        pairs = _find_pairs(root / _FOLDER, sorted({int(s) for s in subjects}))
    if sample_rate <= 0 or not float(_EPOCH * sample_rate).is_integer():
        raise MMRobustError(f"sleep_edf: sample_rate={sample_rate} must give a whole number of samples per 30 s")
    check_split_options(split_seed, val_fraction)
    _require_pyedflib()
    recorded = sorted({_subject(psg) for psg, _ in pairs})
    test = sorted(test_subjects) if test_subjects is not None else [s for s in recorded if s % 5 == 4]
    if not test:
        raise MMRobustError(f"sleep_edf: no subject among {recorded} has id % 5 == 4; pass test_subjects=")
    options = {
        "recordings": [psg.name for psg, _ in pairs],
        "sample_rate": sample_rate,
        "wake_margin_minutes": wake_margin_minutes,
        "test_subjects": test,
        "val_fraction": val_fraction,
        "split_seed": split_seed,
    }
    return cached(
        "sleep_edf",
        INFO.recipe,
        [f for pair in pairs for f in pair],
        options,
        lambda: _build(pairs, sample_rate, wake_margin_minutes, test, val_fraction, split_seed),
        use_cache,
    )


def _find_pairs(folder: Path, subjects: list[int]) -> list[tuple[Path, Path]]:
    """Every night's (PSG, Hypnogram) of the chosen subjects, found by the release's file names."""
    pairs = []
    for s in subjects:
        psgs = sorted(folder.glob(f"SC4{s:02d}[12]?0-PSG.edf"))
        if not psgs:
            raise MMRobustError(
                f"sleep_edf: no recording of subject {s} (SC4{s:02d}1E0-PSG.edf) under {folder}; "
                f"official page: {INFO.homepage}"
            )
        for psg in psgs:
            hyps = sorted(folder.glob(f"{psg.name[:7]}?-Hypnogram.edf"))
            if len(hyps) != 1:
                raise MMRobustError(f"{psg}: expected one {psg.name[:7]}?-Hypnogram.edf beside it, found {len(hyps)}")
            pairs.append((psg, hyps[0]))
    return pairs


def _subject(psg: Path) -> int:
    return int(psg.name[3:5])  # SC4<ss><night>...


def _require_pyedflib() -> Any:
    try:
        import pyedflib
    except ImportError:
        raise MMRobustError("sleep_edf needs pyedflib to read EDF files: pip install 'mmrobust[edf]'") from None
    return pyedflib


def _build(
    pairs: list[tuple[Path, Path]],
    fs: float,
    wake_margin_minutes: float | None,
    test_subjects: Sequence[int],
    val_fraction: float,
    split_seed: int,
) -> MultimodalData:
    parts: dict[str, list[np.ndarray]] = {m: [] for m in (*_CHANNELS, "y", "subject")}
    for psg, hyp in pairs:
        onsets, stages = read_hypnogram(hyp)
        keep = stages >= 0
        if wake_margin_minutes is not None and (stages >= 1).any():
            sleep = onsets[stages >= 1]
            margin = 60.0 * wake_margin_minutes
            keep &= (onsets >= sleep.min() - margin) & (onsets <= sleep.max() + margin)
        epochs, recorded = read_epochs(psg, onsets[keep], fs)
        for modality, x in epochs.items():
            parts[modality].append(x)
        parts["y"].append(stages[keep][recorded])
        parts["subject"].append(np.full(int(recorded.sum()), _subject(psg)))
    return windowed_dataset("sleep_edf", parts, list(_CHANNELS), STAGES, test_subjects, val_fraction, split_seed)


def read_epochs(path: Path, onsets: np.ndarray, fs: float) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The recipe's channels of one PSG file cut into the 30 s epochs starting at `onsets` (s):
    modality -> (E, C, 30 rate) in physical units, with rate = min(native, `fs`), and which of
    the epochs the recording covers. Only the span of those epochs is read (a night is ~20 h)."""
    pyedflib = _require_pyedflib()
    wanted = [c for channels in _CHANNELS.values() for c in channels]
    epochs: dict[str, np.ndarray] = {}
    try:
        with pyedflib.EdfReader(str(path)) as f:
            labels = [label.strip() for label in f.getSignalLabels()]
            missing = [c for c in wanted if c not in labels]
            if missing:
                raise MMRobustError(f"{path}: no channel {missing} (has {labels})")
            index = {c: labels.index(c) for c in wanted}
            rates = {c: float(f.getSampleFrequency(i)) for c, i in index.items()}
            duration = min(f.getNSamples()[i] / rates[c] for c, i in index.items())  # seconds
            recorded = onsets + _EPOCH <= duration
            onsets = onsets[recorded]
            t0, t1 = (onsets.min(), onsets.max() + _EPOCH) if len(onsets) else (0.0, 0.0)
            for modality, channels in _CHANNELS.items():
                rate = rates[channels[0]]
                if any(rates[c] != rate for c in channels):
                    raise MMRobustError(f"{path}: channels {channels} have different sampling rates")
                first, stop = round(t0 * rate), round(t1 * rate)
                x = np.stack([f.readSignal(index[c], first, stop - first) for c in channels], axis=1)  # (T, C)
                out_rate = min(rate, fs)
                x = resample(x, rate, out_rate) if out_rate < rate else x.astype(np.float32)
                starts = np.round((onsets - t0) * out_rate).astype(np.int64)
                epochs[modality] = cut(x, starts, round(_EPOCH * out_rate))  # (E, C, 30 rate)
    except MMRobustError:
        raise
    except (OSError, ValueError) as e:
        reason = str(e).replace(f"{path}: ", "")  # pyedflib repeats the path
        raise MMRobustError(f"{path}: not a readable EDF file ({reason})") from None
    return epochs, recorded


def read_hypnogram(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Onsets (s) and stage indices (-1 = dropped) of every 30 s epoch an EDF+ hypnogram scores."""
    pyedflib = _require_pyedflib()
    try:
        with pyedflib.EdfReader(str(path)) as f:
            onset, duration, text = f.readAnnotations()
    except (OSError, ValueError) as e:
        reason = str(e).replace(f"{path}: ", "")
        raise MMRobustError(f"{path}: not a readable EDF+ hypnogram ({reason})") from None
    if not len(onset):
        raise MMRobustError(f"{path}: no annotations (is this the Hypnogram file?)")
    counts = np.round(np.asarray(duration, dtype=np.float64) / _EPOCH).astype(np.int64)  # epochs per annotation
    first = np.repeat(np.asarray(onset, dtype=np.float64), counts)
    offset = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)  # epoch within annotation
    stage = np.array([_ANNOTATION_STAGE.get(str(t).strip(), -1) for t in text], dtype=np.int64)
    return first + _EPOCH * offset, np.repeat(stage, counts)
