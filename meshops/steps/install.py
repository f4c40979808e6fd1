"""Steps of ``playbooks/install.yaml``: snapshot, precheck, install, record, analyze.

The install runs the istioctl of the requested version (``ctx.drivers.istioctl(version)``) with the one
overlay meshops rendered, then waits for every Deployment of that revision to be
available. Its undo puts back what the snapshot saw before the run: the earlier install of
the same revision (reinstalled from istioctl's installed-state with the istioctl of that
version), or nothing (the revision is uninstalled).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from typing import Annotated, Any

from pydantic import Field

from meshops.domain import overlays
from meshops.domain.errors import PermanentStepError, TemporaryStepError
from meshops.domain.iop_schema import SPEC
from meshops.drivers.istioctl_api import IstioctlFailed
from meshops.drivers.kube_api import KubeApi, Obj
from meshops.ops import install_record as record
from meshops.ops.install_overlay import diff_text, rendered_from_text, sha256
from meshops.ops.k8s_watch import watch_until
from meshops.steps.base import Change, Step, StepContext, StepInputs, StepOutputs, StepPlan
from meshops.steps.registry import register

NAMESPACE = overlays.RECORD_NAMESPACE


def rev_label(revision: str) -> str:
    return revision or "default"


# ---- snapshot -----------------------------------------------------------------------------


class SnapshotInputs(StepInputs):
    revision: str = ""
    namespace: str = NAMESPACE


class SnapshotOutputs(StepOutputs):
    recorded: dict[str, Any] | None = None
    installed_spec: dict[str, Any] | None = None
    installed_version: str = ""


@register
class InstallSnapshot(Step[SnapshotInputs, SnapshotOutputs]):
    """What is installed before the run: meshops's record and the settings recovered from the running
    control plane (istioctl has not written an installed-state IstioOperator since 1.21, reference §1)."""

    name = "istio.install_snapshot"
    Inputs, Outputs = SnapshotInputs, SnapshotOutputs
    needs = frozenset({"kube"})
    read_only = True
    side_effect_free = True

    def run(self, inputs: SnapshotInputs, ctx: StepContext) -> SnapshotOutputs:
        kube: KubeApi = ctx.drivers.kube
        rec = record.read_recorded(kube, inputs.namespace)
        spec, version = installed_settings(kube, inputs.revision, inputs.namespace)
        return SnapshotOutputs(recorded=rec.as_dict() if rec else None, installed_spec=spec,
                               installed_version=version)

    def undo(self, inputs: SnapshotInputs, outputs: SnapshotOutputs | None, ctx: StepContext) -> None:
        return None


def installed_settings(kube: KubeApi, revision: str, namespace: str) -> tuple[dict[str, Any] | None, str]:
    """(settings recovered from the revision's running objects, its version), or (None, "") when the
    revision is not installed. Fields that cannot be recovered are simply absent here."""
    from meshops.domain.proxies import image_version
    from meshops.domain.recover import recover
    from meshops.ops.istio_settings import read_live

    live = read_live(kube, rev_label(revision), namespace)
    if live.istiod is None:
        return None, ""
    labels = (live.istiod.get("metadata") or {}).get("labels") or {}
    containers = ((live.istiod.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or []
    version = next((image_version(str(c.get("image", ""))) for c in containers if c.get("name") == "discovery"), "")
    return recover(live, namespace=namespace).spec, version or str(labels.get("operator.istio.io/version") or "")


# ---- precheck -----------------------------------------------------------------------------


class PrecheckInputs(StepInputs):
    version: str
    revision: str = ""
    istioctl: str = ""


class CheckOutputs(StepOutputs):
    messages: list[str] = Field(default_factory=list)


@register
class Precheck(Step[PrecheckInputs, CheckOutputs]):
    """``istioctl x precheck``: is the cluster fit for this Istio? Issues fail the step."""

    name = "istio.precheck"
    Inputs, Outputs = PrecheckInputs, CheckOutputs
    needs = frozenset({"kube", "istioctl"})
    read_only = True
    side_effect_free = True

    def run(self, inputs: PrecheckInputs, ctx: StepContext) -> CheckOutputs:
        args = ["x", "precheck"] + (["--revision", inputs.revision] if inputs.revision else [])
        try:
            res = ctx.drivers.istioctl(inputs.version, path=inputs.istioctl or None).run(args, timeout=ctx.wait_budget(120))
        except IstioctlFailed as exc:
            raise PermanentStepError(f"istioctl x precheck found issues: {exc.message}") from None
        lines = [ln for ln in (res.stdout + "\n" + res.stderr).splitlines() if ln.strip()]
        return CheckOutputs(messages=lines)

    def undo(self, inputs: PrecheckInputs, outputs: CheckOutputs | None, ctx: StepContext) -> None:
        return None


# ---- install ------------------------------------------------------------------------------


class InstallInputs(StepInputs):
    version: str
    revision: str = ""
    overlay: Annotated[str, Field(min_length=1)]
    namespace: str = NAMESPACE
    readiness_timeout: Annotated[float, Field(gt=0)] = 600.0
    istioctl: str = ""
    profiles: list[str] = Field(default_factory=list)  # for the plan's diff only
    previous: dict[str, Any] = Field(default_factory=dict)  # the snapshot's outputs


class InstallOutputs(StepOutputs):
    revision: str
    deployments: list[str]


@contextlib.contextmanager
def overlay_file(text: str, directory: str | None = None) -> Iterator[str]:
    """The overlay as a private file for istioctl, in the run's own temp directory when given
    (``ctx.temp_dir``: under the state dir, emptied on resume, so a kill leaves nothing in /tmp)."""
    fd, path = tempfile.mkstemp(prefix="meshops-overlay-", suffix=".yaml", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


@register
class Install(Step[InstallInputs, InstallOutputs]):
    name = "istio.install"
    Inputs, Outputs = InstallInputs, InstallOutputs
    needs = frozenset({"kube", "istioctl"})

    def plan(self, inputs: InstallInputs, ctx: StepContext) -> StepPlan:
        """The install, and (as the note) what it would change against the snapshot: ``install --diff``."""
        sha = overlays_sha(inputs.overlay)
        recorded = inputs.previous.get("recorded")
        installed = inputs.previous.get("installed_spec")
        diff = diff_text(rendered_from_text(inputs.overlay, inputs.profiles), version=inputs.version,
                         revision=inputs.revision,
                         recorded=record.RecordedInstall.from_dict(recorded) if isinstance(recorded, dict) else None,
                         installed_spec=installed if isinstance(installed, dict) else None)
        return StepPlan(changes=(Change(action="call", target=f"istioctl {inputs.version} install",
                                        detail=f"revision {rev_label(inputs.revision)}, overlay sha256 {sha[:12]}"),
                                 Change(action="wait", target=f"Deployments istio.io/rev={rev_label(inputs.revision)}",
                                        detail="available")), note=diff)

    def run(self, inputs: InstallInputs, ctx: StepContext) -> InstallOutputs:
        kube: KubeApi = ctx.drivers.kube
        ictl = ctx.drivers.istioctl(inputs.version, path=inputs.istioctl or None)
        if self._already_done(inputs, kube):
            ctx.log.info("install.already_done", revision=rev_label(inputs.revision), version=inputs.version)
        else:
            timeout = max(30.0, min(inputs.readiness_timeout, ctx.wait_budget(inputs.readiness_timeout)))
            args = ["install", "-y", "--readiness-timeout", f"{int(timeout)}s"]
            if inputs.revision:
                args += ["--revision", inputs.revision]
            ctx.log.info("install.istioctl", version=inputs.version, revision=rev_label(inputs.revision))
            with overlay_file(inputs.overlay, ctx.temp_dir) as path:
                try:
                    ictl.run([*args, "-f", path], timeout=timeout + 120)
                except IstioctlFailed as exc:
                    raise TemporaryStepError(exc.message) if exc.temporary else PermanentStepError(exc.message) from None
        ctx.check()
        ready = wait_ready(ctx, kube, inputs.namespace, inputs.revision, inputs.readiness_timeout)
        return InstallOutputs(revision=rev_label(inputs.revision), deployments=ready)

    @staticmethod
    def _already_done(inputs: InstallInputs, kube: KubeApi) -> bool:
        rec = record.read_recorded(kube, inputs.namespace)
        return (rec is not None and rec.sha256 == overlays_sha(inputs.overlay) and rec.version == inputs.version
                and rec.revision == inputs.revision
                and installed_settings(kube, inputs.revision, inputs.namespace)[1] == inputs.version)

    def undo(self, inputs: InstallInputs, outputs: InstallOutputs | None, ctx: StepContext) -> None:
        prev_spec = inputs.previous.get("installed_spec")
        prev_version = str(inputs.previous.get("installed_version") or "")
        if isinstance(prev_spec, dict) and prev_spec:
            # The revision was installed before this run: install it again as it was.
            if not prev_version:
                raise PermanentStepError("cannot restore the earlier install: its version is unknown "
                                         "(the istiod image names no version)")
            ictl = ctx.drivers.istioctl(prev_version)
            text = overlays.render(_restorable(prev_spec), name="meshops-restore")
            args = ["install", "-y", "--readiness-timeout", f"{int(inputs.readiness_timeout)}s"]
            if inputs.revision:
                args += ["--revision", inputs.revision]
            with overlay_file(text, ctx.temp_dir) as path:
                ictl.run([*args, "-f", path], timeout=inputs.readiness_timeout + 120)
            wait_ready(ctx, ctx.drivers.kube, inputs.namespace, inputs.revision, inputs.readiness_timeout)
            return
        # Nothing of this revision was installed before: remove it (idempotent).
        ictl = ctx.drivers.istioctl(inputs.version, path=inputs.istioctl or None)
        ictl.run(["uninstall", "-y", "--revision", rev_label(inputs.revision)], timeout=600)


def _restorable(spec: dict[str, Any]) -> dict[str, Any]:
    """The earlier install's recovered settings as an overlay, minus fields the model lacks."""
    out = {k: v for k, v in spec.items() if k in SPEC}
    out.pop("revision", None)  # passed as --revision
    problems = overlays.check_spec(out)
    if problems:
        # Fields of a newer or older IstioOperator than the modelled one: keep the ones known.
        for p in problems:
            ctx_path = p.split(":", 1)[0].removeprefix("spec.")
            _drop(out, ctx_path)
    return out


def _drop(spec: dict[str, Any], path: str) -> None:
    try:
        tokens = overlays.parse_path(path)
    except ValueError:
        return
    node: Any = spec
    for tok in tokens[:-1]:
        if isinstance(tok, str) and isinstance(node, dict):
            node = node.get(tok)
        elif isinstance(tok, int) and isinstance(node, list) and tok < len(node):
            node = node[tok]
        else:
            return
    last = tokens[-1]
    if isinstance(last, str) and isinstance(node, dict):
        node.pop(last, None)


def overlays_sha(text: str) -> str:
    return sha256(text)


def _deployment_ready(dep: Obj) -> bool:
    spec, status = dep.get("spec") or {}, dep.get("status") or {}
    want = int(spec.get("replicas", 1))
    return (int(status.get("observedGeneration", 0)) >= int((dep.get("metadata") or {}).get("generation", 0))
            and int(status.get("updatedReplicas", 0)) >= want and int(status.get("availableReplicas", 0)) >= want)


def wait_ready(ctx: StepContext, kube: KubeApi, namespace: str, revision: str, default_timeout: float) -> list[str]:
    """Wait (with a watch) until every Deployment of the revision's components is available."""
    selector = f"istio.io/rev={rev_label(revision)},operator.istio.io/component"
    pending: list[str] = []

    def evaluate(items: list[Obj]) -> list[str] | None:
        nonlocal pending
        if not items:
            raise PermanentStepError(f"no Deployment of revision {rev_label(revision)} in {namespace} "
                                     "after istioctl install")
        pending = sorted(d["metadata"]["name"] for d in items if not _deployment_ready(d))
        return None if pending else sorted(d["metadata"]["name"] for d in items)

    names = watch_until(ctx, kube, "apps/v1", "Deployment", namespace, evaluate=evaluate,
                        timeout=default_timeout, label_selector=selector)
    if names is None:
        raise TemporaryStepError(f"not ready after {default_timeout:g}s: Deployments {', '.join(pending)}")
    return names


# ---- record -------------------------------------------------------------------------------


class RecordInputs(StepInputs):
    overlay: Annotated[str, Field(min_length=1)]
    profiles: list[str]
    version: str
    revision: str = ""
    namespace: str = NAMESPACE
    previous: dict[str, Any] | None = None  # the snapshot's `recorded`


class RecordOutputs(StepOutputs):
    configmap: str
    sha256: str


@register
class RecordOverlay(Step[RecordInputs, RecordOutputs]):
    """Keep the overlay, profiles and version in the cluster for a later canary upgrade."""

    name = "istio.record_overlay"
    Inputs, Outputs = RecordInputs, RecordOutputs
    needs = frozenset({"kube"})

    def _record(self, inputs: RecordInputs) -> record.RecordedInstall:
        return record.RecordedInstall(overlay=inputs.overlay, profiles=tuple(inputs.profiles),
                                      version=inputs.version, revision=inputs.revision,
                                      sha256=overlays_sha(inputs.overlay))

    def plan(self, inputs: RecordInputs, ctx: StepContext) -> StepPlan:
        verb = "update" if inputs.previous else "create"
        return StepPlan(changes=(Change(action=verb, target=f"ConfigMap {inputs.namespace}/{overlays.RECORD_CONFIGMAP}",
                                        detail=f"profiles {', '.join(inputs.profiles)}, version {inputs.version}"),))

    def run(self, inputs: RecordInputs, ctx: StepContext) -> RecordOutputs:
        rec = self._record(inputs)
        kube: KubeApi = ctx.drivers.kube
        if record.read_recorded(kube, inputs.namespace) != rec:
            record.write_recorded(kube, rec, inputs.namespace)
        return RecordOutputs(configmap=f"{inputs.namespace}/{overlays.RECORD_CONFIGMAP}", sha256=rec.sha256)

    def undo(self, inputs: RecordInputs, outputs: RecordOutputs | None, ctx: StepContext) -> None:
        kube: KubeApi = ctx.drivers.kube
        if inputs.previous:
            record.write_recorded(kube, record.RecordedInstall.from_dict(inputs.previous), inputs.namespace)
        else:
            record.delete_recorded(kube, inputs.namespace)


# ---- analyze ------------------------------------------------------------------------------


class AnalyzeInputs(StepInputs):
    version: str
    revision: str = ""
    failure_threshold: Annotated[str, Field(pattern="^(Info|Warning|Error)$")] = "Error"
    istioctl: str = ""


_LEVELS = {"Info": 0, "Warning": 1, "Error": 2}


@register
class Analyze(Step[AnalyzeInputs, CheckOutputs]):
    """``istioctl analyze -A``: fails on messages at or above ``failure_threshold``."""

    name = "istio.analyze"
    Inputs, Outputs = AnalyzeInputs, CheckOutputs
    needs = frozenset({"kube", "istioctl"})
    read_only = True
    side_effect_free = True

    def run(self, inputs: AnalyzeInputs, ctx: StepContext) -> CheckOutputs:
        args = ["analyze", "--all-namespaces", "-o", "json", "--failure-threshold", inputs.failure_threshold]
        if inputs.revision:
            args += ["--revision", inputs.revision]
        res = ctx.drivers.istioctl(inputs.version, path=inputs.istioctl or None).run(args, ok_codes=(0, 79), timeout=ctx.wait_budget(300))
        try:
            items = json.loads(res.stdout) if res.stdout.strip() else []
        except ValueError:
            raise PermanentStepError(f"istioctl analyze printed something that is not JSON: {res.stdout[:200]!r}") from None
        messages = [f"{m.get('level')} {m.get('code')} {m.get('origin')}: {m.get('message')}" for m in items or []]
        bad = [m for m in items or [] if _LEVELS.get(str(m.get("level")), 0) >= _LEVELS[inputs.failure_threshold]]
        if bad or res.exit_code == 79:
            raise PermanentStepError("istioctl analyze found issues:\n  " + "\n  ".join(messages or [res.stderr.strip()]))
        return CheckOutputs(messages=messages)

    def undo(self, inputs: AnalyzeInputs, outputs: CheckOutputs | None, ctx: StepContext) -> None:
        return None
