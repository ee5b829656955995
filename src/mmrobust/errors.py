"""User-facing errors.

Anything a user can fix (a wrong name, a malformed file, a mismatched checkpoint) raises
`MMRobustError`; the CLI prints its message as one line and exits with code 2, so only
genuine bugs ever show a traceback.
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Iterable


class MMRobustError(ValueError):
    """A problem with the user's input, explained in one line."""


def unknown_name(kind: str, name: str, valid: Iterable[str]) -> MMRobustError:
    """Build the 'unknown X' error, suggesting the closest valid name."""
    valid = sorted(valid)
    by_case = {v.lower(): v for v in valid}  # 'UTD_MHAD' means utd_mhad before anything merely close
    close = difflib.get_close_matches(name.lower(), list(by_case), n=1, cutoff=0.4)
    hint = f" Did you mean '{by_case[close[0]]}'?" if close else ""
    return MMRobustError(f"unknown {kind} '{name}'.{hint} Valid: {', '.join(valid)}.")


def wrong_argument(caller: str, expected: str, value: object, hint: str) -> MMRobustError:
    """The one-line error for an argument of the wrong type (what `caller` takes, what it got, what to
    do), raised where it enters instead of as an AttributeError from deep inside."""
    return MMRobustError(f"{caller} takes {expected}, not a {type(value).__name__}: {hint}")


def check_int(value: object, name: str, minimum: int, maximum: int | None = None) -> int:
    """`value` as an int in [minimum, maximum], or a one-line error naming `name` (an option or a
    config key): a count of 0 or a negative seed would otherwise fail far from its cause, or not at all."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        bound = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}"
        raise MMRobustError(f"{name} must be an integer {bound}, got {value!r}")
    return value


def check_number(value: object, name: str, minimum: float, *, strict: bool = False) -> float:
    """`value` as a finite float >= `minimum` (> with `strict`), or a one-line error naming `name`."""
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    number = float(value) if ok else math.nan  # type: ignore[arg-type]
    if not math.isfinite(number) or number < minimum or (strict and number == minimum):
        raise MMRobustError(f"{name} must be a finite number {'>' if strict else '>='} {minimum:g}, got {value!r}")
    return number


def check_fraction(value: object, name: str, *, open_interval: bool = False) -> float:
    """`value` as a plain float in [0, 1] (in (0, 1) with `open_interval`: a share that must leave
    something on both sides, like a validation fraction), or a one-line error naming `name`. Numpy
    scalars count as numbers; a share outside the interval would otherwise slice or draw silently wrong."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    number = float(value) if ok else math.nan  # type: ignore[arg-type]
    inside = 0 < number < 1 if open_interval else 0 <= number <= 1
    if not inside:
        raise MMRobustError(f"{name} must be a number in {'(0, 1)' if open_interval else '[0, 1]'}, got {value!r}")
    return number
