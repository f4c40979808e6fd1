"""``{{ }}`` templating of step inputs, in a sandboxed Jinja environment.

A value that is exactly one expression (``"{{ steps.discover.outputs.revisions }}"``)
keeps its native type (a list stays a list); anything else renders to a string.
Undefined names are errors, never empty strings.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, nodes
from jinja2.sandbox import SandboxedEnvironment

_WHOLE_EXPR = re.compile(r"^\s*\{\{(.*)\}\}\s*$", re.DOTALL)


class TemplateError(Exception):
    pass


def _to_yaml(value: Any) -> str:
    import yaml

    return str(yaml.safe_dump(value, default_flow_style=False, sort_keys=False))


class _Environment(SandboxedEnvironment):
    """``params.items`` means the param named items, not ``dict.items``: keys win over attributes."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, Mapping) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)


@lru_cache(maxsize=1)
def environment() -> SandboxedEnvironment:
    env = _Environment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
    env.filters["to_yaml"] = _to_yaml
    return env


def is_template(value: object) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def _compile_expression(source: str) -> Any:
    return environment().compile_expression(source, undefined_to_none=False)


def render_value(value: Any, context: Mapping[str, Any]) -> Any:
    """Render every template inside ``value`` (recursively through dicts and lists)."""
    if isinstance(value, str):
        if not is_template(value):
            return value
        whole = _WHOLE_EXPR.match(value)
        try:
            if whole and "{{" not in whole.group(1) and "}}" not in whole.group(1):
                return _compile_expression(whole.group(1))(**context)
            return environment().from_string(value).render(**context)
        except UndefinedError as exc:
            raise TemplateError(f"{exc.message} in {value!r}") from None
        except TemplateSyntaxError as exc:
            raise TemplateError(f"template syntax error in {value!r}: {exc.message}") from None
        except Exception as exc:  # jinja surfaces user expression errors as arbitrary exceptions
            raise TemplateError(f"{type(exc).__name__}: {exc} in {value!r}") from None
    if isinstance(value, Mapping):
        return {k: render_value(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [render_value(v, context) for v in value]
    return value


def evaluate_condition(value: str | bool | None, context: Mapping[str, Any]) -> bool:
    """A ``when`` condition: a bool, a bare expression, or ``{{ expression }}``."""
    if value is None:
        return True
    if isinstance(value, bool):
        return value
    source = value
    whole = _WHOLE_EXPR.match(source)
    if whole:
        source = whole.group(1)
    try:
        return bool(_compile_expression(source)(**context))
    except UndefinedError as exc:
        raise TemplateError(f"{exc.message} in when: {value!r}") from None
    except TemplateSyntaxError as exc:
        raise TemplateError(f"syntax error in when: {value!r}: {exc.message}") from None
    except Exception as exc:
        raise TemplateError(f"{type(exc).__name__}: {exc} in when: {value!r}") from None


def references(source: str, *, expression: bool = False) -> Iterator[tuple[str, str]]:
    """The ``params.X`` and ``steps.Y`` names a template reads, for static validation.

    Raises TemplateError on a syntax error.
    """
    env = environment()
    try:
        if expression:
            whole = _WHOLE_EXPR.match(source)
            tree: nodes.Node = env.parse("{{ " + (whole.group(1) if whole else source) + " }}")
        else:
            tree = env.parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"template syntax error: {exc.message}") from None
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        base = getattr(node, "node", None)
        if isinstance(base, nodes.Name) and base.name in ("params", "steps"):
            if isinstance(node, nodes.Getattr):
                yield base.name, node.attr
            elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
                yield base.name, node.arg.value


def walk_strings(value: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple[str | int, ...], str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from walk_strings(v, (*path, str(k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from walk_strings(v, (*path, i))
