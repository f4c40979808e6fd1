"""Sidecar injection as pure functions: which webhook fires, whether istiod injects, the result.

The decision has two halves, as on a real cluster:
1. The API server picks webhooks by their selectors (`matching_webhooks`); Istio's
   precedence rules live entirely in those selectors (see webhooks.py).
2. The istiod behind the first matching injector applies its own policy (`istiod_skip_reason`)
   and rewrites the pod (`inject`). Later injectors see `sidecar.istio.io/status` and skip.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from meshops.sandbox.istio import selectors, webhooks
from meshops.sandbox.istio.versions import istiod_service_name

Obj = dict[str, Any]

STATUS_ANNOTATION = "sidecar.istio.io/status"
REV_ANNOTATION = "istio.io/rev"
TEMPLATES_ANNOTATION = "inject.istio.io/templates"
# istiod never injects here (pkg/kube/inject: IgnoredNamespaces).
IGNORED_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease", "local-path-storage"})

_SIDECAR_VOLUMES = [
    "workload-socket", "credential-socket", "workload-certs", "istio-envoy", "istio-data",
    "istio-podinfo", "istio-token", "istiod-ca-cert",
]
# The gateway injection template mounts the same set; note `istio-podinfo`, not the istioctl
# gateway chart's `podinfo` (reference §2, gateway-injection-template.yaml).
_GATEWAY_VOLUMES = _SIDECAR_VOLUMES


@dataclass(frozen=True)
class MatchedWebhook:
    configuration: str
    webhook: Obj

    @property
    def name(self) -> str:
        return str(self.webhook.get("name", ""))

    @property
    def failure_policy(self) -> str:
        return str(self.webhook.get("failurePolicy", "Fail"))

    @property
    def service(self) -> tuple[str, str] | None:
        return webhooks.service_ref(self.webhook)


def namespace_labels_with_name(namespace: str, labels: Mapping[str, str] | None) -> dict[str, str]:
    """The API server adds `kubernetes.io/metadata.name` to every namespace; selectors may use it."""
    out = dict(labels or {})
    out.setdefault("kubernetes.io/metadata.name", namespace)
    return out


def matching_webhooks(
    configurations: Iterable[Obj],
    *,
    namespace: str,
    namespace_labels: Mapping[str, str] | None,
    object_labels: Mapping[str, str] | None,
    operation: str = "CREATE",
    group: str = "",
    version: str = "v1",
    resource: str = "pods",
) -> list[MatchedWebhook]:
    """Webhooks the API server would call, in its order: configurations by name, then declared order."""
    ns_labels = namespace_labels_with_name(namespace, namespace_labels)
    out: list[MatchedWebhook] = []
    for conf in sorted(configurations, key=lambda c: c["metadata"]["name"]):
        for wh in conf.get("webhooks") or []:
            if not webhooks.rule_matches(wh, operation, group, version, resource):
                continue
            # Cluster-scoped objects are not subject to namespaceSelector.
            if namespace and not selectors.matches(wh.get("namespaceSelector"), ns_labels):
                continue
            if not selectors.matches(wh.get("objectSelector"), object_labels):
                continue
            out.append(MatchedWebhook(conf["metadata"]["name"], wh))
    return out


def revision_of_service(service_name: str) -> str:
    """`istiod` -> 'default', `istiod-canary` -> 'canary' (what the istiod behind it calls itself)."""
    if service_name == "istiod":
        return "default"
    return service_name.removeprefix("istiod-")


def istiod_skip_reason(namespace: str, pod: Obj) -> str | None:
    """istiod's own checks after the webhook fired (pkg/kube/inject `injectRequired`)."""
    meta = pod.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    if STATUS_ANNOTATION in annotations:
        return "already injected"
    if (pod.get("spec") or {}).get("hostNetwork"):
        return "hostNetwork pod"
    if namespace in IGNORED_NAMESPACES:
        return f"namespace {namespace} is ignored"
    # The annotation form is deprecated but still honoured as an opt-out.
    if str(annotations.get("sidecar.istio.io/inject", "")).lower() in ("false", "n", "no", "off"):
        return "opted out by annotation"
    return None


def injecting_revision(
    configurations: Iterable[Obj],
    *,
    namespace: str,
    namespace_labels: Mapping[str, str] | None,
    pod: Obj,
) -> str | None:
    """The revision whose sidecar a new pod gets, or None. Pure: no reachability checks."""
    labels = (pod.get("metadata") or {}).get("labels") or {}
    for match in matching_webhooks(
        configurations, namespace=namespace, namespace_labels=namespace_labels, object_labels=labels
    ):
        if not webhooks.is_istio_injector(match.webhook) or match.service is None:
            continue
        if istiod_skip_reason(namespace, pod):
            return None
        return revision_of_service(match.service[1])
    return None


# --- the mutation --------------------------------------------------------------------------

PROXY_IMAGE_TYPE = "sidecar.istio.io/proxyImageType"
PROXY_IMAGE = "sidecar.istio.io/proxyImage"
NATIVE_SIDECAR = "sidecar.istio.io/nativeSidecar"
DEFAULT_RESOURCES: Obj = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "2000m", "memory": "1024Mi"}}


def injected_image(pod: Obj, *, hub: str, tag: str, image: str = "proxyv2", variant: str = "") -> str:
    """`<hub>/<proxy.image>:<tag>[-<type>]` (reference §5, inject.go ProxyImage): the type is
    the pod's `sidecar.istio.io/proxyImageType` annotation, else `global.variant`; `default`
    strips it. An image (or `sidecar.istio.io/proxyImage`) containing `/` is used verbatim."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    override = str(annotations.get(PROXY_IMAGE) or "")
    if override:
        image = override
    if "/" in image:
        return image
    image_type = str(annotations.get(PROXY_IMAGE_TYPE) or variant or "")
    return f"{hub}/{image}:{tag}" + (f"-{image_type}" if image_type and image_type != "default" else "")


def native_sidecar(pod: Obj, *, minor: int, setting: str, kubelet_minors: list[int]) -> bool:
    """Whether `istio-proxy` goes to initContainers with restartPolicy Always (reference §5).

    `setting` is istiod's ENABLE_NATIVE_SIDECARS ("" = the release default: false before 1.27,
    `auto` from 1.27: on when every node's kubelet is >= 1.33, as for an unscheduled pod,
    ii@1.27.0 pkg/kube/inject/webhook.go DetectNativeSidecar). 1.27 adds the per-pod annotation
    `sidecar.istio.io/nativeSidecar`.
    """
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    if minor >= 27 and str(annotations.get(NATIVE_SIDECAR, "")).lower() in ("true", "false"):
        return str(annotations[NATIVE_SIDECAR]).lower() == "true"
    value = setting.lower() or ("auto" if minor >= 27 else "false")
    if value == "auto":
        return bool(kubelet_minors) and min(kubelet_minors) >= 33
    return value == "true"


def inject(
    pod: Obj,
    *,
    revision: str,
    version: str,
    hub: str = "docker.io/istio",
    cluster_id: str = "Kubernetes",
    namespace: str = "istio-system",
    proxy_image_name: str = "proxyv2",
    variant: str = "",
    resources: Obj | None = None,
    native: bool = False,
    hold_application: bool = False,
) -> None:
    """Rewrite `pod` in place as the injector of `revision` (running Istio `version`) would."""
    meta = pod.setdefault("metadata", {})
    spec = pod.setdefault("spec", {})
    annotations = meta.setdefault("annotations", {})
    labels = meta.setdefault("labels", {})
    image = injected_image(pod, hub=hub, tag=version, image=proxy_image_name, variant=variant)
    templates = [t.strip() for t in str(annotations.get(TEMPLATES_ANNOTATION, "sidecar")).split(",") if t.strip()]
    gateway = "gateway" in templates
    app_containers = [c for c in spec.get("containers") or [] if c.get("name") != "istio-proxy"]
    proxy = _proxy_container(image, revision, cluster_id, namespace, pod, gateway=gateway,
                             resources=resources or DEFAULT_RESOURCES)
    existing_volumes = {v.get("name") for v in spec.get("volumes") or []}

    if gateway:
        # The gateway template fills in the user's `istio-proxy` container (image: auto).
        existing = next((c for c in spec.get("containers") or [] if c.get("name") == "istio-proxy"), None)
        if existing is not None:
            merged = copy.deepcopy(proxy)
            merged.update({k: v for k, v in existing.items() if k not in ("image", "args", "env")})
            merged["env"] = proxy["env"] + [e for e in existing.get("env") or [] if e not in proxy["env"]]
            spec["containers"] = [merged if c.get("name") == "istio-proxy" else c for c in spec["containers"]]
        else:
            spec["containers"] = [*(spec.get("containers") or []), proxy]
        init_names: list[str] | None = None
        volume_names = _GATEWAY_VOLUMES
    elif native:
        # Native sidecar (reference §5): istio-proxy runs as a restartable init container.
        spec["containers"] = app_containers
        spec["initContainers"] = [*(spec.get("initContainers") or []), _init_container(image),
                                  {**proxy, "restartPolicy": "Always"}]
        init_names = ["istio-init", "istio-proxy"]
        volume_names = _SIDECAR_VOLUMES
    elif hold_application:
        # meshConfig.defaultConfig.holdApplicationUntilProxyStarts: the proxy goes first and
        # blocks the app's start in a postStart hook until it is ready (injection template).
        proxy["lifecycle"] = {"postStart": {"exec": {"command": ["pilot-agent", "wait"]}}}
        spec["containers"] = [proxy, *app_containers]
        spec["initContainers"] = [*(spec.get("initContainers") or []), _init_container(image)]
        init_names = ["istio-init"]
        volume_names = _SIDECAR_VOLUMES
    else:
        spec["containers"] = [*app_containers, proxy]
        spec["initContainers"] = [*(spec.get("initContainers") or []), _init_container(image)]
        init_names = ["istio-init"]
        volume_names = _SIDECAR_VOLUMES

    added = [n for n in volume_names if n not in existing_volumes]
    spec["volumes"] = [*(spec.get("volumes") or []), *(_volume(n) for n in added)]

    # Exactly these keys, only injected items, no `templates` key (reference §5, getInjectionStatus).
    annotations[STATUS_ANNOTATION] = json.dumps(
        {
            "initContainers": init_names,
            "containers": None if native and not gateway else ["istio-proxy"],
            "volumes": added or None,
            "imagePullSecrets": None,
            "revision": revision,
        },
        separators=(",", ":"),
    )
    # The annotation carries the istiod's real revision, never a tag; no istio.io/rev label.
    annotations[REV_ANNOTATION] = revision
    if app_containers and not gateway:
        first = app_containers[0].get("name", "")
        annotations.setdefault("kubectl.kubernetes.io/default-container", first)
        annotations.setdefault("kubectl.kubernetes.io/default-logs-container", first)
    annotations.setdefault("prometheus.io/path", "/stats/prometheus")
    annotations.setdefault("prometheus.io/port", "15020")
    annotations.setdefault("prometheus.io/scrape", "true")

    # Injected pods get canonical-service labels, never the istio.io/rev *label* (PR #33447).
    labels.setdefault("security.istio.io/tlsMode", "istio")
    labels.setdefault("service.istio.io/canonical-name", _canonical_name(pod))
    labels.setdefault("service.istio.io/canonical-revision", labels.get("app.kubernetes.io/version")
                      or labels.get("version") or "latest")


def _canonical_name(pod: Obj) -> str:
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    for key in ("service.istio.io/canonical-name", "app.kubernetes.io/name", "app"):
        if labels.get(key):
            return str(labels[key])
    name = meta.get("name") or meta.get("generateName") or "unknown"
    return str(name).rstrip("-")


def _volume(name: str) -> Obj:
    if name == "istio-token":
        return {"name": name, "projected": {"sources": [{"serviceAccountToken": {
            "audience": "istio-ca", "expirationSeconds": 43200, "path": "istio-token"}}]}}
    if name == "istiod-ca-cert":
        return {"name": name, "configMap": {"name": "istio-ca-root-cert"}}
    if name == "istio-podinfo":
        return {"name": name, "downwardAPI": {"items": [
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
            {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}}]}}
    return {"name": name, "emptyDir": {}}


def _field(name: str, path: str) -> Obj:
    return {"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}


def _proxy_container(image: str, revision: str, cluster_id: str, namespace: str, pod: Obj, *, gateway: bool,
                     resources: Obj) -> Obj:
    discovery = f"{istiod_service_name(revision)}.{namespace}.svc:15012"
    app_ports = [p for c in (pod.get("spec") or {}).get("containers") or [] if c.get("name") != "istio-proxy"
                 for p in c.get("ports") or []]
    env = [
        {"name": "PILOT_CERT_PROVIDER", "value": "istiod"},
        {"name": "CA_ADDR", "value": discovery},
        _field("POD_NAME", "metadata.name"),
        _field("POD_NAMESPACE", "metadata.namespace"),
        _field("INSTANCE_IP", "status.podIP"),
        _field("SERVICE_ACCOUNT", "spec.serviceAccountName"),
        _field("HOST_IP", "status.hostIP"),
        {"name": "ISTIO_CPU_LIMIT", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
        # The injection template writes the mesh's defaultConfig as PROXY_CONFIG (reference §2).
        {"name": "PROXY_CONFIG", "value": json.dumps({"discoveryAddress": discovery})},
        {"name": "ISTIO_META_POD_PORTS", "value": json.dumps(app_ports)},
        {"name": "ISTIO_META_APP_CONTAINERS",
         "value": ",".join(c.get("name", "") for c in (pod.get("spec") or {}).get("containers") or []
                           if c.get("name") != "istio-proxy")},
        {"name": "GOMEMLIMIT", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory"}}},
        {"name": "GOMAXPROCS", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
        {"name": "ISTIO_META_CLUSTER_ID", "value": cluster_id},
        _field("ISTIO_META_NODE_NAME", "spec.nodeName"),
        {"name": "ISTIO_META_INTERCEPTION_MODE", "value": "REDIRECT"},
        {"name": "ISTIO_META_WORKLOAD_NAME", "value": _canonical_name(pod)},
        {"name": "ISTIO_META_MESH_ID", "value": "cluster.local"},
        {"name": "TRUST_DOMAIN", "value": "cluster.local"},
    ]
    if gateway:
        env = [e for e in env if e["name"] != "ISTIO_META_INTERCEPTION_MODE"]
    return {
        "name": "istio-proxy",
        "image": image,
        "args": ["proxy", "router" if gateway else "sidecar", "--domain", "$(POD_NAMESPACE).svc.cluster.local",
                 "--proxyLogLevel=warning", "--proxyComponentLogLevel=misc:error", "--log_output_level=default:info"],
        "env": env,
        "ports": [{"containerPort": 15090, "name": "http-envoy-prom", "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": 15021},
                           "periodSeconds": 15, "failureThreshold": 4},
        "resources": copy.deepcopy(resources),
        "securityContext": {"runAsUser": 1337, "runAsGroup": 1337, "runAsNonRoot": True,
                            "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False},
    }


def _init_container(image: str) -> Obj:
    return {
        "name": "istio-init",
        "image": image,
        "args": ["istio-iptables", "-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT",
                 "-i", "*", "-x", "", "-b", "*", "-d", "15090,15021,15020", "--log_output_level=default:info"],
        "securityContext": {"capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
                            "runAsUser": 0, "runAsNonRoot": False},
    }


# --- reading injected pods back --------------------------------------------------------------


def proxy_revision(pod: Obj) -> str | None:
    """The control-plane revision a pod's proxy belongs to, or None if it has no proxy."""
    meta = pod.get("metadata") or {}
    if proxy_container(pod) is None:
        return None
    status = (meta.get("annotations") or {}).get(STATUS_ANNOTATION)
    if status:
        try:
            rev = json.loads(status).get("revision")
        except (ValueError, AttributeError):
            rev = None
        if rev:
            return str(rev)
    # Gateways installed by istioctl are not injected; they carry the revision as a label.
    return str((meta.get("labels") or {}).get("istio.io/rev") or "default")


def proxy_container(pod: Obj) -> Obj | None:
    """`istio-proxy` from containers or, as a native sidecar, initContainers (reference §5)."""
    spec = pod.get("spec") or {}
    for c in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]:
        if c.get("name") == "istio-proxy":
            return dict(c)
    return None


def is_gateway_proxy(pod: Obj) -> bool:
    c = proxy_container(pod)
    return bool(c) and "router" in (c.get("args") or [])
