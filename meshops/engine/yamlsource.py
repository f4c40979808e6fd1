"""YAML loading that remembers where every value came from.

Validation errors must name the file, line, column and field path
(``playbook.yaml:14:7: steps[3].with.concurrency: must be >= 1``), so the loader keeps a
map from each value's path to its position in the source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from meshops.domain.errors import PlaybookInvalid

PathKey = tuple[str | int, ...]


@dataclass(frozen=True, kw_only=True)
class Position:
    line: int  # 1-based
    column: int  # 1-based


@dataclass(kw_only=True)
class SourceDoc:
    """A parsed YAML document and the position of every key and value in it."""

    path: str
    text: str
    data: Any
    positions: dict[PathKey, Position] = field(default_factory=dict)

    def position_of(self, path: PathKey) -> Position:
        """The position of ``path``, or of its nearest ancestor that has one."""
        probe = tuple(path)
        while probe:
            if probe in self.positions:
                return self.positions[probe]
            probe = probe[:-1]
        return self.positions.get((), Position(line=1, column=1))

    def where(self, path: PathKey) -> str:
        pos = self.position_of(path)
        return f"{self.path}:{pos.line}:{pos.column}"


def format_path(path: PathKey) -> str:
    """``("steps", 3, "with", "concurrency")`` -> ``steps[3].with.concurrency``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(document)"


# Bounds on what a playbook or a var file may make us build. Aliases are expanded into
# plain trees here (positions need paths), so a few hundred bytes of nested aliases (a
# "billion laughs") would otherwise grow without end: count every node as expanded.
MAX_BYTES = 1024 * 1024
MAX_NODES = 100_000
MAX_DEPTH = 64
MAX_ALIASES = 1000


@dataclass(kw_only=True)
class _Budget:
    file: str
    nodes: int = 0

    def spend(self, node: yaml.Node, depth: int) -> None:
        self.nodes += 1
        where = f"{self.file}:{node.start_mark.line + 1}:{node.start_mark.column + 1}"
        if self.nodes > MAX_NODES:
            raise PlaybookInvalid([f"{where}: too many values (more than {MAX_NODES} once aliases are "
                                   "expanded); refusing to load it"])
        if depth > MAX_DEPTH:
            raise PlaybookInvalid([f"{where}: nested more than {MAX_DEPTH} levels deep; refusing to load it"])


def _construct(node: yaml.Node, path: PathKey, positions: dict[PathKey, Position], loader: yaml.SafeLoader,
               file: str, budget: _Budget | None = None) -> Any:
    budget = budget or _Budget(file=file)
    budget.spend(node, len(path))
    positions[path] = Position(line=node.start_mark.line + 1, column=node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise PlaybookInvalid([f"{file}:{key_node.start_mark.line + 1}:{key_node.start_mark.column + 1}: "
                                       f"{format_path(path)}: mapping keys must be scalars"])
            key = loader.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
            if not isinstance(key, str | int | float | bool):
                raise PlaybookInvalid([f"{file}:{key_node.start_mark.line + 1}:{key_node.start_mark.column + 1}: "
                                       f"{format_path(path)}: mapping keys must be scalars"])
            if key in result:
                raise PlaybookInvalid(
                    [f"{file}:{key_node.start_mark.line + 1}:{key_node.start_mark.column + 1}: "
                     f"{format_path((*path, str(key)))}: duplicate key"]
                )
            result[key] = _construct(value_node, (*path, str(key)), positions, loader, file, budget)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, (*path, i), positions, loader, file, budget) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)  # type: ignore[no-untyped-call]


def load_yaml(text: str, *, path: str) -> SourceDoc:
    """Parse one YAML document, keeping positions. Raises PlaybookInvalid with the location on syntax errors."""
    if len(text) > MAX_BYTES:
        raise PlaybookInvalid([f"{path}: {len(text)} characters; a playbook or var file may have at most {MAX_BYTES}"])
    if text.count("*") > MAX_ALIASES and _aliases(text) > MAX_ALIASES:
        raise PlaybookInvalid([f"{path}: more than {MAX_ALIASES} aliases; refusing to load it"])
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()  # type: ignore[no-untyped-call]
        positions: dict[PathKey, Position] = {}
        data = None if node is None else _construct(node, (), positions, loader, path)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        context = ""
        if exc.context and exc.context_mark and exc.context_mark is not mark:
            context = f" ({exc.context} at {exc.context_mark.line + 1}:{exc.context_mark.column + 1})"
        raise PlaybookInvalid([f"{where}: YAML syntax error: {exc.problem or exc}{context}"]) from None
    except yaml.YAMLError as exc:
        raise PlaybookInvalid([f"{path}: YAML error: {exc}"]) from None
    finally:
        loader.dispose()  # type: ignore[no-untyped-call]
    return SourceDoc(path=path, text=text, data=data, positions=positions)


def _aliases(text: str) -> int:
    try:
        return sum(1 for token in yaml.scan(text, Loader=yaml.SafeLoader) if isinstance(token, yaml.AliasToken))
    except yaml.YAMLError:
        return 0  # the parser reports the syntax error with its position


def load_yaml_file(path: str | Path) -> SourceDoc:
    p = Path(path)
    try:
        if p.stat().st_size > MAX_BYTES * 4:
            raise PlaybookInvalid([f"{p}: {p.stat().st_size} bytes; a playbook or var file may have at most {MAX_BYTES}"])
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlaybookInvalid([f"{p}: no such file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PlaybookInvalid([f"{p}: cannot read: {exc}"]) from None
    return load_yaml(text, path=str(p))
