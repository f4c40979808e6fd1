"""The API verbs over the store, with everything the server owns about an object.

Both the HTTP layer and the controllers write through ``ResourceApi``, so a pod a ReplicaSet
creates meets the same defaulting, admission plugins and validation as one ``kubectl`` creates.
Order per write, as in kube-apiserver: decode and default, mutating admission (then default
again), validation, validating admission, then an optimistic-concurrency write to the store.
"""

from __future__ import annotations

import builtins
import random
from collections.abc import Callable
from typing import Any

from . import apply as ssa
from . import deletion, errors, scale
from .defaults import initial_status, new_uid
from .deletion import DeleteResult
from .errors import ApiError
from .jsonutil import clone, now_rfc3339
from .kinds import GroupResource, ResourceType, ResourceTypes
from .patching import json_patch, merge_patch, strategic_merge_patch
from .ports import Admitter, ListResult
from .selectors import make_matcher
from .store import Store, StoredVersion
from .wire import decode_continue, encode_continue, parse_resource_version

__all__ = ["APPLY_PATCH", "PATCH_TYPES", "ListResult", "ResourceApi"]

Obj = dict[str, Any]

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH, APPLY_PATCH)

_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # kube's generateName alphabet: no vowels, no 0/1/3
_CONFLICT_RETRIES = 8


class ResourceApi:
    # Admission sits a layer above the verbs: the cluster hands it in (ports.Admitter).
    def __init__(self, store: Store, types: ResourceTypes, admission: Admitter) -> None:
        self.store = store
        self.types = types
        self.admission = admission

    def resolve(self, rt: ResourceType | GroupResource) -> ResourceType:
        if isinstance(rt, ResourceType):
            return rt
        found = self.types.for_group_resource(rt)
        if found is None:
            raise errors.path_not_found()
        return found

    # ---- reads -------------------------------------------------------------------------------

    def get(self, rt: ResourceType | GroupResource, namespace: str | None, name: str) -> StoredVersion:
        t = self.resolve(rt)
        version = self.store.get_version(t.group_resource, namespace or "", name)
        if version is None:
            raise errors.not_found(t.plural, t.group, name)
        return version

    def list(
        self,
        rt: ResourceType | GroupResource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> ListResult:
        t = self.resolve(rt)
        matcher = make_matcher(label_selector, field_selector)
        after, snapshot_rv = decode_continue(continue_token) if continue_token else (None, None)
        with self.store.lock:
            rv = snapshot_rv or self.store.resource_version
            items = self.store.iter_versions(t.group_resource, namespace, after=after, matcher=matcher)
            versions: builtins.list[StoredVersion] = []
            for version in items:
                if limit and len(versions) >= limit:
                    # One more exists: hand out a token that resumes after the last one returned.
                    last = versions[-1].obj["metadata"]
                    token = encode_continue(last.get("namespace") or "", last["name"], rv)
                    # Counting what is left is cheap only for an unfiltered first page; kube
                    # omits remainingItemCount for selectors too.
                    remaining = None
                    if matcher is None and after is None:
                        remaining = self.store.count(t.group_resource, namespace) - len(versions)
                    return ListResult(versions=versions, resource_version=rv, continue_token=token, remaining=remaining)
                versions.append(version)
        return ListResult(versions=versions, resource_version=rv, continue_token=None, remaining=None)

    # ---- create ------------------------------------------------------------------------------

    def create(
        self,
        rt: ResourceType | GroupResource,
        body: Obj,
        *,
        namespace: str | None = None,
        dry_run: bool = False,
        field_manager: str | None = None,
        field_validation: str | None = None,
        warnings: builtins.list[str] | None = None,
        owned: bool = False,
    ) -> StoredVersion:
        """POST. ``field_validation`` (Ignore/Warn/Strict) checks the body against the schema;
        None (in-process callers) skips that. Warnings for unknown fields go to ``warnings``.
        ``owned``: the caller hands ``body`` over (it is not copied; do not touch it afterwards)."""
        t = self.resolve(rt)
        obj = self._decode(t, body, namespace, owned=owned)
        meta = obj["metadata"]
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + "".join(random.choices(_NAME_CHARS, k=5))
        if meta.get("resourceVersion"):
            # What etcd3's store says; it reaches clients as an untyped 500, as here.
            raise ApiError(500, "", "resourceVersion should not be set on objects to be created")
        if t.namespaced:
            self._check_namespace(t, meta.get("namespace") or "", meta.get("name") or "")
        for key in ("deletionTimestamp", "deletionGracePeriodSeconds", "resourceVersion", "selfLink"):
            meta.pop(key, None)
        # Server-owned: overwrite whatever the client sent (kubectl sends creationTimestamp: null).
        meta["uid"] = new_uid()
        meta["creationTimestamp"] = now_rfc3339()
        if t.tracks_generation:
            meta["generation"] = 1
        else:
            meta.pop("generation", None)
        if "status" in t.subresources:
            status = initial_status(t.kind, obj)
            if status is None:
                obj.pop("status", None)
            else:
                obj["status"] = status
        obj = self.admission.admit(t, "CREATE", obj, None, dry_run=dry_run, field_validation=field_validation, warnings=warnings)
        if dry_run:
            if self.store.get_version(t.group_resource, meta.get("namespace") or "", meta["name"]):
                raise errors.already_exists(t.plural, t.group, meta["name"])
            return StoredVersion(obj, self.store.resource_version)
        return self.store.create(t.group_resource, obj)

    # ---- update and patch --------------------------------------------------------------------

    def update(
        self,
        rt: ResourceType | GroupResource,
        body: Obj,
        *,
        namespace: str | None = None,
        name: str | None = None,
        subresource: str | None = None,
        dry_run: bool = False,
        field_validation: str | None = None,
        warnings: builtins.list[str] | None = None,
        owned: bool = False,
    ) -> StoredVersion:
        """PUT: replace the object (or its status); 409 if ``body`` carries a stale resourceVersion."""
        t = self.resolve(rt)
        if subresource in ("status", "binding", "finalize") and not owned:
            # Only part of the body is used: copy that part, not the whole object.
            if isinstance(body, dict):
                body = {k: (clone(v) if k in ("status", "spec") else dict(v) if k == "metadata" and isinstance(v, dict) else v) for k, v in body.items()}
            owned = True
        obj = self._decode(t, body, namespace, owned=owned)
        meta = obj["metadata"]
        name = name or meta.get("name")
        if not name:
            raise errors.bad_request("name is required")
        if meta.get("name") and meta["name"] != name:
            raise errors.bad_request(f"the name of the object ({meta['name']}) does not match the name on the URL ({name})")
        meta["name"] = name
        wanted_rv = parse_resource_version(meta.get("resourceVersion"))
        return self.read_modify_write(
            t, namespace, name, lambda _: obj, wanted_rv, subresource=subresource, dry_run=dry_run,
            field_validation=field_validation, warnings=warnings, fresh=True,
        )

    def patch(
        self,
        rt: ResourceType | GroupResource,
        namespace: str | None,
        name: str,
        patch: Any,
        patch_type: str,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
        field_manager: str | None = None,
        force: bool = False,
        field_validation: str | None = None,
        warnings: builtins.list[str] | None = None,
    ) -> tuple[StoredVersion, bool]:
        """Apply a patch; returns (new version, created?). Only apply patches can create."""
        t = self.resolve(rt)
        if patch_type == STRATEGIC_PATCH and t.custom:
            raise ApiError(
                415, "UnsupportedMediaType",
                f"the body of the request was in an unknown format - accepted media types include: "
                f"{JSON_PATCH}, {MERGE_PATCH}, {APPLY_PATCH}",
            )
        if patch_type == APPLY_PATCH:
            return ssa.apply_patch(self, t, namespace, name, patch, subresource, dry_run, field_manager, field_validation, warnings)
        wanted_rv = None
        if isinstance(patch, dict):
            wanted_rv = parse_resource_version((patch.get("metadata") or {}).get("resourceVersion"))

        def patched(current: Obj) -> Obj:
            if patch_type == JSON_PATCH:
                result = json_patch(current, patch)
            elif patch_type == MERGE_PATCH:
                result = merge_patch(current, patch)
            else:
                result = strategic_merge_patch(current, patch, t.kind)
            if not isinstance(result, dict):
                raise errors.bad_request("the patch produced an object that is not a JSON object")
            return result

        version = self.read_modify_write(
            t, namespace, name, patched, wanted_rv, subresource=subresource, dry_run=dry_run,
            field_validation=field_validation, warnings=warnings,
        )
        return version, False


    def read_modify_write(
        self,
        t: ResourceType,
        namespace: str | None,
        name: str,
        change: Callable[[Obj], Obj],
        wanted_rv: int | None,
        *,
        subresource: str | None,
        dry_run: bool,
        field_validation: str | None = None,
        warnings: builtins.list[str] | None = None,
        fresh: bool = False,
    ) -> StoredVersion:
        """Read, change, admit, store; retried on a concurrent write unless a precondition was given.

        ``change`` gets the stored (frozen) object and must not mutate it; what it returns is
        copied before use unless ``fresh`` says it shares nothing with the stored object.
        """
        gr = t.group_resource
        ns = namespace or "" if t.namespaced else ""
        for _ in range(_CONFLICT_RETRIES):
            current = self.store.get_version(gr, ns, name)
            if current is None:
                raise errors.not_found(t.plural, t.group, name)
            if wanted_rv is not None and wanted_rv != current.rv:
                raise errors.conflict(
                    t.plural, t.group, name,
                    "the object has been modified; please apply your changes to the latest version and try again",
                )
            proposed = change(current.obj)
            if not fresh:
                proposed = clone(proposed)
            new = self._prepare_update(t, proposed, current.obj, ns, subresource, dry_run, field_validation, warnings)
            if _same(new, current.obj):
                return current  # no-op writes do not bump the resourceVersion (kube skips them too)
            if dry_run:
                return StoredVersion(new, current.rv)
            try:
                version = self.store.update(gr, new, expect_rv=current.rv)
            except ApiError as e:
                if e.reason == "Conflict" and wanted_rv is None:
                    continue
                raise
            if _ready_to_remove(t, version.obj):
                # The last finalizer is gone: the deletion that was waiting completes now.
                try:
                    return self.store.delete(gr, ns, name)
                except ApiError:
                    return version
            return version
        raise errors.conflict(t.plural, t.group, name, "too many concurrent writes; try again")

    def _prepare_update(
        self,
        t: ResourceType,
        proposed: Obj,
        old: Obj,
        namespace: str,
        subresource: str | None,
        dry_run: bool,
        field_validation: str | None = None,
        warnings: builtins.list[str] | None = None,
    ) -> Obj:
        # Subresource writes share the untouched parts with the stored version (it is immutable).
        if subresource == "status":
            new = {**old, "metadata": dict(old["metadata"])}
            if "status" in proposed:
                new["status"] = proposed["status"]
            else:
                new.pop("status", None)
        elif subresource == "binding":  # the scheduler's pods/binding: only spec.nodeName changes
            new = {**old, "metadata": dict(old["metadata"]), "spec": {**(old.get("spec") or {})}}
            new["spec"]["nodeName"] = (proposed.get("spec") or {}).get("nodeName")
        elif subresource == "finalize":  # namespaces: only spec.finalizers may change
            new = {**old, "metadata": dict(old["metadata"]), "spec": {**(old.get("spec") or {})}}
            new["spec"]["finalizers"] = (proposed.get("spec") or {}).get("finalizers") or []
        else:
            new = proposed
            if not isinstance(new.get("metadata"), dict):
                new["metadata"] = {}
            if "status" in t.subresources:
                if "status" in old:
                    # Shared with the stored version unless a plugin could edit it in place.
                    new["status"] = clone(old["status"]) if self.admission.mutates else old["status"]
                else:
                    new.pop("status", None)
        new["apiVersion"] = old.get("apiVersion")
        new["kind"] = old.get("kind")
        meta, old_meta = new["metadata"], old["metadata"]
        meta["name"] = old_meta["name"]
        if t.namespaced:
            sent = meta.get("namespace")
            if sent and sent != namespace:
                raise errors.bad_request("the namespace of the provided object does not match the namespace sent on the request")
            meta["namespace"] = namespace
        for key in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds"):
            if key in old_meta:
                meta[key] = old_meta[key]
            else:
                meta.pop(key, None)
        meta["resourceVersion"] = old_meta.get("resourceVersion")
        if "managedFields" not in meta and "managedFields" in old_meta:
            meta["managedFields"] = old_meta["managedFields"]
        if t.tracks_generation:
            generation = old_meta.get("generation", 1)
            if _spec_of(t, new) != _spec_of(t, old):
                generation += 1
            meta["generation"] = generation
        if subresource in ("status", "binding"):
            return new  # subresource writes skip admission plugins (webhooks match the main resource)
        return self.admission.admit(t, "UPDATE", new, old, dry_run=dry_run, field_validation=field_validation, warnings=warnings)

    # ---- deletion and /scale live in their own modules; admission is handed in ---------------

    def delete(
        self,
        rt: ResourceType | GroupResource,
        namespace: str | None,
        name: str,
        options: Obj | None = None,
    ) -> DeleteResult:
        """DELETE: at once, or by setting deletionTimestamp when finalizers or a grace period hold it."""
        return deletion.delete(self, self.resolve(rt), namespace, name, options or {})

    def delete_collection(
        self,
        rt: ResourceType | GroupResource,
        namespace: str | None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        options: Obj | None = None,
    ) -> builtins.list[Obj]:
        return deletion.delete_collection(
            self, self.resolve(rt), namespace, label_selector=label_selector, field_selector=field_selector, options=options
        )

    def get_scale(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        return scale.get_scale(self, rt, namespace, name)

    def write_scale(
        self, rt: ResourceType, namespace: str | None, name: str, change: Callable[[Obj], Obj], dry_run: bool = False
    ) -> Obj:
        """Apply ``change`` to the Scale view and write the replicas back to the object."""
        return scale.write_scale(self, rt, namespace, name, change, dry_run)

    # ---- helpers -----------------------------------------------------------------------------

    def _decode(self, t: ResourceType, body: Any, namespace: str | None, *, owned: bool = False) -> Obj:
        if not isinstance(body, dict):
            raise errors.bad_request(f"the body of the request must be a JSON object, got {type(body).__name__}")
        obj = body if owned else clone(body)
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        if api_version and api_version != t.api_version:
            raise errors.bad_request(
                f"the API version in the data ({api_version}) does not match the expected API version ({t.api_version})"
            )
        if kind and kind != t.kind:
            raise errors.bad_request(f"the kind in the data ({kind}) does not match the expected kind ({t.kind})")
        obj["apiVersion"], obj["kind"] = t.api_version, t.kind
        meta = obj.get("metadata")
        if meta is None:
            meta = obj["metadata"] = {}
        elif not isinstance(meta, dict):
            raise errors.bad_request("metadata must be an object")
        if t.namespaced:
            sent = meta.get("namespace")
            if namespace and sent and sent != namespace:
                raise errors.bad_request("the namespace of the provided object does not match the namespace sent on the request")
            meta["namespace"] = namespace or sent or "default"
        else:
            meta.pop("namespace", None)
        return obj

    def _check_namespace(self, t: ResourceType, namespace: str, name: str) -> None:
        ns = self.store.get(("", "namespaces"), "", namespace)
        if ns is None:
            raise errors.not_found("namespaces", "", namespace)
        if (ns.get("metadata") or {}).get("deletionTimestamp") or (ns.get("status") or {}).get("phase") == "Terminating":
            raise errors.forbidden(
                t.plural, t.group, name,
                f"unable to create new content in namespace {namespace} because it is being terminated",
            )


def _ready_to_remove(t: ResourceType, obj: Obj) -> bool:
    """A deleted object leaves the store once nothing holds it: finalizers, a pod's grace period."""
    meta = obj["metadata"]
    if not meta.get("deletionTimestamp") or meta.get("finalizers"):
        return False
    if t.kind == "Namespace" and (obj.get("spec") or {}).get("finalizers"):
        return False
    return not (t.kind == "Pod" and meta.get("deletionGracePeriodSeconds"))


def _spec_of(t: ResourceType, obj: Obj) -> Any:
    if t.custom:
        return {k: v for k, v in obj.items() if k not in ("metadata", "status")}
    return obj.get("spec")


def _same(a: Obj, b: Obj) -> bool:
    if a.keys() != b.keys():
        return False
    for key in a:
        if key == "metadata":
            ma, mb = a["metadata"], b["metadata"]
            if {k: v for k, v in ma.items() if k != "resourceVersion"} != {
                k: v for k, v in mb.items() if k != "resourceVersion"
            }:
                return False
        elif a[key] != b[key]:
            return False
    return True
