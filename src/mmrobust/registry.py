"""One small registry type, used for datasets, corruptions, encoders, fusions and methods (timm-style)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from .errors import MMRobustError, unknown_name

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories; unknown names fail with the closest valid suggestion."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(entry: T) -> T:
            if name in self._entries:
                raise RuntimeError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = entry
            return entry

        return decorator

    def unregister(self, name: str) -> T:
        """Remove and return an entry (e.g. a method registered for one experiment or test)."""
        entry = self.get(name)
        del self._entries[name]
        return entry

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise unknown_name(self.kind, name, self._entries)
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def check_options(what: str, fn: Callable[..., Any], options: dict[str, Any]) -> None:
    """Reject keyword options that `fn` (a registered factory) does not accept, suggesting the closest one."""
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    names = [name for name, p in params.items() if name != "self" and p.kind is not p.POSITIONAL_ONLY]
    for key in options:
        if key not in names:
            err = unknown_name(f"option for {what}", key, names)
            raise MMRobustError(str(err))
