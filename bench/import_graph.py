"""Print the import cycles (strongly connected components) inside a package.

Uses grimp, import-linter's own graph library, so what it counts is what `lint-imports` sees
(imports under `if TYPE_CHECKING:` included: they are edges for import-linter too).

    .venv/bin/python bench/import_graph.py                      # meshops.sandbox
    .venv/bin/python bench/import_graph.py meshops --all        # every component, also singletons
"""

from __future__ import annotations

import argparse
import sys

import grimp


def strongly_connected(graph: grimp.ImportGraph, modules: set[str]) -> list[list[str]]:
    """Tarjan's algorithm over the import edges between `modules` (iterative: no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    edges = {m: sorted(graph.find_modules_directly_imported_by(m) & modules) for m in modules}
    for root in sorted(modules):
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            if i < len(edges[node]):
                work.append((node, i + 1))
                nxt = edges[node][i]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return components


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", nargs="?", default="meshops.sandbox")
    parser.add_argument("--all", action="store_true", help="also list modules in no cycle")
    args = parser.parse_args(argv)
    top = args.package.split(".")[0]
    graph = grimp.build_graph(top, cache_dir=None)
    modules = {m for m in graph.modules if m == args.package or m.startswith(args.package + ".")}
    components = sorted(strongly_connected(graph, modules), key=len, reverse=True)
    cycles = [c for c in components if len(c) > 1]
    print(f"{args.package}: {len(modules)} modules, {len(cycles)} import cycle(s)")
    for component in components if args.all else cycles:
        print(f"  {len(component)} module(s): " + ", ".join(component))
    biggest = len(cycles[0]) if cycles else 1
    print(f"largest strongly connected component: {biggest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
