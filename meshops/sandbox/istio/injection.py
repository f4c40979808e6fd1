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
from meshops.sandbox.istio.versions import istiod_service_name, proxy_image

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


def inject(
    pod: Obj,
    *,
    revision: str,
    version: str,
    hub: str = "docker.io/istio",
    cluster_id: str = "Kubernetes",
    namespace: str = "istio-system",
) -> None:
    """Rewrite `pod` in place as the injector of `revision` (running Istio `version`) would."""
    meta = pod.setdefault("metadata", {})
    spec = pod.setdefault("spec", {})
    annotations = meta.setdefault("annotations", {})
    labels = meta.setdefault("labels", {})
    image = proxy_image(version, hub)
    templates = [t.strip() for t in str(annotations.get(TEMPLATES_ANNOTATION, "sidecar")).split(",") if t.strip()]
    gateway = "gateway" in templates
    app_containers = [c for c in spec.get("containers") or [] if c.get("name") != "istio-proxy"]
    proxy = _proxy_container(image, revision, cluster_id, namespace, gateway=gateway)

    if gateway:
        # The gateway template fills in the user's `istio-proxy` container (image: auto).
        existing = next((c for c in spec.get("containers") or [] if c.get("name") == "istio-proxy"), None)
        if existing is not None:
            merged = copy.deepcopy(proxy)
            merged.update({k: v for k, v in existing.items() if k not in ("image", "args", "env")})
            merged["image"] = image
            merged["env"] = proxy["env"] + [e for e in existing.get("env") or [] if e not in proxy["env"]]
            spec["containers"] = [merged if c.get("name") == "istio-proxy" else c for c in spec["containers"]]
        else:
            spec["containers"] = [*(spec.get("containers") or []), proxy]
        init_names: list[str] | None = None
    else:
        spec["containers"] = [*app_containers, proxy]
        spec["initContainers"] = [*(spec.get("initContainers") or []), _init_container(image)]
        init_names = ["istio-init"]

    existing_volumes = {v.get("name") for v in spec.get("volumes") or []}
    spec["volumes"] = [*(spec.get("volumes") or []),
                       *({"name": n, "emptyDir": {}} for n in _SIDECAR_VOLUMES if n not in existing_volumes)]

    annotations[STATUS_ANNOTATION] = json.dumps(
        {
            "initContainers": init_names,
            "containers": ["istio-proxy"],
            "volumes": _SIDECAR_VOLUMES,
            "imagePullSecrets": None,
            "revision": revision,
        },
        separators=(",", ":"),
    )
    annotations[REV_ANNOTATION] = revision
    if app_containers and not gateway:
        first = app_containers[0].get("name", "")
        annotations.setdefault("kubectl.kubernetes.io/default-container", first)
        annotations.setdefault("kubectl.kubernetes.io/default-logs-container", first)
    annotations.setdefault("prometheus.io/path", "/stats/prometheus")
    annotations.setdefault("prometheus.io/port", "15020")
    annotations.setdefault("prometheus.io/scrape", "true")

    # Injected pods get canonical-service labels, never the istio.io/rev *label* (istio/istio#42290).
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


def _proxy_container(image: str, revision: str, cluster_id: str, namespace: str, *, gateway: bool) -> Obj:
    discovery = f"{istiod_service_name(revision)}.{namespace}.svc:15012"
    return {
        "name": "istio-proxy",
        "image": image,
        "args": ["proxy", "router" if gateway else "sidecar", "--domain", "$(POD_NAMESPACE).svc.cluster.local",
                 "--proxyLogLevel=warning", "--proxyComponentLogLevel=misc:error", "--log_output_level=default:info"],
        "env": [
            {"name": "PILOT_CERT_PROVIDER", "value": "istiod"},
            {"name": "CA_ADDR", "value": discovery},
            {"name": "ISTIO_META_CLUSTER_ID", "value": cluster_id},
            {"name": "PROXY_CONFIG", "value": json.dumps({"discoveryAddress": discovery})},
        ],
        "ports": [{"containerPort": 15090, "name": "http-envoy-prom", "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": 15021},
                           "periodSeconds": 15, "failureThreshold": 4},
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                      "limits": {"cpu": "2", "memory": "1Gi"}},
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
    if not any(c.get("name") == "istio-proxy" for c in (pod.get("spec") or {}).get("containers") or []):
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
    for c in (pod.get("spec") or {}).get("containers") or []:
        if c.get("name") == "istio-proxy":
            return dict(c)
    return None


def is_gateway_proxy(pod: Obj) -> bool:
    c = proxy_container(pod)
    return c is not None and "router" in (c.get("args") or [])
