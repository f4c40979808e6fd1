"""A run's secret registry: built from its secret params, and used to scrub errors.

Each run (start, resume, rollback, plan) gets a fresh registry whose parent holds the
process's credentials; nothing is module-level, so one run's secrets never leak into another's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from meshops.domain import redact
from meshops.domain.errors import MeshopsError


def new_registry(params: dict[str, Any], names: Iterable[str]) -> redact.SecretRegistry:
    """A fresh registry for a run: its secret params, whatever their length, and the process credentials."""
    registry = redact.SecretRegistry(parent=redact.CREDENTIALS)
    for name in names:
        register(registry, params.get(name))
    return registry


def register(registry: redact.SecretRegistry, value: Any) -> None:
    """Register a secret value; a dict's or list's leaves each count (a whole structure never shows)."""
    if isinstance(value, dict):
        for v in value.values():
            register(registry, v)
    elif isinstance(value, list | tuple):
        for v in value:
            register(registry, v)
    else:
        registry.add(value)


def scrub_error(exc: MeshopsError, registry: redact.SecretRegistry) -> None:
    """Scrub an error in place: the CLI prints its message after the run's registry is gone."""
    exc.message = registry.scrub_text(exc.message)
    exc.args = (exc.message,)
