"""``istio.finalize``: make the new revision the only one, or say exactly what still holds the old.

In this order, each part looked at before it is done (istio/istio#35590, #32143, #60537):

1. the ``default`` tag, and with it ``istiod-default-validator``, to the new revision; every
   other tag still on the old revision too; ``--first`` namespaces back to their own labels;
   namespaces still labelled with the old revision's name onto the new one (so none selects
   a revision about to disappear);
2. no running proxy may still use the old revision (terminal pods do not count,
   sail-operator#839). If some do (naked pods, OnDelete StatefulSets, Jobs), stop here,
   name them, and succeed: ``meshops upgrade finalize RUN_ID`` finishes later, or
   ``--force`` uninstalls anyway;
3. ``istioctl uninstall --revision OLD``;
4. no webhook may point at a Service that does not exist.

Undo (while the old revision is still installed) puts back the tags, validator and labels
that step 1 moved, from the upgrade check's backup.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from meshops.domain.errors import DriverError, PermanentStepError
from meshops.domain.mesh import INJECTION_LABEL, REV_LABEL
from meshops.domain.parity import PolicyState
from meshops.ops.istio_common import (
    ISTIO_NAMESPACE,
    collect,
    kube_of,
    restore,
    retarget_tags,
    revision_exists,
    run_istioctl,
    set_namespace_labels,
)
from meshops.ops.istio_settings import policy_now
from meshops.steps.base import Change, Step, StepContext, StepInputs, StepOutputs, StepPlan
from meshops.steps.registry import register

# What `istioctl uninstall --revision R` deletes (reference §4, operator/pkg/uninstall/prune.go):
# objects labelled istio.io/rev=R with one of these components.
PRUNED_COMPONENTS = frozenset({"Pilot", "IngressGateways", "EgressGateways", "Cni", "Ztunnel"})
_PRUNED_KINDS = (("apps/v1", "Deployment"), ("apps/v1", "DaemonSet"), ("v1", "Service"), ("v1", "ConfigMap"),
                 ("v1", "ServiceAccount"), ("policy/v1", "PodDisruptionBudget"),
                 ("autoscaling/v2", "HorizontalPodAutoscaler"))
_PRUNED_CLUSTER_KINDS = (("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration"),
                         ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration"))


def would_uninstall(kube: Any, revision: str) -> list[str]:
    """``Kind/namespace/name`` of everything ``istioctl uninstall --revision`` would delete."""
    out = []
    selector = f"{REV_LABEL}={revision},operator.istio.io/component"
    for api, kind in (*_PRUNED_KINDS, *_PRUNED_CLUSTER_KINDS):
        try:
            items = kube.list(api, kind, label_selector=selector).items
        except DriverError as exc:  # a kind this API server does not serve holds nothing to delete
            if exc.temporary:
                raise
            continue
        for o in items:
            meta = o.get("metadata") or {}
            if (meta.get("labels") or {}).get("operator.istio.io/component") in PRUNED_COMPONENTS:
                ns = meta.get("namespace")
                out.append(f"{kind}/{ns}/{meta.get('name')}" if ns else f"{kind}/{meta.get('name')}")
    return sorted(out)


def _serving(kube: Any, revision: str) -> set[str]:
    """Gateway Deployments and LoadBalancer Services that carry ``revision``: what must never go."""
    out = set()
    selector = f"{REV_LABEL}={revision},operator.istio.io/component"
    for o in kube.list("apps/v1", "Deployment", label_selector=selector).items:
        meta = o.get("metadata") or {}
        if (meta.get("labels") or {}).get("operator.istio.io/component") in ("IngressGateways", "EgressGateways"):
            out.add(f"Deployment/{meta.get('namespace')}/{meta.get('name')}")
    for o in kube.list("v1", "Service", label_selector=selector).items:
        meta = o.get("metadata") or {}
        if (o.get("spec") or {}).get("type") == "LoadBalancer":
            out.add(f"Service/{meta.get('namespace')}/{meta.get('name')}")
    return out


class FinalizeInputs(StepInputs):
    old_revision: str
    new_revision: str
    to_version: str
    istioctl: str = ""
    mode: str = "tags"
    stable_tag: str = "prod-stable"
    first_restore: dict[str, dict[str, str | None]] = Field(default_factory=dict)
    backup: list[dict[str, Any]] = Field(default_factory=list)
    force: bool = False
    istio_namespace: str = ISTIO_NAMESPACE
    policy_before: dict[str, Any] = Field(default_factory=dict)  # the upgrade check's policy state


class FinalizeOutputs(StepOutputs):
    complete: bool
    tags_moved: list[str]
    relabelled: list[str]
    off_old: list[str] = Field(default_factory=list)  # namespaces that were labelled with the old revision
    holders: list[str]
    terminal_ignored: list[str]
    uninstalled: str
    dangling_webhooks: list[str]
    message: str
    would_delete: list[str] = Field(default_factory=list)  # what uninstall --revision OLD removes (listed first)
    policy_check_s: float = 0.0  # the post-change policy check's own time (bench/canary.py reports it)


@register
class Finalize(Step[FinalizeInputs, FinalizeOutputs]):
    """Default tag and validator to the new revision, then the old one uninstalled once unused."""

    name = "istio.finalize"
    Inputs, Outputs = FinalizeInputs, FinalizeOutputs
    needs = frozenset({"kube", "istioctl"})

    def plan(self, inputs: FinalizeInputs, ctx: StepContext) -> StepPlan:
        return StepPlan(changes=(
            Change(action="call", target="istioctl tag set default", detail=f"--revision {inputs.new_revision} "
                                                                            "(and every tag on the old revision)"),
            Change(action="call", target=f"istioctl uninstall --revision {inputs.old_revision}",
                   detail="once no running proxy uses it" + (" (--force: regardless)" if inputs.force else "")),
            Change(action="wait", target="webhooks", detail="none points at a missing service")))

    def run(self, inputs: FinalizeInputs, ctx: StepContext) -> FinalizeOutputs:
        kube = kube_of(ctx)
        old, new = inputs.old_revision, inputs.new_revision
        snap = collect(kube, istio_namespace=inputs.istio_namespace)
        if not revision_exists(kube, old, inputs.istio_namespace):
            dangling = snap.dangling_webhooks()
            if dangling:
                raise PermanentStepError("webhooks point at missing services: " + "; ".join(dangling))
            return FinalizeOutputs(complete=True, tags_moved=[], relabelled=[], holders=[], terminal_ignored=[],
                                   uninstalled=old, dangling_webhooks=[], message=f"revision {old} is already gone")
        if new not in snap.revisions or not snap.revisions[new].ready:
            raise PermanentStepError(f"revision {new} is not installed and ready: refusing to finalize onto it")
        ictl = ctx.drivers.istioctl(inputs.to_version, path=inputs.istioctl or None)
        flips = {tag: new for tag, rev in snap.tags().items() if rev == old}
        if snap.default_revision() != new or snap.validator_revision() != new:
            flips["default"] = new
        moved = retarget_tags(ctx, ictl, kube, flips)
        relabelled = [ns for ns, labels in sorted(inputs.first_restore.items()) if set_namespace_labels(kube, ns, labels)]
        value = inputs.stable_tag if inputs.mode == "tags" else new
        off_old = [ns for ns, labels in sorted(snap.namespaces.items()) if labels.get(REV_LABEL) == old
                   and set_namespace_labels(kube, ns, {INJECTION_LABEL: None, REV_LABEL: value})]
        if inputs.mode == "tags" and any(labels.get(REV_LABEL) == value for labels in snap.namespaces.values()):
            retarget_tags(ctx, ictl, kube, {value: new})
        ctx.check()
        snap = collect(kube, istio_namespace=inputs.istio_namespace)
        holders = sorted(p.ref for p in snap.pods_on(old))
        terminal = sorted(p.ref for p in snap.pods if p.revision == old and p.terminal)
        if holders and not inputs.force:
            msg = (f"revision {old} stays installed: {len(holders)} running pod(s) still use it: {', '.join(holders)}. "
                   f"Finish with `meshops upgrade finalize {ctx.run_id}` once they are gone (or --force)")
            ctx.log.warning("finalize.held", revision=old, pods=holders)
            return FinalizeOutputs(complete=False, tags_moved=moved, relabelled=relabelled, off_old=off_old,
                                   holders=holders,
                                   terminal_ignored=terminal, uninstalled="", dangling_webhooks=[], message=msg)
        if holders:
            ctx.log.warning("finalize.forced", revision=old, detached=holders)
        started = ctx.clock()
        self._policy_unchanged(kube, inputs)
        policy_s = round(ctx.clock() - started, 3)
        doomed = would_uninstall(kube, old)
        kept = [d for d in doomed if d.startswith(("Deployment/", "Service/")) and d in _serving(kube, old)]
        if kept:
            # Never even with --force: the LB Service is the cloud load balancer (its address is in DNS).
            raise PermanentStepError(
                f"istioctl uninstall --revision {old} would delete gateway objects that still serve traffic: "
                + ", ".join(kept) + f". Move them to {new} first (meshops upgrade --gateways ...); revision {old} "
                "stays installed")
        ctx.log.info("finalize.would_delete", revision=old, objects=doomed)
        run_istioctl(ictl, ["uninstall", "-y", "--revision", old], timeout=ctx.wait_budget(600))
        ctx.log.info("revision.uninstalled", revision=old)
        dangling = collect(kube, istio_namespace=inputs.istio_namespace).dangling_webhooks()
        if dangling:
            raise PermanentStepError("after uninstalling " + old + ", webhooks point at missing services: "
                                     + "; ".join(dangling))
        msg = f"revision {old} uninstalled; {new} is the default" + \
            (f" ({len(holders)} pod(s) detached by --force: {', '.join(holders)})" if holders else "")
        return FinalizeOutputs(complete=True, tags_moved=moved, relabelled=relabelled, off_old=off_old,
                               holders=holders, terminal_ignored=terminal, uninstalled=old, dangling_webhooks=[],
                               message=msg, would_delete=doomed, policy_check_s=policy_s)

    @staticmethod
    def _policy_unchanged(kube: Any, inputs: FinalizeInputs) -> None:
        """The post-change check: the policy the mesh enforces is what it was before the upgrade."""
        if not inputs.policy_before:
            return
        after = policy_now(kube, inputs.new_revision, inputs.istio_namespace)
        drift = PolicyState(fields=inputs.policy_before).drift(after)
        if drift:
            raise PermanentStepError(f"the mesh's policy changed during the upgrade; revision {inputs.old_revision} "
                                     "stays installed:\n  - " + "\n  - ".join(drift))

    def undo(self, inputs: FinalizeInputs, outputs: FinalizeOutputs | None, ctx: StepContext) -> None:
        kube = kube_of(ctx)
        if not revision_exists(kube, inputs.old_revision, inputs.istio_namespace):
            raise PermanentStepError(
                f"revision {inputs.old_revision} was uninstalled by finalize and cannot be brought back by a "
                f"rollback; reinstall it (istioctl install --revision {inputs.old_revision} with its old version), "
                "then run the rollback again")
        # Put back only what existed before the run: tags it created are removed by the waves' undo.
        changed = restore(kube, [e for e in inputs.backup if e.get("object") is not None])
        for ns in outputs.off_old if outputs is not None else []:
            set_namespace_labels(kube, ns, {REV_LABEL: inputs.old_revision})
        if changed:
            ctx.log.info("finalize.undone", changed=changed)
