"""Kubernetes LabelSelector evaluation, as the API server applies it to webhook selectors.

Webhooks are selected with `namespaceSelector` / `objectSelector`; an absent or empty
selector matches everything. Kept separate from the API server's own query-string
selector parser because webhook selectors are structured objects, not strings.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str] | None) -> bool:
    if not selector:
        return True
    labels = labels or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    return all(_expression_matches(expr, labels) for expr in selector.get("matchExpressions") or [])


def _expression_matches(expr: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key = expr.get("key", "")
    op = expr.get("operator", "")
    values = expr.get("values") or []
    present = key in labels
    if op == "In":
        return present and labels[key] in values
    if op == "NotIn":
        return not present or labels[key] not in values
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    # An unknown operator is rejected by a real API server when the webhook is written;
    # treat it as non-matching rather than guessing.
    return False


def equality_selector_string(labels: Mapping[str, str]) -> str:
    """{'app': 'istiod', 'istio.io/rev': 'x'} -> 'app=istiod,istio.io/rev=x' for list queries."""
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
