"""Turning ``--var`` strings and YAML defaults into a param's declared type.

Kept apart from the pydantic models of ``meshops.engine.playbook`` so the quick validation
path (``meshops.engine.quickcheck``) checks defaults with the very same code without
importing pydantic.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

from meshops.domain.durations import parse_duration
from meshops.domain.errors import BadInput


class ParamLike(Protocol):
    """What coercion reads of a param spec (``ParamSpec`` or the quick path's plain view of one)."""

    @property
    def type(self) -> str: ...
    @property
    def enum(self) -> list[Any] | None: ...
    @property
    def pattern(self) -> str | None: ...
    @property
    def minimum(self) -> float | str | None: ...
    @property
    def maximum(self) -> float | str | None: ...
    @property
    def min_items(self) -> int | None: ...
    @property
    def max_items(self) -> int | None: ...


_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


def coerce_param(name: str, spec: ParamLike, value: Any) -> Any:
    """Turn a --var string (or a YAML default) into the param's declared type, or raise BadInput."""
    try:
        if spec.type == "integer":
            if isinstance(value, bool):
                raise ValueError
            out: Any = int(value)
        elif spec.type == "number":
            out = float(value)
        elif spec.type == "boolean":
            if isinstance(value, bool):
                out = value
            elif str(value).lower() in _TRUE | _FALSE:
                out = str(value).lower() in _TRUE
            else:
                raise ValueError
        elif spec.type == "duration":
            parse_duration(value)
            out = value
        elif spec.type == "list":
            out = value if isinstance(value, list) else [v.strip() for v in str(value).split(",") if v.strip()]
        elif spec.type == "object":
            if not isinstance(value, dict):
                raise ValueError
            out = value
        else:
            out = str(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: int(.inf)
        raise BadInput(f"param {name}: {value!r} is not a valid {spec.type}") from None
    _check_bounds(name, spec, value, out)
    if spec.enum is not None and out not in spec.enum:
        raise BadInput(f"param {name}: {value!r} is not one of {', '.join(map(str, spec.enum))}")
    if spec.pattern is not None and isinstance(out, str) and not re.fullmatch(spec.pattern, out):
        raise BadInput(f"param {name}: {value!r} does not match {spec.pattern}")
    return out


# Integers past this are typos, not counts or ports (and do not survive JSON as numbers).
_MAX_INT = 2**53


def _bound(value: float | str) -> float:
    return parse_duration(value) if isinstance(value, str) else float(value)


def _check_bounds(name: str, spec: ParamLike, given: Any, out: Any) -> None:
    if spec.type == "integer" and abs(out) > _MAX_INT:
        raise BadInput(f"param {name}: {given!r} is out of range")
    if spec.type == "list":
        if spec.min_items is not None and len(out) < spec.min_items:
            raise BadInput(f"param {name}: needs at least {spec.min_items} item(s), got {len(out)}")
        if spec.max_items is not None and len(out) > spec.max_items:
            raise BadInput(f"param {name}: takes at most {spec.max_items} item(s), got {len(out)}")
    if spec.minimum is None and spec.maximum is None:
        return
    values = out if spec.type == "list" else [out]
    for v in values:
        try:
            number = parse_duration(v) if spec.type == "duration" else float(v)
        except (TypeError, ValueError):
            raise BadInput(f"param {name}: {v!r} is not a number") from None
        if spec.minimum is not None and number < _bound(spec.minimum):
            raise BadInput(f"param {name}: {v!r} is below the minimum {spec.minimum}")
        if spec.maximum is not None and number > _bound(spec.maximum):
            raise BadInput(f"param {name}: {v!r} is above the maximum {spec.maximum}")
