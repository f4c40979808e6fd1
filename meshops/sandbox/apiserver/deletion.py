"""Deletion: finalizers, graceful pod termination, propagation policies, preconditions.

An object leaves the store at once unless something holds it: finalizers (including the
``foregroundDeletion`` and ``orphan`` ones propagation policies add), a namespace's
``spec.finalizers``, or a scheduled pod's grace period. Then it gets a deletionTimestamp and
the controllers (garbage collector, namespace controller, kubelet) finish the job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import errors
from .errors import ApiError
from .jsonutil import clone, now_rfc3339
from .kinds import ResourceType

if TYPE_CHECKING:
    from .ports import ResourceVerbs

Obj = dict[str, Any]
_CONFLICT_RETRIES = 8


@dataclass(frozen=True, kw_only=True)
class DeleteResult:
    obj: Obj  # the object as deleted, or as it now waits on finalizers
    deleted: bool  # gone from the store (False: deletionTimestamp set, finalizers pending)


def delete(api: ResourceVerbs, t: ResourceType, namespace: str | None, name: str, options: Obj) -> DeleteResult:
    """DELETE: at once, or by setting deletionTimestamp when finalizers or a grace period hold it."""
    gr, ns = t.group_resource, (namespace or "") if t.namespaced else ""
    dry_run = bool(options.get("dryRun"))
    for _ in range(_CONFLICT_RETRIES):
        current = api.store.get_version(gr, ns, name)
        if current is None:
            raise errors.not_found(t.plural, t.group, name)
        check_preconditions(t, name, current.obj, options.get("preconditions") or {})
        obj = clone(current.obj)
        meta = obj["metadata"]
        api.admission.validate_delete(t, current.obj, dry_run=dry_run)
        finalizers = list(meta.get("finalizers") or [])
        policy = options.get("propagationPolicy")
        if policy is None and options.get("orphanDependents") is not None:
            policy = "Orphan" if options["orphanDependents"] else "Background"
        if policy == "Foreground" and "foregroundDeletion" not in finalizers:
            finalizers.append("foregroundDeletion")
        elif policy == "Orphan" and "orphan" not in finalizers:
            finalizers.append("orphan")
        grace = grace_period(t, obj, options)
        if t.kind == "Namespace":
            obj.setdefault("status", {})["phase"] = "Terminating"
        pending = bool(finalizers) or grace > 0 or (t.kind == "Namespace" and (obj.get("spec") or {}).get("finalizers"))
        if not pending:
            if dry_run:
                return DeleteResult(obj=obj, deleted=True)
            try:
                version = api.store.delete(gr, ns, name, expect_rv=current.rv)
            except ApiError as e:
                if e.reason == "Conflict":
                    continue
                raise
            return DeleteResult(obj=version.obj, deleted=True)
        if meta.get("deletionTimestamp") and finalizers == list(meta.get("finalizers") or []):
            return DeleteResult(obj=current.obj, deleted=False)  # already being deleted
        meta["finalizers"] = finalizers
        if not meta.get("deletionTimestamp"):
            meta["deletionTimestamp"] = now_rfc3339()
            meta["deletionGracePeriodSeconds"] = grace
            if t.tracks_generation:
                meta["generation"] = meta.get("generation", 1) + 1
        if dry_run:
            return DeleteResult(obj=obj, deleted=False)
        try:
            version = api.store.update(gr, obj, expect_rv=current.rv)
        except ApiError as e:
            if e.reason == "Conflict":
                continue
            raise
        return DeleteResult(obj=version.obj, deleted=False)
    raise errors.conflict(t.plural, t.group, name, "too many concurrent writes; try again")

def grace_period(t: ResourceType, obj: Obj, options: Obj) -> int:
    """Pods on a node terminate gracefully; everything else goes at once."""
    if t.kind != "Pod" or not (obj.get("spec") or {}).get("nodeName"):
        return 0
    if (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return 0
    grace = options.get("gracePeriodSeconds")
    if grace is None:
        grace = (obj.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
    return max(0, int(grace))

def check_preconditions(t: ResourceType, name: str, obj: Obj, preconditions: Obj) -> None:
    meta = obj["metadata"]
    uid, rv = preconditions.get("uid"), preconditions.get("resourceVersion")
    if uid and uid != meta.get("uid"):
        raise errors.conflict(
            t.plural, t.group, name,
            f"Precondition failed: UID in precondition: {uid}, UID in object meta: {meta.get('uid')}",
        )
    if rv and rv != meta.get("resourceVersion"):
        raise errors.conflict(
            t.plural, t.group, name,
            f"Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: "
            f"{meta.get('resourceVersion')}",
        )

def delete_collection(
    api: ResourceVerbs,
    t: ResourceType,
    namespace: str | None,
    *,
    label_selector: str | None = None,
    field_selector: str | None = None,
    options: Obj | None = None,
) -> list[Obj]:
    listed = api.list(t, namespace, label_selector=label_selector, field_selector=field_selector)
    out = []
    for version in listed.versions:
        meta = version.obj["metadata"]
        try:
            out.append(delete(api, t, meta.get("namespace"), meta["name"], options or {}).obj)
        except ApiError as e:
            if e.code != 404:
                raise
    return out
