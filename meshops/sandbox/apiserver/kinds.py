"""The resource types the API server serves: built-in kinds and those CRDs add.

A ``ResourceType`` is one (group, version, resource); objects are stored per (group, resource),
so every served version of a CRD reads and writes the same objects (no conversion: the sandbox
serves all versions of a CRD with the same schema, which is what Istio's CRDs do).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]
GroupResource = tuple[str, str]  # (group, plural): the storage identity of a resource

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True, kw_only=True)
class ScalePaths:
    """Where a /scale subresource reads and writes replicas (CRDs choose; built-ins use spec/status)."""

    spec_replicas: str = ".spec.replicas"
    status_replicas: str = ".status.replicas"
    label_selector: str | None = ".status.selector"


@dataclass(frozen=True, kw_only=True)
class ResourceType:
    group: str
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    # Subresources beyond the object itself: "status", "scale", "finalize" (namespaces).
    subresources: frozenset[str] = frozenset()
    scale: ScalePaths | None = None
    # Spec changes bump metadata.generation (kinds with a spec the controllers act on).
    tracks_generation: bool = False
    # DELETE answers with the deleted object instead of a Status (kube's ReturnDeletedObject).
    returns_deleted_object: bool = False
    # Not stored: a create is answered and forgotten (SelfSubjectAccessReview).
    virtual: bool = False
    custom: bool = False  # served because a CRD exists: stored generically
    printer_columns: tuple[Obj, ...] = ()  # a CRD's additionalPrinterColumns
    schema: Obj | None = field(default=None, compare=False)  # a CRD's openAPIV3Schema
    verbs: tuple[str, ...] = ALL_VERBS

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_resource(self) -> GroupResource:
        return (self.group, self.plural)

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def qualified(self) -> str:
        """``deployments.apps``: how messages name the resource."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


def _builtin(
    group: str,
    version: str,
    plural: str,
    kind: str,
    *,
    namespaced: bool = True,
    short: tuple[str, ...] = (),
    categories: tuple[str, ...] = (),
    sub: tuple[str, ...] = (),
    generation: bool = False,
    returns_object: bool = False,
) -> ResourceType:
    return ResourceType(
        group=group,
        version=version,
        plural=plural,
        singular=kind.lower(),
        kind=kind,
        namespaced=namespaced,
        short_names=short,
        categories=categories,
        subresources=frozenset(sub),
        scale=ScalePaths() if "scale" in sub else None,
        tracks_generation=generation,
        returns_deleted_object=returns_object,
    )


BUILTIN_TYPES: tuple[ResourceType, ...] = (
    _builtin("", "v1", "namespaces", "Namespace", namespaced=False, short=("ns",), sub=("status", "finalize")),
    _builtin("", "v1", "nodes", "Node", namespaced=False, short=("no",), sub=("status",)),
    _builtin("", "v1", "pods", "Pod", short=("po",), categories=("all",), sub=("status", "log"), returns_object=True),
    _builtin("", "v1", "services", "Service", short=("svc",), categories=("all",), sub=("status",), returns_object=True),
    _builtin("", "v1", "endpoints", "Endpoints", short=("ep",)),
    _builtin("", "v1", "configmaps", "ConfigMap", short=("cm",)),
    _builtin("", "v1", "secrets", "Secret"),
    _builtin("", "v1", "serviceaccounts", "ServiceAccount", short=("sa",), returns_object=True),
    _builtin("", "v1", "events", "Event", short=("ev",)),
    _builtin(
        "apps", "v1", "deployments", "Deployment", short=("deploy",), categories=("all",),
        sub=("status", "scale"), generation=True,
    ),
    _builtin(
        "apps", "v1", "replicasets", "ReplicaSet", short=("rs",), categories=("all",),
        sub=("status", "scale"), generation=True,
    ),
    _builtin(
        "apps", "v1", "statefulsets", "StatefulSet", short=("sts",), categories=("all",),
        sub=("status", "scale"), generation=True,
    ),
    _builtin(
        "apps", "v1", "daemonsets", "DaemonSet", short=("ds",), categories=("all",), sub=("status",), generation=True
    ),
    _builtin("apps", "v1", "controllerrevisions", "ControllerRevision"),
    _builtin("batch", "v1", "jobs", "Job", categories=("all",), sub=("status",), generation=True),
    _builtin("batch", "v1", "cronjobs", "CronJob", short=("cj",), categories=("all",), sub=("status",), generation=True),
    _builtin("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", short=("pdb",), sub=("status",), generation=True),
    # istioctl renders HPAs for istiod and its gateways (no controller acts on them here).
    _builtin("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler", short=("hpa",),
             categories=("all",), sub=("status",)),
    _builtin("coordination.k8s.io", "v1", "leases", "Lease"),
    _builtin("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice"),
    _builtin(
        "admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations", "MutatingWebhookConfiguration",
        namespaced=False, categories=("api-extensions",), generation=True,
    ),
    _builtin(
        "admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations", "ValidatingWebhookConfiguration",
        namespaced=False, categories=("api-extensions",), generation=True,
    ),
    ResourceType(
        group="authorization.k8s.io", version="v1", plural="selfsubjectaccessreviews", singular="selfsubjectaccessreview",
        kind="SelfSubjectAccessReview", namespaced=False, verbs=("create",), virtual=True,
    ),
    _builtin(
        "apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition",
        namespaced=False, short=("crd", "crds"), categories=("api-extensions",), sub=("status",), generation=True,
    ),
)

CRD_GR: GroupResource = ("apiextensions.k8s.io", "customresourcedefinitions")
# Kinds whose bodies are not served under /apis but needed by name elsewhere.
SCALE_API_VERSION = "autoscaling/v1"


def types_from_crd(crd: Obj) -> list[ResourceType]:
    """The resource types a CRD serves, one per served version."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group = spec.get("group", "")
    kind = names.get("kind", "")
    plural = names.get("plural", "")
    out = []
    for version in spec.get("versions") or []:
        if not version.get("served", True):
            continue
        subresources = version.get("subresources") or {}
        sub = set()
        scale = None
        if "status" in subresources:
            sub.add("status")
        if "scale" in subresources:
            sub.add("scale")
            paths = subresources["scale"] or {}
            scale = ScalePaths(
                spec_replicas=paths.get("specReplicasPath", ".spec.replicas"),
                status_replicas=paths.get("statusReplicasPath", ".status.replicas"),
                label_selector=paths.get("labelSelectorPath"),
            )
        out.append(
            ResourceType(
                group=group,
                version=version.get("name", ""),
                plural=plural,
                singular=names.get("singular") or kind.lower(),
                kind=kind,
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                subresources=frozenset(sub),
                scale=scale,
                tracks_generation=True,
                custom=True,
                printer_columns=tuple(version.get("additionalPrinterColumns") or ()),
                schema=(version.get("schema") or {}).get("openAPIV3Schema"),
            )
        )
    return out


def storage_version(crd: Obj) -> str | None:
    for version in (crd.get("spec") or {}).get("versions") or []:
        if version.get("storage"):
            return str(version.get("name"))
    return None


class ResourceTypes:
    """Every served resource type, looked up by path segments or by kind.

    Built-ins are fixed; CRD types come and go as CRDs are created and deleted. Readers get
    a consistent snapshot because updates replace the lookup tables rather than edit them.
    """

    def __init__(self, builtin: Iterable[ResourceType] = BUILTIN_TYPES) -> None:
        self._builtin = tuple(builtin)
        self._custom: dict[str, list[ResourceType]] = {}  # CRD name -> its types
        self._lock = threading.Lock()
        self._generation = 0
        self._rebuild()

    def _rebuild(self) -> None:
        all_types = list(self._builtin) + [t for types in self._custom.values() for t in types]
        self._by_path = {(t.group, t.version, t.plural): t for t in all_types}
        self._all = tuple(all_types)
        self._by_gr: dict[GroupResource, list[ResourceType]] = {}
        for t in all_types:
            self._by_gr.setdefault(t.group_resource, []).append(t)
        self._generation += 1

    @property
    def generation(self) -> int:
        """Bumped on every change, so discovery and OpenAPI caches know when to rebuild."""
        return self._generation

    def all(self) -> tuple[ResourceType, ...]:
        return self._all

    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._by_path.get((group, version, plural))

    def for_group_resource(self, gr: GroupResource) -> ResourceType | None:
        """The preferred (first-listed) version of a stored resource."""
        types = self._by_gr.get(gr)
        return types[0] if types else None

    def for_kind(self, api_version: str, kind: str) -> ResourceType | None:
        group, _, version = api_version.rpartition("/")
        for t in self._all:
            if t.kind == kind and t.group == group and t.version == version:
                return t
        return None

    def group_versions(self) -> dict[str, list[str]]:
        """group -> served versions, preferred first ("" is the core group)."""
        out: dict[str, list[str]] = {}
        for t in self._all:
            versions = out.setdefault(t.group, [])
            if t.version not in versions:
                versions.append(t.version)
        return out

    def set_crd(self, name: str, types: list[ResourceType], preferred: str | None) -> None:
        if preferred:
            types = sorted(types, key=lambda t: t.version != preferred)
        with self._lock:
            if types:
                self._custom[name] = types
            else:
                self._custom.pop(name, None)
            self._rebuild()

    def remove_crd(self, name: str) -> None:
        with self._lock:
            if self._custom.pop(name, None) is not None:
                self._rebuild()


# Storage identities of the built-in resources, for in-process callers.
NAMESPACES: GroupResource = ("", "namespaces")
NODES: GroupResource = ("", "nodes")
PODS: GroupResource = ("", "pods")
SERVICES: GroupResource = ("", "services")
ENDPOINTS: GroupResource = ("", "endpoints")
CONFIGMAPS: GroupResource = ("", "configmaps")
SECRETS: GroupResource = ("", "secrets")
SERVICEACCOUNTS: GroupResource = ("", "serviceaccounts")
EVENTS: GroupResource = ("", "events")
DEPLOYMENTS: GroupResource = ("apps", "deployments")
REPLICASETS: GroupResource = ("apps", "replicasets")
STATEFULSETS: GroupResource = ("apps", "statefulsets")
DAEMONSETS: GroupResource = ("apps", "daemonsets")
CONTROLLERREVISIONS: GroupResource = ("apps", "controllerrevisions")
JOBS: GroupResource = ("batch", "jobs")
CRONJOBS: GroupResource = ("batch", "cronjobs")
PODDISRUPTIONBUDGETS: GroupResource = ("policy", "poddisruptionbudgets")
LEASES: GroupResource = ("coordination.k8s.io", "leases")
ENDPOINTSLICES: GroupResource = ("discovery.k8s.io", "endpointslices")
MUTATINGWEBHOOKS: GroupResource = ("admissionregistration.k8s.io", "mutatingwebhookconfigurations")
VALIDATINGWEBHOOKS: GroupResource = ("admissionregistration.k8s.io", "validatingwebhookconfigurations")
CRDS: GroupResource = CRD_GR
