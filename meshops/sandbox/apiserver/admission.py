"""Admission: what every create and update passes through before the store.

Order, as in kube-apiserver: field checks against the schema (``fieldValidation``), defaulting,
mutating plugins (then defaulting again, as kube re-decodes webhook-mutated objects),
validation, validating plugins. Controllers' writes take the same path as HTTP clients'.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import errors
from .defaults import apply_defaults
from .errors import ApiError
from .kinds import ResourceType
from .plugins import AdmissionDenied, AdmissionRequest
from .validation import validate, validate_update

if TYPE_CHECKING:
    from .cluster import Cluster

Obj = dict[str, Any]

def tidy_metadata(obj: Obj) -> None:
    """Drop empty omitempty metadata maps and lists (``kubectl label x k-`` leaves ``labels: {}``)."""
    meta = obj["metadata"]
    for key in ("labels", "annotations", "finalizers", "ownerReferences", "managedFields"):
        if key in meta and not meta[key]:
            del meta[key]

def admit(
    cluster: Cluster,
    t: ResourceType,
    operation: str,
    obj: Obj,
    old: Obj | None,
    *,
    dry_run: bool,
    field_validation: str | None = None,
    warnings: list[str] | None = None,
) -> Obj:
    """Defaulting, mutating plugins, validation and validating plugins, in kube-apiserver's order."""
    tidy_metadata(obj)
    if field_validation is not None:
        obj, found = cluster.openapi.check_fields(t, obj, field_validation)
        if warnings is not None:
            warnings.extend(w for w in found if w not in warnings)
    allocator = cluster.allocator
    apply_defaults(t.kind, obj, allocator)
    meta = obj["metadata"]
    plugins = cluster.mutating_plugins
    if plugins:
        request = AdmissionRequest(
            operation=operation, group=t.group, version=t.version, resource=t.plural, kind=t.kind,
            namespace=meta.get("namespace"), name=meta.get("name"), obj=obj, old=old, dry_run=dry_run,
        )
        for plugin in list(plugins):
            run_plugin(functools.partial(plugin.mutate, request, cluster))
        obj = request.obj if request.obj is not None else obj
        apply_defaults(t.kind, obj, allocator)
    if old is None:
        validate(t.kind, t.group, obj, builtin=not t.custom)
    else:
        validate_update(t.kind, t.group, obj, old, builtin=not t.custom)
    validating_plugins(cluster, t, operation, obj, old, dry_run)
    return obj

def validating_plugins(cluster: Cluster, t: ResourceType, operation: str, obj: Obj | None, old: Obj | None, dry_run: bool) -> None:
    plugins = cluster.validating_plugins
    if not plugins:
        return
    meta = (obj or old or {}).get("metadata") or {}
    request = AdmissionRequest(
        operation=operation, group=t.group, version=t.version, resource=t.plural, kind=t.kind,
        namespace=meta.get("namespace"), name=meta.get("name"), obj=obj, old=old, dry_run=dry_run,
    )
    for plugin in list(plugins):
        run_plugin(functools.partial(plugin.validate, request, cluster))


def run_plugin(call: Callable[[], None]) -> None:
    try:
        call()
    except AdmissionDenied as denied:
        raise ApiError(denied.code, denied.reason, denied.message) from denied
    except ApiError:
        raise
    except Exception as e:  # a broken plugin is a failing webhook: 500, as failurePolicy Fail
        raise errors.internal(f"admission plugin failed: {e!r}") from e
