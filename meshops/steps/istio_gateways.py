"""``istio.gateways``: move the gateways to the new revision, after the data plane.

Two kinds of gateway exist. An *injected* one (``inject.istio.io/templates: gateway``,
Helm or YAML) gets its proxy from the injector, so a restart moves it once its pod
labels or namespace select the new revision. One *installed* by istioctl with the
control plane is not injected: its Deployment names the proxy image and the istiod to
talk to, and carries the old revision's label, so ``istioctl uninstall --revision OLD``
would delete it (istio/istio#26019 is the reverse trap: a canary install upgrading it in
place). meshops points it at the new revision itself.

- ``inplace``: restart (or retarget) each gateway Deployment onto the new revision.
- ``canary``: a second Deployment ``<name>-canary`` on the new revision behind the same
  Service, ready first; then the old one scaled to zero (istio.io gateway canary docs).
- ``skip``: leave them; the old revision then stays until they move.
"""

from __future__ import annotations

import copy
import json
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from meshops.domain.durations import parse_duration
from meshops.domain.errors import PermanentStepError
from meshops.domain.mesh import REV_LABEL, Workload, image_tag
from meshops.drivers.kube_api import KubeApi, Obj
from meshops.ops import k8s_restart as restarts
from meshops.ops.istio_common import ISTIO_NAMESPACE, RESTARTED_BY, collect, kube_of
from meshops.steps.base import Change, Step, StepContext, StepInputs, StepOutputs, StepPlan
from meshops.steps.registry import register

ORIGINAL_GATEWAY = "meshops.dev/original-gateway"
ORIGINAL_REPLICAS = "meshops.dev/original-replicas"
CANARY_LABEL = "meshops.dev/gateway-canary"
_COMPANIONS = (("v1", "Service"), ("v1", "ServiceAccount"), ("policy/v1", "PodDisruptionBudget"))


class GatewaysInputs(StepInputs):
    mode: Literal["inplace", "canary", "skip"] = "inplace"
    old_revision: str
    new_revision: str
    to_version: str
    concurrency: Annotated[int, Field(ge=1)] = 5
    timeout: str | float = "10m"
    istio_namespace: str = ISTIO_NAMESPACE

    @field_validator("timeout")
    @classmethod
    def _duration(cls, v: str | float) -> str | float:
        parse_duration(v)
        return v


class GatewaysOutputs(StepOutputs):
    moved: list[str]
    canaries: list[str]
    relabelled: list[str]
    left: list[str]


def _service_name(revision: str) -> str:
    return "istiod" if revision in ("", "default") else f"istiod-{revision}"


def _retargeted(dep: Obj, *, new: str, version: str, namespace: str) -> Obj:
    """A copy of an istioctl-installed gateway Deployment pointing at revision ``new``: the proxy
    image of ``version``, the new istiod as discovery address, the revision labels."""
    out = copy.deepcopy(dep)
    out["metadata"].setdefault("labels", {}).update({REV_LABEL: new, "operator.istio.io/version": version})
    template = out["spec"]["template"]
    template.setdefault("metadata", {}).setdefault("labels", {})[REV_LABEL] = new
    for c in template["spec"].get("containers") or []:
        if c.get("name") != "istio-proxy":
            continue
        image = str(c.get("image", ""))
        if image_tag(image):
            c["image"] = image[: -len(image_tag(image))] + version
        for e in c.get("env") or []:
            if e.get("name") == "PROXY_CONFIG" and "value" in e:
                try:
                    cfg = json.loads(e["value"])
                except ValueError:
                    continue
                cfg["discoveryAddress"] = f"{_service_name(new)}.{namespace}.svc:15012"
                e["value"] = json.dumps(cfg)
    return out


def _retarget(dep: Obj, *, new: str, version: str, namespace: str) -> dict[str, Any]:
    """The strategic patch that turns ``dep`` into ``_retargeted(dep)``."""
    return _original(_retargeted(dep, new=new, version=version, namespace=namespace))


def _original(dep: Obj) -> dict[str, Any]:
    """The fields a retarget changes, as they are in ``dep`` (also kept on the Deployment for the undo)."""
    meta_labels = (dep.get("metadata") or {}).get("labels") or {}
    template = (dep.get("spec") or {}).get("template") or {}
    containers: list[Obj] = (template.get("spec") or {}).get("containers") or []
    proxy: Obj = next((c for c in containers if c.get("name") == "istio-proxy"), {})
    env = [e for e in proxy.get("env") or [] if e.get("name") == "PROXY_CONFIG"]
    return {"metadata": {"labels": {REV_LABEL: meta_labels.get(REV_LABEL),
                                    "operator.istio.io/version": meta_labels.get("operator.istio.io/version")}},
            "spec": {"template": {"metadata": {"labels": {REV_LABEL: ((template.get("metadata") or {}).get("labels")
                                                                      or {}).get(REV_LABEL)}},
                                  "spec": {"containers": [{"name": "istio-proxy", "image": proxy.get("image"),
                                                           "env": env}]}}}}


def _companions(kube: KubeApi, w: Workload, revision: str) -> list[tuple[str, str, str]]:
    """Service, ServiceAccount, PDB of an installed gateway that `uninstall --revision` would delete."""
    app = w.template_labels.get("app")
    component = w.template_labels.get("operator.istio.io/component")
    if not app or not component:
        return []
    selector = f"{REV_LABEL}={revision},operator.istio.io/component={component},app={app}"
    return [(api, kind, o["metadata"]["name"]) for api, kind in _COMPANIONS
            for o in kube.list(api, kind, w.namespace, label_selector=selector).items]


def _relabel(kube: KubeApi, namespace: str, items: list[tuple[str, str, str]], revision: str) -> list[str]:
    for api, kind, name in items:
        kube.patch(api, kind, name, {"metadata": {"labels": {REV_LABEL: revision}}}, namespace)
    return [f"{kind}/{namespace}/{name}" for _, kind, name in items]


@register
class Gateways(Step[GatewaysInputs, GatewaysOutputs]):
    """Moves gateway Deployments to the new revision: in place, as a canary, or not at all."""

    name = "istio.gateways"
    Inputs, Outputs = GatewaysInputs, GatewaysOutputs
    needs = frozenset({"kube"})

    def plan(self, inputs: GatewaysInputs, ctx: StepContext) -> StepPlan:
        verb = {"inplace": "restart or retarget", "canary": "create <name>-canary, then scale the old one to 0",
                "skip": "leave"}[inputs.mode]
        return StepPlan(changes=(Change(action="none" if inputs.mode == "skip" else "restart",
                                        target=f"gateways on {inputs.old_revision}",
                                        detail=f"{verb} onto {inputs.new_revision}"),))

    def _gateways(self, kube: KubeApi, inputs: GatewaysInputs, revision: str) -> tuple[Any, list[Workload]]:
        snap = collect(kube, istio_namespace=inputs.istio_namespace)
        return snap, [w for w in snap.gateways() if snap.gateway_revision(w) == revision and w.kind == "Deployment"
                      and w.template_labels.get(CANARY_LABEL) is None]

    def _accept(self, inputs: GatewaysInputs, revision: str, version: str | None) -> Any:
        return lambda p: p.revision == revision and (version is None or p.proxy_version == version)

    def run(self, inputs: GatewaysInputs, ctx: StepContext) -> GatewaysOutputs:
        kube = kube_of(ctx)
        snap, gateways = self._gateways(kube, inputs, inputs.old_revision)
        if inputs.mode == "skip" or not gateways:
            return GatewaysOutputs(moved=[], canaries=[], relabelled=[], left=[w.key for w in gateways])
        timeout = ctx.wait_budget(parse_duration(inputs.timeout))
        relabelled: list[str] = []
        for w in gateways:
            if w.gateway == "installed":
                relabelled += _relabel(kube, w.namespace, _companions(kube, w, inputs.old_revision), inputs.new_revision)
        cache = ctx.drivers.workload_cache()
        mark = f"{ctx.run_id}/gateways"
        if inputs.mode == "canary":
            names = [self._canary(ctx, kube, cache, w, inputs, mark, timeout) for w in gateways]
            return GatewaysOutputs(moved=[], canaries=names, relabelled=relabelled, left=[])
        targets = [self._target(kube, snap, w, inputs) for w in gateways]
        report = restarts.restart(ctx, kube, cache, targets, mark=mark, concurrency=inputs.concurrency,
                                  timeout=timeout, accept=self._accept(inputs, inputs.new_revision, inputs.to_version),
                                  force=True)
        if not report.ok:
            raise PermanentStepError("gateways did not move: " + "; ".join(report.problems()))
        return GatewaysOutputs(moved=[t.key for t in targets], canaries=[], relabelled=relabelled, left=[])

    def _target(self, kube: KubeApi, snap: Any, w: Workload, inputs: GatewaysInputs) -> restarts.Target:
        if w.gateway == "installed":
            dep = kube.get("apps/v1", "Deployment", w.name, w.namespace) or {}
            extra = _retarget(dep, new=inputs.new_revision, version=inputs.to_version, namespace=inputs.istio_namespace)
            if ORIGINAL_GATEWAY not in w.annotations:
                extra["metadata"]["annotations"] = {ORIGINAL_GATEWAY: json.dumps(_original(dep), sort_keys=True)}
            return restarts.Target(kind=w.kind, namespace=w.namespace, name=w.name, extra=extra)
        labels: dict[str, str | None] = {}
        if snap.workload_revision(w) != inputs.new_revision:
            labels = {REV_LABEL: inputs.new_revision}
        return restarts.Target(kind=w.kind, namespace=w.namespace, name=w.name, labels=labels)

    def _canary(self, ctx: StepContext, kube: KubeApi, cache: Any, w: Workload, inputs: GatewaysInputs, mark: str,
                timeout: float) -> str:
        dep = kube.get("apps/v1", "Deployment", w.name, w.namespace)
        if dep is None:
            raise PermanentStepError(f"gateway {w.key} disappeared")
        name = f"{w.name}-canary"
        canary = copy.deepcopy(dep)
        meta = canary["metadata"]
        canary["metadata"] = {"name": name, "namespace": w.namespace, "labels": {**(meta.get("labels") or {}),
                                                                                REV_LABEL: inputs.new_revision},
                              "annotations": {RESTARTED_BY: mark}}
        canary.pop("status", None)
        spec = canary["spec"]
        spec["selector"] = {"matchLabels": {**(spec.get("selector") or {}).get("matchLabels", {}), CANARY_LABEL: "true"}}
        spec["template"]["metadata"].setdefault("labels", {})[CANARY_LABEL] = "true"
        if w.gateway == "installed":
            canary = _retargeted(canary, new=inputs.new_revision, version=inputs.to_version,
                                 namespace=inputs.istio_namespace)
        else:
            spec["template"]["metadata"]["labels"][REV_LABEL] = inputs.new_revision
        if kube.get("apps/v1", "Deployment", name, w.namespace) is None:
            kube.create(canary)
        target = restarts.Target(kind="Deployment", namespace=w.namespace, name=name)
        report = restarts.restart(ctx, kube, cache, [target], mark=mark, concurrency=1, timeout=timeout,
                                  accept=self._accept(inputs, inputs.new_revision, inputs.to_version))
        if not report.ok:
            raise PermanentStepError(f"gateway canary {w.namespace}/{name} not ready: " + "; ".join(report.problems()))
        replicas = (dep.get("spec") or {}).get("replicas", 1)
        if (dep.get("spec") or {}).get("replicas") != 0:
            kube.patch("apps/v1", "Deployment", w.name, {"metadata": {"annotations": {ORIGINAL_REPLICAS: str(replicas)}},
                                                        "spec": {"replicas": 0}}, w.namespace)
        ctx.log.info("gateway.canary", gateway=w.key, canary=name, old_scaled_to=0)
        return f"Deployment/{w.namespace}/{name}"

    def undo(self, inputs: GatewaysInputs, outputs: GatewaysOutputs | None, ctx: StepContext) -> None:
        if inputs.mode == "skip":
            return
        kube = kube_of(ctx)
        snap = collect(kube, istio_namespace=inputs.istio_namespace)
        cache = ctx.drivers.workload_cache()
        mark = f"{ctx.run_id}/undo-gateways"
        timeout = ctx.wait_budget(parse_duration(inputs.timeout))
        targets: list[restarts.Target] = []
        labels_only: list[restarts.Target] = []
        for w in snap.gateways():
            if w.kind != "Deployment":
                continue
            if w.template_labels.get(CANARY_LABEL) and w.annotations.get(RESTARTED_BY, "").startswith(ctx.run_id):
                continue  # deleted below, once the original is back
            if ORIGINAL_REPLICAS in w.annotations:
                kube.patch("apps/v1", "Deployment", w.name,
                           {"metadata": {"annotations": {ORIGINAL_REPLICAS: None}},
                            "spec": {"replicas": int(w.annotations[ORIGINAL_REPLICAS])}}, w.namespace)
                targets.append(restarts.Target(kind=w.kind, namespace=w.namespace, name=w.name))
            elif ORIGINAL_GATEWAY in w.annotations:
                extra = json.loads(w.annotations[ORIGINAL_GATEWAY])
                extra.setdefault("metadata", {})["annotations"] = {ORIGINAL_GATEWAY: None}
                targets.append(restarts.Target(kind=w.kind, namespace=w.namespace, name=w.name, extra=extra))
            elif w.gateway == "injected" and restarts.ORIGINAL_POD_LABELS in w.annotations:
                # Moved by its pod label: put the label back. If the namespace (or a tag) still selects
                # the new revision, the waves' undo restarts it once the tags are back.
                labels: dict[str, str | None] = json.loads(w.annotations[restarts.ORIGINAL_POD_LABELS])
                restored = {k: v for k, v in {**w.template_labels, **labels}.items() if v is not None}
                target = restarts.Target(kind=w.kind, namespace=w.namespace, name=w.name, labels=labels,
                                         forget_original=True)
                if snap.injector_for(w.namespace, snap.namespaces.get(w.namespace, {}), restored,
                                     w.template_annotations) == inputs.old_revision:
                    targets.append(target)
                else:
                    labels_only.append(target)
            if w.gateway == "installed" and (ORIGINAL_GATEWAY in w.annotations or ORIGINAL_REPLICAS in w.annotations):
                _relabel(kube, w.namespace, _companions(kube, w, inputs.new_revision), inputs.old_revision)
        report = restarts.restart(ctx, kube, cache, targets, mark=mark, concurrency=inputs.concurrency,
                                  timeout=timeout, accept=self._accept(inputs, inputs.old_revision, None), force=True)
        if not report.ok:
            raise PermanentStepError("gateways did not move back: " + "; ".join(report.problems()))
        # Labels back without waiting on a revision: the selection still names the new one for now.
        restarts.restart(ctx, kube, cache, labels_only, mark=mark, concurrency=inputs.concurrency, timeout=timeout,
                         accept=lambda p: True, force=True)
        for w in snap.gateways():
            if w.template_labels.get(CANARY_LABEL) and w.annotations.get(RESTARTED_BY, "").startswith(ctx.run_id):
                kube.delete("apps/v1", "Deployment", w.name, w.namespace)
