"""Output helpers that reproduce Go's formatting: text/tabwriter, json.MarshalIndent, durations."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import yaml


def tabwrite(rows: list[list[str]], *, padding: int, minwidth: int = 0) -> str:
    """Go text/tabwriter with flags 0: every cell but the last in a row is padded to its column.

    Go treats the text after the last tab as a trailing, unaligned segment; rows here are
    built as cells joined by tabs, so the final cell of each row is never padded.
    """
    widths: dict[int, int] = {}
    for row in rows:
        for i, cell in enumerate(row[:-1]):
            widths[i] = max(widths.get(i, 0), max(minwidth, len(cell) + padding))
    lines = []
    for row in rows:
        parts = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        parts.append(row[-1] if row else "")
        lines.append("".join(parts))
    return "".join(line + "\n" for line in lines)


def go_json(value: Any, indent: str = "  ") -> str:
    """json.MarshalIndent(value, "", indent); Go escapes <, > and & in strings."""
    text = json.dumps(value, indent=indent if indent != "\t" else "\t", ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def go_yaml(value: Any) -> str:
    """sigs.k8s.io/yaml output: keys sorted, block style."""
    return yaml.safe_dump(value, sort_keys=True, default_flow_style=False, allow_unicode=True)


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        try:
            return datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None


def human_duration(seconds: float) -> str:
    """k8s.io/apimachinery/pkg/util/duration.HumanDuration, as istioctl prints ages."""
    s = int(seconds)
    if s < 0:
        s = 0
    if s < 60 * 2:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        rem = s % 60
        return f"{minutes}m{rem}s" if rem else f"{minutes}m"
    if minutes < 60 * 3:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        rem_m = minutes % 60
        return f"{hours}h{rem_m}m" if rem_m else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if hours < 24 * 8:
        rem_h = hours % 24
        return f"{days}d{rem_h}h" if rem_h else f"{days}d"
    if days < 365 * 2:
        return f"{days}d"
    return f"{days // 365}y"


def now() -> datetime:
    return datetime.now(UTC)
