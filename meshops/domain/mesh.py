"""A snapshot of a mesh and what can be read from it: revisions, tags, webhooks, who injects what.

Built from plain Kubernetes objects (dicts) and never talks to a cluster. Injection is
decided the way the API server decides it: by evaluating each injector webhook's
``namespaceSelector`` and ``objectSelector``. Istio's precedence rules (``istio-injection``
beats a namespace ``istio.io/rev``, which beats the pod label; ``sidecar.istio.io/inject:
"false"`` always opts out) live entirely in those selectors, so reading them from the
cluster is both exact and version-proof. Sources: ../shared/reference/istio.md section 1.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from meshops.domain.proxies import find_proxy_container, image_version, injection_revision, sidecar_of

Obj = dict[str, Any]

STATUS_ANNOTATION = "sidecar.istio.io/status"
REV_LABEL = "istio.io/rev"
TAG_LABEL = "istio.io/tag"
INJECTION_LABEL = "istio-injection"
INJECT_LABEL = "sidecar.istio.io/inject"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
GATEWAY_TEMPLATE = "inject.istio.io/templates"
# istiod never injects in these (pkg/kube/inject IgnoredNamespaces).
IGNORED_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease", "local-path-storage"})
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")
_TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})
_OPT_OUT = frozenset({"false", "n", "no", "off"})


# ---- label selectors --------------------------------------------------------------------


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A Kubernetes LabelSelector against labels. None or {} selects everything."""
    if not selector:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key", ""), expr.get("operator", ""), expr.get("values") or []
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return False
    return True


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _labels(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict(_meta(obj).get("labels") or {})


def _annotations(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict(_meta(obj).get("annotations") or {})


def as_int(value: Any, default: int = 0) -> int:
    """An int from a JSON field that may be missing, null or a string."""
    try:
        return int(value) if value is not None else default
    except (TypeError, ValueError):
        return default


def image_tag(image: str) -> str:
    """The Istio version an image names: 'docker.io/istio/proxyv2:1.24.1-distroless' -> '1.24.1';
    '' when only a digest (or no version) says (domain.proxies.parse_image)."""
    return image_version(image)


def revision_of_service(name: str) -> str:
    """istiod -> default, istiod-1-24-1 -> 1-24-1 (istiod-revision-tag-X names a tag, not a revision)."""
    return "default" if name == "istiod" else name.removeprefix("istiod-")


# ---- the parts of a mesh ---------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Webhook:
    configuration: str
    mutating: bool
    name: str
    service: tuple[str, str] | None  # (namespace, name)
    namespace_selector: Obj | None
    object_selector: Obj | None
    revision: str  # the configuration's istio.io/rev label ("" when absent)
    tag: str  # the configuration's istio.io/tag label ("" when absent)
    for_pods: bool

    @property
    def injector(self) -> bool:
        return self.mutating and self.name.endswith("sidecar-injector.istio.io")

    @property
    def validator(self) -> bool:
        return not self.mutating and self.name.endswith("validation.istio.io")

    @property
    def deactivated(self) -> bool:
        """istioctl's never-match selector: how `tag set default` switches an injector off."""
        sel = self.namespace_selector or {}
        return (sel.get("matchLabels") or {}).get("istio.io/deactivated") == "never-match"

    @property
    def serving_revision(self) -> str:
        if self.revision:
            return self.revision
        return revision_of_service(self.service[1]) if self.service else ""


@dataclass(frozen=True, kw_only=True)
class Revision:
    name: str
    version: str | None
    namespace: str
    deployment: str
    replicas: int
    ready_replicas: int

    @property
    def ready(self) -> bool:
        return self.replicas > 0 and self.ready_replicas >= self.replicas


@dataclass(frozen=True, kw_only=True)
class Pod:
    namespace: str
    name: str
    owner_kind: str  # Deployment | StatefulSet | DaemonSet | Job | ReplicaSet | ... | "" (naked)
    owner_name: str
    phase: str
    deleting: bool
    ready: bool
    labels: dict[str, str]
    opted_out: bool
    revision: str | None  # the revision that injected it, from sidecar.istio.io/status
    proxy_version: str | None  # from the image, variant stripped; None when only a digest says
    native_sidecar: bool = False  # istio-proxy in initContainers (restartPolicy Always)
    proxy_digest: str = ""  # the running image digest (containerStatuses[].imageID)

    @property
    def terminal(self) -> bool:
        return self.phase in _TERMINAL_PHASES

    @property
    def live(self) -> bool:
        """Counts for "which revision is in use": running or pending, not on its way out."""
        return not self.terminal and not self.deleting

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, kw_only=True)
class Workload:
    kind: str
    namespace: str
    name: str
    replicas: int
    strategy: str  # RollingUpdate | Recreate | OnDelete
    template_labels: dict[str, str]
    template_annotations: dict[str, str]
    annotations: dict[str, str] = field(default_factory=dict)  # the workload's own
    gateway: str = ""  # "injected" | "installed" | "" (not a gateway)
    istiod: bool = False

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"

    @property
    def restartable(self) -> bool:
        """meshops restarts it through its pod template (OnDelete and partitioned rolling updates
        ignore template changes for some or all pods)."""
        return self.strategy not in ("OnDelete", "Partitioned")


@dataclass(frozen=True, kw_only=True)
class Blocker:
    """Something a human should know before the data plane moves. ``holds_old`` ones keep the
    old revision alive at the end; the others are left alone on purpose."""

    kind: str
    ref: str
    detail: str
    holds_old: bool

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "ref": self.ref, "detail": self.detail, "holds_old": self.holds_old}


def pod_from_object(obj: Obj) -> Pod:
    meta = _meta(obj)
    labels = _labels(obj)
    annotations = _annotations(obj)
    owner_kind, owner_name = "", ""
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller", True):
            owner_kind, owner_name = str(ref.get("kind", "")), str(ref.get("name", ""))
            break
    if owner_kind == "ReplicaSet" and labels.get("pod-template-hash"):
        suffix = "-" + labels["pod-template-hash"]
        if owner_name.endswith(suffix):
            owner_kind, owner_name = "Deployment", owner_name[: -len(suffix)]
    # Injection status and the istio.io/rev annotation, containers and native sidecars alike
    # (domain.proxies; reference §5).
    sidecar = sidecar_of(obj)
    revision = sidecar.revision if sidecar is not None else None
    if sidecar is None and annotations.get(STATUS_ANNOTATION):
        revision = injection_revision(annotations)  # injected, proxy container not (yet) visible
    proxy_version = (sidecar.version or None) if sidecar is not None else None
    status = obj.get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    opted_out = (labels.get(INJECT_LABEL, "").lower() in _OPT_OUT
                 or annotations.get(INJECT_LABEL, "").lower() in _OPT_OUT)
    return Pod(namespace=str(meta.get("namespace", "")), name=str(meta.get("name", "")), owner_kind=owner_kind,
               owner_name=owner_name, phase=str(status.get("phase", "Pending")),
               deleting=bool(meta.get("deletionTimestamp")), ready=ready, labels=labels, opted_out=opted_out,
               revision=revision, proxy_version=proxy_version,
               native_sidecar=bool(sidecar and sidecar.native),
               proxy_digest=(sidecar.running_digest or sidecar.image.digest) if sidecar else "")


def workload_from_object(obj: Obj) -> Workload:
    meta = _meta(obj)
    spec = obj.get("spec") or {}
    kind = str(obj.get("kind", ""))
    template = spec.get("template") or {}
    t_labels = _labels(template)
    t_annotations = _annotations(template)
    if kind == "Deployment":
        strategy = str((spec.get("strategy") or {}).get("type") or "RollingUpdate")
        replicas = as_int(spec.get("replicas"), 1)
    else:
        strategy = str((spec.get("updateStrategy") or {}).get("type") or "RollingUpdate")
        replicas = as_int(spec.get("replicas"), 1)
        if kind == "DaemonSet":
            replicas = as_int((obj.get("status") or {}).get("desiredNumberScheduled"))
        if strategy == "RollingUpdate" and as_int(((spec.get("updateStrategy") or {}).get("rollingUpdate") or {})
                                                  .get("partition")) > 0:
            strategy = "Partitioned"  # pods below the partition ignore template changes
    proxy = find_proxy_container(template.get("spec") or {})
    gateway = ""
    if t_annotations.get(GATEWAY_TEMPLATE) == "gateway":
        gateway = "injected"  # Helm gateway chart / istioctl injectionTemplate: gateway (reference §2)
    elif proxy is not None and str(proxy[0].get("image", "")) != "auto" \
            and (t_labels.get(INJECT_LABEL) or t_annotations.get(INJECT_LABEL) or "").lower() in _OPT_OUT | {""}:
        gateway = "installed"  # istioctl gateways chart: concrete proxyv2 image, not injected
    istiod = t_labels.get("app") == "istiod"
    return Workload(kind=kind, namespace=str(meta.get("namespace", "")), name=str(meta.get("name", "")),
                    replicas=replicas, strategy=strategy, template_labels=t_labels,
                    template_annotations=t_annotations, annotations=_annotations(obj), gateway=gateway, istiod=istiod)


def _webhooks_from(conf: Obj, mutating: bool) -> list[Webhook]:
    labels = _labels(conf)
    out = []
    for wh in conf.get("webhooks") or []:
        svc = (wh.get("clientConfig") or {}).get("service")
        rules = wh.get("rules") or []
        for_pods = any("pods" in (r.get("resources") or []) or "*" in (r.get("resources") or []) for r in rules)
        out.append(Webhook(
            configuration=str(_meta(conf).get("name", "")), mutating=mutating, name=str(wh.get("name", "")),
            service=(str(svc.get("namespace", "default")), str(svc.get("name", ""))) if svc else None,
            namespace_selector=wh.get("namespaceSelector"), object_selector=wh.get("objectSelector"),
            revision=labels.get(REV_LABEL, ""), tag=labels.get(TAG_LABEL, ""), for_pods=for_pods))
    return out


def _revision_from(obj: Obj) -> Revision:
    meta = _meta(obj)
    labels = _labels(obj)
    spec = obj.get("spec") or {}
    version = labels.get("operator.istio.io/version")
    for c in ((spec.get("template") or {}).get("spec") or {}).get("containers") or []:
        tag = image_tag(str(c.get("image", "")))
        if tag:
            version = tag
            break
    status = obj.get("status") or {}
    replicas = as_int(spec.get("replicas"), 1)
    t_labels = _labels(spec.get("template") or {})
    return Revision(name=t_labels.get(REV_LABEL) or labels.get(REV_LABEL) or "default", version=version,
                    namespace=str(meta.get("namespace", "")), deployment=str(meta.get("name", "")),
                    replicas=replicas, ready_replicas=int(status.get("readyReplicas") or 0))


# ---- the snapshot -----------------------------------------------------------------------


@dataclass(kw_only=True)
class MeshSnapshot:
    kube_version: str
    namespaces: dict[str, dict[str, str]]  # name -> labels
    revisions: dict[str, Revision]
    webhooks: list[Webhook]
    services: set[tuple[str, str]]
    workloads: dict[str, Workload]
    pods: list[Pod]
    istio_namespace: str = "istio-system"
    namespace_annotations: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> annotations
    _pods_by_owner: dict[tuple[str, str, str], list[Pod]] = field(default_factory=dict, repr=False)

    @classmethod
    def from_objects(cls, *, kube_version: str, namespaces: Iterable[Obj], pods: Iterable[Obj | Pod],
                     workloads: Iterable[Obj], mutating: Iterable[Obj], validating: Iterable[Obj],
                     services: Iterable[Obj] = (), istio_namespace: str = "istio-system") -> MeshSnapshot:
        """From plain objects (pods may already be ``Pod`` values, e.g. from an informer)."""
        workloads, namespaces = list(workloads), list(namespaces)
        revisions: dict[str, Revision] = {}
        for obj in workloads:
            if obj.get("kind") == "Deployment" and _labels(obj.get("spec", {}).get("template") or {}).get("app") == "istiod":
                rev = _revision_from(obj)
                revisions[rev.name] = rev
        snap = cls(
            kube_version=kube_version,
            namespaces={str(_meta(n).get("name")): _labels(n) for n in namespaces},
            revisions=revisions,
            webhooks=[*(w for c in mutating for w in _webhooks_from(c, True)),
                      *(w for c in validating for w in _webhooks_from(c, False))],
            services={(str(_meta(s).get("namespace")), str(_meta(s).get("name"))) for s in services},
            workloads={w.key: w for w in map(workload_from_object, workloads)},
            pods=[p if isinstance(p, Pod) else pod_from_object(p) for p in pods],
            istio_namespace=istio_namespace,
            namespace_annotations={str(_meta(n).get("name")): _annotations(n) for n in namespaces},
        )
        for p in snap.pods:
            snap._pods_by_owner.setdefault((p.owner_kind, p.namespace, p.owner_name), []).append(p)
        return snap

    # ---- revisions, tags, webhooks ------------------------------------------------------

    def tags(self) -> dict[str, str]:
        """tag -> revision, from the tag webhook configurations (istio-revision-tag-*)."""
        out: dict[str, str] = {}
        for w in self.webhooks:
            if w.injector and w.tag and not w.deactivated:
                out.setdefault(w.tag, w.serving_revision)
        return dict(sorted(out.items()))

    def tags_of(self, revision: str) -> list[str]:
        return sorted(t for t, r in self.tags().items() if r == revision)

    def resolve(self, rev_or_tag: str) -> str | None:
        """A namespace's istio.io/rev value -> the revision that serves it (tags resolved)."""
        tags = self.tags()
        if rev_or_tag in tags:
            return tags[rev_or_tag]
        return rev_or_tag if rev_or_tag in self.revisions else None

    def default_revision(self) -> str | None:
        """The revision that injects istio-injection=enabled namespaces (and validates)."""
        return self.injector_for("", {INJECTION_LABEL: "enabled"}, {})

    def validator_revision(self) -> str | None:
        """The revision behind ``istiod-default-validator`` (it must follow the default tag)."""
        for w in self.webhooks:
            if w.validator and w.configuration == "istiod-default-validator" and w.service:
                if w.service[1].startswith("istiod-revision-tag-"):
                    return w.revision or None
                return revision_of_service(w.service[1])
        return None

    def dangling_webhooks(self) -> list[str]:
        """Webhooks (Istio's or not) whose service does not exist: every create they guard fails."""
        return sorted({f"{'MutatingWebhookConfiguration' if w.mutating else 'ValidatingWebhookConfiguration'}/"
                       f"{w.configuration} ({w.name}) -> service {w.service[0]}/{w.service[1]}"
                       for w in self.webhooks if w.service and w.service not in self.services})

    # ---- injection --------------------------------------------------------------------

    def injector_for(self, namespace: str, ns_labels: Mapping[str, str], pod_labels: Mapping[str, str],
                     pod_annotations: Mapping[str, str] | None = None) -> str | None:
        """The revision whose sidecar a new pod with these labels gets, or None."""
        if namespace in IGNORED_NAMESPACES:
            return None
        if (pod_annotations or {}).get(INJECT_LABEL, "").lower() in _OPT_OUT:
            return None
        nsl = dict(ns_labels)
        if namespace:
            nsl.setdefault("kubernetes.io/metadata.name", namespace)
        for w in sorted((w for w in self.webhooks if w.injector and w.for_pods), key=lambda w: w.configuration):
            if selector_matches(w.namespace_selector, nsl) and selector_matches(w.object_selector, pod_labels):
                return w.serving_revision
        return None

    def namespace_revision(self, namespace: str) -> str | None:
        """What a plain pod (no Istio labels) created in ``namespace`` would be injected by."""
        return self.injector_for(namespace, self.namespaces.get(namespace, {}), {})

    def workload_revision(self, w: Workload) -> str | None:
        """What a new pod of workload ``w`` would be injected by."""
        return self.injector_for(w.namespace, self.namespaces.get(w.namespace, {}), w.template_labels,
                                 w.template_annotations)

    def pods_of(self, w: Workload) -> list[Pod]:
        return self._pods_by_owner.get((w.kind, w.namespace, w.name), [])

    # ---- proxies ------------------------------------------------------------------------

    def live_proxies(self) -> list[Pod]:
        return [p for p in self.pods if p.revision is not None and p.live]

    def proxies_by_revision(self) -> dict[str, int]:
        return dict(sorted(Counter(p.revision or "" for p in self.live_proxies()).items()))

    def proxy_version(self, p: Pod) -> str | None:
        """The image's version, else (a digest-pinned image) the version of the revision serving it."""
        if p.proxy_version:
            return p.proxy_version
        rev = self.revisions.get(p.revision or "")
        return rev.version if rev is not None else None

    def proxies_by_version(self) -> dict[str, int]:
        return dict(sorted(Counter(self.proxy_version(p) or "unknown" for p in self.live_proxies()).items()))

    def pods_on(self, revision: str) -> list[Pod]:
        return [p for p in self.live_proxies() if p.revision == revision]

    def gateways(self) -> list[Workload]:
        return [w for w in self.workloads.values() if w.gateway]

    def gateway_revision(self, w: Workload) -> str | None:
        if w.gateway == "installed":
            return w.template_labels.get(REV_LABEL) or "default"
        revs = {p.revision for p in self.pods_of(w) if p.live and p.revision}
        return sorted(revs)[0] if len(revs) == 1 else (self.workload_revision(w) if not revs else ",".join(sorted(revs)))

    # ---- what needs a human --------------------------------------------------------------

    def blockers(self, old: str) -> list[Blocker]:
        """Everything about the data plane on ``old`` that meshops will not or cannot move."""
        out: list[Blocker] = []
        for p in self.pods:
            if p.revision is None:
                if p.opted_out and self.namespace_revision(p.namespace) is not None:
                    out.append(Blocker(kind="opted_out", ref=p.ref, detail='sidecar.istio.io/inject: "false"; left alone',
                                       holds_old=False))
                continue
            if p.revision != old:
                continue
            if p.terminal:
                out.append(Blocker(kind="terminal_pod", ref=p.ref,
                                   detail=f"{p.phase} pod still carries the {old} sidecar; ignored", holds_old=False))
            elif p.owner_kind == "":
                out.append(Blocker(kind="naked_pod", ref=p.ref, detail="no controller: meshops cannot recreate it",
                                   holds_old=True))
            elif p.owner_kind in ("Job", "CronJob"):
                out.append(Blocker(kind="job_pod", ref=p.ref,
                                   detail=f"owned by {p.owner_kind} {p.owner_name}: holds {old} until it completes",
                                   holds_old=True))
            elif p.owner_kind not in WORKLOAD_KINDS:
                out.append(Blocker(kind="unmanaged_pod", ref=p.ref,
                                   detail=f"owned by {p.owner_kind} {p.owner_name}, which meshops does not restart",
                                   holds_old=True))
        for w in self.workloads.values():
            on_old = [p for p in self.pods_of(w) if p.live and p.revision == old]
            if not w.restartable and on_old:
                why = ("updateStrategy OnDelete" if w.strategy == "OnDelete"
                       else "a rollingUpdate partition above 0")
                out.append(Blocker(kind="ondelete", ref=f"{w.kind}/{w.namespace}/{w.name}",
                                   detail=f"{why}: {len(on_old)} pod(s) stay on {old} until deleted",
                                   holds_old=True))
            ns_labels = self.namespaces.get(w.namespace, {})
            pod_rev = w.template_labels.get(REV_LABEL)
            if pod_rev and (INJECTION_LABEL in ns_labels or REV_LABEL in ns_labels):
                ns_sel = (f"{INJECTION_LABEL}={ns_labels[INJECTION_LABEL]}" if INJECTION_LABEL in ns_labels
                          else f"{REV_LABEL}={ns_labels[REV_LABEL]}")
                if ns_labels.get(REV_LABEL) != pod_rev:
                    out.append(Blocker(kind="label_override", ref=f"{w.kind}/{w.namespace}/{w.name}",
                                       detail=f"pod label {REV_LABEL}={pod_rev} is ignored: namespace {ns_sel} wins "
                                              "(istio/istio#48316)", holds_old=False))
        for ns, labels in sorted(self.namespaces.items()):
            if labels.get(INJECTION_LABEL) == "enabled" and REV_LABEL in labels:
                out.append(Blocker(kind="label_override", ref=f"Namespace/{ns}",
                                   detail=f"{INJECTION_LABEL}=enabled overrides {REV_LABEL}={labels[REV_LABEL]}",
                                   holds_old=False))
        return sorted(out, key=lambda b: (b.kind, b.ref))
