"""Durations as people write them in playbooks and flags: ``90``, ``90s``, ``5m``, ``1h30m``, ``7d``."""

from __future__ import annotations

import re

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


# No wait, timeout or bake meshops runs is meant to last more than 31 days; anything longer is
# a typo (`99999999999999999999999d`) that would hang a run or overflow a deadline.
MAX_DURATION = 31 * 86400.0


def parse_duration(value: str | int | float) -> float:
    """Seconds in ``value`` (at most ``MAX_DURATION``); raises ValueError with the accepted forms."""
    seconds = _parse(value)
    if not seconds <= MAX_DURATION:  # also NaN
        raise ValueError(f"{value!r} is longer than the longest duration meshops accepts (31d)")
    return seconds


def _parse(value: str | int | float) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 5m, 1h30m or a number of seconds")
    if isinstance(value, int | float):
        if not value >= 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    text = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    pos, total = 0, 0.0
    for m in _PART.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(f"{value!r} is not a duration (examples: 30s, 5m, 1h30m, 7d, or seconds)")
    return total


def format_duration(seconds: float, *, spaced: bool = False) -> str:
    """``250ms``, ``4.2s``, ``5m03s``, ``1h02m`` (``spaced``: ``250 ms``, ``4.2 s``, ``5m 03s``, ``1h 02m``,
    as reports print them)."""
    sp = " " if spaced else ""
    if seconds < 1:
        return f"{seconds * 1000:.0f}{sp}ms"
    if seconds < 60:
        return f"{seconds:.1f}{sp}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{sp}{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{sp}{minutes:02d}m"


def duration_value(value: str | int | float) -> str | int | float:
    """``value`` unchanged once it parses as a duration: the validator of ``Duration`` step inputs.

    One named function, so the step catalog (``meshops.steps.inputs_catalog``) can tell a
    duration input from an arbitrary validator and the quick validation path can check it.
    """
    parse_duration(value)
    return value
