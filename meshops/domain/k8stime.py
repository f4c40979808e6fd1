"""Kubernetes timestamps: RFC 3339 in UTC, with (MicroTime) or without fractional seconds."""

from __future__ import annotations

from datetime import UTC, datetime

_FORMATS = ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ")


def format_micro(ts: float) -> str:
    """A MicroTime, as Lease ``acquireTime``/``renewTime`` carry."""
    return datetime.fromtimestamp(ts, UTC).strftime(_FORMATS[0])


def parse_time(text: str | None) -> float:
    """Seconds since the epoch; 0.0 for a missing or unreadable stamp (treated as "long ago")."""
    if not text:
        return 0.0
    for fmt in _FORMATS:
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC).timestamp()
        except ValueError:
            continue
    return 0.0
