"""Dataset registry: `load_dataset(name, **options)` for every built-in loader."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from ..errors import MMRobustError, unknown_name
from ..registry import Registry
from .dataset import MultimodalData

DATASETS: Registry[Callable[..., MultimodalData]] = Registry("dataset")
register_dataset = DATASETS.register


def load_dataset(name: str, **options: Any) -> MultimodalData:
    """Load a registered dataset by name; unknown options are named in the error."""
    loader = DATASETS.get(name)
    check_options(f"dataset '{name}'", loader, options)
    return loader(**options)


def check_options(what: str, fn: Callable[..., Any], options: dict[str, Any]) -> None:
    """Reject keyword options that `fn` does not accept, suggesting the closest one."""
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    for key in options:
        if key not in params:
            err = unknown_name(f"option for {what}", key, params)
            raise MMRobustError(str(err))
