"""Parity between two revisions: the effective configuration of each, field by field.

The gate the field notes ask for: an upgrade must not silently change the mesh's behaviour.
For each revision we flatten what its control plane actually runs with (reference §1):

- ``mesh.*``: ConfigMap ``istio[-R]`` key ``mesh``;
- ``values.*``: ConfigMap ``istio-sidecar-injector[-R]`` key ``values`` (global, injector webhook);
- ``istiod.env.*``, ``istiod.resources.*``, ``istiod.replicas``: the istiod Deployment;
- ``hpa.*`` / ``pdb.*``: HorizontalPodAutoscaler and PodDisruptionBudget ``istiod[-R]``;
- ``webhook.<name>.{namespaceSelector,objectSelector}``: the injector's ``rev.*`` webhooks.

What names the revision itself (its name in selectors and addresses, the image tag) is
normalised away. Each difference is then *requested* (the user's ``--profile``/``--set``),
*documented* (the target version's own changes, reference §7, or a key only the new chart
writes), or *unexpected*: the run stops on those.

Also the policy check before finalize (``policy_state``): PeerAuthentication modes,
DestinationRule TLS and outlier detection, outboundTrafficPolicy, egress gateways and trust
domain, the same before and after the move.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from meshops.domain.recover import LiveInstall

Obj = dict[str, Any]
REV_PLACEHOLDER = "<revision>"
# Present in one revision only because they name it (or its version).
_PER_REVISION = ("values.revision", "values.global.tag", "mesh.defaultConfig.discoveryAddress", "istiod.env.REVISION",
                 "istiod.env.ISTIOD_CUSTOM_HOST", "istiod.env.INJECTION_WEBHOOK_CONFIG_NAME",
                 "istiod.env.VALIDATION_WEBHOOK_CONFIG_NAME")
# A key the new chart writes that the old did not is a new default, *except* these: a policy that
# appears out of nowhere changes traffic, so it must have been asked for.
POLICY_PATHS = ("mesh.outboundTrafficPolicy", "mesh.meshMTLS", "mesh.enableAutoMtls", "mesh.trustDomain",
                "mesh.trustDomainAliases", "mesh.defaultConfig.holdApplicationUntilProxyStarts",
                "mesh.accessLogFile", "mesh.discoverySelectors", "webhook.")

# Documented per target minor (reference §7): path prefix -> why it may differ going to that minor.
DOCUMENTED: dict[int, dict[str, str]] = {
    22: {"istiod.env.PILOT_ENABLE_HEADLESS_SERVICE_POD_LISTENERS": "removed in 1.22",
         "values.global.jwtPolicy": "first-party-jwt dropped in 1.22 (PR #49520)",
         "mesh.defaultConfig.tracing": "1.22 no longer sets a default zipkin tracer"},
    23: {"istiod.env.ISTIO_ENABLE_OPTIMIZED_SERVICE_PUSH": "removed in 1.23",
         "istiod.env.ENABLE_OPTIMIZED_CONFIG_REBUILD": "removed in 1.23",
         "istiod.env.PILOT_ENABLE_CONFIG_DISTRIBUTION_TRACKING": "removed in 1.23",
         "istiod.env.ENABLE_OTEL_BUILTIN_RESOURCE_LABELS": "removed in 1.23"},
    24: {"values.istio_cni": "1.24 charts no longer write istio_cni (use pilot.cni)",
         "values.sidecarInjectorWebhook.objectSelector": "no-op value dropped in 1.24 (note 51987)"},
    26: {"istiod.env.ENABLE_AUTO_SNI": "removed in 1.26", "values.pilot.env": "1.26 injector values carry pilot.env"},
    27: {"values.global.proxy.lightstep": "Lightstep removed in 1.27"},
}


@dataclass(frozen=True, kw_only=True)
class Difference:
    path: str
    old: Any
    new: Any
    why: str = ""  # for requested/documented ones: what allows it

    def describe(self) -> str:
        return f"{self.path}: {_show(self.old)} -> {_show(self.new)}" + (f" ({self.why})" if self.why else "")

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "old": self.old, "new": self.new, "why": self.why}


@dataclass(frozen=True, kw_only=True)
class ParityReport:
    requested: tuple[Difference, ...] = ()
    documented: tuple[Difference, ...] = ()
    unexpected: tuple[Difference, ...] = ()
    compared: int = 0

    @property
    def ok(self) -> bool:
        return not self.unexpected

    def as_dict(self) -> dict[str, Any]:
        return {"compared": self.compared, "requested": [d.as_dict() for d in self.requested],
                "documented": [d.as_dict() for d in self.documented],
                "unexpected": [d.as_dict() for d in self.unexpected]}


def _show(v: Any) -> str:
    return "(unset)" if v is None else json.dumps(v, sort_keys=True, default=str)


def flatten(value: Any, prefix: str) -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"prefix.a.b": 1}``; lists and empty maps are leaves."""
    out: dict[str, Any] = {}
    if isinstance(value, Mapping) and value:
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}"))
    else:
        out[prefix] = value
    return out


def _norm_selector(sel: Any, revision: str) -> Any:
    if not isinstance(sel, dict):
        return sel
    out = json.loads(json.dumps(sel))
    for expr in out.get("matchExpressions") or []:
        if expr.get("key") == "istio.io/rev":
            expr["values"] = [REV_PLACEHOLDER if v == revision else v for v in expr.get("values") or []]
    labels = out.get("matchLabels") or {}
    if labels.get("istio.io/rev") == revision:
        labels["istio.io/rev"] = REV_PLACEHOLDER
    return out


def _norm_text(value: Any, revision: str) -> Any:
    if isinstance(value, str) and revision not in ("", "default"):
        return value.replace(f"-{revision}", f"-{REV_PLACEHOLDER}")
    return value


def effective(live: LiveInstall, injector_webhooks: Obj | None = None) -> dict[str, Any]:
    """One revision's effective configuration, flattened (see the module docstring)."""
    rev = live.revision or "default"
    out: dict[str, Any] = {}
    raw = ((live.mesh_configmap or {}).get("data") or {}).get("mesh")
    try:
        mesh = yaml.safe_load(raw) if isinstance(raw, str) else None
    except yaml.YAMLError:
        mesh = None
    out.update(flatten(mesh if isinstance(mesh, dict) else {}, "mesh"))
    raw = ((live.injector_configmap or {}).get("data") or {}).get("values")
    try:
        values = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        values = None
    if isinstance(values, dict) and isinstance(values.get("pilot"), dict):
        # The injector's values hold only pilot.cni and (1.26+) pilot.env (reference §1); istiod's
        # replicas, resources and autoscaling are compared on the objects themselves (istiod.*, hpa.*).
        values = {**values, "pilot": {k: v for k, v in values["pilot"].items() if k in ("cni", "env")}}
    out.update(flatten(values if isinstance(values, dict) else {}, "values"))
    if live.istiod is not None:
        spec = live.istiod.get("spec") or {}
        pod = (spec.get("template") or {}).get("spec") or {}
        containers = pod.get("containers") or []
        discovery = next((c for c in containers if c.get("name") == "discovery"), containers[0] if containers else {})
        for e in discovery.get("env") or []:
            out[f"istiod.env.{e.get('name')}"] = _norm_text(e["value"], rev) if "value" in e else e.get("valueFrom")
        out.update(flatten(discovery.get("resources") or {}, "istiod.resources"))
        if live.hpa is None:
            out["istiod.replicas"] = spec.get("replicas", 1)
    if live.hpa is not None:
        h = live.hpa.get("spec") or {}
        out["hpa.minReplicas"] = h.get("minReplicas")
        out["hpa.maxReplicas"] = h.get("maxReplicas")
        out["hpa.metrics"] = h.get("metrics")
    else:
        out["hpa"] = None
    if live.pdb is not None:
        p = live.pdb.get("spec") or {}
        out["pdb.minAvailable"] = p.get("minAvailable")
        out["pdb.maxUnavailable"] = p.get("maxUnavailable")
    else:
        out["pdb"] = None
    for wh in (injector_webhooks or {}).get("webhooks") or []:
        name = str(wh.get("name", ""))
        if not name.startswith("rev."):
            continue  # namespace./object. webhooks exist for the default revision only (§1)
        out[f"webhook.{name}.namespaceSelector"] = _norm_selector(wh.get("namespaceSelector"), rev)
        out[f"webhook.{name}.objectSelector"] = _norm_selector(wh.get("objectSelector"), rev)
    for k in list(out):
        if any(k == p or k.startswith(p + ".") for p in _PER_REVISION):
            del out[k]
    return out


def _matches(path: str, prefixes: Iterable[str]) -> str | None:
    for p in prefixes:
        if path == p or path.startswith(p + ".") or p.startswith(path + "."):
            return p
    return None


def requested_paths(overlay_leaves: Iterable[str]) -> list[str]:
    """IstioOperator overlay paths the user set -> the effective-configuration paths they change."""
    out: list[str] = []
    for leaf in overlay_leaves:
        path = leaf.replace("\\.", ".")
        if path.startswith("meshConfig."):
            out.append("mesh." + path.removeprefix("meshConfig."))
        elif path.startswith("values.pilot.env."):
            out += [path, "istiod.env." + path.removeprefix("values.pilot.env.")]
        elif path.startswith("values.pilot.autoscale") or path.startswith("values.pilot.cpu") \
                or path.startswith("components.pilot.k8s.hpaSpec"):
            out += [path, "hpa", "istiod.replicas"]
        elif path.startswith("values.pilot.resources.") or path.startswith("components.pilot.k8s.resources."):
            out.append("istiod.resources." + path.split(".resources.", 1)[1])
        elif path.startswith("components.pilot.k8s.env"):
            out.append("istiod.env")
        elif path.startswith("components.pilot.k8s.replicaCount") or path.startswith("values.pilot.replicaCount"):
            out.append("istiod.replicas")
        elif path.startswith("components.pilot.k8s.podDisruptionBudget") or "defaultPodDisruptionBudget" in path:
            out.append("pdb")
        elif path.startswith("values."):
            out.append(path)
    return out


def compare(old: Mapping[str, Any], new: Mapping[str, Any], *, requested: Iterable[str] = (),
            target_minor: int | None = None, from_minor: int | None = None) -> ParityReport:
    """Every field that differs between ``old`` and ``new`` effective configurations, sorted into
    requested, documented and unexpected."""
    req = list(requested)
    documented: dict[str, str] = {}
    if target_minor is not None:
        lo = (from_minor if from_minor is not None else target_minor - 1) + 1
        for minor in range(lo, target_minor + 1):
            documented.update(DOCUMENTED.get(minor, {}))
    out_req: list[Difference] = []
    out_doc: list[Difference] = []
    out_bad: list[Difference] = []
    keys = sorted(set(old) | set(new))
    for k in keys:
        a, b = old.get(k), new.get(k)
        if a == b:
            continue
        if (p := _matches(k, req)) is not None:
            out_req.append(Difference(path=k, old=a, new=b, why=f"requested: {p}"))
        elif (p := _matches(k, documented)) is not None:
            out_doc.append(Difference(path=k, old=a, new=b, why=documented[p]))
        elif k not in old and _matches(k, POLICY_PATHS) is None and not k.startswith(POLICY_PATHS):
            out_doc.append(Difference(path=k, old=a, new=b, why="only the new chart sets it (a default)"))
        else:
            out_bad.append(Difference(path=k, old=a, new=b))
    return ParityReport(requested=tuple(out_req), documented=tuple(out_doc), unexpected=tuple(out_bad),
                        compared=len(keys))


# ---- the policy check before finalize --------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class PolicyState:
    fields: dict[str, Any] = field(default_factory=dict)

    def drift(self, after: PolicyState) -> list[str]:
        keys = sorted(set(self.fields) | set(after.fields))
        return [f"{k}: {_show(self.fields.get(k))} -> {_show(after.fields.get(k))}" for k in keys
                if self.fields.get(k) != after.fields.get(k)]


def policy_state(*, mesh: Mapping[str, Any] | None, peer_authentications: Iterable[Obj],
                 destination_rules: Iterable[Obj], egress_gateways: Iterable[str]) -> PolicyState:
    """What decides mTLS and egress for the mesh, as one flat map (``mesh`` = the serving
    revision's parsed mesh config)."""
    m = dict(mesh or {})
    out: dict[str, Any] = {
        "outboundTrafficPolicy": ((m.get("outboundTrafficPolicy") or {}).get("mode") or "ALLOW_ANY"),
        "trustDomain": m.get("trustDomain") or "cluster.local",
        "enableAutoMtls": m.get("enableAutoMtls", True),
        "egressGateways": sorted(egress_gateways),
    }
    for pa in peer_authentications:
        meta = pa.get("metadata") or {}
        spec = pa.get("spec") or {}
        key = f"PeerAuthentication/{meta.get('namespace')}/{meta.get('name')}"
        out[key] = {"mode": (spec.get("mtls") or {}).get("mode") or "UNSET", "selector": spec.get("selector"),
                    "ports": spec.get("portLevelMtls")}
    for dr in destination_rules:
        meta = dr.get("metadata") or {}
        policy = (dr.get("spec") or {}).get("trafficPolicy") or {}
        key = f"DestinationRule/{meta.get('namespace')}/{meta.get('name')}"
        out[key] = {"tls": (policy.get("tls") or {}).get("mode"), "outlierDetection": policy.get("outlierDetection")}
    return PolicyState(fields=out)
