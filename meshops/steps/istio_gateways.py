"""``istio.gateways``: move the gateways to the new revision the way upstream does, after the data plane.

Two kinds of gateway exist (reference §2):

- *istioctl* gateways (``gateways.istio-ingressgateway`` of an IstioOperator): not injected;
  the Deployment bakes the proxy image and ``CA_ADDR=istiod[-R]...:15012`` and mounts the
  ``istio[-R]`` ConfigMap, so a restart changes nothing and patching a label moves nothing.
  Only istioctl moves them: an install of the new revision whose overlay enables the gateway
  component rewrites the same Deployment and Service (same names, same Service object, so the
  cloud load balancer stays) to the new revision, the documented in-place gateway upgrade.
- *injected* gateways (Helm ``gateway`` chart, ``inject.istio.io/templates: gateway``): moved by
  setting ``istio.io/rev`` on the pod template (a rolling restart re-injects them).

Modes:
- ``inplace``: as above.
- ``canary``: first a canary gateway Deployment under the new revision beside the old one, with
  the same selector labels so the one Service sends it traffic (istio.io "Canary upgrade
  (advanced)"); once it serves, the original is moved (istioctl) or scaled to zero (injected);
  an istioctl gateway's canary is removed once the original serves from the new revision.
- ``skip``: leave them; finalize then refuses to uninstall the old revision.

A gateway counts as moved only when it is *connected* to the new revision: ``istioctl
proxy-status`` shows each of its pods on an istiod pod of the new revision and its ``CA_ADDR``
names the new istiod. Never by a label meshops wrote.
"""

from __future__ import annotations

import copy
import json
from typing import Annotated, Any, Literal

from pydantic import Field

from meshops.domain.durations import parse_duration
from meshops.domain.errors import DriverError, PermanentStepError, TemporaryStepError
from meshops.domain.mesh import REV_LABEL, MeshSnapshot, Workload
from meshops.domain.proxies import parse_proxy_status
from meshops.drivers.kube_api import KubeApi, Obj
from meshops.ops import k8s_restart as restarts
from meshops.ops.istio_common import (
    ISTIO_NAMESPACE,
    RESTARTED_BY,
    _clean,
    _ref,
    collect,
    kube_of,
    restore,
    run_istioctl,
)
from meshops.ops.istio_settings import get_or_none, overlay_spec
from meshops.ops.k8s_watch import watch_until
from meshops.steps.base import Change, Duration, Step, StepContext, StepInputs, StepOutputs, StepPlan
from meshops.steps.install import _deployment_ready, overlay_file, wait_ready
from meshops.steps.registry import register

ORIGINAL_REPLICAS = "meshops.dev/original-replicas"
CANARY_LABEL = "meshops.dev/gateway-canary"
COMPONENT = "operator.istio.io/component"
_KINDS = {"IngressGateways": "ingressGateways", "EgressGateways": "egressGateways"}
_DEFAULT_NAMES = {"ingressGateways": "istio-ingressgateway", "egressGateways": "istio-egressgateway"}


class GatewaysInputs(StepInputs):
    mode: Literal["inplace", "canary", "skip"] = "inplace"
    old_revision: str
    new_revision: str
    to_version: str
    overlay: str = ""  # the new revision's whole settings (the check's settings_overlay)
    backup: list[dict[str, Any]] = Field(default_factory=list)  # istioctl gateways as they were (the check's)
    istioctl: str = ""
    concurrency: Annotated[int, Field(ge=1)] = 5
    timeout: Duration = "10m"
    istio_namespace: str = ISTIO_NAMESPACE


class GatewaysOutputs(StepOutputs):
    moved: list[str]
    canaries: list[str]
    relabelled: list[str] = Field(default_factory=list)
    left: list[str]
    connected: dict[str, str] = Field(default_factory=dict)  # pod -> the istiod pod it talks to


def _istiod_address(revision: str, namespace: str) -> str:
    name = "istiod" if revision in ("", "default") else f"istiod-{revision}"
    return f"{name}.{namespace}.svc:15012"


def istioctl_gateway(w: Workload) -> bool:
    """Rendered by istioctl's gateways chart: not injected, labelled with its component."""
    return w.gateway == "installed" and w.template_labels.get(COMPONENT) in _KINDS


def gateway_backup(kube: KubeApi, snap: MeshSnapshot, revision: str) -> list[dict[str, Any]]:
    """The istioctl gateways on ``revision`` and their Service/SA/PDB/HPA, exactly as they are:
    what the rollback puts back (the canary docs' "reinstall the old gateway")."""
    out: list[dict[str, Any]] = []
    for w in snap.gateways():
        if not istioctl_gateway(w) or snap.gateway_revision(w) != revision or w.kind != "Deployment":
            continue
        selector = f"app={w.template_labels.get('app', w.name)},{COMPONENT}"
        refs = [_ref("apps/v1", "Deployment", w.name, w.namespace)]
        for api, kind in (("v1", "Service"), ("v1", "ServiceAccount"), ("policy/v1", "PodDisruptionBudget"),
                          ("autoscaling/v2", "HorizontalPodAutoscaler")):
            try:
                items = kube.list(api, kind, w.namespace, label_selector=selector).items
            except DriverError as exc:  # a kind the server does not serve holds nothing to back up
                if exc.temporary:
                    raise
                items = []
            refs += [_ref(api, kind, o["metadata"]["name"], w.namespace) for o in items]
        for ref in refs:
            obj = kube.get(ref["apiVersion"], ref["kind"], ref["name"], ref["namespace"])
            if obj is not None:
                out.append({"ref": ref, "object": _clean(obj)})
    return out


def _gateway_component(kube: KubeApi, w: Workload) -> dict[str, Any]:
    """The IstioOperator gateway component that renders ``w`` again (name, labels, replicas,
    resources, Service type), read from the live objects."""
    dep = kube.get("apps/v1", "Deployment", w.name, w.namespace) or {}
    spec = dep.get("spec") or {}
    pod = (spec.get("template") or {}).get("spec") or {}
    proxy: Obj = next((c for c in pod.get("containers") or [] if c.get("name") == "istio-proxy"), {})
    k8s: dict[str, Any] = {}
    hpa = get_or_none(kube, "autoscaling/v2", "HorizontalPodAutoscaler", w.name, w.namespace)
    if hpa is not None:
        h = hpa.get("spec") or {}
        k8s["hpaSpec"] = {k: h[k] for k in ("minReplicas", "maxReplicas") if k in h}
    elif spec.get("replicas") is not None:
        k8s["replicaCount"] = int(spec["replicas"])
    if proxy.get("resources"):
        k8s["resources"] = copy.deepcopy(proxy["resources"])
    svc = kube.get("v1", "Service", w.name, w.namespace)
    if svc is not None:
        s = svc.get("spec") or {}
        k8s["service"] = {"type": s.get("type", "ClusterIP"),
                          "ports": [{k: p[k] for k in ("name", "port", "targetPort", "protocol") if k in p}
                                    for p in s.get("ports") or []]}
    labels = {k: v for k, v in ((spec.get("selector") or {}).get("matchLabels") or {}).items()}
    out: dict[str, Any] = {"name": w.name, "enabled": True, "k8s": k8s}
    if labels:
        out["label"] = labels
    if w.namespace != ISTIO_NAMESPACE:
        out["namespace"] = w.namespace
    return out


def gateway_overlay(kube: KubeApi, settings: str, gateways: list[Workload]) -> dict[str, Any]:
    """The new revision's settings with exactly these istioctl gateways enabled (every other
    gateway component off, so the install creates no new load balancer)."""
    spec = overlay_spec(settings)
    spec.pop("revision", None)
    spec.pop("tag", None)
    components = dict(spec.get("components") or {})
    for key, default_name in _DEFAULT_NAMES.items():
        wanted = [_gateway_component(kube, w) for w in gateways if _KINDS[w.template_labels[COMPONENT]] == key]
        names = {g["name"] for g in wanted}
        others = [{**g, "enabled": False} for g in components.get(key) or []
                  if isinstance(g, dict) and g.get("name") not in names]
        if default_name not in names and not any(g.get("name") == default_name for g in others):
            others.append({"name": default_name, "enabled": False})
        components[key] = wanted + others
    spec["components"] = components
    return spec


@register
class Gateways(Step[GatewaysInputs, GatewaysOutputs]):
    """Moves gateways to the new revision (istioctl for istioctl gateways, relabel for injected ones)."""

    name = "istio.gateways"
    Inputs, Outputs = GatewaysInputs, GatewaysOutputs
    needs = frozenset({"kube", "istioctl"})

    def plan(self, inputs: GatewaysInputs, ctx: StepContext) -> StepPlan:
        verb = {"inplace": "istioctl install --revision NEW with the gateway components (istioctl gateways); "
                           "istio.io/rev and a restart (injected gateways)",
                "canary": "a canary gateway on the new revision beside each, then the original moved",
                "skip": "leave"}[inputs.mode]
        return StepPlan(changes=(Change(action="none" if inputs.mode == "skip" else "restart",
                                        target=f"gateways on {inputs.old_revision}",
                                        detail=f"{verb} onto {inputs.new_revision}"),))

    def _gateways(self, kube: KubeApi, inputs: GatewaysInputs, revision: str) -> tuple[MeshSnapshot, list[Workload]]:
        snap = collect(kube, istio_namespace=inputs.istio_namespace)
        return snap, [w for w in snap.gateways() if snap.gateway_revision(w) == revision and w.kind == "Deployment"
                      and w.template_labels.get(CANARY_LABEL) is None]

    def run(self, inputs: GatewaysInputs, ctx: StepContext) -> GatewaysOutputs:
        kube = kube_of(ctx)
        snap, gateways = self._gateways(kube, inputs, inputs.old_revision)
        if inputs.mode == "skip" or not gateways:
            return GatewaysOutputs(moved=[], canaries=[], left=[w.key for w in gateways])
        timeout = ctx.wait_budget(parse_duration(inputs.timeout))
        cache = ctx.drivers.workload_cache()
        mark = f"{ctx.run_id}/gateways"
        istioctl_gws = [w for w in gateways if istioctl_gateway(w)]
        injected = [w for w in gateways if not istioctl_gateway(w)]
        canaries: list[str] = []
        if inputs.mode == "canary":
            canaries = [self._canary(ctx, kube, cache, w, inputs, mark, timeout) for w in gateways]
            self._verify(ctx, kube, inputs, canaries, timeout)
        if istioctl_gws:
            self._istioctl_move(ctx, kube, inputs, istioctl_gws, timeout)
        if injected and inputs.mode == "inplace":
            targets = [restarts.Target(kind=w.kind, namespace=w.namespace, name=w.name,
                                       labels={REV_LABEL: inputs.new_revision}
                                       if snap.workload_revision(w) != inputs.new_revision else {})
                       for w in injected]
            report = restarts.restart(ctx, kube, cache, targets, mark=mark, concurrency=inputs.concurrency,
                                      timeout=timeout, accept=lambda p: p.revision == inputs.new_revision, force=True)
            if not report.ok:
                raise PermanentStepError("gateways did not move: " + "; ".join(report.problems()))
        if inputs.mode == "canary":
            for w in injected:
                self._scale_old(kube, w)
        moved = [w.key for w in istioctl_gws] + ([w.key for w in injected] if inputs.mode == "inplace" else [])
        connected = self._verify(ctx, kube, inputs, [*moved, *[c for c in canaries if not self._temporary(c, istioctl_gws)]],
                                 timeout)
        for c in canaries:
            if self._temporary(c, istioctl_gws):
                _, ns, name = c.split("/")
                kube.delete("apps/v1", "Deployment", name, ns)
                ctx.log.info("gateway.canary_removed", canary=c, reason="the original now serves from the new revision")
        return GatewaysOutputs(moved=moved, canaries=[c for c in canaries if not self._temporary(c, istioctl_gws)],
                               left=[], connected=connected)

    @staticmethod
    def _temporary(canary: str, istioctl_gws: list[Workload]) -> bool:
        """An istioctl gateway's canary only bridges its move; an injected one's canary replaces it."""
        return any(canary == f"Deployment/{w.namespace}/{w.name}-canary" for w in istioctl_gws)

    def _istioctl_move(self, ctx: StepContext, kube: KubeApi, inputs: GatewaysInputs, gws: list[Workload],
                       timeout: float) -> None:
        """``istioctl install --revision NEW`` with these gateways enabled: the documented in-place
        gateway upgrade (reference §2). Skipped when every one already names the new istiod."""
        want = _istiod_address(inputs.new_revision, inputs.istio_namespace)
        if all(_ca_addr(kube.get("apps/v1", "Deployment", w.name, w.namespace) or {}) == want for w in gws):
            return
        spec = gateway_overlay(kube, inputs.overlay, gws)
        from meshops.domain import overlays

        text = overlays.render(spec, name="meshops-gateways", header="Written by meshops: the new revision's settings "
                                                                      "with the gateways it takes over.")
        ictl = ctx.drivers.istioctl(inputs.to_version, path=inputs.istioctl or None)
        ctx.log.info("gateway.istioctl_move", gateways=[w.key for w in gws], revision=inputs.new_revision)
        with overlay_file(text) as path:
            run_istioctl(ictl, ["install", "-y", "--revision", inputs.new_revision, "-f", path,
                                "--readiness-timeout", f"{int(max(30.0, timeout))}s"], timeout=timeout + 120)
        ctx.check()
        wait_ready(ctx, kube, inputs.istio_namespace, inputs.new_revision, timeout)

    def _verify(self, ctx: StepContext, kube: KubeApi, inputs: GatewaysInputs, keys: list[str],
                timeout: float) -> dict[str, str]:
        """Every pod of these gateways connected to an istiod pod of the new revision (proxy-status)
        and, where it has one, with CA_ADDR naming the new istiod. Waits up to ``timeout``."""
        if not keys:
            return {}
        ictl = ctx.drivers.istioctl(inputs.to_version, path=inputs.istioctl or None)
        want = _istiod_address(inputs.new_revision, inputs.istio_namespace)
        end = ctx.clock() + timeout
        problems: list[str] = []
        while True:
            ctx.check()
            istiods = {p["metadata"]["name"] for p in kube.list("v1", "Pod", inputs.istio_namespace,
                                                                label_selector=f"app=istiod,{REV_LABEL}={inputs.new_revision}").items}
            rows = {r.name: r.istiod for r in parse_proxy_status(run_istioctl(ictl, ["proxy-status"], timeout=120))}
            connected: dict[str, str] = {}
            problems = []
            for key in keys:
                _, ns, name = key.split("/")
                dep = kube.get("apps/v1", "Deployment", name, ns) or {}
                selector = ",".join(f"{k}={v}" for k, v in
                                    sorted(((dep.get("spec") or {}).get("selector") or {}).get("matchLabels", {}).items()))
                pods = [p for p in kube.list("v1", "Pod", ns, label_selector=selector).items
                        if not (p.get("metadata") or {}).get("deletionTimestamp")
                        and (p.get("status") or {}).get("phase") == "Running"]
                if not pods:
                    problems.append(f"{key}: no running pod")
                for p in pods:
                    pname = f"{p['metadata']['name']}.{ns}"
                    ca = _ca_addr(p)
                    server = rows.get(pname, "")
                    if ca and ca != want:
                        problems.append(f"{pname}: CA_ADDR {ca}, not {want}")
                    elif server not in istiods:
                        problems.append(f"{pname}: connected to {server or 'no istiod'}, not a pod of "
                                        f"istiod-{inputs.new_revision}")
                    else:
                        connected[pname] = server
            if not problems:
                ctx.log.info("gateway.connected", pods=connected)
                return connected
            if ctx.clock() >= end:
                raise TemporaryStepError("gateways not connected to revision " + inputs.new_revision + ": "
                                         + "; ".join(problems[:10]), delay=2.0)
            ctx.sleep(1.0)

    def _canary(self, ctx: StepContext, kube: KubeApi, cache: Any, w: Workload, inputs: GatewaysInputs, mark: str,
                timeout: float) -> str:
        """``<name>-canary``: an injected gateway (gateway template, ``image: auto``) on the new revision
        with the original's selector labels, so the same Service selects both (istio.io gateway docs)."""
        dep = kube.get("apps/v1", "Deployment", w.name, w.namespace)
        if dep is None:
            raise PermanentStepError(f"gateway {w.key} disappeared")
        name = f"{w.name}-canary"
        spec = dep.get("spec") or {}
        selector = dict((spec.get("selector") or {}).get("matchLabels") or {})
        template = copy.deepcopy(spec.get("template") or {})
        t_meta = template.setdefault("metadata", {})
        labels = {k: v for k, v in (t_meta.get("labels") or {}).items() if k != COMPONENT}
        labels.update({**selector, REV_LABEL: inputs.new_revision, "sidecar.istio.io/inject": "true",
                       CANARY_LABEL: "true"})
        t_meta["labels"] = labels
        t_meta["annotations"] = {**{k: v for k, v in (t_meta.get("annotations") or {}).items()
                                    if k != "sidecar.istio.io/inject"}, "inject.istio.io/templates": "gateway"}
        pod = template.setdefault("spec", {})
        proxy = next((c for c in pod.get("containers") or [] if c.get("name") == "istio-proxy"), None)
        if istioctl_gateway(w) or proxy is None:
            # The injector fills image, env (CA_ADDR for the new revision), probes and volumes.
            pod["containers"] = [{"name": "istio-proxy", "image": "auto",
                                  "ports": [p for p in (proxy or {}).get("ports") or []]}]
            pod.pop("volumes", None)
        canary = {"apiVersion": "apps/v1", "kind": "Deployment",
                  "metadata": {"name": name, "namespace": w.namespace,
                               "labels": {k: v for k, v in ((dep.get("metadata") or {}).get("labels") or {}).items()
                                          if k not in (COMPONENT, REV_LABEL) and not k.startswith("install.operator")},
                               "annotations": {RESTARTED_BY: mark}},
                  "spec": {"replicas": spec.get("replicas", 1),
                           "selector": {"matchLabels": {**selector, CANARY_LABEL: "true"}}, "template": template}}
        if kube.get("apps/v1", "Deployment", name, w.namespace) is None:
            kube.create(canary)
        target = restarts.Target(kind="Deployment", namespace=w.namespace, name=name)
        report = restarts.restart(ctx, kube, cache, [target], mark=mark, concurrency=1, timeout=timeout,
                                  accept=lambda p: p.revision == inputs.new_revision)
        if not report.ok:
            raise PermanentStepError(f"gateway canary {w.namespace}/{name} not ready: " + "; ".join(report.problems()))
        ctx.log.info("gateway.canary", gateway=w.key, canary=name)
        return f"Deployment/{w.namespace}/{name}"

    @staticmethod
    def _scale_old(kube: KubeApi, w: Workload) -> None:
        dep = kube.get("apps/v1", "Deployment", w.name, w.namespace) or {}
        replicas = (dep.get("spec") or {}).get("replicas", 1)
        if replicas != 0:
            kube.patch("apps/v1", "Deployment", w.name, {"metadata": {"annotations": {ORIGINAL_REPLICAS: str(replicas)}},
                                                        "spec": {"replicas": 0}}, w.namespace)

    def undo(self, inputs: GatewaysInputs, outputs: GatewaysOutputs | None, ctx: StepContext) -> None:
        if inputs.mode == "skip":
            return
        kube = kube_of(ctx)
        # istioctl gateways: put back exactly what was there (same objects, so the Service keeps its uid),
        # while the old revision they point at is still installed (the canary docs' rollback order).
        changed = restore(kube, [e for e in inputs.backup if e.get("object") is not None])
        if changed:
            ctx.log.info("gateway.restored", changed=changed)
            for e in inputs.backup:
                ref = e["ref"]
                if ref["kind"] == "Deployment" and e.get("object") is not None:
                    ready = watch_until(ctx, kube, "apps/v1", "Deployment", ref["namespace"], name=ref["name"],
                                        evaluate=lambda items: True if items and _deployment_ready(items[0]) else None,
                                        timeout=parse_duration(inputs.timeout))
                    if ready is None:
                        raise TemporaryStepError(f"gateway {ref['namespace']}/{ref['name']} not ready after its restore")
        snap = collect(kube, istio_namespace=inputs.istio_namespace)
        cache = ctx.drivers.workload_cache()
        mark = f"{ctx.run_id}/undo-gateways"
        timeout = ctx.wait_budget(parse_duration(inputs.timeout))
        targets: list[restarts.Target] = []
        labels_only: list[restarts.Target] = []
        for w in snap.gateways():
            if w.kind != "Deployment" or istioctl_gateway(w):
                continue
            if w.template_labels.get(CANARY_LABEL) and w.annotations.get(RESTARTED_BY, "").startswith(ctx.run_id):
                continue  # deleted below, once the original is back
            if ORIGINAL_REPLICAS in w.annotations:
                kube.patch("apps/v1", "Deployment", w.name,
                           {"metadata": {"annotations": {ORIGINAL_REPLICAS: None}},
                            "spec": {"replicas": int(w.annotations[ORIGINAL_REPLICAS])}}, w.namespace)
                targets.append(restarts.Target(kind=w.kind, namespace=w.namespace, name=w.name))
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
        report = restarts.restart(ctx, kube, cache, targets, mark=mark, concurrency=inputs.concurrency,
                                  timeout=timeout, accept=lambda p: p.revision == inputs.old_revision, force=True)
        if not report.ok:
            raise PermanentStepError("gateways did not move back: " + "; ".join(report.problems()))
        restarts.restart(ctx, kube, cache, labels_only, mark=mark, concurrency=inputs.concurrency, timeout=timeout,
                         accept=lambda p: True, force=True)
        for w in snap.gateways():
            if w.template_labels.get(CANARY_LABEL) and w.annotations.get(RESTARTED_BY, "").startswith(ctx.run_id):
                kube.delete("apps/v1", "Deployment", w.name, w.namespace)


def _ca_addr(obj: Obj) -> str:
    """``CA_ADDR`` of the istio-proxy container of a Deployment or Pod ("" when it has none)."""
    spec = obj.get("spec") or {}
    pod = (spec.get("template") or {}).get("spec") if "template" in spec else spec
    for c in [*((pod or {}).get("containers") or []), *((pod or {}).get("initContainers") or [])]:
        if c.get("name") == "istio-proxy":
            for e in c.get("env") or []:
                if e.get("name") == "CA_ADDR":
                    return str(e.get("value", ""))
    return ""
