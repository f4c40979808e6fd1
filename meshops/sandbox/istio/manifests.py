"""Kubernetes objects an `istioctl install` of an InstallPlan creates, grouped by component.

Every name, label and ConfigMap key follows ../shared/reference/istio-reality.md §1 (istiod
chart, ii@1.22.0 and ii@1.27.0 manifests/charts/istio-control/istio-discovery/templates);
the gateways are in gateways.py (§2). What istioctl does *not* create matters as much:
no `installed-state` IstioOperator (dropped in 1.21, PR #47860), so a cluster carries no
record of the IstioOperator it was installed from beyond what is listed here.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

import yaml

from meshops.sandbox.istio import crds, gateways, webhooks
from meshops.sandbox.istio.profiles import InstallPlan, deep_merge
from meshops.sandbox.istio.versions import istiod_service_name

Obj = dict[str, Any]

# Components `istioctl uninstall` prunes (ii@1.27.0 operator/pkg/uninstall/prune.go, reference §4).
PRUNED_COMPONENTS = ("Pilot", "IngressGateways", "EgressGateways", "Cni", "Ztunnel")
VALUES_DESCRIPTION = ("This ConfigMap contains the Helm values used during chart rendering. This ConfigMap is "
                      "rendered for debugging purposes and external tooling; modifying these values has no effect.")


@dataclass
class Component:
    title: str  # as istioctl prints it: "Istio core", "Istiod", "Ingress gateways"
    emoji: str
    objects: list[Obj]


def saved_iop_name(plan: InstallPlan) -> str:
    """1.22-1.23 owning-resource value: installed-state[-<iop name>][-<rev>] (code-derived,
    ii@1.22.0 operator/cmd/mesh/install.go savedIOPName). Only a label: nothing is saved."""
    name = "installed-state"
    if plan.iop_name:
        name += f"-{plan.iop_name}"
    return name + (f"-{plan.revision}" if plan.revision else "")


def install_labels(plan: InstallPlan, component: str) -> dict[str, str]:
    """The labels istioctl adds to every object it applies (reference §1, "Labels istioctl adds").

    1.24+: owning-resource is the IOP's metadata.name when it has one, else the chart's
    `unknown` (ii@1.27.0 operator/pkg/install/install.go). 1.22-1.23: installed-state[...].
    """
    owner = (plan.iop_name or "unknown") if plan.version.minor >= 24 else saved_iop_name(plan)
    labels = {
        "install.operator.istio.io/owning-resource": owner,
        "operator.istio.io/component": component,
        "operator.istio.io/managed": "Reconcile",
        "operator.istio.io/version": str(plan.version),
        "istio.io/rev": plan.revision_label,
    }
    if plan.version.minor < 24:
        labels["install.operator.istio.io/owning-resource-namespace"] = plan.namespace
    return labels


def render(plan: InstallPlan) -> list[Component]:
    out: list[Component] = []
    if plan.base:
        out.append(Component("Istio core", "⛵️", [*crds.all_crds(plan.version), _namespace(plan)]))
    if plan.pilot:
        out.append(Component("Istiod", "🧠", _istiod(plan)))
    ingress = [o for g in plan.enabled_gateways("ingress")
               for o in gateways.istioctl_gateway(plan, g, install_labels(plan, "IngressGateways"))]
    if ingress:
        out.append(Component("Ingress gateways", "🛬", ingress))
    egress = [o for g in plan.enabled_gateways("egress")
              for o in gateways.istioctl_gateway(plan, g, install_labels(plan, "EgressGateways"))]
    if egress:
        out.append(Component("Egress gateways", "🛫", egress))
    return out


def _namespace(plan: InstallPlan) -> Obj:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": plan.namespace}}


def suffix(revision: str) -> str:
    return f"-{revision}" if revision not in ("", "default") else ""


def mesh_config(plan: InstallPlan) -> Obj:
    """ConfigMap `istio-R` key `mesh`: the chart's defaults deep-merged with meshConfig (§1)."""
    defaults: Obj = {
        "defaultConfig": {"discoveryAddress": f"{istiod_service_name(plan.revision)}.{plan.namespace}.svc:15012"},
        "defaultProviders": {"metrics": ["prometheus"]},
        "enablePrometheusMerge": True,
        "rootNamespace": plan.namespace,
        "trustDomain": "cluster.local",
    }
    return deep_merge(defaults, plan.mesh_config)


def injector_values(plan: InstallPlan) -> Obj:
    """ConfigMap `istio-sidecar-injector-R` key `values`: a *subset* of the Helm values (§1;
    ii@1.2x.0 istiod-injector-configmap.yaml). No meshConfig, istiod resources, replicas, HPA."""
    v = plan.values
    pilot = v.get("pilot") or {}
    out: Obj = {
        "global": copy.deepcopy(v.get("global") or {}),
        "sidecarInjectorWebhook": copy.deepcopy(v.get("sidecarInjectorWebhook") or {}),
        "revision": plan.revision,
        "pilot": {"cni": copy.deepcopy(pilot.get("cni") or {})},
    }
    if plan.version.minor >= 26:
        out["pilot"]["env"] = copy.deepcopy(pilot.get("env") or {})
    if plan.version.minor >= 23:
        gw = v.get("gateways") or {}
        out["gateways"] = {"securityContext": gw.get("securityContext") or {},
                           "seccompProfile": gw.get("seccompProfile") or {}}
    if plan.version.minor <= 23:
        out["istio_cni"] = copy.deepcopy(v.get("istio_cni") or {})
    return out


def merged_values(plan: InstallPlan) -> Obj:
    return {**copy.deepcopy(plan.values), "meshConfig": mesh_config(plan)}


def _istiod_selector(plan: InstallPlan) -> dict[str, str]:
    # §1: revisioned `app=istiod,istio.io/rev=R`; default revision `app=istiod,istio=pilot`.
    if plan.revision:
        return {"app": "istiod", "istio.io/rev": plan.revision}
    return {"app": "istiod", "istio": "pilot"}


def _istiod_replicas(plan: InstallPlan) -> int:
    """The chart leaves `replicas` to the HPA when autoscaling is on; the sandbox has no HPA
    controller, so it writes the count the HPA would hold (at least autoscaleMin)."""
    pilot = plan.pilot_values
    if pilot.get("autoscaleEnabled", True):
        return max(plan.pilot_replicas, int(pilot.get("autoscaleMin") or 1))
    return plan.pilot_replicas


def _istiod(plan: InstallPlan) -> list[Obj]:
    name = istiod_service_name(plan.revision)
    ns = plan.namespace
    rev_suffix = suffix(plan.revision)
    base = install_labels(plan, "Pilot")
    labels = {**base, "app": "istiod", "istio": "pilot", "release": "istio"}
    pod_labels = {
        "app": "istiod", "istio.io/rev": plan.revision_label, "sidecar.istio.io/inject": "false",
        "operator.istio.io/component": "Pilot",
        "install.operator.istio.io/owning-resource": base["install.operator.istio.io/owning-resource"],
        "istio": "istiod" if plan.revision else "pilot",
    }
    pilot = plan.pilot_values
    env = [
        {"name": "REVISION", "value": plan.revision_label},
        {"name": "PILOT_CERT_PROVIDER", "value": "istiod"},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}},
        {"name": "CLUSTER_ID", "value": plan.cluster_id},
        {"name": "ISTIOD_CUSTOM_HOST", "value": f"{name}.{ns}.svc"},
        *({"name": str(k), "value": str(v)} for k, v in sorted((pilot.get("env") or {}).items())),
    ]
    selector = _istiod_selector(plan)
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {
            "replicas": _istiod_replicas(plan),
            "selector": {"matchLabels": selector},
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
                        "image": f"{plan.hub}/pilot:{plan.image_tag}",
                        "args": ["discovery", "--monitoringAddr=:15014", "--log_output_level=default:info",
                                 "--domain", "cluster.local", "--keepaliveMaxServerConnectionAge", "30m"],
                        "env": env,
                        "ports": [{"containerPort": 8080, "protocol": "TCP"},
                                  {"containerPort": 15010, "protocol": "TCP"},
                                  {"containerPort": 15017, "protocol": "TCP"}],
                        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080},
                                           "initialDelaySeconds": 1, "periodSeconds": 3},
                        "resources": copy.deepcopy(pilot.get("resources") or {}),
                        "volumeMounts": [{"name": "config-volume", "mountPath": "/etc/istio/config"}],
                    }],
                    "volumes": [{"name": "config-volume", "configMap": {"name": f"istio{rev_suffix}"}}],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"selector": dict(selector), "ports": webhooks.istiod_ports()},
    }
    cm_labels = {**base, "release": "istio"}
    objects: list[Obj] = [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": f"istiod{rev_suffix}", "namespace": ns, "labels": {**base, "app": "istiod"}}},
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": f"istio{rev_suffix}", "namespace": ns, "labels": cm_labels},
         "data": {"mesh": yaml.safe_dump(mesh_config(plan), sort_keys=True),
                  "meshNetworks": yaml.safe_dump({"networks": (plan.values.get("global") or {}).get("meshNetworks")
                                                  or {}}, sort_keys=True)}},
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": f"istio-sidecar-injector{rev_suffix}", "namespace": ns, "labels": cm_labels},
         "data": {"values": json.dumps(injector_values(plan), sort_keys=True, indent=2),
                  "config": "defaultTemplates: [sidecar]\npolicy: enabled\nalwaysInjectSelector: []\n"
                            "neverInjectSelector: []\ninjectedAnnotations: {}\n"
                            "templates: {sidecar: '', gateway: ''}\n"}},
    ]
    if plan.version.minor >= 26:
        # values-R, 1.26+ only (PR #55803): original input and the merged result, for tooling.
        objects.append({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": f"values{rev_suffix}", "namespace": ns,
                         "annotations": {"kubernetes.io/description": VALUES_DESCRIPTION},
                         "labels": {**cm_labels, "app.kubernetes.io/name": "istiod"}},
            "data": {"original-values": json.dumps(plan.user_values, sort_keys=True, indent=2),
                     "merged-values": json.dumps(merged_values(plan), sort_keys=True, indent=2)},
        })
    objects += [deployment, service]
    if pilot.get("autoscaleEnabled", True):
        objects.append({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                     "minReplicas": int(pilot.get("autoscaleMin") or 1),
                     "maxReplicas": int(pilot.get("autoscaleMax") or 5),
                     "metrics": [{"type": "Resource", "resource": {
                         "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]},
        })
    objects += [
        {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
         "metadata": {"name": name, "namespace": ns, "labels": labels},
         "spec": {"minAvailable": 1,
                  "selector": {"matchLabels": {"app": "istiod", "istio.io/rev": plan.revision_label}}}},
        webhooks.injector_configuration(plan.revision, owner=base["install.operator.istio.io/owning-resource"],
                                        namespace=ns, labels=base),
        webhooks.revision_validator(plan.revision, owner=base["install.operator.istio.io/owning-resource"],
                                    namespace=ns, labels=base),
    ]
    return objects


def to_yaml(objects: list[Obj]) -> str:
    return "---\n".join(yaml.safe_dump(o, sort_keys=False) for o in objects)
