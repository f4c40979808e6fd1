"""IstioOperator overlays: parsed, checked against the modelled field set, composed in order.

A profile is an IstioOperator document. Profiles compose left to right, then ``--set``
assignments apply, last one wins:

* mappings merge key by key;
* ``components.ingressGateways`` / ``egressGateways`` merge item by item on ``name``
  (so a tuning overlay can set one gateway's resources without restating it);
* any other list, and any scalar, is replaced.

Every problem names the source (file or ``--set``), the field path and, for an unknown
field, the nearest known name. Nothing is applied when anything is wrong: these are
``BadInput`` errors, exit 2 before the first write.

``--set`` paths are relative to ``spec`` (a leading ``spec.`` is accepted) and use
``a.b[0].c`` for list indexes or ``a.b[name:x].c`` to pick (or add) the item named x.
A dot inside a free-form key (an annotation) is written ``\\.``. Values are typed by the
field: ``true``/``false`` for booleans, numbers for numbers, text otherwise.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml

from meshops.domain import iop_schema as s
from meshops.domain.errors import BadInput
from meshops.domain.tuning import parse_cpu, parse_memory

API_VERSION = "install.istio.io/v1alpha1"
KIND = "IstioOperator"
_MERGE_BY_NAME = ("ingressGateways", "egressGateways")

# Where a later canary upgrade finds the settings of the last install (meshops.ops.install_record).
RECORD_NAMESPACE = "istio-system"
RECORD_CONFIGMAP = "meshops-install-overlay"
RECORD_KEY = "overlay.yaml"
ANNOTATION_PROFILES = "meshops.dev/install-profiles"
ANNOTATION_VERSION = "meshops.dev/install-version"
ANNOTATION_REVISION = "meshops.dev/install-revision"
ANNOTATION_SHA = "meshops.dev/overlay-sha256"

Spec = dict[str, Any]


class OverlayInvalid(BadInput):
    """An overlay or ``--set`` is malformed; ``problems`` lists each field and what is wrong."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True, kw_only=True)
class Overlay:
    source: str  # a profile name, a file path, or "--set"
    spec: Spec


# ---- parsing and checking -------------------------------------------------------------------


def parse_overlay(text: str, source: str, *, skip_kinds: Iterable[str] = ()) -> Overlay:
    """The one IstioOperator document in ``text`` (documents of ``skip_kinds`` are ignored)."""
    skip = set(skip_kinds)
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        raise OverlayInvalid([f"{source}{where}: not valid YAML: {exc.problem}"]) from None
    except yaml.YAMLError as exc:
        raise OverlayInvalid([f"{source}: not valid YAML: {exc}"]) from None
    docs = [d for d in docs if not (isinstance(d, dict) and d.get("kind") in skip)]
    if len(docs) != 1:
        raise OverlayInvalid([f"{source}: expected one IstioOperator document, found {len(docs)}"])
    doc = docs[0]
    if not isinstance(doc, dict):
        raise OverlayInvalid([f"{source}: expected an IstioOperator mapping, got {type(doc).__name__}"])
    problems = []
    if doc.get("kind", KIND) != KIND:
        problems.append(f"{source}: kind: expected {KIND}, got {doc.get('kind')!r}")
    if doc.get("apiVersion", API_VERSION) != API_VERSION:
        problems.append(f"{source}: apiVersion: expected {API_VERSION}, got {doc.get('apiVersion')!r}")
    for key in doc:
        if key not in ("apiVersion", "kind", "metadata", "spec"):
            problems.append(f"{source}: {key}: unknown top-level field{_suggest(str(key), ['spec', 'metadata'])}")
    spec = doc.get("spec")
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        problems.append(f"{source}: spec: expected a mapping, got {type(spec).__name__}")
        spec = {}
    problems += [f"{source}: {p}" for p in check_spec(spec)]
    if problems:
        raise OverlayInvalid(problems)
    return Overlay(source=source, spec=spec)


def check_spec(spec: Spec) -> list[str]:
    """Every field of ``spec`` that the IstioOperator model does not have, or has with another type."""
    problems: list[str] = []
    _check(spec, s.SPEC, "spec", problems)
    return problems


def _check(value: Any, node: Any, path: str, problems: list[str]) -> None:
    if isinstance(node, dict):
        if not isinstance(value, dict):
            problems.append(f"{path}: expected a mapping, got {_typename(value)}")
            return
        for key, sub in value.items():
            if key not in node:
                problems.append(f"{path}.{key}: unknown field{_suggest(str(key), node)}")
            else:
                _check(sub, node[key], f"{path}.{key}", problems)
        return
    if isinstance(node, list):
        if not isinstance(value, list):
            problems.append(f"{path}: expected a list, got {_typename(value)}")
            return
        for i, item in enumerate(value):
            _check(item, node[0], f"{path}[{i}]", problems)
            if path.rsplit(".", 1)[-1] in _MERGE_BY_NAME and isinstance(item, dict) and not item.get("name"):
                problems.append(f"{path}[{i}].name: a gateway needs a name")
        return
    problem = _leaf_problem(value, node)
    if problem:
        problems.append(f"{path}: {problem}")


def _leaf_problem(value: Any, leaf: s.Leaf) -> str | None:
    if value is None or leaf is s.ANY:
        return None
    if leaf is s.MAP:
        return None if isinstance(value, dict) else f"expected a mapping, got {_typename(value)}"
    if leaf is s.BOOL:
        return None if isinstance(value, bool) else f"expected true or false, got {value!r}"
    if leaf is s.INT:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else f"expected a whole number, got {value!r}"
    if leaf is s.NUM:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return None if ok else f"expected a number, got {value!r}"
    if leaf is s.STR:
        return None if isinstance(value, str) else f"expected text, got {_typename(value)} {value!r}"
    if leaf in (s.CPU, s.MEM):
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            return f"expected a quantity, got {value!r}"
        try:
            (parse_cpu if leaf is s.CPU else parse_memory)(value)
        except ValueError as exc:
            return str(exc)
    return None


def _typename(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "text", bool: "a boolean"}.get(type(value), type(value).__name__)


def _suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# ---- composing ------------------------------------------------------------------------------


def merge(base: Spec, overlay: Spec) -> Spec:
    """``overlay`` over ``base`` (neither is modified): see the module docstring for the rules."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        elif key in _MERGE_BY_NAME and isinstance(value, list) and isinstance(out.get(key), list):
            out[key] = _merge_by_name(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _merge_by_name(base: list[Any], overlay: list[Any]) -> list[Any]:
    merged = copy.deepcopy(base)
    for item in overlay:
        for i, existing in enumerate(merged):
            if isinstance(existing, dict) and isinstance(item, dict) and existing.get("name") == item.get("name"):
                merged[i] = merge(existing, item)
                break
        else:
            merged.append(copy.deepcopy(item))
    return merged


def compose(overlays: Iterable[Overlay], sets: Iterable[str] = ()) -> Spec:
    """The overlays merged in order, then every ``--set``. Raises OverlayInvalid naming each bad one."""
    spec: Spec = {}
    for ov in overlays:
        spec = merge(spec, ov.spec)
    problems: list[str] = []
    for assignment in sets:
        try:
            apply_set(spec, assignment)
        except OverlayInvalid as exc:
            problems += exc.problems
    if problems:
        raise OverlayInvalid(problems)
    leftover = check_spec(spec)
    if leftover:  # cannot happen with checked inputs; kept as a guard against a merge bug
        raise OverlayInvalid([f"composed overlay: {p}" for p in leftover])
    return spec


_TOKEN = re.compile(r"\[(?P<index>\d+)\]|\[(?P<key>[A-Za-z_][\w-]*):(?P<val>[^\]]+)\]|(?P<name>(?:[^.\[\]\\]|\\.)+)")


def parse_path(path: str) -> list[str | int | tuple[str, str]]:
    """``a.b[0].c[name:x]`` -> ["a", "b", 0, "c", ("name", "x")]. Raises ValueError if malformed."""
    tokens: list[str | int | tuple[str, str]] = []
    pos = 0
    expect_name = True
    while pos < len(path):
        if path[pos] == "." and not expect_name:
            pos += 1
            expect_name = True
            continue
        m = _TOKEN.match(path, pos)
        if not m or (m.group("name") is not None and not expect_name):
            raise ValueError(f"cannot read the path at {path[pos:]!r}")
        if m.group("index") is not None:
            tokens.append(int(m.group("index")))
        elif m.group("key") is not None:
            tokens.append((m.group("key"), m.group("val")))
        else:
            tokens.append(m.group("name").replace("\\.", "."))
        pos = m.end()
        expect_name = False
    if not tokens or expect_name:
        raise ValueError("the path is empty or ends with a dot")
    return tokens


def apply_set(spec: Spec, assignment: str) -> None:
    """Apply one ``PATH=VALUE`` to ``spec`` in place, after checking PATH against the model."""
    label = f"--set {assignment}"
    path, sep, raw = assignment.partition("=")
    if not sep or not path.strip():
        raise OverlayInvalid([f"{label}: expected PATH=VALUE"])
    path = path.strip().removeprefix("spec.")
    try:
        tokens = parse_path(path)
    except ValueError as exc:
        raise OverlayInvalid([f"{label}: {exc}"]) from None
    node: Any = s.SPEC
    shown = "spec"
    for tok in tokens:
        if isinstance(tok, str):
            if node is s.MAP or node is s.ANY:
                node = s.ANY
            elif isinstance(node, dict) and tok in node:
                node = node[tok]
            elif isinstance(node, dict):
                raise OverlayInvalid([f"{label}: IstioOperator has no field {shown}.{tok}{_suggest(tok, node)}"])
            else:
                raise OverlayInvalid([f"{label}: {shown} is a {_describe(node)}, it has no field {tok!r}"])
            shown += f".{tok}"
        else:
            if isinstance(node, list):
                node = node[0]
            elif node is not s.ANY:
                raise OverlayInvalid([f"{label}: {shown} is not a list"])
            shown += f"[{tok}]" if isinstance(tok, int) else f"[{tok[0]}:{tok[1]}]"
    try:
        value = _typed_value(raw, node)
    except ValueError as exc:
        raise OverlayInvalid([f"{label}: {shown}: {exc}"]) from None
    try:
        _assign(spec, tokens, value)
    except (IndexError, TypeError) as exc:
        raise OverlayInvalid([f"{label}: {exc}"]) from None


def _describe(node: Any) -> str:
    return f"{node!r} field" if isinstance(node, s.Leaf) else "list"


def _typed_value(raw: str, node: Any) -> Any:
    if isinstance(node, dict | list) or node is s.MAP:
        raise ValueError("this is a section, not a single value; set the fields inside it")
    if node is s.STR:
        return raw
    if node is s.BOOL:
        if raw not in ("true", "false"):
            raise ValueError(f"expected true or false, got {raw!r}")
        return raw == "true"
    if node is s.INT:
        if not re.fullmatch(r"-?\d+", raw):
            raise ValueError(f"expected a whole number, got {raw!r}")
        return int(raw)
    if node is s.NUM:
        try:
            return int(raw) if re.fullmatch(r"-?\d+", raw) else float(raw)
        except ValueError:
            raise ValueError(f"expected a number, got {raw!r}") from None
    if node is s.CPU:
        parse_cpu(raw)
        return raw
    if node is s.MEM:
        parse_memory(raw)
        return raw
    # ANY: the usual istioctl reading of a bare value.
    if raw in ("true", "false"):
        return raw == "true"
    if re.fullmatch(r"-?\d+", raw):
        return int(raw)
    if re.fullmatch(r"-?\d+\.\d+", raw):
        return float(raw)
    return raw


def _assign(spec: Spec, tokens: list[str | int | tuple[str, str]], value: Any) -> None:
    node: Any = spec
    for here, nxt in itertools.pairwise(tokens):
        empty: Any = [] if not isinstance(nxt, str) else {}
        node = _child(node, here, empty, create=True)
    last = tokens[-1]
    if isinstance(last, str):
        if not isinstance(node, dict):
            raise TypeError(f"cannot set {last!r} on a {type(node).__name__}")
        node[last] = value
    elif isinstance(last, int):
        if last > len(node):
            raise IndexError(f"index [{last}] is past the end of a list of {len(node)}")
        if last == len(node):
            node.append(value)
        else:
            node[last] = value
    else:
        raise TypeError("a [key:value] selector picks a list item; name a field after it")


def _child(node: Any, tok: str | int | tuple[str, str], empty: Any, *, create: bool) -> Any:
    if isinstance(tok, str):
        if not isinstance(node, dict):
            raise TypeError(f"cannot descend into {tok!r}: not a mapping")
        if not isinstance(node.get(tok), dict | list):
            node[tok] = empty
        return node[tok]
    if not isinstance(node, list):
        raise TypeError("not a list")
    if isinstance(tok, int):
        if tok > len(node):
            raise IndexError(f"index [{tok}] is past the end of a list of {len(node)} (use [name:...] to add)")
        if tok == len(node):
            node.append(empty)
        return node[tok]
    key, val = tok
    for item in node:
        if isinstance(item, dict) and str(item.get(key)) == val:
            return item
    item = {key: val}
    node.append(item)
    return item


# ---- rendering ------------------------------------------------------------------------------


def document(spec: Spec, *, name: str = "meshops") -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name}, "spec": spec}


def render(spec: Spec, *, name: str = "meshops", header: str = "") -> str:
    """The IstioOperator document as YAML (stable key order, so diffs are meaningful)."""
    body = yaml.safe_dump(document(spec, name=name), sort_keys=True, default_flow_style=False)
    comments = "".join(f"# {line}\n" for line in header.splitlines()) if header else ""
    return comments + body


def leaves(value: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten a spec into ``path -> value`` (lists of named items keyed by ``[name:x]``)."""
    out: dict[str, Any] = {}
    if isinstance(value, dict) and value:
        for k, v in value.items():
            key = str(k).replace(".", "\\.")
            out.update(leaves(v, f"{prefix}.{key}" if prefix else key))
    elif isinstance(value, list) and value and all(isinstance(i, dict) and "name" in i for i in value):
        for item in value:
            rest = {k: v for k, v in item.items() if k != "name"}
            out.update(leaves(rest, f"{prefix}[name:{item['name']}]"))
    else:
        out[prefix] = value
    return out


def leaf_at(spec: Spec, path: str) -> tuple[bool, Any]:
    """The value at a path produced by ``leaves`` (found, value)."""
    node: Any = spec
    for tok in parse_path(path):
        if isinstance(tok, str):
            if not (isinstance(node, dict) and tok in node):
                return False, None
            node = node[tok]
        elif isinstance(tok, int):
            if not (isinstance(node, list) and tok < len(node)):
                return False, None
            node = node[tok]
        elif isinstance(node, list) and isinstance(node, list):
            match = [i for i in node if isinstance(i, dict) and str(i.get(tok[0])) == tok[1]]
            if not match:
                return False, None
            node = match[0]
        else:
            return False, None
    return True, node
