"""Which step types exist: every class a module decorates with ``@register``.

There is one mechanism, the decorator. The built-in step modules are the modules of the
``meshops.steps`` package, imported together the first time a step type is looked up (never
for ``--help``; none of them imports a Kubernetes or AWS client, which drivers build on first
use). ``MESHOPS_STEP_MODULES`` (comma-separated module names) adds step types from outside
meshops.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import threading
from typing import Any

from meshops.domain.errors import BadInput
from meshops.steps.base import Step

_LOADED: dict[str, type[Step[Any, Any]]] = {}
_EXTRAS_DONE = False
_BUILTINS_DONE = False
_LOAD_LOCK = threading.RLock()
# Modules of this package that define no step types.
_NOT_STEPS = frozenset({"base", "registry"})


def register(cls: type[Step[Any, Any]]) -> type[Step[Any, Any]]:
    """Class decorator: make a step type available under ``cls.name``."""
    existing = _LOADED.get(cls.name)
    if existing is not None and existing is not cls:
        raise RuntimeError(f"step type {cls.name} is defined twice: {existing.__module__} and {cls.__module__}")
    _LOADED[cls.name] = cls
    return cls


def _load_builtins() -> None:
    global _BUILTINS_DONE
    # Steps of a foreach run in threads; none may see a half-filled registry.
    with _LOAD_LOCK:
        if _BUILTINS_DONE:
            return
        import meshops.steps

        for info in pkgutil.iter_modules(meshops.steps.__path__):
            if info.name not in _NOT_STEPS:
                importlib.import_module(f"meshops.steps.{info.name}")
        _BUILTINS_DONE = True


def _load_extras() -> None:
    global _EXTRAS_DONE
    if _EXTRAS_DONE:
        return
    _EXTRAS_DONE = True
    for module in filter(None, (m.strip() for m in os.environ.get("MESHOPS_STEP_MODULES", "").split(","))):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise BadInput(f"MESHOPS_STEP_MODULES names {module!r}, which cannot be imported: {exc}") from None


def known_names() -> list[str]:
    _load_builtins()
    _load_extras()
    return sorted(_LOADED)


def get(name: str) -> type[Step[Any, Any]] | None:
    if name not in _LOADED:
        _load_builtins()
        _load_extras()
    return _LOADED.get(name)
