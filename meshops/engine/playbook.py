"""The playbook format, its validation, and turning ``--var`` strings into typed params.

Validation collects every problem it can find, each with file, line, column and the
field path, and nothing runs unless there are none.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from meshops.domain.durations import parse_duration
from meshops.domain.errors import BadInput, PlaybookInvalid
from meshops.engine import templating
from meshops.engine.params import coerce_param as coerce_param
from meshops.engine.yamlsource import PathKey, SourceDoc, format_path, load_yaml, load_yaml_file
from meshops.steps import registry
from meshops.steps.base import StepInputs

API_VERSION = "meshops.dev/v1"
STEP_ID = r"^[a-z][a-z0-9_-]{0,62}$"
OnFailure = Literal["rollback", "freeze", "continue"]
ON_FAILURE: tuple[str, ...] = ("rollback", "freeze", "continue")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ParamSpec(_Model):
    type: Literal["string", "integer", "number", "boolean", "duration", "list", "object"] = "string"
    description: str = ""
    default: Any = None
    required: bool = False
    enum: list[Any] | None = None
    pattern: str | None = None
    secret: bool = False
    # Bounds: numbers and durations (``1s``), and each item of a list of numbers.
    minimum: float | str | None = None
    maximum: float | str | None = None
    min_items: Annotated[int, Field(ge=0)] | None = None
    max_items: Annotated[int, Field(ge=0)] | None = None

    @field_validator("pattern")
    @classmethod
    def _pattern_compiles(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return v


class Retries(_Model):
    count: Annotated[int, Field(ge=0, le=100)] = 0
    backoff: Annotated[float, Field(ge=0)] = 1.0  # first delay, seconds
    factor: Annotated[float, Field(ge=1)] = 2.0
    max_delay: Annotated[float, Field(gt=0)] = 60.0
    jitter: Annotated[float, Field(ge=0, le=1)] = 0.2


class StepSpec(_Model):
    id: Annotated[str, Field(pattern=STEP_ID)]
    uses: str
    name: str = ""
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    when: str | bool | None = None
    retries: Retries | Annotated[int, Field(ge=0, le=100)] = 0
    timeout: str | Annotated[float, Field(gt=0)] | None = None
    foreach: str | list[Any] | None = None
    concurrency: Annotated[int, Field(ge=1, le=1000)] | str = 1
    # A policy, or a template of one from params (``"{{ params.on_failure }}"``), so a command's
    # choice is a param rather than an edit of the playbook.
    on_failure: OnFailure | str | None = None

    @field_validator("on_failure")
    @classmethod
    def _on_failure_is_policy_or_template(cls, v: str | None) -> str | None:
        if v is not None and v not in ON_FAILURE and not templating.is_template(v):
            raise ValueError(f"must be one of {', '.join(ON_FAILURE)} (or a {{{{ template }}}} of one)")
        return v

    @field_validator("timeout")
    @classmethod
    def _timeout_is_duration(cls, v: str | float | None) -> str | float | None:
        if isinstance(v, str) and not templating.is_template(v) and parse_duration(v) <= 0:
            raise ValueError("must be > 0")
        return v

    @field_validator("concurrency")
    @classmethod
    def _concurrency_is_template(cls, v: int | str) -> int | str:
        if isinstance(v, str) and not templating.is_template(v):
            raise ValueError("must be >= 1 (a whole number, or a {{ template }})")
        return v

    @property
    def retry_policy(self) -> Retries:
        return self.retries if isinstance(self.retries, Retries) else Retries(count=self.retries)

    def timeout_seconds(self, rendered: Any = None) -> float | None:
        value = self.timeout if rendered is None else rendered
        return None if value is None else parse_duration(value)


class Metadata(_Model):
    name: Annotated[str, Field(min_length=1)]
    description: str = ""
    # Whether a run takes the cluster lock (a Lease). Read-only playbooks may say false.
    lock: bool = True


class Playbook(_Model):
    api_version: Literal["meshops.dev/v1"] = Field(alias="apiVersion")
    kind: Literal["Playbook"]
    metadata: Metadata
    params: dict[Annotated[str, Field(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$")], ParamSpec] = Field(default_factory=dict)
    on_failure: OnFailure = "rollback"
    steps: Annotated[list[StepSpec], Field(min_length=1)]

    def step(self, step_id: str) -> StepSpec:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(step_id)


@dataclass(frozen=True, kw_only=True)
class LoadedPlaybook:
    playbook: Playbook
    source: SourceDoc

    @property
    def path(self) -> str:
        return self.source.path


def _suggest(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _pydantic_problems(exc: ValidationError, doc: SourceDoc, prefix: PathKey = (),
                       known_fields: Callable[[PathKey], list[str]] | None = None) -> list[str]:
    """Each pydantic error as ``file:line:column: path: message``; ``known_fields`` names the
    fields allowed beside an unknown one (for did-you-mean); other documents (fleets) pass theirs."""
    known_for = known_fields or _known_fields_for
    located: list[tuple[PathKey, str, str]] = []
    for err in exc.errors():
        loc: PathKey = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith(("function-", "union["))))
        # pydantic reports the alias for `with` only when aliases are used for errors; normalise.
        loc = tuple("with" if p == "with_" else p for p in loc)
        # Union members add their type name to the location (e.g. "int", "str", "Retries"); drop those.
        loc = tuple(p for p in loc if p not in {"int", "str", "float", "bool", "list[any]", "Retries", "constrained-int"})
        full = (*prefix, *loc)
        msg = err["msg"]
        if err["type"] == "extra_forbidden" and full:
            known = known_for(full)
            msg = f"unknown field{_suggest(str(full[-1]), known)}"
        elif err["type"] == "missing":
            msg = "is required"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        located.append((full, err["type"], f"{doc.where(full)}: {format_path(full)}: {msg}"))
    # A union (`retries: 3` or a mapping) reports one error per member. A member that
    # failed only because the value had the other shape says nothing useful: drop it
    # whenever another error speaks of the same place or a deeper one.
    type_only = {"model_type", "dict_type", "int_type", "int_parsing", "string_type", "float_type",
                 "float_parsing", "bool_type", "list_type", "model_attributes_type"}
    keyed = [(tuple(problems_loc), err_type, text) for problems_loc, err_type, text in located]
    kept = []
    for loc, err_type, text in keyed:
        if err_type in type_only and any(
            other_loc[: len(loc)] == loc and other_type not in type_only for other_loc, other_type, _ in keyed
        ):
            continue
        if text not in kept:
            kept.append(text)
    return kept


def _known_fields_for(path: PathKey) -> list[str]:
    parents: dict[str, type[BaseModel]] = {"params": ParamSpec, "metadata": Metadata, "retries": Retries}
    if len(path) >= 3 and path[0] == "steps" and path[-2:-1] == ("retries",):
        return list(Retries.model_fields)
    if len(path) == 3 and path[0] == "steps":
        return [f.alias or n for n, f in StepSpec.model_fields.items()]
    if len(path) == 3 and path[0] == "params":
        return list(ParamSpec.model_fields)
    if len(path) == 2 and path[0] in parents:
        return list(parents[str(path[0])].model_fields)
    return [f.alias or n for n, f in Playbook.model_fields.items()]


def _check_inputs(step: StepSpec, index: int, inputs_model: type[StepInputs], doc: SourceDoc) -> list[str]:
    """Unknown and missing inputs, and every literal value checked against the step's Inputs.

    Templated values can only be checked once rendered, at run time.
    """
    problems = []
    fields = inputs_model.model_fields
    literal: dict[str, Any] = {}
    for key, value in step.with_.items():
        path: PathKey = ("steps", index, "with", key)
        if key not in fields:
            problems.append(f"{doc.where(path)}: {format_path(path)}: unknown input for {step.uses}"
                            f"{_suggest(key, list(fields))}")
        elif not (templating.is_template(value) or _contains_template(value)):
            literal[key] = value
    try:
        inputs_model.model_validate(literal)
    except ValidationError as exc:
        for err in exc.errors():
            if err["type"] == "missing" and len(err["loc"]) == 1:
                continue  # absent on purpose (templated) or reported below
            sub = ("steps", index, "with", *err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{doc.where(sub)}: {format_path(sub)}: {msg}")
    for name, info in fields.items():
        if info.is_required() and name not in step.with_:
            problems.append(f"{doc.where(('steps', index))}: {format_path(('steps', index, 'with', name))}: "
                            f"is required by {step.uses}")
    return problems


def _contains_template(value: Any) -> bool:
    return any(templating.is_template(s) for _, s in templating.walk_strings(value))


def _check_references(pb: Playbook, doc: SourceDoc) -> list[str]:
    problems = []
    params = list(pb.params)
    for index, step in enumerate(pb.steps):
        earlier = [s.id for s in pb.steps[:index]]
        sources: list[tuple[PathKey, str, bool]] = []
        for sub, text in templating.walk_strings(step.with_):
            sources.append((("steps", index, "with", *sub), text, False))
        for fname in ("when", "foreach", "timeout", "concurrency"):
            value = getattr(step, fname)
            if isinstance(value, str):
                sources.append((("steps", index, fname), value, fname == "when"))
        for path, text, is_expr in sources:
            if not is_expr and not templating.is_template(text):
                continue
            try:
                refs = list(templating.references(text, expression=is_expr))
            except templating.TemplateError as exc:
                problems.append(f"{doc.where(path)}: {format_path(path)}: {exc}")
                continue
            for kind, name in refs:
                if kind == "params" and name not in params:
                    problems.append(f"{doc.where(path)}: {format_path(path)}: unknown param {name!r}{_suggest(name, params)}")
                elif kind == "steps" and name not in earlier:
                    later = name in [s.id for s in pb.steps]
                    why = "is not an earlier step" if later else f"unknown step{_suggest(name, earlier)}"
                    problems.append(f"{doc.where(path)}: {format_path(path)}: steps.{name} {why}")
    return problems


def validate_document(doc: SourceDoc) -> Playbook:
    """Check a parsed playbook fully; raise PlaybookInvalid listing every problem found."""
    if not isinstance(doc.data, dict):
        raise PlaybookInvalid([f"{doc.where(())}: (document): a playbook is a mapping with apiVersion, kind, metadata and steps"])
    try:
        pb = Playbook.model_validate(doc.data)
    except ValidationError as exc:
        raise PlaybookInvalid(_pydantic_problems(exc, doc)) from None
    problems: list[str] = []
    seen: dict[str, int] = {}
    known = registry.known_names()
    for index, step in enumerate(pb.steps):
        if step.id in seen:
            problems.append(f"{doc.where(('steps', index, 'id'))}: steps[{index}].id: duplicate step id "
                            f"{step.id!r} (first at steps[{seen[step.id]}])")
        seen.setdefault(step.id, index)
        step_type = registry.get(step.uses) if step.uses in known else None
        if step_type is None:
            problems.append(f"{doc.where(('steps', index, 'uses'))}: steps[{index}].uses: unknown step type "
                            f"{step.uses!r}{_suggest(step.uses, known)}")
            continue
        problems += _check_inputs(step, index, step_type.Inputs, doc)
    for name, spec in pb.params.items():
        if spec.default is not None:
            try:
                coerce_param(name, spec, spec.default)
            except BadInput as exc:
                problems.append(f"{doc.where(('params', name, 'default'))}: params.{name}.default: "
                                f"{exc.message.removeprefix(f'param {name}: ')}")
    problems += _check_references(pb, doc)
    if problems:
        raise PlaybookInvalid(problems)
    return pb


def load_playbook(path: str) -> LoadedPlaybook:
    doc = load_yaml_file(path)
    return LoadedPlaybook(playbook=validate_document(doc), source=doc)


def load_playbook_text(text: str, *, path: str) -> LoadedPlaybook:
    doc = load_yaml(text, path=path)
    return LoadedPlaybook(playbook=validate_document(doc), source=doc)


def resolve_params(pb: Playbook, given: dict[str, Any]) -> dict[str, Any]:
    """Typed params from --var values and defaults; every unknown or missing one is reported."""
    problems = []
    for name in given:
        if name not in pb.params:
            problems.append(f"--var {name}: the playbook has no param {name!r}{_suggest(name, list(pb.params))}")
    resolved: dict[str, Any] = {}
    for name, spec in pb.params.items():
        if name in given:
            try:
                resolved[name] = coerce_param(name, spec, given[name])
            except BadInput as exc:
                problems.append(exc.message)
        elif spec.default is not None:
            resolved[name] = coerce_param(name, spec, spec.default)
        elif spec.required:
            problems.append(f"param {name} is required (pass --var {name}=...)")
        else:
            resolved[name] = None
    if problems:
        raise BadInput("; ".join(problems))
    return resolved


# For other validated documents (fleet files): one way to report problems and suggest names.
pydantic_problems = _pydantic_problems
suggest = _suggest


def json_schema() -> dict[str, Any]:
    schema = Playbook.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "meshops playbook"
    return schema
