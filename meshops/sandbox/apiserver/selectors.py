"""Label and field selectors: the query-string syntax and ``metav1.LabelSelector`` objects."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from meshops.domain import selectors as _sel

from .errors import ApiError, bad_request

Obj = dict[str, Any]
Matcher = Callable[[Obj], bool]

# The requirement syntax and matching are meshops.domain.selectors (one implementation for the
# fake cluster, this API server and webhook selection); here they get the API server's errors.
Requirement = _sel.Requirement
labels_match = _sel.labels_match


def parse_label_selector(text: str | None) -> list[Requirement]:
    try:
        return _sel.parse_label_selector(text)
    except ValueError as exc:
        raise bad_request(str(exc)) from None


def requirements_from_label_selector(selector: Obj | None) -> list[Requirement] | None:
    """A ``metav1.LabelSelector`` as requirements; None means it matches nothing (a nil selector)."""
    try:
        return _sel.requirements_from_object(selector)
    except ValueError as exc:
        raise ApiError(422, "Invalid", str(exc)) from None


def selector_to_string(selector: Obj | None) -> str:
    """The string form of a LabelSelector, as in a Scale's status.selector."""
    if not selector:
        return ""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        op, key, values = expr.get("operator"), expr.get("key"), ",".join(expr.get("values") or [])
        if op == "In":
            parts.append(f"{key} in ({values})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({values})")
        elif op == "Exists":
            parts.append(str(key))
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


FieldRequirement = tuple[tuple[str, ...], bool, str]  # (path, equal?, value)


def parse_field_selector(text: str | None) -> list[FieldRequirement]:
    if not text:
        return []
    out: list[FieldRequirement] = []
    for part in text.split(","):
        if not part.strip():
            continue
        for op, equal in (("!=", False), ("==", True), ("=", True)):
            if op in part:
                key, _, value = part.partition(op)
                key = key.strip()
                if not key:
                    raise bad_request(f"invalid field selector: {part!r}")
                out.append((tuple(key.split(".")), equal, value.strip()))
                break
        else:
            raise bad_request(f"invalid selector: '{part}'; can't understand '{part}'")
    return out


def field_value(obj: Obj, path: tuple[str, ...]) -> str:
    node: Any = obj
    for key in path:
        if not isinstance(node, dict):
            return ""
        node = node.get(key)
    if node is None:
        return ""
    if isinstance(node, bool):
        return "true" if node else "false"
    return str(node)


def fields_match(obj: Obj, requirements: list[FieldRequirement]) -> bool:
    return all((field_value(obj, path) == value) == equal for path, equal, value in requirements)


def make_matcher(label_selector: str | None, field_selector: str | None) -> Matcher | None:
    """One predicate for both selectors, or None when there is nothing to filter."""
    labels = parse_label_selector(label_selector)
    fields = parse_field_selector(field_selector)
    if not labels and not fields:
        return None

    def matches(obj: Obj) -> bool:
        if labels and not labels_match((obj.get("metadata") or {}).get("labels"), labels):
            return False
        return not fields or fields_match(obj, fields)

    return matches
