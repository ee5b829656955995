"""Many modalities: the default subsets are capped (with a warning and a way to audit all), and the
heatmap groups subsets by size instead of growing a column per subset."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli, write_npz

import mmrobust
from mmrobust.audit.report import heatmap_figure, pyplot
from mmrobust.audit.scenarios import MAX_SUBSETS, default_scenarios

TWELVE = tuple(f"m{i}" for i in range(12))


def test_twelve_modalities_audit_a_fixed_capped_set_of_subsets() -> None:
    with pytest.warns(UserWarning, match="12 modalities have 4094 proper subsets: auditing 126"):
        capped = [s.name for s in default_scenarios(TWELVE) if s.kind == "subset"]
    assert len(capped) == MAX_SUBSETS
    for m in TWELVE:  # every modality alone and every leave-one-out subset are kept
        assert f"subset[{m}]" in capped
        assert f"subset[{'+'.join(x for x in TWELVE if x != m)}]" in capped
    with pytest.warns(UserWarning):
        again = [s.name for s in default_scenarios(TWELVE) if s.kind == "subset"]
    assert again == capped  # the same sample every time: paired across models and runs
    everything = [s.name for s in default_scenarios(TWELVE, max_subsets=None) if s.kind == "subset"]
    assert len(everything) == 2**12 - 2 == len(set(everything))


def test_seven_modalities_are_not_capped(recwarn: pytest.WarningsRecorder) -> None:
    subsets = [s for s in default_scenarios(TWELVE[:7]) if s.kind == "subset"]
    assert len(subsets) == 2**7 - 2 and not recwarn.list


def test_the_heatmap_groups_many_subsets_by_size(tmp_path) -> None:
    data = mmrobust.load_dataset("synthetic", n_samples=120, informativeness=(1.0,) * 8, seed=0)
    method = mmrobust.create_method("joint", fusion="sum", dim=8)
    mmrobust.fit(method, data, epochs=1, progress=False)
    with pytest.warns(UserWarning, match="auditing 126"):
        result = mmrobust.audit(method, data)
    fig = heatmap_figure(result)
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    pyplot().close(fig)
    assert labels[0] == "all 8 (clean)" and labels[1:] == [f"{k} of 8 (mean of {n})" for k, n in _counts(8)]


def _counts(m: int) -> list[tuple[int, int]]:
    """(size, audited subsets of that size) with the cap: sizes 1 and m-1 whole, the rest sampled."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the cap's warning, tested above
        capped = [s.name for s in default_scenarios(tuple(f"m{i}" for i in range(m))) if s.kind == "subset"]
    sizes = [name.count("+") + 1 for name in capped]
    return [(k, sizes.count(k)) for k in range(m - 1, 0, -1) if sizes.count(k)]


def test_combinations_helper_matches_itertools() -> None:  # the subset order is the documented one
    names = [s.name for s in default_scenarios(TWELVE[:4]) if s.kind == "subset"]
    expected = [f"subset[{'+'.join(k)}]" for size in (3, 2, 1) for k in itertools.combinations(TWELVE[:4], size)]
    assert names == expected


def test_cli_audits_every_subset_when_asked(tmp_path, capsys) -> None:
    rng = np.random.default_rng(0)
    y = np.arange(80) % 2
    arrays = {f"x_m{i}": (rng.normal(size=(80, 2)) + y[:, None]).astype(np.float32) for i in range(8)}
    npz = write_npz(tmp_path / "eight.npz", **arrays, y=y.astype(np.int64))
    code, _, err = run_cli(["train", "--npz", str(npz), "--method", "joint", "--fusion", "sum", "--epochs", "1",
                            "--out", str(tmp_path / "model")], capsys)  # fmt: skip
    assert code == 0, err
    base = ["audit", "--checkpoint", str(tmp_path / "model" / "checkpoint.pt"), "--npz", str(npz)]
    with pytest.warns(UserWarning, match="auditing 126"):
        code, _, err = run_cli([*base, "--out", str(tmp_path / "capped")], capsys)
    assert code == 0, err
    code, _, err = run_cli([*base, "--all-subsets", "--out", str(tmp_path / "all")], capsys)
    assert code == 0, err
    subsets = {d: pd.read_csv(tmp_path / d / "results.csv").query("kind == 'subset'").scenario.nunique()
               for d in ("capped", "all")}  # fmt: skip
    assert subsets == {"capped": 126, "all": 254}
