"""Durations as people read them in progress lines."""

from __future__ import annotations


def duration(seconds: float) -> str:
    """`95` -> "1m35s", `4000` -> "1h06m": an ETA a person reads at a glance."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
