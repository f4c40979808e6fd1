"""``istio.upgrade_check``: decide whether an upgrade may start, and plan it, before any write.

Every refusal is a ``PreconditionFailed`` (exit 2, nothing changed) naming each reason at
once: an unknown target, skew beyond the strategy's limit, a data plane that would run
ahead of (or too far behind) its control plane, a Kubernetes the target does not support,
no istioctl of exactly the target version, ``istioctl x precheck`` findings, a bad or
reserved revision name, a protected context for in-place. Another run holding the lock
is ``LockHeld`` (exit 4). What needs a human but does not block (naked pods, opted-out
pods, OnDelete StatefulSets, Jobs, labels that override others) is reported in the outputs.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field

from meshops.domain import overlays
from meshops.domain.errors import BadInput, PreconditionFailed
from meshops.domain.identity import protected_by
from meshops.domain.mesh import MeshSnapshot
from meshops.domain.mesh_plan import PlanError, plan_upgrade
from meshops.domain.versions import (
    IstioVersion,
    KubeVersion,
    Strategy,
    VersionError,
    compatibility_problem,
    kube_support_problem,
    proxy_skew_problem,
    revision_name,
    revision_problem,
    skew_problem,
    support_for,
    tag_problem,
)
from meshops.drivers.istioctl_api import IstioctlFailed
from meshops.ops import istio_settings
from meshops.ops.install_record import read_recorded
from meshops.ops.istio_common import ISTIO_NAMESPACE, kube_of, tag_backup
from meshops.steps.base import Change, Step, StepContext, StepInputs, StepOutputs, StepPlan
from meshops.steps.istio_discover import check_lock, snapshot
from meshops.steps.istio_gateways import gateway_backup
from meshops.steps.registry import register


class CheckInputs(StepInputs):
    to: Annotated[str, Field(min_length=1)]
    strategy: Literal["canary", "inplace"] = "canary"
    revision: str = ""  # the new revision's name; default: from the version (1.25.2 -> 1-25-2)
    from_revision: str = ""
    mode: Literal["tags", "relabel"] = "tags"
    first: list[str] = Field(default_factory=list)
    wave_size: Annotated[int, Field(ge=0)] = 0  # 0: growing waves (growth, max_wave_size); N: equal waves of N
    growth: Annotated[float, Field(ge=1, allow_inf_nan=False)] = 2.0
    max_wave_size: Annotated[int, Field(ge=0)] = 0  # 0: no cap
    order: Literal["size", "name", "risk"] = "size"
    concurrency: Annotated[int, Field(ge=1)] = 20
    stable_tag: str = "prod-stable"
    canary_tag: str = "prod-canary"
    istioctl: str = ""
    protect: list[str] = Field(default_factory=lambda: ["prod*"])
    force: bool = False
    gateways: Literal["inplace", "canary", "skip"] = "inplace"
    prometheus: str = ""
    gate_exprs: list[str] = Field(default_factory=list)
    probes: list[str] = Field(default_factory=list)
    skip_istioctl_precheck: bool = False
    istio_namespace: str = ISTIO_NAMESPACE
    profiles: list[str] = Field(default_factory=list)  # user overlays on top of the recovered settings
    sets: list[str] = Field(default_factory=list)
    accept_defaults: list[str] = Field(default_factory=list)  # unrecoverable fields left to the target's defaults
    compatibility_version: str = ""
    dry_run: bool = False  # --dry-run: a predicted parity difference refuses here (exit 2)


class CheckOutputs(StepOutputs):
    strategy: str
    from_revision: str
    from_version: str
    to_revision: str
    to_version: str
    plan: dict[str, Any]
    backup: list[dict[str, Any]]
    overlay: str
    overlay_source: str
    blockers: list[dict[str, Any]]
    holders: list[str]
    gateways: list[dict[str, Any]]
    notes: list[str]
    settings_sources: dict[str, str] = Field(default_factory=dict)
    requested: list[str] = Field(default_factory=list)
    accepted_defaults: dict[str, str] = Field(default_factory=dict)
    predicted_drift: list[str] = Field(default_factory=list)
    policy_before: dict[str, Any] = Field(default_factory=dict)
    settings_overlay: str = ""  # the new revision's whole settings (recorded for the next upgrade)
    previous_record: dict[str, Any] | None = None
    gateway_backup: list[dict[str, Any]] = Field(default_factory=list)  # istioctl gateways as they were


def _spec_without_version(text: str) -> dict[str, Any]:
    """The overlay's spec without what pins it to the old install: its image tag and revision (the
    istioctl of the target version supplies the one, the command line the other)."""
    doc = yaml.safe_load(text) if text.strip() else {}
    spec: dict[str, Any] = dict((doc or {}).get("spec") or {})
    for key in ("revision", "tag"):
        spec.pop(key, None)
    return spec


def inplace_overlay(text: str) -> str:
    """The current settings, for the same revision at the target version (gateways included)."""
    return overlays.render(_spec_without_version(text), name="meshops-inplace",
                           header="Written by meshops: the current revision's settings.")


def canary_overlay(text: str) -> str:
    """The current settings, for a new revision of istiod only: gateways off (so they are not
    upgraded in place, istio/istio#26019), no revision/tag/default-revision of the old one."""
    spec = _spec_without_version(text)
    values = spec.get("values")
    if isinstance(values, dict):
        values = dict(values)
        for key in ("revisionTags", "defaultRevision"):
            values.pop(key, None)
        spec["values"] = values
    components = dict(spec.get("components") or {})
    for kind, default_name in (("ingressGateways", "istio-ingressgateway"), ("egressGateways", "istio-egressgateway")):
        listed = [dict(g) for g in components.get(kind) or [] if isinstance(g, dict)]
        if not any(g.get("name") == default_name for g in listed):
            listed.append({"name": default_name})
        components[kind] = [{**g, "enabled": False} for g in listed]
    spec["components"] = components
    return overlays.render(spec, name="meshops-canary", header="Written by meshops: the current revision's settings, "
                                                            "istiod only.")


def _version_problems(snap: MeshSnapshot, old: str, target: IstioVersion, strategy: Strategy) -> list[str]:
    problems = []
    rev = snap.revisions.get(old)
    current_text = (rev.version if rev else None) or ""
    try:
        current = IstioVersion.parse(current_text)
    except VersionError:
        return [f"cannot tell the version of revision {old} (istiod image tag {current_text!r})"]
    if (p := skew_problem(current, target, strategy)) is not None:
        problems.append(p)
    for version, count in sorted(snap.proxies_by_version().items()):
        try:
            proxy = IstioVersion.parse(version)
        except VersionError:
            continue
        # In place, every proxy keeps talking to the upgraded istiod until it restarts; in a
        # canary, proxies move with their restart. Either way none may run ahead of its istiod.
        serving = target if strategy is Strategy.INPLACE else current
        if (p := proxy_skew_problem(proxy, serving)) is not None and proxy > current:
            problems.append(f"{count} proxies: {p}")
        elif strategy is Strategy.INPLACE and (p := proxy_skew_problem(proxy, target)) is not None:
            problems.append(f"{count} proxies at {version} would be served by {target}: {p}; restart them onto "
                            f"{current} first")
    if rev is not None and not rev.ready:
        problems.append(f"the current control plane istiod of revision {old} is not ready; fix it before upgrading")
    return problems


@register
class UpgradeCheck(Step[CheckInputs, CheckOutputs]):
    """Checks skew, Kubernetes support, istioctl, revision name, lock and protection; plans the waves."""

    name = "istio.upgrade_check"
    Inputs, Outputs = CheckInputs, CheckOutputs
    needs = frozenset({"kube", "istioctl"})
    read_only = True
    side_effect_free = True

    def plan(self, inputs: CheckInputs, ctx: StepContext) -> StepPlan:
        return StepPlan(changes=(Change(action="none", target="mesh", detail="read only"),))

    def run(self, inputs: CheckInputs, ctx: StepContext) -> CheckOutputs:
        strategy = Strategy(inputs.strategy)
        try:
            target = IstioVersion.parse(inputs.to)
            support_for(target)
        except VersionError as exc:
            raise BadInput(str(exc)) from None
        kube = kube_of(ctx)
        check_lock(ctx, kube)
        snap = snapshot(ctx, kube, max_age=15.0, istio_namespace=inputs.istio_namespace)
        problems: list[str] = []
        old = inputs.from_revision or snap.default_revision() or ""
        if old not in snap.revisions:
            raise PreconditionFailed(f"no Istio control plane revision {old or '(default)'} found in "
                                     f"{inputs.istio_namespace} (revisions: {', '.join(snap.revisions) or 'none'})")
        problems += _version_problems(snap, old, target, strategy)
        if (p := kube_support_problem(target, KubeVersion.parse(snap.kube_version))) is not None:
            problems.append(p)
        new = old if strategy is Strategy.INPLACE else (inputs.revision or revision_name(target))
        notes: list[str] = []
        if strategy is Strategy.CANARY:
            problems += self._revision_problems(snap, new, old, target)
            for tag in (inputs.stable_tag, inputs.canary_tag):
                if (p := tag_problem(tag)) is not None:
                    problems.append(p)
            if inputs.stable_tag == inputs.canary_tag:
                problems.append("the stable and canary tags must differ")
        else:
            protected = protected_by(inputs.protect, kube.context, str(getattr(kube, "server", "") or ""))
            if protected and not inputs.force:
                problems.append(f"context {kube.context!r} matches --protect {', '.join(protected)}: an in-place "
                                "upgrade is refused there (use --strategy canary, or --force)")
        problems += self._gate_problems(inputs)
        if inputs.compatibility_version and (p := compatibility_problem(target, inputs.compatibility_version)):
            problems.append(p)
        try:
            settings: istio_settings.Settings | None = self._settings(kube, old, inputs, target)
        except (PreconditionFailed, BadInput) as exc:
            problems.append(exc.message)
            settings = None
        try:
            plan = plan_upgrade(snap, old=old, new=new, mode=inputs.mode if strategy is Strategy.CANARY else "restart",
                                first=inputs.first, wave_size=inputs.wave_size, growth=inputs.growth,
                                max_wave_size=inputs.max_wave_size, order=inputs.order,
                                stable_tag=inputs.stable_tag, canary_tag=inputs.canary_tag)
        except PlanError as exc:
            problems.append(str(exc))
            plan = None
        problems += self._istioctl_problems(ctx, inputs, new if strategy is Strategy.CANARY else "",
                                            precheck=not problems)
        if problems:
            raise PreconditionFailed("the upgrade cannot start:\n  - " + "\n  - ".join(problems))
        assert plan is not None and settings is not None
        previous = read_recorded(kube, inputs.istio_namespace)
        text = overlays.render(settings.spec, name="meshops-settings")
        text = canary_overlay(text) if strategy is Strategy.CANARY else inplace_overlay(text)
        source = settings.source
        drift = istio_settings.predicted_drift(settings)
        if drift and inputs.dry_run:
            raise PreconditionFailed("the new revision would not keep the running settings (parity gate):\n  - "
                                     + "\n  - ".join(drift))
        if drift:
            notes.append("parity: the planned overlay differs from the running control plane in "
                         + "; ".join(drift) + " (the parity gate stops the run before any namespace moves)")
        for field_, why in sorted(settings.accepted.items()):
            notes.append(f"--accept-defaults {field_}: not recoverable ({why}); the target's default applies")
        blockers = [b.as_dict() for b in snap.blockers(old)]
        holders = sorted(b["ref"] for b in blockers if b["holds_old"])
        gateways = [{"kind": w.kind, "namespace": w.namespace, "name": w.name, "mode": w.gateway,
                     "revision": snap.gateway_revision(w), "replicas": w.replicas}
                    for w in snap.gateways() if snap.gateway_revision(w) == old]
        if holders:
            notes.append(f"{len(holders)} workload(s) meshops will not restart keep revision {old} alive: "
                         + ", ".join(holders[:20]) + (" ..." if len(holders) > 20 else ""))
        if gateways and strategy is Strategy.CANARY and inputs.gateways == "skip":
            notes.append(f"--gateways skip: {len(gateways)} gateway(s) stay on {old}, so it cannot be uninstalled")
        for b in blockers:
            ctx.log.warning("upgrade.blocker", kind=b["kind"], ref=b["ref"], detail=b["detail"])
        tags = sorted({*snap.tags(), *plan.tags_before, "default"})
        backup = tag_backup(kube, snap, tags, istio_namespace=inputs.istio_namespace) \
            if strategy is Strategy.CANARY else []
        rev = snap.revisions[old]
        ctx.log.info("upgrade.planned", old=old, new=new, waves=len(plan.waves), workloads=plan.workloads,
                     overlay=source)
        return CheckOutputs(strategy=strategy.value, from_revision=old, from_version=rev.version or "",
                            to_revision=new, to_version=str(target), plan=plan.as_dict(), backup=backup,
                            overlay=text, overlay_source=source, blockers=blockers, holders=holders,
                            gateways=gateways, notes=notes, settings_sources=settings.sources,
                            requested=list(settings.requested), accepted_defaults=settings.accepted,
                            predicted_drift=drift,
                            settings_overlay=overlays.render(settings.spec, name="meshops-install",
                                                             header="Recorded by meshops upgrade: "
                                                                    + settings.source),
                            previous_record=previous.as_dict() if previous is not None else None,
                            gateway_backup=gateway_backup(kube, snap, old) if strategy is Strategy.CANARY else [],
                            policy_before=istio_settings.policy_now(kube, old, inputs.istio_namespace).fields)

    @staticmethod
    def _settings(kube: Any, old: str, inputs: CheckInputs, target: IstioVersion) -> istio_settings.Settings:
        """The new revision's settings; every removed setting and unrecoverable field refused at once."""
        settings = istio_settings.settings_for(kube, old, inputs.istio_namespace, profiles=inputs.profiles,
                                               sets=inputs.sets, accept_defaults=inputs.accept_defaults,
                                               compatibility_version=inputs.compatibility_version)
        spec, accepted, refused = istio_settings.drop_accepted_removals(settings.spec, target.minor,
                                                                        inputs.accept_defaults)
        if refused:
            raise istio_settings.bad_input(refused, str(target))
        return replace(settings, spec=spec, accepted={**settings.accepted, **accepted})

    @staticmethod
    def _revision_problems(snap: MeshSnapshot, new: str, old: str, target: IstioVersion) -> list[str]:
        if (p := revision_problem(new)) is not None:
            return [p]
        if new == old:
            return [f"the new revision must differ from the current one ({old})"]
        if new in snap.tags():
            return [f"revision {new!r} has the name of an existing revision tag"]
        existing = snap.revisions.get(new)
        if existing is not None and existing.version != str(target):
            return [f"revision {new} already exists at version {existing.version}"]
        return []

    @staticmethod
    def _gate_problems(inputs: CheckInputs) -> list[str]:
        from meshops.ops.health import ProbeTarget, check_promql

        problems = []
        for expr in inputs.gate_exprs:
            try:
                check_promql(expr)
            except BadInput as exc:
                problems.append(exc.message)
        if inputs.gate_exprs and not inputs.prometheus:
            problems.append("PromQL gates need --prometheus URL")
        for url in inputs.probes:
            try:
                ProbeTarget(url=url)
            except BadInput as exc:
                problems.append(f"--probe {url}: {exc.message}")
        return problems

    @staticmethod
    def _istioctl_problems(ctx: StepContext, inputs: CheckInputs, new: str, *, precheck: bool) -> list[str]:
        """An istioctl of exactly the target version; then (when nothing else is wrong) its precheck."""
        try:
            ictl = ctx.drivers.istioctl(inputs.to, path=inputs.istioctl or None)
        except BadInput as exc:
            return [str(exc)]
        if inputs.skip_istioctl_precheck or not precheck:
            return []
        args = ["x", "precheck"] + (["--revision", new] if new else [])
        try:
            ictl.run(args, timeout=ctx.wait_budget(180))
        except IstioctlFailed as exc:
            return [f"istioctl x precheck found issues: {exc.message}"]
        return []

    def undo(self, inputs: CheckInputs, outputs: CheckOutputs | None, ctx: StepContext) -> None:
        return None
