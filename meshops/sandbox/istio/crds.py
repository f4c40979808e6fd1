"""Istio's CustomResourceDefinitions, as `istioctl install` ("Istio core") creates them.

Specs are open (`x-kubernetes-preserve-unknown-fields`) so that schema problems reach the
validating webhook, which is where the sandbox models Istio's checks (validation.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from meshops.sandbox.istio.versions import IstioVersion


@dataclass(frozen=True)
class IstioKind:
    group: str
    kind: str
    plural: str
    short_names: tuple[str, ...]
    versions: tuple[str, ...]  # served, oldest first
    storage: str
    v1_since_minor: int = 0  # releases that started serving v1 for this kind


KINDS: tuple[IstioKind, ...] = (
    IstioKind("networking.istio.io", "VirtualService", "virtualservices", ("vs",), ("v1alpha3", "v1beta1", "v1"), "v1alpha3", 22),
    IstioKind("networking.istio.io", "DestinationRule", "destinationrules", ("dr",), ("v1alpha3", "v1beta1", "v1"), "v1alpha3", 22),
    IstioKind("networking.istio.io", "Gateway", "gateways", ("gw",), ("v1alpha3", "v1beta1", "v1"), "v1alpha3", 22),
    IstioKind("networking.istio.io", "ServiceEntry", "serviceentries", ("se",), ("v1alpha3", "v1beta1", "v1"), "v1alpha3", 22),
    IstioKind("networking.istio.io", "Sidecar", "sidecars", (), ("v1alpha3", "v1beta1", "v1"), "v1alpha3", 22),
    IstioKind("networking.istio.io", "EnvoyFilter", "envoyfilters", (), ("v1alpha3",), "v1alpha3"),
    IstioKind("networking.istio.io", "WorkloadEntry", "workloadentries", ("we",), ("v1alpha3", "v1beta1", "v1"), "v1alpha3", 22),
    IstioKind("networking.istio.io", "WorkloadGroup", "workloadgroups", ("wg",), ("v1alpha3", "v1beta1", "v1"), "v1alpha3", 22),
    IstioKind("networking.istio.io", "ProxyConfig", "proxyconfigs", (), ("v1beta1",), "v1beta1"),
    IstioKind("security.istio.io", "PeerAuthentication", "peerauthentications", ("pa",), ("v1beta1", "v1"), "v1beta1", 22),
    IstioKind("security.istio.io", "AuthorizationPolicy", "authorizationpolicies", ("ap",), ("v1beta1", "v1"), "v1beta1", 22),
    IstioKind("security.istio.io", "RequestAuthentication", "requestauthentications", ("ra",), ("v1beta1", "v1"), "v1beta1", 22),
    IstioKind("telemetry.istio.io", "Telemetry", "telemetries", ("telemetry",), ("v1alpha1", "v1"), "v1alpha1", 22),
    IstioKind("extensions.istio.io", "WasmPlugin", "wasmplugins", (), ("v1alpha1",), "v1alpha1"),
    IstioKind("install.istio.io", "IstioOperator", "istiooperators", ("iop", "io"), ("v1alpha1",), "v1alpha1"),
)

KIND_BY_NAME = {k.kind: k for k in KINDS}
VALIDATED_GROUPS = frozenset({"networking.istio.io", "security.istio.io", "telemetry.istio.io", "extensions.istio.io"})


def served_versions(kind: IstioKind, version: IstioVersion) -> tuple[str, ...]:
    if kind.v1_since_minor and version.minor < kind.v1_since_minor:
        return tuple(v for v in kind.versions if v != "v1")
    return kind.versions


def crd(kind: IstioKind, version: IstioVersion) -> dict[str, Any]:
    open_object = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    categories = ["istio-io", kind.group.replace(".", "-")]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{kind.plural}.{kind.group}",
            "labels": {"app": "istio-pilot", "chart": "istio", "heritage": "Tiller", "release": "istio",
                       "app.kubernetes.io/part-of": "istio", "app.kubernetes.io/version": str(version)},
            "annotations": {"helm.sh/resource-policy": "keep"},
        },
        "spec": {
            "group": kind.group,
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.kind.lower(),
                "shortNames": list(kind.short_names),
                "categories": categories,
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": v,
                    "served": True,
                    "storage": v == kind.storage,
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                        "spec": open_object, "status": open_object}}},
                    "subresources": {"status": {}},
                }
                for v in served_versions(kind, version)
            ],
        },
    }


def all_crds(version: IstioVersion) -> list[dict[str, Any]]:
    """The CRDs "Istio core" applies. Not IstioOperator: istioctl and Helm stopped installing it
    when `installed-state` went (1.21, PR #47860/#47943; reference §1). KINDS keeps the kind so
    `istioctl` can still name and delete a leftover installed-state on an upgraded cluster."""
    return [crd(k, version) for k in KINDS if k.kind != "IstioOperator"]
