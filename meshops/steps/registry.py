"""Which step types exist: every class a module decorates with ``@register``.

There is one mechanism, the decorator; nothing lists step types by hand. Which module defines
which built-in type is derived from the sources of the ``meshops.steps`` modules (each step
class says ``name = "..."``), so a lookup imports only the module it needs and validating a
playbook never imports every step module (a unit test checks the derived catalog against what
the decorators register). ``MESHOPS_STEP_MODULES`` (comma-separated module names) adds step
types from outside meshops.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
import threading
from pathlib import Path
from typing import Any

from meshops.domain.errors import BadInput
from meshops.steps.base import Step

_LOADED: dict[str, type[Step[Any, Any]]] = {}
_EXTRAS_DONE = False
_BUILTINS_DONE = False
_LOAD_LOCK = threading.RLock()
# Modules of this package that define no step types.
_NOT_STEPS = frozenset({"base", "registry", "inputs_catalog", "_catalog_data"})
# A step class's name, at class-body indentation (pydantic fields are `name: str`, not `name = "..."`).
_NAME = re.compile(r'^    name = "([^"]+)"$', re.MULTILINE)
_CATALOG: dict[str, str] | None = None


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


def catalog() -> dict[str, str]:
    """Built-in step type name -> the module that defines it, read from the sources (no imports)."""
    global _CATALOG
    with _LOAD_LOCK:
        if _CATALOG is None:
            import meshops.steps

            found: dict[str, str] = {}
            for info in pkgutil.iter_modules(meshops.steps.__path__):
                if info.name in _NOT_STEPS:
                    continue
                path = Path(next(iter(meshops.steps.__path__)), f"{info.name}.py")
                for m in _NAME.finditer(path.read_text(encoding="utf-8") if path.is_file() else ""):
                    found[m.group(1)] = f"meshops.steps.{info.name}"
            _CATALOG = found
        return _CATALOG


def known_names() -> list[str]:
    _load_extras()
    return sorted(set(catalog()) | set(_LOADED))


def get(name: str) -> type[Step[Any, Any]] | None:
    if name in _LOADED:
        return _LOADED[name]
    module = catalog().get(name)
    if module is not None:
        importlib.import_module(module)
    else:
        _load_extras()
    if name not in _LOADED:
        _load_builtins()  # a module the source scan could not read (a zipped install): import them all
    return _LOADED.get(name)
