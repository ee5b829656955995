"""The preprocessing cache: built once, keyed by raw-file checksums and recipe, never trusts a bad entry."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import mmrobust
from mmrobust.data.cache import cache_dir, cached


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    path = tmp_path / "raw.bin"
    path.write_bytes(b"version 1")
    return path


def _builder(calls: list[int]):
    def build() -> mmrobust.MultimodalData:
        calls.append(1)
        return mmrobust.load_dataset("synthetic", n_samples=60, seed=len(calls))

    return build


def test_second_load_comes_from_the_cache(raw: Path) -> None:
    calls: list[int] = []
    first = cached("unit", "r/1", [raw], {"a": 1}, _builder(calls))
    second = cached("unit", "r/1", [raw], {"a": 1}, _builder(calls))
    assert len(calls) == 1
    assert torch.equal(first.inputs["m0"], second.inputs["m0"])
    assert first.spec == second.spec
    assert {k: v.tolist() for k, v in first.splits.items()} == {k: v.tolist() for k, v in second.splits.items()}


@pytest.mark.parametrize("change", ["raw file", "recipe", "options"])
def test_key_changes_rebuild(raw: Path, change: str) -> None:
    calls: list[int] = []
    name = f"unit2-{change.replace(' ', '')}"  # the key ignores paths, so each case needs its own name
    cached(name, "r/1", [raw], {"a": 1}, _builder(calls))
    recipe, options = "r/1", {"a": 1}
    if change == "raw file":
        raw.write_bytes(b"version 2")
    elif change == "recipe":
        recipe = "r/2"
    else:
        options = {"a": 2}
    cached(name, recipe, [raw], options, _builder(calls))
    assert len(calls) == 2


def test_corrupt_entry_is_rebuilt_not_trusted(raw: Path) -> None:
    calls: list[int] = []
    cached("unit3", "r/1", [raw], {}, _builder(calls))
    (entry,) = cache_dir().glob("unit3-*.pt")
    entry.write_bytes(entry.read_bytes()[:100])  # a truncated write
    data = cached("unit3", "r/1", [raw], {}, _builder(calls))
    assert len(calls) == 2 and len(data) == 60
    assert len(list(cache_dir().glob("unit3-*.pt"))) == 1
    assert len(list(cache_dir().glob(".unit3*"))) == 0  # no temporary files left behind


def test_use_cache_false_always_builds(raw: Path) -> None:
    calls: list[int] = []
    cached("unit4", "r/1", [raw], {}, _builder(calls), use_cache=False)
    cached("unit4", "r/1", [raw], {}, _builder(calls), use_cache=False)
    assert len(calls) == 2 and not list(cache_dir().glob("unit4-*"))
