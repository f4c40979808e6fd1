"""PATCH bodies: JSON patch (RFC 6902), JSON merge patch (RFC 7386) and strategic merge patch.

Strategic merge patch merges lists by their patch merge key (``containers`` by ``name``, ``ports``
by ``containerPort``...) and honours the ``$patch``, ``$retainKeys``, ``$setElementOrder/...``
and ``$deleteFromPrimitiveList/...`` directives. The merge keys come from ``MERGE_TYPES``, a
hand-kept subset of the Kubernetes OpenAPI ``x-kubernetes-patch-merge-key`` annotations that
also feeds the OpenAPI documents the server publishes.
"""

from __future__ import annotations

from typing import Any

from meshops.domain import patches

from .errors import ApiError, bad_request
from .jsonutil import clone

Obj = dict[str, Any]

# A list merged as a set of scalars (finalizers) has this sentinel instead of a merge key.
PRIMITIVE = ""

# type -> field -> (child type or None, list merge key or None). A field with a merge key is a
# list merged by that key; a field without one is a nested object of the child type. Types are
# named as in the Kubernetes OpenAPI definitions (io.k8s.api.core.v1.PodSpec -> "PodSpec").
MERGE_TYPES: dict[str, dict[str, tuple[str | None, str | None]]] = {
    "ObjectMeta": {"finalizers": (None, PRIMITIVE), "ownerReferences": (None, "uid")},
    "PodTemplateSpec": {"metadata": ("ObjectMeta", None), "spec": ("PodSpec", None)},
    "PodSpec": {
        "containers": ("Container", "name"),
        "initContainers": ("Container", "name"),
        "ephemeralContainers": ("Container", "name"),
        "volumes": (None, "name"),
        "imagePullSecrets": (None, "name"),
        "hostAliases": (None, "ip"),
        "topologySpreadConstraints": (None, "topologyKey"),
        "resourceClaims": (None, "name"),
        "schedulingGates": (None, "name"),
    },
    "Container": {
        "env": (None, "name"),
        "ports": (None, "containerPort"),
        "volumeMounts": (None, "mountPath"),
        "volumeDevices": (None, "devicePath"),
    },
    "PodStatus": {"conditions": (None, "type"), "podIPs": (None, "ip"), "hostIPs": (None, "ip")},
    "ServiceSpec": {"ports": (None, "port")},
    "ServiceStatus": {"conditions": (None, "type")},
    "NodeSpec": {"podCIDRs": (None, PRIMITIVE)},
    "NodeStatus": {"conditions": (None, "type"), "addresses": (None, "type")},
    "NamespaceStatus": {"conditions": (None, "type")},
    "DeploymentSpec": {"template": ("PodTemplateSpec", None)},
    "DeploymentStatus": {"conditions": (None, "type")},
    "ReplicaSetSpec": {"template": ("PodTemplateSpec", None)},
    "ReplicaSetStatus": {"conditions": (None, "type")},
    "StatefulSetSpec": {"template": ("PodTemplateSpec", None)},
    "StatefulSetStatus": {"conditions": (None, "type")},
    "DaemonSetSpec": {"template": ("PodTemplateSpec", None)},
    "DaemonSetStatus": {"conditions": (None, "type")},
    "JobSpec": {"template": ("PodTemplateSpec", None)},
    "JobStatus": {"conditions": (None, "type")},
    "JobTemplateSpec": {"metadata": ("ObjectMeta", None), "spec": ("JobSpec", None)},
    "CronJobSpec": {"jobTemplate": ("JobTemplateSpec", None)},
    "PodDisruptionBudgetStatus": {"conditions": (None, "type")},
    "MutatingWebhookConfiguration": {"webhooks": (None, "name")},
    "ValidatingWebhookConfiguration": {"webhooks": (None, "name")},
}

# Fields whose patch strategy is retainKeys: a patch replaces the union member it names.
RETAIN_KEYS = {("DeploymentSpec", "strategy"), ("DaemonSetSpec", "updateStrategy"), ("PodSpec", "volumes")}

_KINDS_WITH_SPEC_STATUS = {
    "Pod": "Pod", "Service": "Service", "Node": "Node", "Namespace": "Namespace",
    "Deployment": "Deployment", "ReplicaSet": "ReplicaSet", "StatefulSet": "StatefulSet",
    "DaemonSet": "DaemonSet", "Job": "Job", "CronJob": "CronJob", "PodDisruptionBudget": "PodDisruptionBudget",
}


def root_fields(kind: str) -> dict[str, tuple[str | None, str | None]]:
    """The merge-type navigation for the top level of an object of ``kind``."""
    fields: dict[str, tuple[str | None, str | None]] = {"metadata": ("ObjectMeta", None)}
    base = _KINDS_WITH_SPEC_STATUS.get(kind)
    if base:
        fields["spec"] = (f"{base}Spec", None)
        fields["status"] = (f"{base}Status", None)
    fields.update(MERGE_TYPES.get(kind, {}))
    return fields


# ---- JSON merge patch ----------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    return patches.merge_patch(target, patch)


# ---- JSON patch (RFC 6902, by the jsonpatch package) ---------------------------------------


def json_patch(doc: Any, operations: Any) -> Any:
    try:
        return patches.json_patch(doc, operations)
    except patches.PatchInvalid as exc:
        raise bad_request(str(exc)) from None
    except patches.PatchConflict as exc:
        raise ApiError(422, "Invalid", str(exc)) from None


# ---- strategic merge patch -----------------------------------------------------------------


def strategic_merge_patch(original: Obj, patch: Any, kind: str) -> Obj:
    if not isinstance(patch, dict):
        raise bad_request("strategic merge patch must be a JSON object")
    result = _smp_map(original, patch, root_fields(kind), "")
    return result if isinstance(result, dict) else {}


def _fields_of(type_name: str | None) -> dict[str, tuple[str | None, str | None]]:
    return MERGE_TYPES.get(type_name or "", {})


def _smp_map(original: Any, patch: Obj, fields: dict[str, tuple[str | None, str | None]], type_name: str) -> Any:
    directive = patch.get("$patch")
    if directive == "delete":
        return None
    body = {k: v for k, v in patch.items() if not k.startswith("$")}
    if directive == "replace":
        return clone(body)
    if directive not in (None, "merge"):
        raise bad_request(f"Unknown patch type: {directive}")
    result = dict(original) if isinstance(original, dict) else {}
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if isinstance(result.get(field), list) and isinstance(value, list):
                result[field] = [v for v in result[field] if v not in value]
    for key, value in body.items():
        child_type, merge_key = fields.get(key, (None, None))
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            existing = result.get(key)
            merged = _smp_map(existing, value, _fields_of(child_type), child_type or "")
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list) and merge_key is not None:
            result[key] = _smp_list(result.get(key), value, merge_key, child_type)
        else:
            result[key] = clone(value)
    for key, value in patch.items():
        if key.startswith("$setElementOrder/"):
            field = key.split("/", 1)[1]
            merge_key = fields.get(field, (None, None))[1]
            if isinstance(result.get(field), list) and isinstance(value, list) and merge_key is not None:
                result[field] = _reorder(result[field], value, merge_key)
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _item_key(item: Any, merge_key: str) -> Any:
    if merge_key == PRIMITIVE:
        return item
    return item.get(merge_key) if isinstance(item, dict) else None


def _smp_list(original: Any, patch: list[Any], merge_key: str, child_type: str | None) -> list[Any]:
    current = list(original) if isinstance(original, list) else []
    if merge_key == PRIMITIVE:
        for item in patch:
            if isinstance(item, dict) and item.get("$patch") == "replace":
                return [v for v in patch if not isinstance(v, dict)]
        return current + [v for v in patch if v not in current]
    for item in patch:
        if isinstance(item, dict) and item.get("$patch") == "replace":
            return [clone({k: v for k, v in i.items() if k != "$patch"}) for i in patch if i is not item]
    fields = _fields_of(child_type)
    for item in patch:
        if not isinstance(item, dict):
            raise bad_request(f"strategic merge patch: list items must be objects keyed by {merge_key!r}")
        key = item.get(merge_key)
        if key is None and item.get("$patch") != "delete":
            raise bad_request(f"map: {item} does not contain declared merge key: {merge_key}")
        index = next((i for i, existing in enumerate(current) if _item_key(existing, merge_key) == key), None)
        if item.get("$patch") == "delete":
            if key is None:  # `$patch: delete` with other fields: delete every matching item
                current = [c for c in current if not _matches_all(c, item)]
            elif index is not None:
                del current[index]
            continue
        if index is None:
            current.append(_smp_map({}, item, fields, child_type or ""))
        else:
            current[index] = _smp_map(current[index], item, fields, child_type or "")
    return current


def _matches_all(item: Any, pattern: Obj) -> bool:
    return isinstance(item, dict) and all(item.get(k) == v for k, v in pattern.items() if k != "$patch")


def _reorder(items: list[Any], order: list[Any], merge_key: str) -> list[Any]:
    wanted = [_item_key(o, merge_key) for o in order]
    rank = {k: i for i, k in enumerate(wanted)}
    ordered = sorted((i for i in items if _item_key(i, merge_key) in rank), key=lambda i: rank[_item_key(i, merge_key)])
    rest = [i for i in items if _item_key(i, merge_key) not in rank]
    return ordered + rest
