"""``switchover.prove_target``: the target cluster is ready and configured like the source.

Before any DNS change, the target must show:

- istiod ready (every ``app=istiod`` Deployment in the Istio namespace), and its Istio
  version (from the pilot image tag), reported beside the source's;
- every gateway Deployment (label ``istio=*gateway``) ready;
- every Deployment, StatefulSet and DaemonSet ready (system namespaces ignored); workloads
  the source runs and the target lacks are reported;
- config parity: Gateway, VirtualService, DestinationRule, ServiceEntry, Sidecar,
  PeerAuthentication, AuthorizationPolicy, RequestAuthentication, EnvoyFilter, Telemetry and
  WasmPlugin objects compared by namespace/name and spec, and the mesh config's
  ``outboundTrafficPolicy.mode`` and ``trustDomain`` (ConfigMap ``istio[-<rev>]`` key ``mesh``);
  every difference reported;
- no weaker mTLS: the effective PeerAuthentication mode (mesh, namespace, workload and port
  level, UNSET inheriting from the level above, PERMISSIVE when nothing is set) never
  ranks lower on the target (DISABLE < PERMISSIVE < STRICT), and the target does not allow
  egress to any host (ALLOW_ANY) where the source allows registered hosts only
  (REGISTRY_ONLY), unless ``allow_weaker_mtls``.

Refusals are ``PreconditionFailed``: exit 2 from ``meshops switchover``, nothing changed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import Field

from meshops.domain.errors import DriverError, NotFound, PreconditionFailed
from meshops.steps.base import Step, StepContext, StepInputs, StepOutputs
from meshops.steps.registry import register

MESH_KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Gateway", ("networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3")),
    ("VirtualService", ("networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3")),
    ("DestinationRule", ("networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3")),
    ("ServiceEntry", ("networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3")),
    ("Sidecar", ("networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3")),
    ("PeerAuthentication", ("security.istio.io/v1", "security.istio.io/v1beta1")),
    ("AuthorizationPolicy", ("security.istio.io/v1", "security.istio.io/v1beta1")),
    ("RequestAuthentication", ("security.istio.io/v1", "security.istio.io/v1beta1")),
    ("EnvoyFilter", ("networking.istio.io/v1alpha3",)),
    ("Telemetry", ("telemetry.istio.io/v1", "telemetry.istio.io/v1alpha1")),
    ("WasmPlugin", ("extensions.istio.io/v1alpha1",)),
)
# Mesh config keys that change what traffic the target accepts or sends, with Istio's defaults
# (istio.io MeshConfig reference): egress to unknown hosts, and the identity trust domain that
# SPIFFE principals in AuthorizationPolicies name.
MESH_CONFIG_DEFAULTS = {"outboundTrafficPolicy.mode": "ALLOW_ANY", "trustDomain": "cluster.local"}
MTLS_RANK = {"DISABLE": 0, "PERMISSIVE": 1, "STRICT": 2}
WORKLOAD_KINDS = (("apps/v1", "Deployment"), ("apps/v1", "StatefulSet"), ("apps/v1", "DaemonSet"))
Key = tuple[str, str, str]  # kind, namespace, name


class ProveInputs(StepInputs):
    from_context: str
    to_context: str
    istio_namespace: str = "istio-system"
    ignore_namespaces: list[str] = Field(default_factory=lambda: ["kube-system", "kube-public", "kube-node-lease",
                                                                  "meshops-system"])
    allow_weaker_mtls: bool = False


class ProveOutputs(StepOutputs):
    source_version: str
    target_version: str
    workloads_ready: int
    differences: list[str]
    weaker_mtls: list[str]


def _ready(kind: str, obj: dict[str, Any]) -> bool:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    meta = obj.get("metadata") or {}
    if status.get("observedGeneration", meta.get("generation", 0)) < meta.get("generation", 0):
        return False
    if kind == "DaemonSet":
        want = int(status.get("desiredNumberScheduled", 0))
        return int(status.get("numberReady", 0)) >= want and int(status.get("updatedNumberScheduled", want)) >= want
    want = int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1)
    ready = int(status.get("readyReplicas", 0) or 0)
    updated = int(status.get("updatedReplicas", ready) or 0)
    return ready >= want and updated >= want


def _name(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace", "")), str(meta.get("name", ""))


def _version_of(deploy: dict[str, Any]) -> str:
    containers = (((deploy.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
    for c in containers:
        image = str(c.get("image", ""))
        if c.get("name") == "discovery" or "/pilot" in image:
            tag = image.rsplit(":", 1)[-1] if ":" in image.rsplit("/", 1)[-1] else "?"
            return tag.removesuffix("-distroless")
    return "?"


class _Cluster:
    """What prove reads from one cluster, read once."""

    def __init__(self, kube: Any, inputs: ProveInputs) -> None:
        self.kube, self.name = kube, kube.context
        ignore = set(inputs.ignore_namespaces)
        try:
            self.deployments = kube.list("apps/v1", "Deployment").items
        except DriverError as exc:
            raise PreconditionFailed(f"cannot read Deployments in {self.name!r}: {exc.message}") from None
        self.istiod = [d for d in self.deployments if _name(d)[0] == inputs.istio_namespace
                       and ((d.get("metadata") or {}).get("labels") or {}).get("app") == "istiod"]
        self.gateways = [d for d in self.deployments
                         if str(((d.get("metadata") or {}).get("labels") or {}).get("istio", "")).endswith("gateway")]
        self.workloads: dict[Key, bool] = {}
        for api_version, kind in WORKLOAD_KINDS:
            items = self.deployments if kind == "Deployment" else kube.list(api_version, kind).items
            for obj in items:
                ns, name = _name(obj)
                if ns not in ignore:
                    self.workloads[(kind, ns, name)] = _ready(kind, obj)
        self.mesh: dict[Key, dict[str, Any]] = {}
        self.missing_kinds: list[str] = []
        for kind, versions in MESH_KINDS:
            items = self._list_any(kind, versions)
            if items is None:
                self.missing_kinds.append(kind)
                continue
            for obj in items:
                ns, name = _name(obj)
                self.mesh[(kind, ns, name)] = obj.get("spec") or {}

        self.mesh_config = self._mesh_config(inputs.istio_namespace)

    def _mesh_config(self, namespace: str) -> dict[str, str]:
        """The mesh config keys that matter, from every ``istio``/``istio-<rev>`` ConfigMap (revisions joined)."""
        import yaml

        found: dict[str, set[str]] = {}
        try:
            maps = self.kube.list("v1", "ConfigMap", namespace).items
        except DriverError:
            maps = []
        for cm in maps:
            name = str((cm.get("metadata") or {}).get("name", ""))
            if (name != "istio" and not name.startswith("istio-")) or "mesh" not in (cm.get("data") or {}):
                continue
            try:
                mesh = yaml.safe_load(cm["data"]["mesh"]) or {}
            except yaml.YAMLError:
                continue
            values = {"outboundTrafficPolicy.mode": (mesh.get("outboundTrafficPolicy") or {}).get("mode"),
                      "trustDomain": mesh.get("trustDomain")}
            for key, value in values.items():
                found.setdefault(key, set()).add(str(value or MESH_CONFIG_DEFAULTS[key]))
        return {k: ",".join(sorted(v)) for k, v in found.items()}

    def _list_any(self, kind: str, versions: Iterable[str]) -> list[dict[str, Any]] | None:
        for api_version in versions:
            try:
                return list(self.kube.list(api_version, kind).items)
            except NotFound:
                continue
        return None

    def version(self) -> str:
        return ",".join(sorted({_version_of(d) for d in self.istiod})) or "none"


def _diff(a: Any, b: Any, path: str = "spec", limit: int = 3) -> list[str]:
    if a == b:
        return []
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k), b.get(k), f"{path}.{k}", limit)
            if len(out) >= limit:
                break
        return out[:limit]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        out = []
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            out += _diff(x, y, f"{path}[{i}]", limit)
            if len(out) >= limit:
                break
        return out[:limit]
    return [f"{path}: {_short(a)} on source, {_short(b)} on target"]


def _short(v: Any) -> str:
    text = "absent" if v is None else repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def config_differences(source: dict[Key, dict[str, Any]], target: dict[Key, dict[str, Any]]) -> list[str]:
    out = []
    for key in sorted(set(source) | set(target)):
        kind, ns, name = key
        where = f"{kind} {ns}/{name}"
        if key not in target:
            out.append(f"{where}: only on the source")
        elif key not in source:
            out.append(f"{where}: only on the target")
        else:
            out += [f"{where}: {d}" for d in _diff(source[key], target[key])]
    return out


# ---- mTLS -------------------------------------------------------------------------------------


def _mode(value: Any, inherited: str) -> str:
    mode = str(value or "UNSET").upper()
    return inherited if mode == "UNSET" or mode not in MTLS_RANK else mode


class MtlsView:
    """Effective PeerAuthentication modes of one cluster."""

    def __init__(self, mesh: dict[Key, dict[str, Any]], root: str) -> None:
        pas = {(ns, name): spec for (kind, ns, name), spec in mesh.items() if kind == "PeerAuthentication"}
        roots = sorted(n for (ns, n), s in pas.items() if ns == root and not s.get("selector"))
        self.mesh_mode = _mode(((pas[(root, roots[0])].get("mtls") or {}).get("mode")) if roots else None, "PERMISSIVE")
        self.namespace_modes: dict[str, str] = {}
        self.workloads: dict[tuple[str, str], dict[str, Any]] = {}
        for (ns, name), spec in sorted(pas.items()):
            if ns == root and not spec.get("selector"):
                continue
            if not spec.get("selector"):
                self.namespace_modes.setdefault(ns, _mode((spec.get("mtls") or {}).get("mode"), self.mesh_mode))
            else:
                self.workloads[(ns, name)] = spec

    def namespace(self, ns: str) -> str:
        return self.namespace_modes.get(ns, self.mesh_mode)

    def workload(self, ns: str, name: str) -> tuple[str, dict[str, str]]:
        spec = self.workloads.get((ns, name))
        if spec is None:
            return self.namespace(ns), {}
        mode = _mode((spec.get("mtls") or {}).get("mode"), self.namespace(ns))
        ports = {str(p): _mode((v or {}).get("mode"), mode) for p, v in (spec.get("portLevelMtls") or {}).items()}
        return mode, ports


def weaker_mtls(source: MtlsView, target: MtlsView, namespaces: Iterable[str]) -> list[str]:
    out = []

    def weaker(where: str, s: str, t: str) -> None:
        if MTLS_RANK[t] < MTLS_RANK[s]:
            out.append(f"{where}: {s} on the source, {t} on the target")

    weaker("mesh-wide", source.mesh_mode, target.mesh_mode)
    for ns in sorted(set(namespaces) | set(source.namespace_modes) | set(target.namespace_modes)):
        weaker(f"namespace {ns}", source.namespace(ns), target.namespace(ns))
    for ns, name in sorted(source.workloads):
        s_mode, s_ports = source.workload(ns, name)
        t_mode, t_ports = target.workload(ns, name)
        weaker(f"PeerAuthentication {ns}/{name}", s_mode, t_mode)
        for port, mode in sorted(s_ports.items()):
            weaker(f"PeerAuthentication {ns}/{name} port {port}", mode, t_ports.get(port, t_mode))
    return out


@register
class ProveTarget(Step[ProveInputs, ProveOutputs]):
    """Refuses a target that is not ready or weaker in mTLS; reports every config difference."""

    name = "switchover.prove_target"
    Inputs = ProveInputs
    Outputs = ProveOutputs
    read_only = True
    side_effect_free = True
    needs = frozenset({"kube"})

    def run(self, inputs: ProveInputs, ctx: StepContext) -> ProveOutputs:
        source = _Cluster(ctx.drivers.kube_for(inputs.from_context), inputs)
        target = _Cluster(ctx.drivers.kube_for(inputs.to_context), inputs)
        problems = []
        if not target.istiod:
            problems.append(f"no istiod Deployment (app=istiod) in {inputs.istio_namespace}")
        problems += [f"istiod {_name(d)[1]} is not ready" for d in target.istiod if not _ready("Deployment", d)]
        if not target.gateways:
            problems.append("no gateway Deployment (label istio=*gateway)")
        problems += [f"gateway {'/'.join(_name(d))} is not ready" for d in target.gateways if not _ready("Deployment", d)]
        problems += [f"{k} {ns}/{n} is not ready" for (k, ns, n), ok in sorted(target.workloads.items()) if not ok]
        if target.missing_kinds and len(target.missing_kinds) == len(MESH_KINDS):
            problems.append("the Istio CRDs are not installed")
        if problems:
            raise PreconditionFailed(f"the target {target.name!r} is not ready: " + "; ".join(problems[:20])
                                     + (f" (and {len(problems) - 20} more)" if len(problems) > 20 else ""))
        differences = config_differences(source.mesh, target.mesh)
        for key in sorted(set(source.mesh_config) | set(target.mesh_config)):
            s_val, t_val = source.mesh_config.get(key, "?"), target.mesh_config.get(key, "?")
            if s_val != t_val:
                differences.append(f"mesh config {key}: {s_val} on the source, {t_val} on the target")
        differences += [f"{k} {ns}/{n}: runs on the source, missing on the target"
                        for (k, ns, n) in sorted(set(source.workloads) - set(target.workloads))]
        namespaces = {ns for (_, ns, _) in source.workloads} | {ns for (_, ns, _) in source.mesh}
        weaker = weaker_mtls(MtlsView(source.mesh, inputs.istio_namespace), MtlsView(target.mesh, inputs.istio_namespace),
                             namespaces)
        # Egress: a source that allows only registered hosts and a target that allows any is weaker too.
        if (source.mesh_config.get("outboundTrafficPolicy.mode") == "REGISTRY_ONLY"
                and "ALLOW_ANY" in target.mesh_config.get("outboundTrafficPolicy.mode", "ALLOW_ANY")):
            weaker.append("mesh config outboundTrafficPolicy: REGISTRY_ONLY on the source, ALLOW_ANY on the target")
        for d in differences:
            ctx.log.warning("switchover.config_difference", difference=d)
        ctx.log.info("switchover.proved", source_version=source.version(), target_version=target.version(),
                     workloads=len(target.workloads), differences=len(differences), weaker_mtls=len(weaker))
        if weaker and not inputs.allow_weaker_mtls:
            raise PreconditionFailed(f"the target {target.name!r} enforces weaker mTLS than the source: "
                                     + "; ".join(weaker) + " (pass --allow-weaker-mtls to accept)")
        for w in weaker:
            ctx.log.warning("switchover.weaker_mtls_allowed", where=w)
        return ProveOutputs(source_version=source.version(), target_version=target.version(),
                            workloads_ready=sum(target.workloads.values()), differences=differences, weaker_mtls=weaker)

    def undo(self, inputs: ProveInputs, outputs: ProveOutputs | None, ctx: StepContext) -> None:
        return None
