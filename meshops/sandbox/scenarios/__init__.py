"""Scenarios for `meshops sandbox up --scenario NAME|FILE`: what to install and deploy at start.

A NAME is one of scenarios.yaml (default, revisioned, blue-green, fleet-200, istioctl-plain, fleet). A FILE is
multi-document Kubernetes YAML applied after start, on top of whatever the flags asked for.
Objects come back split in two: plain Kubernetes objects, and Istio config that can only be
created once Istio's CRDs exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]
HERE = Path(__file__).parent
LEGACY = "legacy"

# Namespaces of the bookinfo app and whether the scenario's injection label goes on them.
BOOKINFO_NAMESPACES = {
    "bookinfo-frontend": True,
    "bookinfo-backend": True,
    "bookinfo-data": True,
    "bookinfo-ops": True,
    "legacy-batch": False,  # opted out: istio-injection=disabled
}


class ScenarioError(ValueError):
    pass


@dataclass
class Scenario:
    name: str
    description: str = ""
    clusters: list[str] = field(default_factory=list)
    istio_version: str | None = None
    revision: str = ""  # "" unrevisioned, "auto" named after the version, else the name
    profile: str = "default"
    tags: list[str] = field(default_factory=list)
    injection: str = LEGACY
    apps: list[str] = field(default_factory=list)
    fleet: dict[str, int] = field(default_factory=dict)
    route53_cluster: str | None = None
    manifests: list[Obj] = field(default_factory=list)  # a FILE scenario's documents, or inline ones
    operator: Obj | None = None  # an IstioOperator passed to `istioctl install -f` (plain istioctl)
    helm_gateways: list[Obj] = field(default_factory=list)  # {name, namespace, revision} per Helm gateway

    def revision_for(self, version: str) -> str:
        return version.replace(".", "-") if self.revision == "auto" else self.revision


def names() -> list[str]:
    return sorted(_definitions())


def _definitions() -> dict[str, Obj]:
    return dict(yaml.safe_load((HERE / "scenarios.yaml").read_text()))


def load(name_or_file: str) -> Scenario:
    defs = _definitions()
    if name_or_file in defs:
        d = defs[name_or_file]
        istio = d.get("istio") or {}
        return Scenario(
            name=name_or_file,
            description=d.get("description", ""),
            clusters=list(d.get("clusters") or []),
            istio_version=istio.get("version"),
            revision=str(istio.get("revision") or ""),
            profile=str(istio.get("profile") or "default"),
            tags=list(istio.get("tags") or []),
            injection=str(d.get("injection") or LEGACY),
            apps=list(d.get("apps") or []),
            fleet=dict(d.get("fleet") or {}),
            route53_cluster=d.get("route53"),
            manifests=list(d.get("manifests") or []),
            operator=istio.get("operator"),
            helm_gateways=list(d.get("helm_gateways") or []),
        )
    path = Path(name_or_file)
    if not path.is_file():
        raise ScenarioError(f"no scenario {name_or_file!r}: not one of {', '.join(sorted(defs))} and not a file")
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    except yaml.YAMLError as e:
        raise ScenarioError(f"{path}: not valid YAML: {e}") from e
    items: list[Obj] = []
    for doc in docs:
        if not isinstance(doc, dict) or "kind" not in doc:
            raise ScenarioError(f"{path}: every document needs a kind")
        items += doc.get("items") or [] if doc["kind"].endswith("List") else [doc]
    return Scenario(name=path.name, description=f"objects from {path}", manifests=items)


def injection_labels(scenario: Scenario) -> dict[str, str]:
    if scenario.injection == LEGACY:
        return {"istio-injection": "enabled"}
    return {"istio.io/rev": scenario.injection}


def _namespace(name: str, labels: dict[str, str]) -> Obj:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": dict(labels)}}


def fleet_objects(namespaces: int, per_namespace: int, replicas: int, labels: dict[str, str]) -> list[Obj]:
    out: list[Obj] = []
    for i in range(namespaces):
        ns = f"fleet-{i:03d}"
        out.append(_namespace(ns, labels))
        for j in range(per_namespace):
            app = f"svc-{j:02d}"
            out.append({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": app, "namespace": ns, "labels": {"app": app}},
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": {"app": app}},
                    "template": {"metadata": {"labels": {"app": app, "version": "v1"}},
                                 "spec": {"containers": [{"name": app, "image": "docker.io/library/nginx:1.27"}]}},
                },
            })
    return out


def is_istio_config(obj: Obj) -> bool:
    return str(obj.get("apiVersion", "")).split("/")[0].endswith("istio.io")


def objects(scenario: Scenario) -> tuple[list[Obj], list[Obj]]:
    """(Kubernetes objects in apply order, Istio config objects)."""
    plain: list[Obj] = []
    labels = injection_labels(scenario)
    if "bookinfo" in scenario.apps:
        for ns, injected in BOOKINFO_NAMESPACES.items():
            plain.append(_namespace(ns, labels if injected else {"istio-injection": "disabled"}))
        plain += [d for d in yaml.safe_load_all((HERE / "bookinfo.yaml").read_text()) if d]
    if "fleet" in scenario.apps:
        f = scenario.fleet
        plain += fleet_objects(int(f.get("namespaces", 200)), int(f.get("deployments_per_namespace", 10)),
                               int(f.get("replicas", 1)), labels)
    plain += scenario.manifests
    for gw in scenario.helm_gateways:
        from meshops.sandbox.istio.gateways import helm_gateway

        ns = str(gw.get("namespace") or "istio-ingress")
        plain.append(_namespace(ns, {}))
        plain += [{**o, "metadata": {**o["metadata"], "namespace": ns}}
                  for o in helm_gateway(str(gw.get("name") or "istio-ingress"), ns,
                                        revision=str(gw.get("revision") or ""), replicas=int(gw.get("replicas") or 1))]
    istio = [o for o in plain if is_istio_config(o)]
    plain = [o for o in plain if not is_istio_config(o)]
    # Namespaces first, so that what lives in them can be created in one pass.
    plain.sort(key=lambda o: 0 if o.get("kind") == "Namespace" else 1)
    return plain, istio
