"""IstioOperator handling: built-in profiles, `-f` overlays and `--set` paths, merged like istioctl.

The result is an `InstallPlan`: the merged IstioOperator plus the few facts the manifest
renderer needs (revision, image hub/tag, which components are on). Precedence, lowest
first: profile < each `-f` file in order < `--set` flags < `--revision`.
"""

from __future__ import annotations

import copy
import itertools
import re
from dataclasses import dataclass, field
from typing import Any

from meshops.sandbox.istio.versions import IstioVersion, valid_revision

Obj = dict[str, Any]

_INGRESS = {"name": "istio-ingressgateway", "enabled": True}
_EGRESS = {"name": "istio-egressgateway", "enabled": False}

_BASE_PROFILE: Obj = {
    "hub": "docker.io/istio",
    "tag": "",
    "namespace": "istio-system",
    "revision": "",
    "meshConfig": {"accessLogFile": "", "defaultConfig": {"proxyMetadata": {}}, "enablePrometheusMerge": True},
    "components": {
        "base": {"enabled": True},
        "pilot": {"enabled": True, "k8s": {"replicaCount": 1}},
        "ingressGateways": [dict(_INGRESS)],
        "egressGateways": [dict(_EGRESS)],
    },
    "values": {
        "defaultRevision": "",
        "global": {
            "istioNamespace": "istio-system",
            "configValidation": True,
            "multiCluster": {"clusterName": ""},
            "proxy": {"image": "proxyv2"},
        },
        "pilot": {"autoscaleEnabled": True, "autoscaleMin": 1},
        "gateways": {"istio-ingressgateway": {}, "istio-egressgateway": {}},
    },
}

PROFILES: dict[str, Obj] = {
    "default": {},
    "demo": {
        "meshConfig": {"accessLogFile": "/dev/stdout"},
        "components": {"egressGateways": [{"name": "istio-egressgateway", "enabled": True}]},
        "values": {"pilot": {"autoscaleEnabled": False, "traceSampling": 100}},
    },
    "minimal": {"components": {"ingressGateways": [{"name": "istio-ingressgateway", "enabled": False}]}},
    "empty": {
        "components": {
            "base": {"enabled": False},
            "pilot": {"enabled": False},
            "ingressGateways": [{"name": "istio-ingressgateway", "enabled": False}],
        },
    },
}


class ProfileError(ValueError):
    pass


@dataclass(frozen=True)
class GatewayComponent:
    name: str
    kind: str  # "ingress" | "egress"
    enabled: bool
    replicas: int
    service_type: str
    labels: dict[str, str]


@dataclass
class InstallPlan:
    version: IstioVersion
    profile: str
    revision: str  # "" when unrevisioned
    hub: str
    tag: str
    namespace: str
    base: bool
    pilot: bool
    pilot_replicas: int
    gateways: list[GatewayComponent]
    values: Obj
    mesh_config: Obj
    operator: Obj = field(repr=False)  # the merged IstioOperator, as recorded in installed-state

    @property
    def revision_label(self) -> str:
        return self.revision or "default"

    @property
    def cluster_id(self) -> str:
        return ((self.values.get("global") or {}).get("multiCluster") or {}).get("clusterName") or "Kubernetes"

    def enabled_gateways(self, kind: str | None = None) -> list[GatewayComponent]:
        return [g for g in self.gateways if g.enabled and (kind is None or g.kind == kind)]

    def component_titles(self) -> list[str]:
        titles = []
        if self.base:
            titles.append("Istio core")
        if self.pilot:
            titles.append("Istiod")
        if self.enabled_gateways("ingress"):
            titles.append("Ingress gateways")
        if self.enabled_gateways("egress"):
            titles.append("Egress gateways")
        return titles


def deep_merge(base: Obj, overlay: Obj) -> Obj:
    """Overlay wins; maps merge; gateway lists merge by `name` like the operator does."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        elif key in ("ingressGateways", "egressGateways") and isinstance(value, list) and isinstance(out.get(key), list):
            out[key] = _merge_by_name(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _merge_by_name(base: list[Obj], overlay: list[Obj]) -> list[Obj]:
    merged = [copy.deepcopy(g) for g in base]
    for item in overlay:
        name = item.get("name")
        for i, existing in enumerate(merged):
            if name and existing.get("name") == name:
                merged[i] = deep_merge(existing, item)
                break
        else:
            merged.append(copy.deepcopy(item))
    return merged


_PATH_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def parse_set_value(raw: str) -> Any:
    if raw in ("true", "false"):
        return raw == "true"
    if re.fullmatch(r"-?\d+", raw):
        return int(raw)
    return raw


def apply_set(spec: Obj, assignment: str) -> None:
    """`--set components.ingressGateways[0].enabled=false` (paths are relative to spec)."""
    if "=" not in assignment:
        raise ProfileError(f"--set {assignment}: expected PATH=VALUE")
    path, raw = assignment.split("=", 1)
    path = path.removeprefix("spec.")
    tokens: list[str | int] = [m.group(1) if m.group(1) is not None else int(m.group(2))
                               for m in _PATH_TOKEN.finditer(path)]
    if not tokens:
        raise ProfileError(f"--set {assignment}: empty path")
    node: Any = spec
    for here, nxt in itertools.pairwise(tokens):
        if isinstance(here, int):
            while len(node) <= here:
                node.append({} if not isinstance(nxt, int) else [])
            node = node[here]
        else:
            if here not in node or not isinstance(node[here], dict | list):
                node[here] = [] if isinstance(nxt, int) else {}
            node = node[here]
    last = tokens[-1]
    value = parse_set_value(raw)
    if isinstance(last, int):
        while len(node) <= last:
            node.append(None)
        node[last] = value
    else:
        node[last] = value


def operator_spec(document: Obj) -> Obj:
    if document.get("kind") not in (None, "IstioOperator"):
        raise ProfileError(f"-f: expected kind IstioOperator, got {document.get('kind')}")
    spec = document.get("spec") or {}
    if not isinstance(spec, dict):
        raise ProfileError("-f: spec must be a map")
    return spec


def build_plan(
    version: IstioVersion,
    *,
    overlays: list[Obj] | None = None,
    sets: list[str] | None = None,
    revision: str | None = None,
) -> InstallPlan:
    user: Obj = {}
    for doc in overlays or []:
        user = deep_merge(user, operator_spec(doc))
    for assignment in sets or []:
        apply_set(user, assignment)
    profile = str(user.get("profile") or "default")
    if profile not in PROFILES:
        raise ProfileError(f'could not read profile "{profile}": profile does not exist (available: '
                           f"{', '.join(sorted(PROFILES))})")
    spec = deep_merge(deep_merge(_BASE_PROFILE, PROFILES[profile]), user)
    spec["profile"] = profile
    if revision is not None:
        spec["revision"] = revision
    rev = str(spec.get("revision") or "")
    if rev == "default":
        rev = ""
    if rev and not valid_revision(rev):
        raise ProfileError("invalid revision specified: " + rev)
    spec["revision"] = rev
    spec["tag"] = str(spec.get("tag") or version)
    values = spec.setdefault("values", {})
    values.setdefault("global", {}).update({"hub": spec["hub"], "tag": spec["tag"]})
    values["revision"] = rev
    components = spec.get("components") or {}
    pilot = components.get("pilot") or {}
    gateways = [
        _gateway(g, kind)
        for kind, key in (("ingress", "ingressGateways"), ("egress", "egressGateways"))
        for g in components.get(key) or []
    ]
    operator = {
        "apiVersion": "install.istio.io/v1alpha1",
        "kind": "IstioOperator",
        "metadata": {"namespace": spec.get("namespace", "istio-system")},
        "spec": spec,
    }
    return InstallPlan(
        version=version,
        profile=profile,
        revision=rev,
        hub=str(spec["hub"]),
        tag=str(spec["tag"]),
        namespace=str(spec.get("namespace") or "istio-system"),
        base=bool((components.get("base") or {}).get("enabled", True)),
        pilot=bool(pilot.get("enabled", True)),
        pilot_replicas=int(((pilot.get("k8s") or {}).get("replicaCount")) or 1),
        gateways=gateways,
        values=values,
        mesh_config=spec.get("meshConfig") or {},
        operator=operator,
    )


def _gateway(component: Obj, kind: str) -> GatewayComponent:
    k8s = component.get("k8s") or {}
    default_type = "LoadBalancer" if kind == "ingress" else "ClusterIP"
    name = str(component.get("name") or f"istio-{kind}gateway")
    return GatewayComponent(
        name=name,
        kind=kind,
        enabled=bool(component.get("enabled", False)),
        replicas=int(k8s.get("replicaCount") or 1),
        service_type=str((k8s.get("service") or {}).get("type") or default_type),
        labels={str(k): str(v) for k, v in (component.get("label") or {}).items()},
    )
