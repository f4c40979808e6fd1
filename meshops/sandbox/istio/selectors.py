"""Kubernetes LabelSelector evaluation, as the API server applies it to webhook selectors.

Webhooks are selected with `namespaceSelector` / `objectSelector`; an absent or empty
selector matches everything. The matching itself is ``meshops.domain.selectors``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from meshops.domain import selectors as _sel


def matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str] | None) -> bool:
    if not selector:
        return True
    try:
        reqs = _sel.requirements_from_object(selector) or []
    except ValueError:
        # An unknown operator is rejected by a real API server when the webhook is written;
        # treat it as non-matching rather than guessing.
        return False
    return _sel.labels_match(labels, reqs)


def equality_selector_string(labels: Mapping[str, str]) -> str:
    """{'app': 'istiod', 'istio.io/rev': 'x'} -> 'app=istiod,istio.io/rev=x' for list queries."""
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
