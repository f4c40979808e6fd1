"""Preflight: every input the run can already know is rendered and validated before it starts.

Until now a step's inputs were checked when the step ran, so a bad port or interval in a late
step was found after the early steps had written (and its undo then re-rendered the same bad
input). Here each ``with`` field that depends only on params (and, in a ``foreach`` over
params, on the item) is rendered and checked against the step's Inputs, together with
conditions, timeouts and concurrency; only values that need earlier steps' outputs wait.
Any problem is ``BadInput`` (exit 2) before the run exists: nothing written.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from meshops.domain.errors import BadInput
from meshops.engine import templating
from meshops.engine.playbook import LoadedPlaybook, StepSpec
from meshops.engine.yamlsource import format_path
from meshops.steps import registry

_UNKNOWN = object()


def preflight(loaded: LoadedPlaybook, params: dict[str, Any]) -> None:
    problems: list[str] = []
    base: dict[str, Any] = {"params": params, "steps": templating.Unknowable(), "run": {"id": "preflight"}}
    for index, spec in enumerate(loaded.playbook.steps):
        problems += _step(loaded, index, spec, base)
    if problems:
        raise BadInput("preflight found bad input, nothing was changed:\n  " + "\n  ".join(problems[:20]))


def _where(loaded: LoadedPlaybook, path: tuple[str | int, ...]) -> str:
    return f"{loaded.source.where(path)}: {format_path(path)}"


def _render(value: Any, ctx: dict[str, Any]) -> Any:
    try:
        return templating.render_value(value, ctx)
    except templating.NotYetKnown:
        return _UNKNOWN


def _step(loaded: LoadedPlaybook, index: int, spec: StepSpec, base: dict[str, Any]) -> list[str]:
    cls = registry.get(spec.uses)
    if cls is None:
        return []  # the loader reports unknown step types
    at: tuple[str | int, ...] = ("steps", index)
    problems: list[str] = []
    try:
        if isinstance(spec.when, str) and not templating.evaluate_condition(spec.when, base):
            return []  # will be skipped: its inputs (e.g. an unset optional param) do not matter
    except templating.NotYetKnown:
        pass
    except templating.TemplateError as exc:
        return [f"{_where(loaded, (*at, 'when'))}: {exc}"]
    try:
        if spec.timeout is not None:
            timeout = _render(spec.timeout, base)
            if timeout is not _UNKNOWN:
                seconds = spec.timeout_seconds(timeout)
                if seconds is not None and seconds <= 0:
                    problems.append(f"{_where(loaded, (*at, 'timeout'))}: must be more than 0")
        concurrency = _render(spec.concurrency, base)
        if concurrency is not _UNKNOWN and (not isinstance(concurrency, int) or isinstance(concurrency, bool)
                                            or not 1 <= concurrency <= 1000):
            problems.append(f"{_where(loaded, (*at, 'concurrency'))}: must be a whole number from 1 to 1000, "
                            f"got {concurrency!r}")
        items: Any = [None] if spec.foreach is None else _render(spec.foreach, base)
    except (templating.TemplateError, ValueError) as exc:
        return [*problems, f"{_where(loaded, at)}: {exc}"]
    if items is not _UNKNOWN and not isinstance(items, list):
        return [*problems, f"{_where(loaded, (*at, 'foreach'))}: must give a list, got {type(items).__name__}"]
    known: list[Any] = items if isinstance(items, list) and spec.foreach is not None else []
    contexts = [{**base, "item": item, "index": i} for i, item in enumerate(known)] or [base]
    for ctx in contexts[:1000]:
        rendered: dict[str, Any] = {}
        for key, value in spec.with_.items():
            if "item" not in ctx and spec.foreach is not None and _mentions_item(value):
                continue  # the items are not known yet
            try:
                out = _render(value, ctx)
            except templating.TemplateError as exc:
                problems.append(f"{_where(loaded, (*at, 'with', key))}: {exc}")
                continue
            if out is not _UNKNOWN:
                rendered[key] = out
        problems += _validate(loaded, at, cls.Inputs, rendered)
        if problems:
            break
    return problems


def _mentions_item(value: Any) -> bool:
    return any("item" in s or "index" in s for _, s in templating.walk_strings(value))


def _validate(loaded: LoadedPlaybook, at: tuple[str | int, ...], model: Any, rendered: dict[str, Any]) -> list[str]:
    """Check the fields that are known; a field that is missing only because it is not known yet is fine."""
    try:
        model.model_validate(rendered)
    except ValidationError as exc:
        out = []
        for err in exc.errors():
            loc = err["loc"]
            if err["type"] == "missing" or not loc or loc[0] not in rendered:
                continue
            out.append(f"{_where(loaded, (*at, 'with', *loc))}: {err['msg'].removeprefix('Value error, ')}")
        return out
    return []
