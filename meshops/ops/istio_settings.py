"""The running revision's settings and the new revision's overlay, read from the live cluster.

``settings_for`` decides what the new revision is installed with: meshops' own record when
it describes the revision being replaced, else the settings recovered from the control plane
objects (``domain.recover``; never the ``installed-state`` IstioOperator, which istioctl has
not written since 1.21, reference §1), then the user's ``--profile``/``--set`` on top. A
field that cannot be recovered refuses the run before any write, unless the user accepted
the target's default for it (``--accept-defaults FIELD``).

``effective_of`` and ``policy_now`` read what the parity gate and the policy check compare.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from meshops.domain import overlays, parity
from meshops.domain.errors import BadInput, DriverError, PreconditionFailed
from meshops.domain.recover import LiveInstall, recover
from meshops.drivers.kube_api import KubeApi, Obj
from meshops.ops import install_record as record
from meshops.ops.install_overlay import load_profile

ADMISSION = "admissionregistration.k8s.io/v1"


def _suffix(revision: str) -> str:
    return "" if revision in ("", "default") else f"-{revision}"


def get_or_none(kube: KubeApi, api: str, kind: str, name: str, namespace: str | None = None) -> Obj | None:
    try:
        return kube.get(api, kind, name, namespace)
    except DriverError as exc:  # an API that serves no HPAs reads as absent; a flaky one is retried
        if exc.temporary:
            raise
        return None


def read_live(kube: KubeApi, revision: str, namespace: str) -> LiveInstall:
    """The objects of revision ``revision`` that carry its settings (reference §1)."""
    sfx = _suffix(revision)
    return LiveInstall(
        revision=revision or "default",
        mesh_configmap=get_or_none(kube, "v1", "ConfigMap", f"istio{sfx}", namespace),
        injector_configmap=get_or_none(kube, "v1", "ConfigMap", f"istio-sidecar-injector{sfx}", namespace),
        values_configmap=get_or_none(kube, "v1", "ConfigMap", f"values{sfx}", namespace) if sfx else None,
        istiod=get_or_none(kube, "apps/v1", "Deployment", f"istiod{sfx}", namespace),
        hpa=get_or_none(kube, "autoscaling/v2", "HorizontalPodAutoscaler", f"istiod{sfx}", namespace),
        pdb=get_or_none(kube, "policy/v1", "PodDisruptionBudget", f"istiod{sfx}", namespace),
    )


def injector_webhooks(kube: KubeApi, revision: str) -> Obj | None:
    return get_or_none(kube, ADMISSION, "MutatingWebhookConfiguration", f"istio-sidecar-injector{_suffix(revision)}")


def effective_of(kube: KubeApi, revision: str, namespace: str) -> dict[str, Any]:
    return parity.effective(read_live(kube, revision, namespace), injector_webhooks(kube, revision))


@dataclass(frozen=True, kw_only=True)
class Settings:
    spec: dict[str, Any]  # the whole overlay for the new revision (before istiod-only trimming)
    source: str  # where the old revision's settings came from
    sources: dict[str, str] = field(default_factory=dict)  # section -> object it was read from
    requested: tuple[str, ...] = ()  # overlay paths the user set (--profile/--set/--compatibility-version)
    accepted: dict[str, str] = field(default_factory=dict)  # unrecoverable fields the user accepted defaults for
    recovered: dict[str, Any] = field(default_factory=dict)  # the old revision's settings as recovered live


def _user_spec(profiles: Sequence[str], sets: Sequence[str]) -> dict[str, Any]:
    loaded = [load_profile(p) for p in profiles]
    return overlays.compose(loaded, sets)


def settings_for(kube: KubeApi, old: str, namespace: str, *, profiles: Sequence[str] = (), sets: Sequence[str] = (),
                 accept_defaults: Sequence[str] = (), compatibility_version: str = "") -> Settings:
    """The new revision's overlay (see the module docstring). Raises PreconditionFailed naming every
    unrecoverable field not accepted, BadInput for a bad profile or ``--set``."""
    user = _user_spec(profiles, sets)
    if compatibility_version:
        user = overlays.merge(user, {"values": {"compatibilityVersion": compatibility_version}})
    live = recover(read_live(kube, old, namespace), namespace=namespace)
    rec = record.read_recorded(kube, namespace)
    if rec is not None and (rec.revision or "default") == (old or "default"):
        base = overlay_spec(rec.overlay)
        source = f"ConfigMap {namespace}/{overlays.RECORD_CONFIGMAP} (meshops' record)"
        accepted: dict[str, str] = {}
    else:
        refused = live.refused(accept_defaults)
        if refused:
            raise PreconditionFailed(
                "cannot recover these settings of revision " + (old or "default") + " from the cluster:\n  - "
                + "\n  - ".join(f"{f}: {why}" for f, why in sorted(refused.items()))
                + "\ninstalling without them would put the target version's defaults in their place; pass "
                  "--accept-defaults " + " ".join(sorted(refused)) + " to accept that")
        base = live.spec
        source = "recovered from the running control plane: " + ", ".join(sorted(set(live.sources.values())))
        accepted = {f: why for f, why in live.unrecoverable.items() if f not in refused}
        base = _without(base, accepted)
    spec = overlays.merge(base, user)
    requested = tuple(sorted(overlays.leaves(user))) if user else ()
    return Settings(spec=spec, source=source, sources=dict(live.sources), requested=requested, accepted=accepted,
                    recovered=live.spec)


def overlay_spec(text: str) -> dict[str, Any]:
    """The spec of an IstioOperator overlay meshops rendered or recorded ({} when empty)."""
    doc = yaml.safe_load(text) if text.strip() else {}
    spec = (doc or {}).get("spec") if isinstance(doc, dict) else None
    return dict(spec) if isinstance(spec, dict) else {}


def _without(spec: dict[str, Any], paths: dict[str, str]) -> dict[str, Any]:
    out = copy.deepcopy(spec)
    for path in paths:
        *parents, last = path.split(".")
        node: Any = out
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return out


def predicted_drift(settings: Settings) -> list[str]:
    """Fields the old revision runs with that the planned overlay would change without the user
    asking (only possible when meshops' record is stale against the live control plane)."""
    live = overlays.leaves(settings.recovered)
    planned = overlays.leaves(settings.spec)
    req = list(settings.requested)
    out = []
    for path, value in sorted(live.items()):
        if path in settings.accepted or any(path == r or path.startswith(r + ".") for r in req):
            continue
        if not path.startswith(("meshConfig.", "values.global.", "values.pilot.env.")):
            continue
        if planned.get(path) != value:
            out.append(f"{path.replace(chr(92) + '.', '.')}: {value!r} -> {planned.get(path, '(unset)')!r}")
    return out


def removed_settings(spec: dict[str, Any], target_minor: int) -> dict[str, str]:
    """Settings the target version removed (reference §7): field path -> why."""
    out: dict[str, str] = {}
    values = spec.get("values") or {}
    glob = values.get("global") or {}
    if target_minor >= 22 and glob.get("jwtPolicy") == "first-party-jwt":
        out["values.global.jwtPolicy"] = ("first-party-jwt was dropped in Istio 1.22 (PR #49520); third-party-jwt "
                                          "is the only policy")
    if target_minor >= 22 and "privileged" in (values.get("cni") or {}):
        out["values.cni.privileged"] = "removed in 1.22"
    removed_env = {22: ("PILOT_ENABLE_HEADLESS_SERVICE_POD_LISTENERS",),
                   23: ("ISTIO_ENABLE_OPTIMIZED_SERVICE_PUSH", "ENABLE_OPTIMIZED_CONFIG_REBUILD",
                        "PILOT_ENABLE_CONFIG_DISTRIBUTION_TRACKING", "ENABLE_OTEL_BUILTIN_RESOURCE_LABELS"),
                   26: ("ENABLE_AUTO_SNI",)}
    env = (values.get("pilot") or {}).get("env") or {}
    for minor, names in removed_env.items():
        for name in names:
            if target_minor >= minor and name in env:
                out[f"values.pilot.env.{name}"] = f"removed in 1.{minor}"
    if spec.get("profile") == "external" and target_minor >= 22:
        out["profile"] = "the external profile was removed in 1.22"
    return out


def drop_accepted_removals(spec: dict[str, Any], target_minor: int, accept: Sequence[str]
                           ) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    """(spec without the removed settings the user accepted, accepted, refused)."""
    removed = removed_settings(spec, target_minor)
    accepted = {f: why for f, why in removed.items() if any(f == a or f.startswith(a + ".") for a in accept)}
    refused = {f: why for f, why in removed.items() if f not in accepted}
    return _without(spec, accepted), accepted, refused


def bad_input(refused: dict[str, str], target: str) -> BadInput:
    return BadInput(f"the settings set what Istio {target} removed:\n  - "
                    + "\n  - ".join(f"{f}: {why}" for f, why in sorted(refused.items())),
                    hint="fix the profile or --set, or pass --accept-defaults " + " ".join(sorted(refused)))


# ---- the policy check -------------------------------------------------------------------------------

_POLICY_APIS = {"PeerAuthentication": ("security.istio.io/v1", "security.istio.io/v1beta1"),
                "DestinationRule": ("networking.istio.io/v1", "networking.istio.io/v1beta1")}


def _list_any(kube: KubeApi, kind: str) -> list[Obj]:
    for api in _POLICY_APIS[kind]:
        try:
            return list(kube.list(api, kind).items)
        except DriverError as exc:
            if exc.temporary:
                raise
    return []


def mesh_of(kube: KubeApi, revision: str, namespace: str) -> dict[str, Any]:
    cm = get_or_none(kube, "v1", "ConfigMap", f"istio{_suffix(revision)}", namespace)
    raw = ((cm or {}).get("data") or {}).get("mesh")
    try:
        mesh = yaml.safe_load(raw) if isinstance(raw, str) else None
    except yaml.YAMLError:
        mesh = None
    return mesh if isinstance(mesh, dict) else {}


def policy_now(kube: KubeApi, revision: str, namespace: str) -> parity.PolicyState:
    """The mesh's traffic/mTLS policy as the revision ``revision`` serves it (reference: the field
    notes' first rule). Egress gateways are counted by their ``istio=egressgateway`` label."""
    egress = [f"{(d.get('metadata') or {}).get('namespace')}/{(d.get('metadata') or {}).get('name')}"
              for d in kube.list("apps/v1", "Deployment", label_selector="istio=egressgateway").items
              if ((d.get("spec") or {}).get("replicas") or 0) > 0]
    return parity.policy_state(mesh=mesh_of(kube, revision, namespace),
                               peer_authentications=_list_any(kube, "PeerAuthentication"),
                               destination_rules=_list_any(kube, "DestinationRule"), egress_gateways=egress)
