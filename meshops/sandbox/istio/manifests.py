"""Kubernetes objects an `istioctl install` of an InstallPlan creates, grouped by component.

Names and labels follow the charts (istio-discovery, gateways) because meshops and users
find the control plane by them: `istiod-<rev>`, `app=istiod`, `istio.io/rev`,
`operator.istio.io/component`, `istio: ingressgateway`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import yaml

from meshops.sandbox.istio import crds, webhooks
from meshops.sandbox.istio.profiles import GatewayComponent, InstallPlan
from meshops.sandbox.istio.versions import istiod_service_name

Obj = dict[str, Any]


@dataclass
class Component:
    title: str  # as istioctl prints it: "Istio core", "Istiod", "Ingress gateways"
    emoji: str
    objects: list[Obj]


def installed_state_name(revision: str) -> str:
    return "installed-state" + (f"-{revision}" if revision else "")


def render(plan: InstallPlan) -> list[Component]:
    out: list[Component] = []
    if plan.base:
        out.append(Component("Istio core", "⛵️", [*crds.all_crds(plan.version), _namespace(plan)]))
    if plan.pilot:
        out.append(Component("Istiod", "🧠", _istiod(plan)))
    ingress = [o for g in plan.enabled_gateways("ingress") for o in _gateway(plan, g)]
    if ingress:
        out.append(Component("Ingress gateways", "🛬", ingress))
    egress = [o for g in plan.enabled_gateways("egress") for o in _gateway(plan, g)]
    if egress:
        out.append(Component("Egress gateways", "🛫", egress))
    return out


def installed_state(plan: InstallPlan) -> Obj:
    """The applied IstioOperator, recorded in-cluster as istioctl does (`installed-state[-<rev>]`)."""
    iop: Obj = json.loads(json.dumps(plan.operator))
    iop["metadata"] = {
        "name": installed_state_name(plan.revision),
        "namespace": plan.namespace,
        "labels": {"istio.io/rev": plan.revision_label, "install.operator.istio.io/owning-resource": "installed-state"},
        "annotations": {"install.istio.io/ignoreReconcile": "true"},
    }
    return iop


def _labels(plan: InstallPlan, component: str) -> dict[str, str]:
    return {
        "install.operator.istio.io/owning-resource": installed_state_name(plan.revision),
        "install.operator.istio.io/owning-resource-namespace": plan.namespace,
        "operator.istio.io/component": component,
        "operator.istio.io/version": str(plan.version),
        "istio.io/rev": plan.revision_label,
        "release": "istio",
    }


def _namespace(plan: InstallPlan) -> Obj:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": plan.namespace}}


def _istiod(plan: InstallPlan) -> list[Obj]:
    name = istiod_service_name(plan.revision)
    ns = plan.namespace
    labels = {**_labels(plan, "Pilot"), "app": "istiod", "istio": "pilot"}
    rev_suffix = f"-{plan.revision}" if plan.revision else ""
    values = {
        "global": plan.values.get("global", {}),
        "revision": plan.revision,
        "sidecarInjectorWebhook": plan.values.get("sidecarInjectorWebhook", {}),
        "pilot": plan.values.get("pilot", {}),
    }
    pod_labels = {"app": "istiod", "istio": "pilot", "istio.io/rev": plan.revision_label,
                  "sidecar.istio.io/inject": "false", "operator.istio.io/component": "Pilot"}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {
            "replicas": plan.pilot_replicas,
            "selector": {"matchLabels": {"app": "istiod", "istio.io/rev": plan.revision_label}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "100%", "maxUnavailable": "25%"}},
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    "annotations": {"sidecar.istio.io/inject": "false", "prometheus.io/port": "15014",
                                    "prometheus.io/scrape": "true"},
                },
                "spec": {
                    "serviceAccountName": f"istiod{rev_suffix}",
                    "containers": [{
                        "name": "discovery",
                        "image": f"{plan.hub}/pilot:{plan.tag}",
                        "args": ["discovery", "--monitoringAddr=:15014", "--log_output_level=default:info",
                                 "--domain", "cluster.local", "--keepaliveMaxServerConnectionAge", "30m"],
                        "env": [
                            {"name": "REVISION", "value": plan.revision_label},
                            {"name": "PILOT_CERT_PROVIDER", "value": "istiod"},
                            {"name": "CLUSTER_ID", "value": plan.cluster_id},
                            {"name": "ISTIOD_CUSTOM_HOST", "value": f"{name}.{ns}.svc"},
                        ],
                        "ports": [{"containerPort": 8080, "protocol": "TCP"},
                                  {"containerPort": 15010, "protocol": "TCP"},
                                  {"containerPort": 15017, "protocol": "TCP"}],
                        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080},
                                           "initialDelaySeconds": 1, "periodSeconds": 3},
                        "resources": {"requests": {"cpu": "500m", "memory": "2048Mi"}},
                    }],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"selector": {"app": "istiod", "istio.io/rev": plan.revision_label},
                 "ports": webhooks.istiod_ports()},
    }
    mesh = {"defaultConfig": {"discoveryAddress": f"{name}.{ns}.svc:15012"}, "rootNamespace": ns,
            "trustDomain": "cluster.local"}
    mesh.update(plan.mesh_config)
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": f"istiod{rev_suffix}", "namespace": ns, "labels": labels}},
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": f"istio{rev_suffix}", "namespace": ns, "labels": labels},
         "data": {"mesh": yaml.safe_dump(mesh, sort_keys=True), "meshNetworks": "networks: {}"}},
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": f"istio-sidecar-injector{rev_suffix}", "namespace": ns, "labels": labels},
         "data": {"values": json.dumps(values, sort_keys=True, indent=2),
                  "config": "defaultTemplates: [sidecar]\npolicy: enabled\nalwaysInjectSelector: []\n"
                            "neverInjectSelector: []\ntemplates: {sidecar: '', gateway: ''}\n"}},
        deployment,
        service,
        {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
         "metadata": {"name": name, "namespace": ns, "labels": labels},
         "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "istiod", "istio.io/rev": plan.revision_label}}}},
        webhooks.injector_configuration(plan.revision, owner=installed_state_name(plan.revision), namespace=ns),
        webhooks.revision_validator(plan.revision, owner=installed_state_name(plan.revision), namespace=ns),
    ]


def _gateway(plan: InstallPlan, gw: GatewayComponent) -> list[Obj]:
    ns = plan.namespace
    short = "ingressgateway" if gw.kind == "ingress" else "egressgateway"
    component = "IngressGateways" if gw.kind == "ingress" else "EgressGateways"
    selector = {"app": gw.name, "istio": short, **gw.labels}
    labels = {**_labels(plan, component), **selector}
    pod_labels = {
        **selector,
        "istio.io/rev": plan.revision_label,
        "sidecar.istio.io/inject": "false",
        "service.istio.io/canonical-name": gw.name,
        "service.istio.io/canonical-revision": "latest",
        "operator.istio.io/component": component,
        "chart": "gateways",
        "heritage": "Tiller",
        "release": "istio",
    }
    discovery = f"{istiod_service_name(plan.revision)}.{ns}.svc:15012"
    ports = ([{"name": "status-port", "port": 15021, "protocol": "TCP", "targetPort": 15021},
              {"name": "http2", "port": 80, "protocol": "TCP", "targetPort": 8080},
              {"name": "https", "port": 443, "protocol": "TCP", "targetPort": 8443}]
             if gw.kind == "ingress" else
             [{"name": "http2", "port": 80, "protocol": "TCP", "targetPort": 8080},
              {"name": "https", "port": 443, "protocol": "TCP", "targetPort": 8443}])
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount",
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
                    "metadata": {"labels": pod_labels,
                                 "annotations": {"sidecar.istio.io/inject": "false", "prometheus.io/port": "15020",
                                                 "prometheus.io/scrape": "true",
                                                 "prometheus.io/path": "/stats/prometheus"}},
                    "spec": {
                        "serviceAccountName": f"{gw.name}-service-account",
                        "containers": [{
                            "name": "istio-proxy",
                            "image": f"{plan.hub}/proxyv2:{plan.tag}",
                            "args": ["proxy", "router", "--domain", "$(POD_NAMESPACE).svc.cluster.local",
                                     "--proxyLogLevel=warning", "--proxyComponentLogLevel=misc:error",
                                     "--log_output_level=default:info"],
                            "env": [{"name": "ISTIO_META_CLUSTER_ID", "value": plan.cluster_id},
                                    {"name": "PROXY_CONFIG", "value": json.dumps({"discoveryAddress": discovery})},
                                    {"name": "ISTIO_META_ROUTER_MODE", "value": "standard"}],
                            "ports": [{"containerPort": 15021, "protocol": "TCP"},
                                      {"containerPort": 8080, "protocol": "TCP"},
                                      {"containerPort": 8443, "protocol": "TCP"},
                                      {"containerPort": 15090, "name": "http-envoy-prom", "protocol": "TCP"}],
                            "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": 15021},
                                               "periodSeconds": 2, "failureThreshold": 30},
                        }],
                    },
                },
            },
        },
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": gw.name, "namespace": ns, "labels": labels},
         "spec": {"type": gw.service_type, "selector": selector, "ports": ports}},
        {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
         "metadata": {"name": gw.name, "namespace": ns, "labels": labels},
         "spec": {"minAvailable": 1, "selector": {"matchLabels": selector}}},
    ]


def to_yaml(objects: list[Obj]) -> str:
    return "---\n".join(yaml.safe_dump(o, sort_keys=False) for o in objects)
