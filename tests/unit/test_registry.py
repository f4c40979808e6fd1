"""The step registry: one mechanism (``@register``); the catalog that keeps lookups lazy is derived."""

from __future__ import annotations

import subprocess
import sys

from meshops.steps import registry


def test_derived_catalog_is_what_the_decorators_register() -> None:
    derived = registry.catalog()
    registry._load_builtins()
    builtin = {name: cls.__module__ for name, cls in registry._LOADED.items() if cls.__module__.startswith("meshops.")}
    assert derived == builtin
    assert "istio.status" in derived and "tune.gather" in derived and len(derived) >= 30


def test_a_lookup_imports_only_the_module_it_needs() -> None:
    code = ("import sys; from meshops.steps import registry; registry.known_names(); registry.get('core.noop'); "
            "print(sorted(m for m in sys.modules if m.startswith('meshops.steps.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin"}).stdout
    assert out.strip() == "['meshops.steps.base', 'meshops.steps.core', 'meshops.steps.registry']"
