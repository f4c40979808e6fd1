"""The fleet file: clusters with labels, one job, and waves that select clusters in order.

Validated like a playbook (pydantic model, JSON Schema, ``file:line:column: field: message``
with did-you-mean), and every problem is reported at once: nothing starts unless there are
none. Waves are resolved here, once: each cluster runs in the first wave whose selector
matches it, in the file's order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from meshops.domain.durations import parse_duration
from meshops.domain.errors import BadInput, PlaybookInvalid
from meshops.engine.playbook import load_playbook, pydantic_problems, resolve_params, suggest
from meshops.engine.yamlsource import PathKey, SourceDoc, format_path, load_yaml, load_yaml_file

# A DNS label: cluster and wave names become Argo task names, CI job ids and directory names.
NAME = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
# meshops commands that make one run against one cluster (a fleet job is one of these, or a playbook).
COMMANDS = ("upgrade", "install", "tune", "switchover")
# Global options the fleet sets for every cluster itself: a job must not set them.
RESERVED_ARGS = ("--context", "--kubeconfig", "--state-dir", "--log-format", "--dry-run")
GateKind = Literal["none", "pause", "approve"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ClusterSpec(_Model):
    name: Annotated[str, Field(pattern=NAME)]
    context: str = ""  # kube context; default: the cluster's name
    kubeconfig: str = ""  # default: the fleet command's --kubeconfig / $KUBECONFIG
    # Renderers: a kubeconfig Secret per cluster by default, or run in-cluster under this account.
    service_account: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    args: list[str] = Field(default_factory=list)  # appended to a command job's args
    params: dict[str, Any] = Field(default_factory=dict)  # over a playbook job's params

    @property
    def kube_context(self) -> str:
        return self.context or self.name


class JobSpec(_Model):
    command: Literal["upgrade", "install", "tune", "switchover"] | None = None
    args: list[str] = Field(default_factory=list)
    playbook: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)


class WaveSpec(_Model):
    name: Annotated[str, Field(pattern=NAME)]
    # label -> value, or a list of values any of which matches; {} selects every cluster left.
    selector: dict[str, str | list[str]] = Field(default_factory=dict)
    clusters: list[str] = Field(default_factory=list)  # by name, instead of (or beside) a selector
    max_parallel: Annotated[int, Field(ge=1, le=1000)] = 1
    max_failures: Annotated[int, Field(ge=0)] = 0  # the failure budget: more than this stops the fleet
    gate: GateKind = "none"  # before the wave: pause (resume continues) or approve (meshops approve)
    soak: str = "0s"  # after the wave succeeds, before the next one starts

    @field_validator("soak")
    @classmethod
    def _soak_is_duration(cls, v: str) -> str:
        parse_duration(v)
        return v

    @property
    def soak_seconds(self) -> float:
        return parse_duration(self.soak)

    def selects(self, cluster: ClusterSpec) -> bool:
        if cluster.name in self.clusters:
            return True
        if not self.selector:
            return not self.clusters
        for key, want in self.selector.items():
            have = cluster.labels.get(key)
            if have is None or have not in ([want] if isinstance(want, str) else want):
                return False
        return True


class Metadata(_Model):
    name: Annotated[str, Field(pattern=NAME)]
    description: str = ""


class Fleet(_Model):
    api_version: Literal["meshops.dev/v1"] = Field(alias="apiVersion")
    kind: Literal["Fleet"]
    metadata: Metadata
    # What the Argo/CI renders run; "" in CI renders: runners (shell executors) with meshops installed.
    image: str = "ghcr.io/meshops/meshops:0.1.0"
    schedule: str = ""  # cron, for CronWorkflow and CI schedules
    clusters: Annotated[list[ClusterSpec], Field(min_length=1)]
    job: JobSpec
    waves: Annotated[list[WaveSpec], Field(min_length=1)]

    def cluster(self, name: str) -> ClusterSpec:
        for c in self.clusters:
            if c.name == name:
                return c
        raise KeyError(name)


@dataclass(frozen=True, kw_only=True)
class Wave:
    spec: WaveSpec
    clusters: list[str]  # in file order

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True, kw_only=True)
class LoadedFleet:
    fleet: Fleet
    source: SourceDoc
    waves: list[Wave]

    @property
    def path(self) -> str:
        return self.source.path

    @property
    def name(self) -> str:
        return self.fleet.metadata.name

    def wave_of(self, cluster: str) -> Wave:
        return next(w for w in self.waves if cluster in w.clusters)

    def job_argv(self, cluster: str) -> list[str]:
        """The meshops arguments (after the global options) of ``cluster``'s job."""
        spec = self.fleet.cluster(cluster)
        job = self.fleet.job
        if job.command:
            return [job.command, *job.args, *spec.args]
        assert job.playbook is not None
        params = {**job.params, **spec.params}
        return ["run", self.playbook_path(), *[a for k, v in params.items() for a in ("--var", f"{k}={_var(v)}")]]

    def child_argv(self, cluster: str, tail: list[str], *, state_dir: str | Path, kubeconfig: str | None,
                   json_logs: bool = True) -> list[str]:
        """Global options for ``cluster`` (context, kubeconfig, state dir), then ``tail``."""
        spec = self.fleet.cluster(cluster)
        argv = ["--context", spec.kube_context, "--state-dir", str(state_dir)]
        if json_logs:
            argv += ["--log-format", "json"]
        own = str(Path(self.path).parent / spec.kubeconfig) if spec.kubeconfig else kubeconfig
        return [*argv, *(["--kubeconfig", own] if own else []), *tail]

    def dry_run_argv(self, cluster: str) -> list[str]:
        argv = self.job_argv(cluster)
        return ["plan", *argv[1:]] if argv[0] == "run" else [*argv, "--dry-run"]

    def playbook_path(self) -> str:
        assert self.fleet.job.playbook is not None
        return str((Path(self.path).parent / self.fleet.job.playbook).resolve())


def _var(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _known_fields(path: PathKey) -> list[str]:
    nested: dict[str, type[BaseModel]] = {"clusters": ClusterSpec, "waves": WaveSpec}
    if len(path) == 3 and path[0] in nested:
        return list(nested[str(path[0])].model_fields)
    if len(path) == 2 and path[0] == "job":
        return list(JobSpec.model_fields)
    if len(path) == 2 and path[0] == "metadata":
        return list(Metadata.model_fields)
    return [f.alias or n for n, f in Fleet.model_fields.items()]


def _check_job(fleet: Fleet, doc: SourceDoc) -> list[str]:
    job, problems = fleet.job, []
    if bool(job.command) == bool(job.playbook):
        problems.append(f"{doc.where(('job',))}: job: give exactly one of command (one of {', '.join(COMMANDS)}) "
                        "or playbook")
    if job.command and job.params:
        problems.append(f"{doc.where(('job', 'params'))}: job.params: params are for a playbook job; "
                        "a command takes args")
    arg_lists: list[tuple[PathKey, list[str]]] = [(("job", "args"), job.args)]
    arg_lists += [(("clusters", i, "args"), c.args) for i, c in enumerate(fleet.clusters)]
    for path, args in arg_lists:
        for j, arg in enumerate(args):
            flag = arg.split("=", 1)[0]
            if flag in RESERVED_ARGS:
                where = (*path, j)
                problems.append(f"{doc.where(where)}: {format_path(where)}: {flag} is set by the fleet for each "
                                "cluster (context, kubeconfig, state dir); remove it")
    if job.playbook and not problems:
        problems += _check_playbook(fleet, doc)
    return problems


def _check_playbook(fleet: Fleet, doc: SourceDoc) -> list[str]:
    assert fleet.job.playbook is not None
    path = Path(doc.path).parent / fleet.job.playbook
    try:
        loaded = load_playbook(str(path))
    except PlaybookInvalid as exc:
        return [f"{doc.where(('job', 'playbook'))}: job.playbook: {p}" for p in exc.problems]
    problems = []
    for name, spec in loaded.playbook.params.items():
        places: list[PathKey] = [("job", "params", name)] if name in fleet.job.params else []
        places += [("clusters", i, "params", name) for i, c in enumerate(fleet.clusters) if name in c.params]
        for where in places if spec.secret else []:
            problems.append(f"{doc.where(where)}: {format_path(where)}: a secret param stays out of the fleet file "
                            f"(and off command lines): set MESHOPS_PARAM_{name.upper()} in the fleet's environment")
    for i, c in enumerate(fleet.clusters):
        try:
            given: dict[str, Any] = {k: _var(v) for k, v in {**fleet.job.params, **c.params}.items()}
            # Secret params reach each child from the environment, as they reach `meshops run`.
            given.update({n: os.environ[f"MESHOPS_PARAM_{n.upper()}"] for n, p in loaded.playbook.params.items()
                          if p.secret and f"MESHOPS_PARAM_{n.upper()}" in os.environ})
            resolve_params(loaded.playbook, given)
        except BadInput as exc:
            at: PathKey = ("clusters", i, "params") if c.params else ("job", "params")
            problems.append(f"{doc.where(at)}: clusters[{i}] ({c.name}): {exc.message}")
    return problems


def _resolve_waves(fleet: Fleet, doc: SourceDoc) -> tuple[list[Wave], list[str]]:
    problems: list[str] = []
    names = [c.name for c in fleet.clusters]
    for kind, items in (("clusters", names), ("waves", [w.name for w in fleet.waves])):
        seen: set[str] = set()
        for i, n in enumerate(items):
            if n in seen:
                problems.append(f"{doc.where((kind, i, 'name'))}: {kind}[{i}].name: duplicate name {n!r}")
            seen.add(n)
    taken: set[str] = set()
    waves = []
    for i, spec in enumerate(fleet.waves):
        for j, n in enumerate(spec.clusters):
            if n not in names:
                where = ("waves", i, "clusters", j)
                problems.append(f"{doc.where(where)}: {format_path(where)}: unknown cluster {n!r}{suggest(n, names)}")
        chosen = [c.name for c in fleet.clusters if c.name not in taken and spec.selects(c)]
        if not chosen:
            problems.append(f"{doc.where(('waves', i))}: waves[{i}] ({spec.name}): selects no cluster "
                            "(each cluster runs in the first wave that selects it)")
        taken.update(chosen)
        waves.append(Wave(spec=spec, clusters=chosen))
    for i, n in enumerate(names):
        if n not in taken:
            problems.append(f"{doc.where(('clusters', i))}: clusters[{i}] ({n}): no wave selects it")
    return waves, problems


def validate_document(doc: SourceDoc) -> LoadedFleet:
    if not isinstance(doc.data, dict):
        raise PlaybookInvalid([f"{doc.where(())}: (document): a fleet is a mapping with apiVersion, kind, metadata, "
                               "clusters, job and waves"])
    try:
        fleet = Fleet.model_validate(doc.data)
    except ValidationError as exc:
        raise PlaybookInvalid(pydantic_problems(exc, doc, known_fields=_known_fields)) from None
    waves, problems = _resolve_waves(fleet, doc)
    problems += _check_job(fleet, doc)
    if problems:
        raise PlaybookInvalid(problems)
    return LoadedFleet(fleet=fleet, source=doc, waves=waves)


def load_fleet(path: str) -> LoadedFleet:
    return validate_document(load_yaml_file(path))


def load_fleet_text(text: str, *, path: str) -> LoadedFleet:
    return validate_document(load_yaml(text, path=path))


def json_schema() -> dict[str, Any]:
    schema = Fleet.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "meshops fleet"
    return schema
