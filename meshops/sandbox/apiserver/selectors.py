"""Label and field selectors: the query-string syntax and ``metav1.LabelSelector`` objects."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from .errors import ApiError, bad_request

Obj = dict[str, Any]
Matcher = Callable[[Obj], bool]

# One requirement: `key`, `!key`, `key=v`, `key==v`, `key!=v`, `key in (a,b)`, `key notin (a,b)`.
_SET_RE = re.compile(r"^\s*(!?)\s*([A-Za-z0-9_./-]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")
_EQ_RE = re.compile(r"^\s*([A-Za-z0-9_./-]+)\s*(==|=|!=)\s*([A-Za-z0-9_.-]*)\s*$")
_EXISTS_RE = re.compile(r"^\s*(!?)\s*([A-Za-z0-9_./-]+)\s*$")
_GT_LT_RE = re.compile(r"^\s*([A-Za-z0-9_./-]+)\s*([<>])\s*(-?\d+)\s*$")


def _split_requirements(text: str) -> list[str]:
    """Split on commas that are not inside an `in (...)` value list."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p for p in parts if p.strip()]


Requirement = tuple[str, str, tuple[str, ...]]  # (key, operator, values)


def parse_label_selector(text: str | None) -> list[Requirement]:
    if not text:
        return []
    out: list[Requirement] = []
    for part in _split_requirements(text):
        if m := _SET_RE.match(part):
            if m.group(1):
                raise bad_request(f"unable to parse requirement: found '!', expected: identifier in {part!r}")
            values = tuple(v.strip() for v in m.group(4).split(",") if v.strip())
            out.append((m.group(2), m.group(3), values))
        elif m := _EQ_RE.match(part):
            op = "!=" if m.group(2) == "!=" else "="
            out.append((m.group(1), op, (m.group(3),)))
        elif m := _GT_LT_RE.match(part):
            out.append((m.group(1), ">" if m.group(2) == ">" else "<", (m.group(3),)))
        elif m := _EXISTS_RE.match(part):
            out.append((m.group(2), "!" if m.group(1) else "exists", ()))
        else:
            raise bad_request(f"unable to parse requirement: invalid label selector: {part.strip()!r}")
    return out


def _requirement_matches(labels: Mapping[str, str], req: Requirement) -> bool:
    key, op, values = req
    present = key in labels
    value = labels.get(key)
    if op == "=":
        return present and value == values[0]
    if op == "!=":
        return not present or value != values[0]
    if op == "in":
        return present and value in values
    if op == "notin":
        return not present or value not in values
    if op == "exists":
        return present
    if op == "!":
        return not present
    if op in (">", "<"):
        try:
            number = int(value) if value is not None else None
        except ValueError:
            return False
        if number is None:
            return False
        return number > int(values[0]) if op == ">" else number < int(values[0])
    return False


def labels_match(labels: Mapping[str, str] | None, requirements: list[Requirement]) -> bool:
    labels = labels or {}
    return all(_requirement_matches(labels, r) for r in requirements)


def requirements_from_label_selector(selector: Obj | None) -> list[Requirement] | None:
    """A ``metav1.LabelSelector`` as requirements; None means it matches nothing (a nil selector)."""
    if selector is None:
        return None
    reqs: list[Requirement] = [(k, "=", (str(v),)) for k, v in (selector.get("matchLabels") or {}).items()]
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    for expr in selector.get("matchExpressions") or []:
        op = ops.get(expr.get("operator", ""))
        if op is None:
            raise ApiError(422, "Invalid", f"invalid label selector operator {expr.get('operator')!r}")
        reqs.append((expr.get("key", ""), op, tuple(expr.get("values") or ())))
    return reqs


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
