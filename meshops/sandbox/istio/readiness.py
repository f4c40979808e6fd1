"""Proxy readiness as the cluster's state allows it: a proxy needs the istiod it was built for.

A proxy gets its certificate from `CA_ADDR` and its config from the discovery address; both
name one istiod Service (reference §2: `CA_ADDR=istiod[-R].istio-system.svc:15012` is baked
into an istioctl gateway; injected pods get it from their injector). The sandbox has no xDS,
so it asks the cluster instead:

- an istioctl (non-injected) gateway is Ready only while that Service has a ready istiod pod
  and its `config-volume` ConfigMap (`istio[-R]`) exists. So a gateway left wired to a removed
  revision goes NotReady, and its load balancer loses its targets (issue 12, reference §2
  "Upgrade": only re-running istioctl moves it);
- an injected proxy (sidecar or Helm gateway) that is not Ready yet cannot become Ready
  without its istiod; one already Ready keeps serving its last config, as Envoy does.

The gate is re-asked whenever an istiod Service, an istiod pod or an `istio*` ConfigMap
changes (a store subscription enqueues the affected proxy pods on the kubelet).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from meshops.sandbox.istio import selectors

log = logging.getLogger("meshops.sandbox.istio")

Obj = dict[str, Any]
PODS = ("", "pods")
SERVICES = ("", "services")
CONFIGMAPS = ("", "configmaps")
STATUS_ANNOTATION = "sidecar.istio.io/status"


def proxy_container(pod: Obj) -> Obj | None:
    """`istio-proxy` in containers, or in initContainers as a native sidecar (reference §5)."""
    spec = pod.get("spec") or {}
    for c in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]:
        if c.get("name") == "istio-proxy":
            return dict(c)
    return None


def _env(container: Obj, name: str) -> str:
    for e in container.get("env") or []:
        if e.get("name") == name:
            return str(e.get("value") or "")
    return ""


def control_plane_of(container: Obj) -> tuple[str, str] | None:
    """(namespace, service) of the istiod a proxy talks to: CA_ADDR, else PROXY_CONFIG's
    discoveryAddress (host `<svc>.<ns>.svc:15012`)."""
    address = _env(container, "CA_ADDR")
    if not address:
        try:
            address = str(json.loads(_env(container, "PROXY_CONFIG") or "{}").get("discoveryAddress") or "")
        except ValueError:
            address = ""
    if not address:
        return None
    parts = address.split(":", 1)[0].split(".")
    return (parts[1] if len(parts) > 1 else "istio-system"), parts[0]


def _ready(pod: Obj) -> bool:
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def istiod_serving(store: Any, namespace: str, service: str) -> bool:
    svc = store.get(SERVICES, namespace, service)
    if svc is None:
        return False
    selector = (svc.get("spec") or {}).get("selector") or {}
    if not selector:
        return False
    pods, _ = store.list(PODS, namespace, lambda p: selectors.matches({"matchLabels": selector},
                                                                      (p.get("metadata") or {}).get("labels")))
    return any(_ready(p) for p in pods)


def is_istioctl_gateway(pod: Obj) -> bool:
    """A proxy not put there by the injector (no status annotation): the istioctl gateway chart."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    container = proxy_container(pod)
    return container is not None and STATUS_ANNOTATION not in annotations and container.get("image") != "auto"


def _mesh_configmap(pod: Obj) -> str | None:
    for v in (pod.get("spec") or {}).get("volumes") or []:
        if v.get("name") == "config-volume" and v.get("configMap"):
            return str(v["configMap"].get("name") or "")
    return None


class ProxyReadiness:
    """ReadinessGate for proxies, plus the subscription that re-asks it (see module doc)."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster
        cluster.readiness_gates.append(self)
        self._unsubscribe = cluster.store.subscribe(self._on_change, [SERVICES, PODS, CONFIGMAPS])

    def stop(self) -> None:
        self._unsubscribe()

    def pod_ready(self, pod: Obj, cluster: Any) -> bool:
        container = proxy_container(pod)
        if container is None:
            return True
        gateway = is_istioctl_gateway(pod)
        if not gateway and _ready(pod):
            return True  # a running injected proxy keeps its last config
        target = control_plane_of(container)
        if target is None:
            return True  # a hand-written proxy we cannot place: do not guess
        store = cluster.store
        if not istiod_serving(store, *target):
            return False
        if gateway:
            cm = _mesh_configmap(pod)
            namespace = (pod.get("metadata") or {}).get("namespace", "")
            if cm and store.get(CONFIGMAPS, namespace, cm) is None:
                return False
        return True

    def _on_change(self, event: Any) -> None:
        obj = event.obj or {}
        meta = obj.get("metadata") or {}
        name = str(meta.get("name", ""))
        if event.gr == PODS:
            if (meta.get("labels") or {}).get("app") != "istiod":
                return
        elif event.gr == SERVICES:
            if not name.startswith("istiod"):
                return
        elif not name.startswith("istio") or name == "istio-ca-root-cert":
            return  # mesh ConfigMaps are istio[-R]; the per-namespace root cert is not one
        kubelet = next((c for c in self.cluster.controllers.controllers if c.name == "kubelet"), None)
        if kubelet is None or kubelet.queue is None:
            return
        pods, _ = self.cluster.store.list(PODS, None, lambda p: proxy_container(p) is not None
                                          and (is_istioctl_gateway(p) or not _ready(p)))
        for p in pods:
            kubelet.enqueue(("pod", p["metadata"]["namespace"], p["metadata"]["name"]))


def register(cluster: Any) -> ProxyReadiness:
    return ProxyReadiness(cluster)
