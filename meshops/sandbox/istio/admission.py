"""Istio's admission webhooks as API-server plugins: sidecar injection and config validation.

The plugins play two parts. As the API server they evaluate the webhook configurations in
the store (selectors, rules, failurePolicy) and "call" the webhook's service: a missing
Service or one without ready endpoints fails the call with the API server's own wording.
As istiod they answer a successful call: inject (injection.py) or validate (validation.py),
using the revision's settings recorded in its `istio-sidecar-injector[-<rev>]` ConfigMap.
"""

from __future__ import annotations

import json
import logging
import weakref
from typing import Any

from meshops.sandbox.apiserver.plugins import AdmissionDenied, AdmissionRequest
from meshops.sandbox.istio import injection, selectors, validation, webhooks
from meshops.sandbox.istio.crds import VALIDATED_GROUPS
from meshops.sandbox.istio.versions import image_tag

log = logging.getLogger("meshops.sandbox.istio")

Obj = dict[str, Any]
NAMESPACES = ("", "namespaces")
SERVICES = ("", "services")
PODS = ("", "pods")
CONFIGMAPS = ("", "configmaps")
MWCS = ("admissionregistration.k8s.io", "mutatingwebhookconfigurations")
VWCS = ("admissionregistration.k8s.io", "validatingwebhookconfigurations")


def _pod_ready(pod: Obj) -> bool:
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def call_failure(cluster: Any, webhook: Obj) -> str | None:
    """Why the API server could not reach the webhook's service, or None when it can."""
    ref = webhooks.service_ref(webhook)
    if ref is None:
        return None  # URL webhooks: the sandbox cannot reach the outside world, treat as reachable
    namespace, name = ref
    service = cluster.store.get(SERVICES, namespace, name)
    if service is None:
        return f'service "{name}" not found'
    selector = (service.get("spec") or {}).get("selector") or {}
    if not selector:
        return f'no endpoints available for service "{name}"'
    pods, _ = cluster.store.list(PODS, namespace, lambda p: selectors.matches({"matchLabels": selector},
                                                                          (p.get("metadata") or {}).get("labels")))
    if not any(_pod_ready(p) for p in pods):
        return f'no endpoints available for service "{name}"'
    return None


def _denied_call(webhook: Obj, reason: str) -> AdmissionDenied:
    url = webhooks.webhook_url(webhook)
    return AdmissionDenied(
        f'Internal error occurred: failed calling webhook "{webhook.get("name")}": failed to call webhook: '
        f'Post "{url}": {reason}',
        code=500,
        reason="InternalError",
    )


def _istiod_env(cluster: Any, namespace: str, service: str) -> dict[str, str]:
    """The env of the istiod Deployment behind `service` (ENABLE_NATIVE_SIDECARS lives there)."""
    dep = cluster.store.get(("apps", "deployments"), namespace, service) or {}
    containers = ((((dep.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or [])
    return {str(e.get("name")): str(e.get("value", "")) for c in containers for e in c.get("env") or []
            if "value" in e}


def injector_settings(cluster: Any, namespace: str, service: str) -> Obj:
    """What the istiod behind `service` injects, from its `istio-sidecar-injector[-<rev>]`
    ConfigMap `values` (global.hub/tag/variant/proxy: reference §1) and its Deployment env."""
    revision = injection.revision_of_service(service)
    suffix = "" if revision == "default" else f"-{revision}"
    cm = cluster.store.get(CONFIGMAPS, namespace, f"istio-sidecar-injector{suffix}")
    values: Obj = {}
    if cm is not None:
        try:
            values = json.loads((cm.get("data") or {}).get("values") or "{}")
        except ValueError:
            values = {}
    glob = values.get("global") or {}
    version = str(glob.get("tag") or "")
    if not version:
        # No values recorded (e.g. a hand-made webhook): use the image istiod runs.
        svc = cluster.store.get(SERVICES, namespace, service) or {}
        sel = (svc.get("spec") or {}).get("selector") or {}
        pods, _ = cluster.store.list(PODS, namespace, lambda p: selectors.matches({"matchLabels": sel},
                                                                              (p.get("metadata") or {}).get("labels")))
        images = [c.get("image", "") for p in pods for c in (p.get("spec") or {}).get("containers") or []]
        version = next((image_tag(i) for i in images if image_tag(i)), "")
    proxy = glob.get("proxy") or {}
    return {
        "revision": revision,
        "version": version,
        "hub": str(glob.get("hub") or "docker.io/istio"),
        "cluster_id": str((glob.get("multiCluster") or {}).get("clusterName") or "Kubernetes"),
        "image": str(proxy.get("image") or "proxyv2"),
        "variant": str(glob.get("variant") or ""),
        "resources": proxy.get("resources") or None,
        "native_setting": _istiod_env(cluster, namespace, service).get("ENABLE_NATIVE_SIDECARS", ""),
        "hold": _mesh_default_config(cluster, namespace, suffix).get("holdApplicationUntilProxyStarts") is True,
    }


# Per store (weakly held: a new cluster's store can never meet an old one's entries, as an id()
# key could once the old store is freed), then per ConfigMap and resourceVersion.
_MESH_CACHE: weakref.WeakKeyDictionary[Any, dict[tuple[str, str, str], Obj]] = weakref.WeakKeyDictionary()


def _mesh_default_config(cluster: Any, namespace: str, suffix: str) -> Obj:
    """`defaultConfig` of the revision's mesh config (ConfigMap `istio[-R]` key `mesh`), parsed
    once per ConfigMap resourceVersion (YAML parsing per injected pod is the slow part)."""
    import yaml

    cm = cluster.store.get(CONFIGMAPS, namespace, f"istio{suffix}")
    if cm is None:
        return {}
    cache = _MESH_CACHE.setdefault(cluster.store, {})
    key = (namespace, f"istio{suffix}", str((cm.get("metadata") or {}).get("resourceVersion", "")))
    if key not in cache:
        try:
            mesh = yaml.safe_load((cm.get("data") or {}).get("mesh") or "") or {}
        except yaml.YAMLError:
            mesh = {}
        if len(cache) > 256:
            cache.clear()
        cache[key] = dict(mesh.get("defaultConfig") or {}) if isinstance(mesh, dict) else {}
    return cache[key]


def _kubelet_minors(cluster: Any) -> list[int]:
    out = []
    for node in cluster.store.list(("", "nodes"))[0]:
        version = str((((node.get("status") or {}).get("nodeInfo") or {}).get("kubeletVersion"))
                      or f"v{cluster.k8s_version}")
        try:
            out.append(int(version.lstrip("v").split(".")[1]))
        except (IndexError, ValueError):
            continue
    return out


class SidecarInjector:
    """MutatingPlugin: pods CREATE through every matching webhook, in the API server's order."""

    def mutate(self, req: AdmissionRequest, cluster: Any) -> None:
        if req.operation != "CREATE" or req.group != "" or req.resource != "pods" or req.obj is None:
            return
        confs, _ = cluster.store.list(MWCS)
        if not confs:
            return
        pod = req.obj
        ns = req.namespace or (pod.get("metadata") or {}).get("namespace") or "default"
        ns_obj = cluster.store.get(NAMESPACES, "", ns) or {}
        labels = (pod.get("metadata") or {}).get("labels") or {}
        matched = injection.matching_webhooks(
            confs, namespace=ns, namespace_labels=(ns_obj.get("metadata") or {}).get("labels"), object_labels=labels
        )
        for match in matched:
            failure = call_failure(cluster, match.webhook)
            if failure is not None:
                if match.failure_policy == "Ignore":
                    continue
                raise _denied_call(match.webhook, failure)
            if not webhooks.is_istio_injector(match.webhook) or match.service is None:
                continue  # a foreign webhook answered; the sandbox cannot run its logic
            if injection.istiod_skip_reason(ns, pod):
                continue
            settings = injector_settings(cluster, match.service[0], match.service[1])
            if not settings["version"]:
                raise AdmissionDenied(
                    f'admission webhook "{match.name}" denied the request: injection failed: '
                    f"no proxy version known for revision {settings['revision']}", code=500, reason="InternalError")
            tag = str(settings["version"])
            minor = int(tag.split(".")[1]) if tag.count(".") >= 2 and tag.split(".")[1].isdigit() else 0
            native = injection.native_sidecar(pod, minor=minor, setting=str(settings["native_setting"]),
                                              kubelet_minors=_kubelet_minors(cluster))
            injection.inject(pod, revision=settings["revision"], version=tag, hub=settings["hub"],
                             cluster_id=settings["cluster_id"], namespace=match.service[0],
                             proxy_image_name=settings["image"], variant=settings["variant"],
                             resources=settings["resources"], native=native, hold_application=settings["hold"])


class ConfigValidator:
    """ValidatingPlugin: Istio config writes through the validating webhooks in the store."""

    def validate(self, req: AdmissionRequest, cluster: Any) -> None:
        if req.group not in VALIDATED_GROUPS or req.operation not in ("CREATE", "UPDATE") or req.obj is None:
            return
        confs, _ = cluster.store.list(VWCS)
        ns = req.namespace or ""
        ns_obj = cluster.store.get(NAMESPACES, "", ns) if ns else None
        matched = injection.matching_webhooks(
            confs, namespace=ns, namespace_labels=((ns_obj or {}).get("metadata") or {}).get("labels"),
            object_labels=(req.obj.get("metadata") or {}).get("labels"), operation=req.operation,
            group=req.group, version=req.version, resource=req.resource,
        )
        for match in matched:
            failure = call_failure(cluster, match.webhook)
            if failure is not None:
                if match.failure_policy == "Ignore":
                    continue
                raise _denied_call(match.webhook, failure)
            if not webhooks.is_istio_validator(match.webhook):
                continue
            problems = validation.validate(req.kind, req.obj)
            if problems:
                raise AdmissionDenied(
                    f'admission webhook "{match.name}" denied the request: configuration is invalid: '
                    + "; ".join(problems),
                    code=400, reason="BadRequest")


def register(cluster: Any) -> None:
    cluster.mutating_plugins.append(SidecarInjector())
    cluster.validating_plugins.append(ConfigValidator())
