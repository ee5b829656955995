"""User-facing errors.

Anything a user can fix (a wrong name, a malformed file, a mismatched checkpoint) raises
`MMRobustError`; the CLI prints its message as one line and exits with code 2, so only
genuine bugs ever show a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class MMRobustError(ValueError):
    """A problem with the user's input, explained in one line."""


def unknown_name(kind: str, name: str, valid: Iterable[str]) -> MMRobustError:
    """Build the 'unknown X' error, suggesting the closest valid name."""
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.4)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return MMRobustError(f"unknown {kind} '{name}'.{hint} Valid: {', '.join(valid)}.")
