"""Every experiment config shipped in configs/ loads and validates (recipes merged in), so a study's
documented command does not fail on a typo in its config."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmrobust.config import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
EXPERIMENTS = sorted(p for p in CONFIGS.rglob("*.yaml") if "recipes" not in p.relative_to(CONFIGS).parts)


def test_there_are_configs_to_check() -> None:
    assert len(EXPERIMENTS) > 10


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_shipped_config_loads(path: Path) -> None:
    config = load_config(path)
    assert config.models and config.seeds
    if config.recipe is not None:  # the recipe's training options reached the config
        assert config.train.select == "none"
