"""Accept a playbook without pydantic, Jinja or any step module, when that is provably safe.

The full validation (``meshops.engine.playbook.validate_document``) builds pydantic models,
imports the step modules a playbook uses and parses every template with Jinja: several times
the interpreter's own start-up. This is a second, narrower checker of the same rules that
answers only "certainly valid" or "not sure":

- it knows the subset of the format it can judge exactly (plain types of plain YAML, the
  ``{{ name.attr['key'] | filter }}`` form of templates, the inputs described in
  ``meshops.steps.inputs_catalog``), and returns None for anything else: a ``when``
  expression, a retries mapping, a number where text is expected, any template it cannot
  read, a step input without a plain description, a stale catalog, ``MESHOPS_STEP_MODULES``;
- it never reports a problem: a None sends the playbook through the full validation, which
  finds and words every problem. So errors are unchanged, and "valid" here implies valid
  there (tests/unit/test_quickcheck.py checks the repository's playbooks and thousands of
  mutations of them against the full path).
"""

from __future__ import annotations

import math
import os
from typing import Any

from meshops.domain.durations import parse_duration

# The rules below restate meshops.engine.playbook's models; a test compares the two.
API_VERSION = "meshops.dev/v1"
ON_FAILURE = frozenset({"rollback", "freeze", "continue"})
TOP_KEYS = frozenset({"apiVersion", "kind", "metadata", "params", "on_failure", "steps"})
METADATA_KEYS = frozenset({"name", "description", "lock"})
PARAM_KEYS = frozenset({"type", "description", "default", "required", "enum", "pattern", "secret", "minimum",
                        "maximum", "min_items", "max_items"})
PARAM_TYPES = frozenset({"string", "integer", "number", "boolean", "duration", "list", "object"})
STEP_KEYS = frozenset({"id", "uses", "name", "with", "when", "retries", "timeout", "foreach", "concurrency",
                       "on_failure"})
RETRIES: dict[str, dict[str, Any]] = {
    "count": {"kind": "int", "ge": 0, "le": 100}, "backoff": {"kind": "float", "ge": 0},
    "factor": {"kind": "float", "ge": 1}, "max_delay": {"kind": "float", "gt": 0},
    "jitter": {"kind": "float", "ge": 0, "le": 1}}
_BIG = 2**53
# Plain character sets, not regular expressions: compiling a pattern costs more start-up than
# checking a few short strings by hand. (The models say ^...$; these are exact whole-string
# checks, which is stricter than Python's $ and the same as pydantic's.)
_LOWER = frozenset("abcdefghijklmnopqrstuvwxyz")
_DIGITS = frozenset("0123456789")
_LETTERS = _LOWER | frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_STEP_ID_REST = _LOWER | _DIGITS | frozenset("_-")
_NAME_REST = _LETTERS | _DIGITS | frozenset("_")
_KEY_REST = _NAME_REST | frozenset(".- ")
# Jinja reads these as constants or operators, not names.
_KEYWORDS = frozenset({"and", "or", "not", "in", "is", "if", "else", "elif", "true", "false", "none", "True",
                       "False", "None", "for", "recursive"})


def step_id_ok(text: str) -> bool:
    """``[a-z][a-z0-9_-]{0,62}``, the whole string."""
    return 1 <= len(text) <= 63 and text[0] in _LOWER and set(text) <= _STEP_ID_REST


def param_name_ok(text: str) -> bool:
    """``[a-zA-Z_][a-zA-Z0-9_]*``, the whole string."""
    return len(text) >= 1 and (text[0] in _LETTERS or text[0] == "_") and set(text) <= _NAME_REST


class _NotSure(Exception):
    """The quick path cannot tell; the full validation decides."""


def step_count(path: str) -> int:
    """Validate the playbook at ``path``: its step count, or PlaybookInvalid naming every problem.

    Plain YAML is read without PyYAML (``miniyaml``) and plain playbooks are proved valid here;
    anything else goes through PyYAML and the full validation, which also words every problem.
    """
    from meshops.engine import miniyaml

    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(miniyaml.MAX_BYTES + 1)
    except (OSError, UnicodeDecodeError):
        text = ""  # the full path reports it
    data = miniyaml.load(text) if text else None
    count = steps_if_valid(data) if data is not None else None
    if count is not None:
        return count
    from meshops.engine.yamlsource import load_yaml_file

    doc = load_yaml_file(path)
    count = steps_if_valid(doc.data)
    if count is not None:
        return count
    from meshops.engine.playbook import validate_document

    return len(validate_document(doc).steps)


def steps_if_valid(data: Any) -> int | None:
    """The step count of the parsed playbook ``data`` when it is certainly valid; None when only
    the full validation can tell."""
    if os.environ.get("MESHOPS_STEP_MODULES", "").strip():
        return None  # step types from outside meshops have no plain description
    from meshops.steps import inputs_catalog

    catalog = inputs_catalog.load()
    if catalog is None:
        return None
    try:
        return _playbook(data, catalog)
    except Exception:  # _NotSure, or anything unexpected: the full validation decides and words it
        return None


def _need(condition: bool) -> None:
    if not condition:
        raise _NotSure


def _str(value: Any) -> str:
    _need(type(value) is str)
    return str(value)


def _playbook(data: Any, catalog: dict[str, Any]) -> int:
    _need(type(data) is dict and set(data) <= TOP_KEYS and {"apiVersion", "kind", "metadata", "steps"} <= set(data))
    _need(_str(data["apiVersion"]) == API_VERSION and _str(data["kind"]) == "Playbook")
    if "on_failure" in data:
        _need(_str(data["on_failure"]) in ON_FAILURE)
    meta = data["metadata"]
    _need(type(meta) is dict and set(meta) <= METADATA_KEYS and len(_str(meta.get("name"))) >= 1)
    if "description" in meta:
        _str(meta["description"])
    if "lock" in meta:
        _need(type(meta["lock"]) is bool)
    params = data.get("params", {})
    _need(type(params) is dict)
    for name, spec in params.items():
        _need(param_name_ok(_str(name)))
        _param(name, spec)
    steps = data["steps"]
    _need(type(steps) is list and len(steps) >= 1)
    seen: set[str] = set()
    for step in steps:
        _step(step, catalog, params, seen)
        seen.add(step["id"])
    return len(steps)


class _Spec:
    """A param spec as ``coerce_param`` reads it (the model's defaults for absent keys)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.type: str = spec.get("type", "string")
        self.enum: list[Any] | None = spec.get("enum")
        self.pattern: str | None = spec.get("pattern")
        self.minimum: float | str | None = spec.get("minimum")
        self.maximum: float | str | None = spec.get("maximum")
        self.min_items: int | None = spec.get("min_items")
        self.max_items: int | None = spec.get("max_items")


def _param(name: str, spec: Any) -> None:
    _need(type(spec) is dict and set(spec) <= PARAM_KEYS)
    if "type" in spec:
        _need(_str(spec["type"]) in PARAM_TYPES)
    if "description" in spec:
        _str(spec["description"])
    for flag in ("required", "secret"):
        if flag in spec:
            _need(type(spec[flag]) is bool)
    if spec.get("enum") is not None:
        _need(type(spec["enum"]) is list)
    if spec.get("pattern") is not None:
        import re

        try:
            re.compile(_str(spec["pattern"]))
        except re.error:
            raise _NotSure from None
    for bound in ("minimum", "maximum"):
        value = spec.get(bound)
        _need(value is None or type(value) is str or (type(value) in (int, float) and _finite_small(value)))
    for count in ("min_items", "max_items"):
        value = spec.get(count)
        _need(value is None or (type(value) is int and value >= 0))
    if spec.get("default") is not None:
        from meshops.engine.params import coerce_param

        coerce_param(name, _Spec(spec), spec["default"])  # BadInput: not sure (the full path words it)


def _finite_small(value: int | float) -> bool:
    return math.isfinite(value) and abs(value) <= _BIG


def _step(step: Any, catalog: dict[str, Any], params: dict[str, Any], earlier: set[str]) -> None:
    _need(type(step) is dict and set(step) <= STEP_KEYS and "id" in step and "uses" in step)
    step_id = _str(step["id"])
    _need(step_id_ok(step_id) and step_id not in earlier)
    described: dict[str, Any] = catalog.get(_str(step["uses"])) or {"opaque": True}
    _need(not described["opaque"])
    if "name" in step:
        _str(step["name"])
    when = step.get("when")
    _need(when is None or type(when) is bool)  # expressions: only Jinja can parse them
    retries = step.get("retries", 0)
    if type(retries) is dict:
        _need(set(retries) <= set(RETRIES))
        for key, value in retries.items():
            _need(_accepts(RETRIES[key], value))
    else:
        _need(type(retries) is int and 0 <= retries <= 100)
    timeout = step.get("timeout")
    if type(timeout) is str:
        if _is_template(timeout):
            _references(timeout, params, earlier)
        else:
            _need(parse_duration(timeout) > 0)
    else:
        _need(timeout is None or (type(timeout) in (int, float) and _finite_small(timeout) and timeout > 0))
    foreach = step.get("foreach")
    _need(foreach is None or type(foreach) in (str, list))
    if type(foreach) is str and _is_template(foreach):
        _references(foreach, params, earlier)
    concurrency = step.get("concurrency", 1)
    if type(concurrency) is str:
        _need(_is_template(concurrency))
        _references(concurrency, params, earlier)
    else:
        _need(type(concurrency) is int and 1 <= concurrency <= 1000)
    on_failure = step.get("on_failure")
    _need(on_failure is None or (type(on_failure) is str and (on_failure in ON_FAILURE or _is_template(on_failure))))
    inputs = step.get("with", {})
    _need(type(inputs) is dict and all(type(k) is str for k in inputs))
    fields = described["fields"]
    for key, value in inputs.items():
        field = fields.get(key)
        _need(field is not None)
        templates = [s for s in _strings(value) if _is_template(s)]
        if templates:
            for text in templates:
                _references(text, params, earlier)
        else:
            _need(field["accepts"] is not None and _accepts(field["accepts"], value))
    _need(all(key in inputs for key, field in fields.items() if field["required"]))


def _is_template(value: str) -> bool:
    return "{{" in value or "{%" in value


def _strings(value: Any) -> list[str]:
    if type(value) is str:
        return [value]
    if type(value) is dict:
        return [s for v in value.values() for s in _strings(v)]
    if type(value) is list:
        return [s for v in value for s in _strings(v)]
    return []


def _references(text: str, params: dict[str, Any], earlier: set[str]) -> None:
    """Each ``{{ }}`` piece of ``text`` in the simple form, reading only declared params and earlier steps."""
    _need("{%" not in text and "{#" not in text)
    at = text.find("{{")
    while at != -1:
        end, base, first = _expression(text, at + 2)
        if base == "params" and first is not None:
            _need(first in params)
        elif base == "steps" and first is not None:
            _need(first in earlier)
        at = text.find("{{", end)


def _expression(text: str, i: int) -> tuple[int, str, str | None]:
    """``name(.attr|['key']|[0])*( | filter)* }}`` from ``i``: (the end, the name, its first attr or key).

    Jinja parses every such piece; it yields (params|steps, X) for the first ``.X`` or ``['X']``
    after the name, which is what the full validation checks.
    """
    i = _spaces(text, i)
    i, base = _name(text, i)
    first: str | None = None
    accessed = False
    while i < len(text) and text[i] in ".[":
        if text[i] == ".":
            i, key = _name(text, i + 1)
        elif i + 1 < len(text) and text[i + 1] in "'\"":
            quote = text[i + 1]
            close = text.find(quote, i + 2)
            _need(close > i + 2)
            key = text[i + 2:close]
            _need(key[0] in _LETTERS or key[0] in _DIGITS)
            _need(set(key) <= _KEY_REST)
            i = close + 1
            _need(text[i:i + 1] == "]")
            i += 1
        else:
            close = text.find("]", i)
            number = text[i + 1:close]
            _need(close != -1 and number.isascii() and number.isdigit() and (number == "0" or number[0] != "0"))
            key, i = "", close + 1
        if not accessed:
            first, accessed = (key or None), True
    i = _spaces(text, i)
    while text[i:i + 1] == "|":
        i, _filter = _name(text, _spaces(text, i + 1))
        i = _spaces(text, i)
    _need(text[i:i + 2] == "}}")
    return i + 2, base, first


def _spaces(text: str, i: int) -> int:
    while text[i:i + 1] == " ":
        i += 1
    return i


def _name(text: str, i: int) -> tuple[int, str]:
    """An identifier starting with a letter, not a Jinja keyword."""
    start = i
    _need(i < len(text) and text[i] in _LETTERS)
    while i < len(text) and text[i] in _NAME_REST:
        i += 1
    name = text[start:i]
    _need(name not in _KEYWORDS)
    return i, name


def _accepts(kind: dict[str, Any], value: Any) -> bool:
    """Whether a literal ``value`` certainly passes a field described by ``kind``."""
    name = kind["kind"]
    if name == "any":
        return True
    if name == "optional":
        return value is None or _accepts(kind["of"], value)
    if name == "str":
        # Numbers would be coerced to text and Rust's $ differs from Python's before a newline.
        if type(value) is not str or "\n" in value or not _within(len(value), kind):
            return False
        if "pattern" not in kind:
            return True
        import re

        return re.search(kind["pattern"], value) is not None
    if name == "duration":
        return type(value) is str and not _is_template(value) and parse_duration(value) >= 0
    if name == "enum":
        return type(value) is str and value in kind["values"]
    if name == "bool":
        return type(value) is bool
    if name == "int":
        return type(value) is int and abs(value) <= _BIG and _bounded(value, kind)
    if name == "float":
        return type(value) in (int, float) and _finite_small(value) and _bounded(value, kind)
    if name == "dict":
        return type(value) is dict and all(type(k) is str for k in value)
    if name == "list":
        return (type(value) is list and _within(len(value), kind)
                and all(_accepts(kind["of"], item) for item in value))
    return False


def _within(length: int, kind: dict[str, Any]) -> bool:
    return length >= kind.get("min_length", 0) and ("max_length" not in kind or length <= kind["max_length"])


def _bounded(value: float, kind: dict[str, Any]) -> bool:
    return (("ge" not in kind or value >= kind["ge"]) and ("gt" not in kind or value > kind["gt"])
            and ("le" not in kind or value <= kind["le"]) and ("lt" not in kind or value < kind["lt"]))
