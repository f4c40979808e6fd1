"""The /scale subresource: an autoscaling/v1 Scale view onto ``spec.replicas`` (or a CRD's paths)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import errors
from .jsonutil import clone, get_path, set_path
from .kinds import ResourceType
from .selectors import selector_to_string
from .wire import parse_resource_version

if TYPE_CHECKING:
    from .ports import ResourceVerbs

Obj = dict[str, Any]


def get_scale(api: ResourceVerbs, rt: ResourceType, namespace: str | None, name: str) -> Obj:
    """The autoscaling/v1 Scale view of an object with a /scale subresource."""
    obj = api.get(rt, namespace, name).obj
    assert rt.scale is not None
    meta = obj["metadata"]
    selector = get_path(obj, rt.scale.label_selector) if rt.scale.label_selector else None
    if not rt.custom:
        selector = selector_to_string((obj.get("spec") or {}).get("selector"))
    status: Obj = {"replicas": get_path(obj, rt.scale.status_replicas) or 0}
    if selector:
        status["selector"] = selector
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            key: meta[key] for key in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp") if key in meta
        },
        "spec": {"replicas": get_path(obj, rt.scale.spec_replicas) or 0},
        "status": status,
    }

def write_scale(
    api: ResourceVerbs, rt: ResourceType, namespace: str | None, name: str, change: Callable[[Obj], Obj], dry_run: bool = False
) -> Obj:
    """Apply ``change`` to the Scale view and write the replicas back to the object."""
    assert rt.scale is not None
    scale_paths = rt.scale
    scale = get_scale(api, rt, namespace, name)
    new_scale = change(clone(scale))
    if not isinstance(new_scale, dict):
        raise errors.bad_request("the Scale must be an object")
    replicas = (new_scale.get("spec") or {}).get("replicas")
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
        raise errors.invalid("Scale", "autoscaling", name, [("spec.replicas", "FieldValueInvalid", f"Invalid value: {json.dumps(replicas)}: must be greater than or equal to 0")])
    wanted_rv = parse_resource_version((new_scale.get("metadata") or {}).get("resourceVersion"))
    if wanted_rv is not None and str(wanted_rv) == scale["metadata"].get("resourceVersion"):
        wanted_rv = None  # the scale we just read: no need to fail on an unrelated write

    def set_replicas(current: Obj) -> Obj:
        updated: Obj = clone(current)  # the stored object is shared: never edit it in place
        set_path(updated, scale_paths.spec_replicas, replicas)
        return updated

    api.read_modify_write(rt, namespace, name, set_replicas, wanted_rv, subresource=None, dry_run=dry_run, fresh=True)
    result = get_scale(api, rt, namespace, name)
    result["spec"]["replicas"] = replicas
    return result
