"""``istio.install_revision``: install the new revision's istiod next to the old one, and wait.

istiod only, with the current revision's settings (``istio.upgrade_check`` built the
overlay), through the istioctl of exactly the target version. Nothing selects the new
revision yet, so installing it moves no workload. Idempotent: a revision already there
at the right version and ready is left alone. Undo uninstalls it, but only once nothing
selects it any more (a namespace or tag pointing at a missing revision would fail every
pod creation there).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from meshops.domain.errors import PermanentStepError
from meshops.domain.mesh import INJECTION_LABEL, REV_LABEL
from meshops.ops.istio_common import ISTIO_NAMESPACE, collect, kube_of, run_istioctl
from meshops.steps.base import Change, Step, StepContext, StepInputs, StepOutputs, StepPlan
from meshops.steps.install import overlay_file, wait_ready
from meshops.steps.registry import register


class InstallRevisionInputs(StepInputs):
    version: Annotated[str, Field(min_length=1)]
    revision: Annotated[str, Field(min_length=1)]
    overlay: str = ""
    istioctl: str = ""
    readiness_timeout: Annotated[float, Field(gt=0)] = 600.0
    istio_namespace: str = ISTIO_NAMESPACE


class InstallRevisionOutputs(StepOutputs):
    revision: str
    deployments: list[str]
    installed: bool  # False when the revision was already there


@register
class InstallRevision(Step[InstallRevisionInputs, InstallRevisionOutputs]):
    """``istioctl install --revision R`` (istiod only), then waits for istiod-R to be ready."""

    name = "istio.install_revision"
    Inputs, Outputs = InstallRevisionInputs, InstallRevisionOutputs
    needs = frozenset({"kube", "istioctl"})

    def plan(self, inputs: InstallRevisionInputs, ctx: StepContext) -> StepPlan:
        return StepPlan(changes=(
            Change(action="call", target=f"istioctl {inputs.version} install --revision {inputs.revision}",
                   detail="istiod only, the current revision's settings"),
            Change(action="wait", target=f"Deployment istiod-{inputs.revision}", detail="ready")),
            # --dry-run shows the very overlay istioctl gets: the recovered settings, then the user's.
            note=("with this overlay:\n" + "".join(f"      {line}\n" for line in inputs.overlay.splitlines())).rstrip()
            if inputs.overlay.strip() else "with istioctl's default profile")

    def _present(self, ctx: StepContext, inputs: InstallRevisionInputs) -> bool:
        kube = kube_of(ctx)
        listed = kube.list("apps/v1", "Deployment", inputs.istio_namespace,
                           label_selector=f"app=istiod,{REV_LABEL}={inputs.revision}").items
        injector = kube.get("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration",
                            f"istio-sidecar-injector-{inputs.revision}")
        if injector is None:
            return False  # not there, or an earlier attempt stopped half-way: install (again)
        for dep in listed:
            for c in ((dep.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or []:
                if str(c.get("image", "")).endswith(f":{inputs.version}"):
                    return True
        return False

    def run(self, inputs: InstallRevisionInputs, ctx: StepContext) -> InstallRevisionOutputs:
        kube = kube_of(ctx)
        # Whether this run created the revision is decided from facts journaled around the
        # install ("install_begun" before, "installed" after), not from this attempt alone: a
        # retry or a resume finds the revision present and must still own it for undo.
        installed = bool(ctx.facts.get("install_begun"))
        if self._present(ctx, inputs):
            ctx.log.info("revision.present", revision=inputs.revision, version=inputs.version)
        else:
            ictl = ctx.drivers.istioctl(inputs.version, path=inputs.istioctl or None)
            timeout = max(30.0, min(inputs.readiness_timeout, ctx.wait_budget(inputs.readiness_timeout)))
            ctx.log.info("revision.install", revision=inputs.revision, version=inputs.version)
            ctx.fact("install_begun", True)
            with overlay_file(inputs.overlay, ctx.temp_dir) as path:
                args = ["install", "-y", "--revision", inputs.revision, "--readiness-timeout", f"{int(timeout)}s"]
                run_istioctl(ictl, [*args, "-f", path] if inputs.overlay.strip() else args, timeout=timeout + 120)
            ctx.fact("installed", True)
            installed = True
        ctx.check()
        ready = wait_ready(ctx, kube, inputs.istio_namespace, inputs.revision, inputs.readiness_timeout)
        injector = f"istio-sidecar-injector-{inputs.revision}"
        if kube.get("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration", injector) is None:
            raise PermanentStepError(f"revision {inputs.revision} installed, but its injector {injector} is missing")
        return InstallRevisionOutputs(revision=inputs.revision, deployments=ready, installed=installed)

    def undo(self, inputs: InstallRevisionInputs, outputs: InstallRevisionOutputs | None, ctx: StepContext) -> None:
        kube = kube_of(ctx)
        if not kube.list("apps/v1", "Deployment", inputs.istio_namespace,
                         label_selector=f"app=istiod,{REV_LABEL}={inputs.revision}").items:
            return  # never installed, or already gone
        created = bool(ctx.facts.get("install_begun")) or (outputs is not None and outputs.installed)
        if not created:
            return  # it was there before this run, or this step never began installing
        snap = collect(kube, istio_namespace=inputs.istio_namespace)
        users = [ns for ns, labels in snap.namespaces.items()
                 if labels.get(REV_LABEL) == inputs.revision or labels.get(REV_LABEL) in snap.tags_of(inputs.revision)
                 or (labels.get(INJECTION_LABEL) == "enabled" and snap.default_revision() == inputs.revision)]
        tags = snap.tags_of(inputs.revision)
        if users or tags:
            raise PermanentStepError(
                f"cannot uninstall revision {inputs.revision}: still selected by "
                + "; ".join(filter(None, [f"namespaces {', '.join(sorted(users))}" if users else "",
                                          f"tags {', '.join(tags)}" if tags else ""])))
        proxies = [p.ref for p in snap.pods_on(inputs.revision)]
        if proxies:
            ctx.log.warning("revision.proxies_left", revision=inputs.revision, pods=proxies[:20], count=len(proxies))
        ictl = ctx.drivers.istioctl(inputs.version, path=inputs.istioctl or None)
        run_istioctl(ictl, ["uninstall", "-y", "--revision", inputs.revision], timeout=600)
        ctx.log.info("revision.uninstalled", revision=inputs.revision)
