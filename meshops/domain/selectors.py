"""Kubernetes label selectors: the query-string form (``a=b,c!=d,e in (x,y),f,!g``) and the
``metav1.LabelSelector`` object form (``matchLabels``/``matchExpressions``), evaluated against labels.

The one implementation the fake cluster, the sandbox API server and the sandbox's webhook
selection share. Syntax follows apimachinery's ``labels.Parse`` (k8s.io/apimachinery/pkg/labels/
selector.go): ``=``/``==``/``!=``, ``in``/``notin`` with a parenthesised list, existence ``key`` and
``!key``, and ``>``/``<`` against integers; a bad requirement is ``ValueError``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

Requirement = tuple[str, str, tuple[str, ...]]  # (key, operator, values)

_KEY = r"[A-Za-z0-9_./-]+"
_SET_RE = re.compile(rf"^\s*(!?)\s*({_KEY})\s+(in|notin)\s*\(([^)]*)\)\s*$")
_EQ_RE = re.compile(rf"^\s*({_KEY})\s*(==|=|!=)\s*([A-Za-z0-9_.-]*)\s*$")
_EXISTS_RE = re.compile(rf"^\s*(!?)\s*({_KEY})\s*$")
_GT_LT_RE = re.compile(rf"^\s*({_KEY})\s*([<>])\s*(-?\d+)\s*$")
_OBJECT_OPS = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}


def _split_requirements(text: str) -> list[str]:
    """Split on commas that are not inside an ``in (...)`` value list."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p for p in parts if p.strip()]


def parse_label_selector(text: str | None) -> list[Requirement]:
    """The requirements of a query-string selector; empty matches everything."""
    out: list[Requirement] = []
    for part in _split_requirements(text or ""):
        if m := _SET_RE.match(part):
            if m.group(1):
                raise ValueError(f"unable to parse requirement: found '!', expected: identifier in {part!r}")
            out.append((m.group(2), m.group(3), tuple(v.strip() for v in m.group(4).split(",") if v.strip())))
        elif m := _EQ_RE.match(part):
            out.append((m.group(1), "!=" if m.group(2) == "!=" else "=", (m.group(3),)))
        elif m := _GT_LT_RE.match(part):
            out.append((m.group(1), m.group(2), (m.group(3),)))
        elif m := _EXISTS_RE.match(part):
            out.append((m.group(2), "!" if m.group(1) else "exists", ()))
        else:
            raise ValueError(f"unable to parse requirement: invalid label selector: {part.strip()!r}")
    return out


def requirement_matches(labels: Mapping[str, str], req: Requirement) -> bool:
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
    return all(requirement_matches(labels, r) for r in requirements)


def selector_matches(selector: str | None, labels: Mapping[str, str] | None) -> bool:
    """A query-string selector against labels (``ValueError`` when it does not parse)."""
    return labels_match(labels, parse_label_selector(selector))


def requirements_from_object(selector: Mapping[str, Any] | None) -> list[Requirement] | None:
    """A ``metav1.LabelSelector`` as requirements; None for a nil selector (the caller decides
    what nil means: nothing for a workload's selector, everything for a webhook's)."""
    if selector is None:
        return None
    reqs: list[Requirement] = [(k, "=", (str(v),)) for k, v in (selector.get("matchLabels") or {}).items()]
    for expr in selector.get("matchExpressions") or []:
        op = _OBJECT_OPS.get(expr.get("operator", ""))
        if op is None:
            raise ValueError(f"invalid label selector operator {expr.get('operator')!r}")
        reqs.append((expr.get("key", ""), op, tuple(expr.get("values") or ())))
    return reqs
