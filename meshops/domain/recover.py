"""The running revision's settings, recovered from what the control plane itself is made of.

Most meshes were installed by someone else's istioctl or Helm, and istioctl stopped writing the
``installed-state`` IstioOperator in 1.21 (reference §1, PR #47860). What a real install leaves
and real readers use (istioctl kube-inject, the analyzers; reference §1 "Recovering the settings"):

- ConfigMap ``istio[-R]`` key ``mesh``: the effective meshConfig (chart defaults merged with the
  user's ``meshConfig``) -> ``spec.meshConfig``;
- ConfigMap ``istio-sidecar-injector[-R]`` key ``values``: a *subset* of the Helm values
  (``global``, ``sidecarInjectorWebhook``, ``revision``, ``pilot.cni`` / 1.26+ ``pilot.env``,
  ``gateways.securityContext``) -> ``spec.values``;
- ConfigMap ``values-R`` key ``original-values`` (1.26+ only): the user's own input;
- the istiod Deployment (resources, replicas, env, scheduling), its HPA and PDB ``istiod[-R]``
  -> ``components.pilot.k8s`` and ``values.pilot``.

Pure: the step reads the objects and hands them in. Anything that cannot be carried over is
named in ``unrecoverable`` (a dotted field path), so the caller refuses unless the user accepts
the target's default for it (``--accept-defaults FIELD``).
"""

from __future__ import annotations

import copy
import fnmatch
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

Obj = dict[str, Any]

# meshConfig keys istioctl derives from the revision being installed: never carried over.
_MESH_PER_REVISION = ("defaultConfig.discoveryAddress",)
# Injector ``values`` keys that pin the old install (the target istioctl supplies them).
_VALUES_PER_REVISION = ("revision", "global.tag", "global.istioNamespace")
# env the istiod chart renders itself (istio-discovery templates/deployment.yaml, 1.22-1.27): not
# user settings, so not carried over (the new chart renders its own, for its own revision).
CHART_ENV = frozenset({
    "REVISION", "PILOT_CERT_PROVIDER", "POD_NAME", "POD_NAMESPACE", "SERVICE_ACCOUNT", "KUBECONFIG",
    "CA_TRUSTED_NODE_ACCOUNTS", "PILOT_ENABLE_ANALYSIS", "CLUSTER_ID", "GOMEMLIMIT", "GOMAXPROCS", "PLATFORM",
    "JWT_POLICY", "ISTIOD_CUSTOM_HOST", "PILOT_ENABLE_PROTOCOL_SNIFFING_FOR_OUTBOUND",
    "PILOT_ENABLE_PROTOCOL_SNIFFING_FOR_INBOUND", "INJECTION_WEBHOOK_CONFIG_NAME", "VALIDATION_WEBHOOK_CONFIG_NAME",
    "ENABLE_LEGACY_FSGROUP_INJECTION", "EXTERNAL_ISTIOD", "PILOT_ENABLE_WORKLOAD_ENTRY_AUTOREGISTRATION",
    "PILOT_ENABLE_WORKLOAD_ENTRY_HEALTHCHECKS", "SHARED_MESH_CONFIG", "ISTIO_DUAL_STACK", "PILOT_TRACE_SAMPLING",
    "ISTIOD_ADDR", "PILOT_ENABLE_AMBIENT", "CA_ADDR", "ENABLE_CA_SERVER", "PILOT_JWT_ENABLE_REMOTE_JWKS",
})


@dataclass(frozen=True, kw_only=True)
class LiveInstall:
    """The objects of one running revision, as read from the cluster (None when absent)."""

    revision: str  # "default" for the unrevisioned one
    mesh_configmap: Obj | None
    injector_configmap: Obj | None
    values_configmap: Obj | None  # values-R, 1.26+
    istiod: Obj | None
    hpa: Obj | None
    pdb: Obj | None

    @property
    def suffix(self) -> str:
        return "" if self.revision in ("", "default") else f"-{self.revision}"


@dataclass(frozen=True, kw_only=True)
class Recovered:
    spec: dict[str, Any]  # an IstioOperator spec
    sources: dict[str, str]  # spec section -> where it was read
    unrecoverable: dict[str, str] = field(default_factory=dict)  # field path -> why

    def refused(self, accepted: Iterable[str]) -> dict[str, str]:
        """The unrecoverable fields the user did not accept defaults for (``fnmatch`` patterns, a
        parent path accepts everything below it)."""
        pats = list(accepted)
        return {f: why for f, why in self.unrecoverable.items()
                if not any(fnmatch.fnmatch(f, p) or f.startswith(p + ".") for p in pats)}


def _data(cm: Obj | None, key: str) -> str | None:
    if cm is None:
        return None
    value = (cm.get("data") or {}).get(key)
    return value if isinstance(value, str) else None


def _drop(tree: dict[str, Any], dotted: str) -> None:
    *parents, last = dotted.split(".")
    node: Any = tree
    for p in parents:
        node = node.get(p) if isinstance(node, dict) else None
        if node is None:
            return
    if isinstance(node, dict):
        node.pop(last, None)


def _set(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = tree
    for p in path[:-1]:
        node = node.setdefault(p, {})
    node[path[-1]] = value


def _name(kind: str, ns: str, name: str, key: str = "") -> str:
    return f"{kind} {ns}/{name}" + (f" key {key}" if key else "")


def recover(live: LiveInstall, *, namespace: str = "istio-system") -> Recovered:
    """An IstioOperator spec that reinstalls ``live``'s settings on a new revision."""
    spec: dict[str, Any] = {}
    sources: dict[str, str] = {}
    missing: dict[str, str] = {}
    sfx = live.suffix

    mesh_name = f"istio{sfx}"
    raw = _data(live.mesh_configmap, "mesh")
    where = _name("ConfigMap", namespace, mesh_name, "mesh")
    if raw is None:
        missing["meshConfig"] = f"{where} is missing"
    else:
        try:
            mesh = yaml.safe_load(raw) or {}
        except yaml.YAMLError:
            mesh = None
        if not isinstance(mesh, dict):
            missing["meshConfig"] = f"{where} is not a YAML mapping"
        else:
            for k in _MESH_PER_REVISION:
                _drop(mesh, k)
            if not mesh.get("defaultConfig"):
                mesh.pop("defaultConfig", None)
            spec["meshConfig"] = mesh
            sources["meshConfig"] = where

    inj_name = f"istio-sidecar-injector{sfx}"
    raw = _data(live.injector_configmap, "values")
    where = _name("ConfigMap", namespace, inj_name, "values")
    values: dict[str, Any] = {}
    if raw is None:
        missing["values.global"] = f"{where} is missing"
    else:
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            missing["values.global"] = f"{where} is not a JSON object"
        else:
            values = parsed
            for k in _VALUES_PER_REVISION:
                _drop(values, k)
            # The chart default audience: carrying it over adds nothing, and a key named "token" is
            # scrubbed from journals like a credential would be.
            if (values.get("global") or {}).get("sds") == {"token": {"aud": "istio-ca"}}:
                _drop(values, "global.sds")
            # 1.22-1.23 wrote istio_cni; 1.22 deprecated it for pilot.cni (reference §7). Either one
            # enabled the CNI chain then, so carry it over as pilot.cni.enabled.
            legacy_cni = values.pop("istio_cni", None)
            if isinstance(legacy_cni, dict) and legacy_cni.get("enabled"):
                values.setdefault("pilot", {}).setdefault("cni", {})["enabled"] = True
            sources["values"] = where

    orig = _data(live.values_configmap, "original-values")
    if orig is not None:
        try:
            user = yaml.safe_load(orig) or {}
        except yaml.YAMLError:
            user = {}
        if isinstance(user, dict):
            _merge_original(values, spec, user)
            sources["values (user input)"] = _name("ConfigMap", namespace, f"values{sfx}", "original-values")

    pilot_k8s: dict[str, Any] = {}
    if live.istiod is None:
        missing["components.pilot.k8s"] = f"Deployment {namespace}/istiod{sfx} is missing"
    else:
        _from_istiod(live.istiod, values, pilot_k8s, missing, hpa=live.hpa)
        sources["components.pilot.k8s"] = f"Deployment {namespace}/istiod{sfx}"
    if live.hpa is not None:
        h = live.hpa.get("spec") or {}
        pilot = values.setdefault("pilot", {})
        pilot["autoscaleEnabled"] = True
        if h.get("minReplicas") is not None:
            pilot["autoscaleMin"] = int(h["minReplicas"])
        if h.get("maxReplicas") is not None:
            pilot["autoscaleMax"] = int(h["maxReplicas"])
        for metric in h.get("metrics") or []:
            res = metric.get("resource") or {}
            target = (res.get("target") or {}).get("averageUtilization")
            if res.get("name") in ("cpu", "memory") and target is not None:
                pilot[str(res["name"])] = {"targetAverageUtilization": int(target)}
        sources["values.pilot.autoscale*"] = f"HorizontalPodAutoscaler {namespace}/istiod{sfx}"
    elif live.istiod is not None:
        values.setdefault("pilot", {})["autoscaleEnabled"] = False
    if live.pdb is not None:
        values.setdefault("global", {}).setdefault("defaultPodDisruptionBudget", {})["enabled"] = True
        sources["values.global.defaultPodDisruptionBudget"] = f"PodDisruptionBudget {namespace}/istiod{sfx}"
    elif live.istiod is not None:
        values.setdefault("global", {}).setdefault("defaultPodDisruptionBudget", {})["enabled"] = False
    if values:
        spec["values"] = values
    if pilot_k8s:
        spec["components"] = {"pilot": {"k8s": pilot_k8s}}
    return Recovered(spec=spec, sources=sources, unrecoverable=missing)


# The istiod chart flattened its values in 1.24 (reference §1, PR #52036): in ``original-values``
# these appear at the top level; the IstioOperator API keeps them under ``values.pilot``.
_FLATTENED_PILOT = frozenset({"autoscaleEnabled", "autoscaleMin", "autoscaleMax", "replicaCount", "resources", "env",
                              "traceSampling", "cpu", "memory", "nodeSelector", "tolerations", "affinity",
                              "podAnnotations", "podLabels", "keepaliveMaxServerConnectionAge", "variant",
                              "image", "hub", "tag", "extraContainerArgs"})


def _merge_original(values: dict[str, Any], spec: dict[str, Any], user: dict[str, Any]) -> None:
    """Fill what the injector subset lacks from the user's own input (never overriding it: the
    objects say what runs)."""
    for key, value in user.items():
        if key in ("revision", "profile", "compatibilityVersion"):
            continue
        if key == "meshConfig" and isinstance(value, dict):
            spec["meshConfig"] = _fill(spec.get("meshConfig") or {}, value)
        elif key in _FLATTENED_PILOT:
            pilot = values.setdefault("pilot", {})
            if key not in pilot and key not in ("tag", "hub"):
                pilot[key] = copy.deepcopy(value)
        elif isinstance(value, dict):
            values[key] = _fill(values.get(key) or {}, value)
        elif key not in values:
            values[key] = copy.deepcopy(value)


def _fill(have: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(have)
    for k, v in extra.items():
        if k not in out:
            out[k] = copy.deepcopy(v)
        elif isinstance(out[k], dict) and isinstance(v, Mapping):
            out[k] = _fill(out[k], v)
    return out


def _from_istiod(dep: Obj, values: dict[str, Any], k8s: dict[str, Any], missing: dict[str, str], *,
                 hpa: Obj | None) -> None:
    spec = dep.get("spec") or {}
    pod = (spec.get("template") or {}).get("spec") or {}
    containers = pod.get("containers") or []
    discovery = next((c for c in containers if c.get("name") == "discovery"), containers[0] if containers else {})
    if hpa is None and spec.get("replicas") is not None:
        k8s["replicaCount"] = int(spec["replicas"])
    if discovery.get("resources"):
        k8s["resources"] = copy.deepcopy(discovery["resources"])
    for key in ("nodeSelector", "tolerations", "affinity", "priorityClassName"):
        if pod.get(key):
            k8s[key] = copy.deepcopy(pod[key])
    user_env: dict[str, str] = {}
    for e in discovery.get("env") or []:
        name = str(e.get("name", ""))
        if name in CHART_ENV:
            if name == "PILOT_TRACE_SAMPLING" and "value" in e:
                try:
                    values.setdefault("pilot", {})["traceSampling"] = float(e["value"])
                except ValueError:
                    missing["values.pilot.traceSampling"] = f"istiod env PILOT_TRACE_SAMPLING={e['value']!r}"
            continue
        if "value" in e:
            user_env[name] = str(e["value"])
        else:
            # valueFrom (a Secret, a field): the IstioOperator's pilot.env holds literal values only.
            missing[f"values.pilot.env.{name}"] = f"istiod env {name} comes from valueFrom, not a literal value"
    if user_env:
        pilot = values.setdefault("pilot", {})
        pilot["env"] = {**user_env, **(pilot.get("env") or {})}
