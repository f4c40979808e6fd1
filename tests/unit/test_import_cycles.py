"""The sandbox has no import cycle (bench/import_graph.py prints any); the API server's layers are
also an import-linter contract, this covers the rest of the package (the istioctl programs)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_sandbox_package_has_no_import_cycle() -> None:
    import grimp

    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "bench" / "import_graph.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["import_graph"] = module
    spec.loader.exec_module(module)
    graph = grimp.build_graph("meshops", cache_dir=None)
    modules = {m for m in graph.modules if m.startswith("meshops.sandbox.")}
    cycles = [c for c in module.strongly_connected(graph, modules) if len(c) > 1]
    assert cycles == []
