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


class NotYetKnown(Exception):
    """Raised by a preflight context for values only a run can know (earlier steps' outputs)."""


class Unknowable(Mapping[str, Any]):
    """A mapping whose every key exists but cannot be read before the run: ``steps`` in preflight."""

    def __contains__(self, key: object) -> bool:
        return True

    def __getitem__(self, key: str) -> Any:
        raise NotYetKnown(key)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


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


# A playbook's expressions are few and rendered again and again (the preflight, then the run,
# then each foreach item): compiling one is ~0.5 ms of Jinja parsing and Python compile, and
# the compiled expression holds no state between calls, so each source is compiled once.
@lru_cache(maxsize=2048)
def _compile_expression(source: str) -> Any:
    return environment().compile_expression(source, undefined_to_none=False)


@lru_cache(maxsize=2048)
def _template(source: str) -> Any:
    return environment().from_string(source)


def render_value(value: Any, context: Mapping[str, Any]) -> Any:
    """Render every template inside ``value`` (recursively through dicts and lists)."""
    if isinstance(value, str):
        if not is_template(value):
            return value
        whole = _WHOLE_EXPR.match(value)
        try:
            if whole and "{{" not in whole.group(1) and "}}" not in whole.group(1):
                return _compile_expression(whole.group(1))(**context)
            return _template(value).render(**context)
        except NotYetKnown:
            raise
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
    except NotYetKnown:
        raise
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
        name = ""
        if isinstance(node, nodes.Getattr):
            name = node.attr
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            name = node.arg.value
        if name.startswith("_"):
            # The sandbox refuses these when rendering; refusing them here makes a playbook
            # that tries (`{{ ().__class__ }}`) bad input at load time, before any write.
            raise TemplateError(f"blocked: {name!r} is not allowed in templates (no private or dunder attributes)")
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


def _leaves(value: Any) -> Iterator[Any]:
    if isinstance(value, Mapping):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _leaves(v)
    elif value is not None and not isinstance(value, bool):
        yield value


def _reads_secret(source: str, secret_params: set[str]) -> bool:
    try:
        tree = environment().parse(source)
    except TemplateSyntaxError:
        return False
    whole_uses = sum(1 for n in tree.find_all(nodes.Name) if n.name == "params")
    fixed_uses = 0
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        base = getattr(node, "node", None)
        if isinstance(base, nodes.Name) and base.name == "params" and (
                isinstance(node, nodes.Getattr)
                or (isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str))):
            fixed_uses += 1
    named = {name for base_name, name in references(source) if base_name == "params"}
    # Any use of `params` not through a fixed name (`params[k]`, `params | dictsort`) could
    # reach a secret: count it as reading one.
    return bool(named & secret_params) or whole_uses > fixed_uses


def derived_from(template: Any, rendered: Any, secret_params: set[str]) -> Iterator[Any]:
    """The rendered values (leaves) computed by templates that read a secret param.

    ``rendered`` has the shape of ``template`` (``render_value`` keeps it), so each template
    string's result is found at the same path. Only a template that reads a secret can
    produce one, so nothing else is blanked out.
    """
    if not secret_params:
        return
    for path, source in walk_strings(template):
        if not is_template(source) or not _reads_secret(source, secret_params):
            continue
        value = rendered
        try:
            for part in path:
                value = value[part]
        except (KeyError, IndexError, TypeError):
            continue
        yield from _leaves(value)
