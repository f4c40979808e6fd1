"""Ingress/egress gateways as the two real installers render them (reference §2).

- `istioctl_gateway`: the `gateways.istio-ingressgateway` component of an istioctl install
  (ii@1.22.0, ii@1.27.0 manifests/charts/gateways/istio-ingress). Not injected: the image,
  CA_ADDR and the mesh ConfigMap are baked into the Deployment, so a restart changes nothing;
  only another istioctl install rewrites it. There is no PROXY_CONFIG env: mesh config comes
  from the `config-volume` of ConfigMap `istio[-R]`.
- `helm_gateway`: the Helm `gateway` chart (ii@1.27.0 manifests/charts/gateway): `image: auto`
  filled in by the injector's `gateway` template, so it follows whichever revision injects it.
"""

from __future__ import annotations

import copy
from typing import Any

from meshops.sandbox.istio.profiles import GatewayComponent, InstallPlan
from meshops.sandbox.istio.versions import istiod_service_name

Obj = dict[str, Any]

DEFAULT_PROXY_RESOURCES: Obj = {"requests": {"cpu": "100m", "memory": "128Mi"},
                                "limits": {"cpu": "2000m", "memory": "1024Mi"}}
EMPTY_DIRS = ("workload-socket", "credential-socket", "workload-certs", "istio-envoy", "istio-data")


def proxy_image(hub: str, image: str, tag: str, variant: str) -> str:
    """`<hub>/<image>:<tag>[-<variant>]`; an image with a `/` is used verbatim (reference §5)."""
    if "/" in image:
        return image
    suffix = f"-{variant}" if variant and variant != "default" else ""
    return f"{hub}/{image}:{tag}{suffix}"


def _field_env(name: str, path: str) -> Obj:
    return {"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}


def _gateway_env(plan: InstallPlan, gw: GatewayComponent) -> list[Obj]:
    glob = plan.values.get("global") or {}
    return [
        {"name": "PILOT_CERT_PROVIDER", "value": "istiod"},
        {"name": "CA_ADDR", "value": f"{istiod_service_name(plan.revision)}.{plan.namespace}.svc:15012"},
        {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "spec.nodeName"}}},
        _field_env("POD_NAME", "metadata.name"),
        _field_env("POD_NAMESPACE", "metadata.namespace"),
        _field_env("INSTANCE_IP", "status.podIP"),
        _field_env("HOST_IP", "status.hostIP"),
        {"name": "ISTIO_CPU_LIMIT", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
        _field_env("SERVICE_ACCOUNT", "spec.serviceAccountName"),
        {"name": "ISTIO_META_WORKLOAD_NAME", "value": gw.name},
        {"name": "ISTIO_META_OWNER",
         "value": f"kubernetes://apis/apps/v1/namespaces/{plan.namespace}/deployments/{gw.name}"},
        {"name": "ISTIO_META_MESH_ID", "value": str(glob.get("meshID") or "cluster.local")},
        {"name": "TRUST_DOMAIN", "value": "cluster.local"},
        {"name": "ISTIO_META_UNPRIVILEGED_POD", "value": "true"},
        {"name": "ISTIO_META_CLUSTER_ID", "value": plan.cluster_id},
        {"name": "ISTIO_META_NODE_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "spec.nodeName"}}},
        {"name": "ISTIO_META_NETWORK", "value": str(glob.get("network") or "")},
    ]


def _gateway_volumes(plan: InstallPlan, gw: GatewayComponent) -> list[Obj]:
    aud = str(((plan.values.get("global") or {}).get("sds") or {}).get("token", {}).get("aud") or "istio-ca")
    rev_suffix = f"-{plan.revision}" if plan.revision else ""
    return [
        *({"name": n, "emptyDir": {}} for n in EMPTY_DIRS),
        {"name": "istiod-ca-cert", "configMap": {"name": "istio-ca-root-cert"}},
        {"name": "podinfo", "downwardAPI": {"items": [
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
            {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}}]}},
        {"name": "istio-token", "projected": {"sources": [{"serviceAccountToken": {
            "audience": aud, "expirationSeconds": 43200, "path": "istio-token"}}]}},
        {"name": "config-volume", "configMap": {"name": f"istio{rev_suffix}", "optional": True}},
        {"name": "ingressgateway-certs", "secret": {"secretName": "istio-ingressgateway-certs", "optional": True}},
    ]


def _mounts() -> list[Obj]:
    return [
        {"name": "workload-socket", "mountPath": "/var/run/secrets/workload-spiffe-uds"},
        {"name": "credential-socket", "mountPath": "/var/run/secrets/credential-uds"},
        {"name": "workload-certs", "mountPath": "/var/run/secrets/workload-spiffe-credentials"},
        {"name": "istio-envoy", "mountPath": "/etc/istio/proxy"},
        {"name": "config-volume", "mountPath": "/etc/istio/config"},
        {"name": "istiod-ca-cert", "mountPath": "/var/run/secrets/istio"},
        {"name": "istio-token", "mountPath": "/var/run/secrets/tokens", "readOnly": True},
        {"name": "istio-data", "mountPath": "/var/lib/istio/data"},
        {"name": "podinfo", "mountPath": "/etc/istio/pod"},
    ]


def istioctl_gateway(plan: InstallPlan, gw: GatewayComponent, install_labels: dict[str, str]) -> list[Obj]:
    ns = plan.namespace
    short = "ingressgateway" if gw.kind == "ingress" else "egressgateway"
    component = "IngressGateways" if gw.kind == "ingress" else "EgressGateways"
    selector = {"app": gw.name, "istio": short, **gw.labels}
    labels = {**install_labels, **selector, "release": "istio"}
    injected = gw.injection_template == "gateway"
    pod_labels = {
        **selector,
        "istio.io/rev": plan.revision_label,
        "sidecar.istio.io/inject": "true" if injected else "false",
        "service.istio.io/canonical-name": gw.name,
        # §2: app.kubernetes.io/version | version label, else the Istio revision, else latest.
        "service.istio.io/canonical-revision": (gw.labels.get("app.kubernetes.io/version") or gw.labels.get("version")
                                                or plan.revision or "latest"),
        "operator.istio.io/component": component,
        "install.operator.istio.io/owning-resource": install_labels["install.operator.istio.io/owning-resource"],
        "chart": "gateways",
        "heritage": "Tiller",
        "release": "istio",
    }
    if plan.version.minor >= 27:
        pod_labels["istio.io/dataplane-mode"] = "none"
    annotations = {"prometheus.io/port": "15020", "prometheus.io/scrape": "true",
                   "prometheus.io/path": "/stats/prometheus"}
    glob = plan.values.get("global") or {}
    if injected:
        # injected-deployment.yaml: the injector's `gateway` template fills the proxy in.
        annotations["inject.istio.io/templates"] = "gateway"
        proxy: Obj = {"name": "istio-proxy", "image": "auto",
                      "ports": [{"containerPort": 8080, "protocol": "TCP"}, {"containerPort": 8443, "protocol": "TCP"}]}
        volumes: list[Obj] = []
    else:
        annotations["sidecar.istio.io/inject"] = "false"
        image = proxy_image(plan.hub, str((glob.get("proxy") or {}).get("image") or "proxyv2"), plan.tag, plan.variant)
        proxy = {
            "name": "istio-proxy",
            "image": image,
            "args": ["proxy", "router", "--domain", "$(POD_NAMESPACE).svc.cluster.local",
                     "--proxyLogLevel=warning", "--proxyComponentLogLevel=misc:error",
                     "--log_output_level=default:info"],
            "env": _gateway_env(plan, gw),
            "ports": [{"containerPort": 15021, "protocol": "TCP"},
                      {"containerPort": 8080, "protocol": "TCP"},
                      {"containerPort": 8443, "protocol": "TCP"},
                      {"containerPort": 15090, "name": "http-envoy-prom", "protocol": "TCP"}],
            "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": 15021, "scheme": "HTTP"},
                               "periodSeconds": 2, "failureThreshold": 30, "successThreshold": 1,
                               "timeoutSeconds": 1},
            "resources": copy.deepcopy(gw.resources or DEFAULT_PROXY_RESOURCES),
            "volumeMounts": _mounts(),
        }
        volumes = _gateway_volumes(plan, gw)
    ports = ([{"name": "status-port", "port": 15021, "protocol": "TCP", "targetPort": 15021},
              {"name": "http2", "port": 80, "protocol": "TCP", "targetPort": 8080},
              {"name": "https", "port": 443, "protocol": "TCP", "targetPort": 8443}]
             if gw.kind == "ingress" else
             [{"name": "http2", "port": 80, "protocol": "TCP", "targetPort": 8080},
              {"name": "https", "port": 443, "protocol": "TCP", "targetPort": 8443}])
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         # The chart names it <gateway>-service-account (the principal users write in policies).
         "metadata": {"name": f"{gw.name}-service-account", "namespace": ns, "labels": labels}},
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": gw.name, "namespace": ns, "labels": labels},
            "spec": {
                "replicas": gw.replicas,
                "selector": {"matchLabels": selector},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "100%", "maxUnavailable": "25%"}},
                "template": {
                    "metadata": {"labels": pod_labels, "annotations": annotations},
                    "spec": {"serviceAccountName": f"{gw.name}-service-account",
                             "containers": [proxy], "volumes": volumes},
                },
            },
        },
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": gw.name, "namespace": ns, "labels": labels},
         "spec": {"type": gw.service_type, "selector": dict(selector), "ports": ports}},
        {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
         "metadata": {"name": gw.name, "namespace": ns, "labels": labels},
         "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": gw.name},
                  "minReplicas": gw.replicas, "maxReplicas": max(5, gw.replicas),
                  "metrics": [{"type": "Resource", "resource": {
                      "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]}},
        {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
         "metadata": {"name": gw.name, "namespace": ns, "labels": labels},
         "spec": {"minAvailable": 1, "selector": {"matchLabels": selector}}},
    ]


def helm_gateway(name: str, namespace: str, *, revision: str = "", replicas: int = 1) -> list[Obj]:
    """`helm install <name> istio/gateway [--set revision=R]` (reference §2, Helm gateway chart).

    Selector `app=<name>`, `istio=<name without istio->`; pod labelled
    `sidecar.istio.io/inject: "true"` (plus `istio.io/rev` only with a revision); the
    `inject.istio.io/templates: gateway` annotation; `image: auto`; Service 80->80, 443->443.
    No operator.istio.io/component label, so `istioctl uninstall` never deletes it (§4).
    """
    selector = {"app": name, "istio": name.removeprefix("istio-")}
    labels = {**selector, "app.kubernetes.io/name": name, "app.kubernetes.io/instance": name,
              "app.kubernetes.io/managed-by": "Helm", "app.kubernetes.io/part-of": "istio",
              "helm.sh/chart": "gateway"}
    pod_labels = {**selector, "sidecar.istio.io/inject": "true"}
    if revision:
        pod_labels["istio.io/rev"] = revision
        labels["istio.io/rev"] = revision
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace, "labels": labels}},
        {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": selector},
                "template": {
                    "metadata": {"labels": pod_labels,
                                 "annotations": {"inject.istio.io/templates": "gateway",
                                                 "prometheus.io/port": "15020", "prometheus.io/scrape": "true",
                                                 "prometheus.io/path": "/stats/prometheus"}},
                    "spec": {
                        "serviceAccountName": name,
                        "securityContext": {"sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]},
                        "containers": [{"name": "istio-proxy", "image": "auto",
                                        "ports": [{"containerPort": 15090, "name": "http-envoy-prom",
                                                   "protocol": "TCP"}]}],
                    },
                },
            },
        },
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": name, "namespace": namespace, "labels": labels},
         "spec": {"type": "LoadBalancer", "selector": dict(selector),
                  "ports": [{"name": "status-port", "port": 15021, "protocol": "TCP", "targetPort": 15021},
                            {"name": "http2", "port": 80, "protocol": "TCP", "targetPort": 80},
                            {"name": "https", "port": 443, "protocol": "TCP", "targetPort": 443}]}},
    ]
