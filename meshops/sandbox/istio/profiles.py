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
    # Chart defaults that the sandbox reads back (istiod chart values.yaml, 1.22-1.27); the
    # injector ConfigMap publishes a subset of them (reference §1, see manifests.injector_values).
    "values": {
        "defaultRevision": "",
        "global": {
            "istioNamespace": "istio-system",
            "configValidation": True,
            "multiCluster": {"clusterName": ""},
            "meshID": "",
            "network": "",
            "variant": "",
            "jwtPolicy": "third-party-jwt",
            "imagePullSecrets": [],
            "sds": {"token": {"aud": "istio-ca"}},
            "proxy": {
                "image": "proxyv2",
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                              "limits": {"cpu": "2000m", "memory": "1024Mi"}},
            },
            "proxy_init": {"image": "proxyv2"},
        },
        "sidecarInjectorWebhook": {
            "enableNamespacesByDefault": False, "reinvocationPolicy": "Never", "rewriteAppHTTPProbe": True,
            "templates": {}, "defaultTemplates": [], "injectedAnnotations": {},
            "neverInjectSelector": [], "alwaysInjectSelector": [],
        },
        "pilot": {"autoscaleEnabled": True, "autoscaleMin": 1, "autoscaleMax": 5, "replicaCount": 1,
                  "resources": {"requests": {"cpu": "500m", "memory": "2048Mi"}},
                  "env": {}, "cni": {"enabled": False, "provider": "default"}},
        "gateways": {"securityContext": {}, "seccompProfile": {},
                     "istio-ingressgateway": {"injectionTemplate": ""}, "istio-egressgateway": {}},
        "istio_cni": {"enabled": False, "chained": True},
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
    injection_template: str = ""  # "gateway": rendered injected (image: auto), reference §2
    resources: Obj | None = None


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
    operator: Obj = field(repr=False)  # the merged IstioOperator (never written to the cluster: §1)
    user_values: Obj = field(default_factory=dict, repr=False)  # what -f/--set gave, for values-R
    iop_name: str = ""  # metadata.name of the -f IstioOperator, if any (owning-resource label)
    warnings: list[str] = field(default_factory=list)

    @property
    def variant(self) -> str:
        """`global.variant` (distroless, debug) appended to image tags (reference §5)."""
        return str((self.values.get("global") or {}).get("variant") or "")

    @property
    def image_tag(self) -> str:
        return f"{self.tag}-{self.variant}" if self.variant and self.variant != "default" else self.tag

    @property
    def pilot_values(self) -> Obj:
        return dict(self.values.get("pilot") or {})

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
    iop_name = ""
    for doc in overlays or []:
        user = deep_merge(user, operator_spec(doc))
        iop_name = str((doc.get("metadata") or {}).get("name") or iop_name)
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
    warnings = _check_values(version, spec)
    _apply_k8s_settings(spec)
    values = spec.setdefault("values", {})
    values.setdefault("global", {}).update({"hub": spec["hub"], "tag": spec["tag"]})
    values["revision"] = rev
    components = spec.get("components") or {}
    pilot = components.get("pilot") or {}
    gateways = [
        _gateway(g, kind, ((values.get("gateways") or {}).get(str(g.get("name") or f"istio-{kind}gateway"))))
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
        pilot_replicas=int(((pilot.get("k8s") or {}).get("replicaCount"))
                           or (values.get("pilot") or {}).get("replicaCount") or 1),
        gateways=gateways,
        values=values,
        mesh_config=spec.get("meshConfig") or {},
        operator=operator,
        user_values={**({"meshConfig": user["meshConfig"]} if user.get("meshConfig") else {}),
                     **copy.deepcopy(user.get("values") or {})},
        iop_name=iop_name,
        warnings=warnings,
    )


def _gateway(component: Obj, kind: str, gateway_values: Obj | None = None) -> GatewayComponent:
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
        injection_template=str((gateway_values or {}).get("injectionTemplate") or ""),
        resources=k8s.get("resources"),
    )


def compatibility_versions(version: IstioVersion) -> tuple[str, ...]:
    """Compatibility profiles each release ships (reference §7; ii@T:manifests/helm-profiles).
    Releases after 1.27 are extrapolated (the three minors before)."""
    known = {21: (20,), 22: (20, 21), 23: (20, 21, 22), 24: (21, 22, 23), 25: (22, 23, 24),
             26: (23, 24, 25), 27: (24, 25, 26)}
    minors = known.get(version.minor, tuple(range(version.minor - 3, version.minor)))
    return tuple(f"1.{m}" for m in minors)


def _check_values(version: IstioVersion, spec: Obj) -> list[str]:
    """Version rules of reference §7 that make rendering fail or warn."""
    values = spec.get("values") or {}
    compat = values.get("compatibilityVersion")
    if compat not in (None, "") and str(compat) not in compatibility_versions(version):
        raise ProfileError(f"unknown compatibility version {compat!r} (this release has: "
                           f"{', '.join(compatibility_versions(version))})")
    if compat not in (None, "") and version.minor >= 27 and int(str(compat).split(".")[1]) <= 26:
        # The 1.24-1.26 compatibility profiles turn native sidecars back off (reference §5).
        values.setdefault("pilot", {}).setdefault("env", {}).setdefault("ENABLE_NATIVE_SIDECARS", "false")
    warnings = []
    jwt = (values.get("global") or {}).get("jwtPolicy")
    if jwt not in (None, "", "third-party-jwt"):
        # 1.22 dropped first-party-jwt (PR #49520, no-1p-jwt.yaml); istioctl only warns.
        warnings.append("values.global.jwtPolicy is deprecated; third-party-jwt is always used")
        values["global"]["jwtPolicy"] = "third-party-jwt"
    return warnings


def _apply_k8s_settings(spec: Obj) -> None:
    """`components.pilot.k8s.{resources,env,hpaSpec}` land in the istiod values like istioctl maps them."""
    pilot_k8s = ((spec.get("components") or {}).get("pilot") or {}).get("k8s") or {}
    pilot = spec.setdefault("values", {}).setdefault("pilot", {})
    if pilot_k8s.get("resources"):
        pilot["resources"] = copy.deepcopy(pilot_k8s["resources"])
    for e in pilot_k8s.get("env") or []:
        pilot.setdefault("env", {})[str(e.get("name"))] = e.get("value", "")
    hpa = pilot_k8s.get("hpaSpec") or {}
    if hpa.get("minReplicas"):
        pilot["autoscaleMin"] = int(hpa["minReplicas"])
    if hpa.get("maxReplicas"):
        pilot["autoscaleMax"] = int(hpa["maxReplicas"])
