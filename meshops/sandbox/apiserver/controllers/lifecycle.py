"""Garbage collection, namespace deletion, CRD establishment and cleanup, service accounts.

- Garbage collector: dependents of a deleted owner are deleted (background), or deleted before
  the owner (``foregroundDeletion`` finalizer), or released (``orphan`` finalizer).
- Namespace controller: a terminating namespace's objects are deleted, then the namespace.
- CRD controller: sets NamesAccepted/Established, and on deletion removes the custom objects.
- Service-account controller: each namespace gets a ``default`` ServiceAccount and the
  ``kube-root-ca.crt`` ConfigMap, as kube's controllers create them.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any

from ..errors import ApiError
from ..jsonutil import clone
from ..kinds import CONFIGMAPS, CRDS, NAMESPACES, SERVICEACCOUNTS, GroupResource, types_from_crd
from ..store import StoreEvent
from .base import Controller
from .util import set_condition, write_status

Obj = dict[str, Any]

CRD_FINALIZER = "customresourcecleanup.apiextensions.k8s.io"
_FAKE_CA = "-----BEGIN CERTIFICATE-----\nMIIBsandboxsandboxsandboxsandboxsandbox\n-----END CERTIFICATE-----\n"


def _delete_quietly(controller: Controller, gr: GroupResource, namespace: str, name: str, policy: str = "Background") -> None:
    try:
        controller.api.delete(gr, namespace, name, {"propagationPolicy": policy})
    except ApiError as e:
        if e.code not in (404, 409):
            raise


class GarbageCollector(Controller):
    name = "garbage-collector"
    watch_all = True

    def keys_for(self, event: StoreEvent) -> Iterable[Hashable]:
        meta = event.obj.get("metadata") or {}
        keys: list[Hashable] = []
        uid = meta.get("uid")
        if event.type == "DELETED" and uid and self.store.dependents(uid):
            keys.append(("owner-gone", uid))
        finalizers = meta.get("finalizers") or ()
        if meta.get("deletionTimestamp") and ("foregroundDeletion" in finalizers or "orphan" in finalizers):
            keys.append(("finalize", event.gr, event.namespace, event.name))
        for ref in meta.get("ownerReferences") or ():
            owner_key = self.store.key_for_uid(ref.get("uid", ""))
            if owner_key is None:
                if event.type == "ADDED":
                    keys.append(("check", event.gr, event.namespace, event.name))
                continue
            if event.type == "DELETED" or meta.get("deletionTimestamp"):
                owner = self.store.get(*owner_key)
                if owner is not None and "foregroundDeletion" in (owner["metadata"].get("finalizers") or ()):
                    keys.append(("finalize", *owner_key))
        return keys

    def sync(self, key: tuple[Any, ...]) -> None:
        if key[0] == "owner-gone":
            for dep_key in self.store.dependents(key[1]):
                self._release_or_delete(dep_key)
        elif key[0] == "check":
            self._release_or_delete((key[1], key[2], key[3]))
        else:
            self._finalize((key[1], key[2], key[3]))

    def _release_or_delete(self, dep_key: tuple[GroupResource, str, str]) -> None:
        obj = self.store.get(*dep_key)
        if obj is None:
            return
        refs = obj["metadata"].get("ownerReferences") or []
        alive = [r for r in refs if self.store.key_for_uid(r.get("uid", "")) is not None]
        if alive:
            if len(alive) != len(refs):
                updated = clone(obj)
                updated["metadata"]["ownerReferences"] = alive
                self.api.update(dep_key[0], updated, namespace=dep_key[1] or None)
            return
        if not obj["metadata"].get("deletionTimestamp"):
            _delete_quietly(self, dep_key[0], dep_key[1], dep_key[2])

    def _finalize(self, key: tuple[GroupResource, str, str]) -> None:
        obj = self.store.get(*key)
        if obj is None or not obj["metadata"].get("deletionTimestamp"):
            return
        uid = obj["metadata"]["uid"]
        finalizers = list(obj["metadata"].get("finalizers") or [])
        if "orphan" in finalizers:
            for dep_key in self.store.dependents(uid):
                dep = self.store.get(*dep_key)
                if dep is None:
                    continue
                updated = clone(dep)
                updated["metadata"]["ownerReferences"] = [r for r in dep["metadata"].get("ownerReferences") or [] if r.get("uid") != uid]
                self.api.update(dep_key[0], updated, namespace=dep_key[1] or None)
            finalizers.remove("orphan")
        if "foregroundDeletion" in finalizers:
            remaining = self.store.dependents(uid)
            for dep_key in remaining:
                dep = self.store.get(*dep_key)
                if dep is not None and not dep["metadata"].get("deletionTimestamp"):
                    _delete_quietly(self, dep_key[0], dep_key[1], dep_key[2], "Foreground")
            if remaining:
                return  # the events of the dependents going away bring us back
            finalizers.remove("foregroundDeletion")
        if finalizers != list(obj["metadata"].get("finalizers") or []):
            updated = clone(obj)
            updated["metadata"]["finalizers"] = finalizers
            self.api.update(key[0], updated, namespace=key[1] or None)


class NamespaceController(Controller):
    name = "namespace"
    watch_all = True  # deletions in a terminating namespace bring it closer to its end

    def keys_for(self, event: StoreEvent) -> Iterable[Hashable]:
        if event.gr == NAMESPACES:
            return [event.name]
        if event.type == "DELETED" and event.namespace:
            ns = self.store.get(NAMESPACES, "", event.namespace)
            if ns is not None and ns["metadata"].get("deletionTimestamp"):
                return [event.namespace]
        return ()

    def initial_keys(self) -> Iterable[Hashable]:
        return [n["metadata"]["name"] for n in self.store.list(NAMESPACES)[0]]

    def sync(self, name: str) -> None:
        ns = self.store.get(NAMESPACES, "", name)
        if ns is None:
            return
        if not ns["metadata"].get("deletionTimestamp"):
            self._ensure_defaults(name)
            return
        remaining = 0
        for t in self.cluster.types.all():
            if not t.namespaced or t.version != (self.cluster.types.for_group_resource(t.group_resource) or t).version:
                continue
            for obj in self.store.list(t.group_resource, name)[0]:
                remaining += 1
                if not obj["metadata"].get("deletionTimestamp"):
                    _delete_quietly(self, t.group_resource, name, obj["metadata"]["name"])
        status = clone(ns.get("status") or {})
        status["phase"] = "Terminating"
        message = f"Some resources are remaining: {remaining} objects" if remaining else "All content successfully removed"
        status["conditions"] = set_condition(
            status.get("conditions") or [], "NamespaceContentRemaining", "True" if remaining else "False",
            "SomeResourcesRemain" if remaining else "ContentRemoved", message,
        )
        ns = write_status(self.cluster, NAMESPACES, ns, status)
        if remaining:
            return  # each deletion in the namespace brings us back
        if (ns.get("spec") or {}).get("finalizers"):
            self.api.update(NAMESPACES, {**ns, "spec": {**(ns.get("spec") or {}), "finalizers": []}}, subresource="finalize")

    def _ensure_defaults(self, namespace: str) -> None:
        if self.store.get(SERVICEACCOUNTS, namespace, "default") is None:
            self._create(SERVICEACCOUNTS, namespace, {"metadata": {"name": "default"}})
        if self.store.get(CONFIGMAPS, namespace, "kube-root-ca.crt") is None:
            self._create(CONFIGMAPS, namespace, {
                "metadata": {"name": "kube-root-ca.crt", "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}},
                "data": {"ca.crt": _FAKE_CA},
            })

    def _create(self, gr: GroupResource, namespace: str, body: Obj) -> None:
        try:
            self.api.create(gr, body, namespace=namespace)
        except ApiError as e:
            if e.code not in (403, 404, 409):  # gone or terminating meanwhile, or raced
                raise


class CrdController(Controller):
    name = "crd"
    watch_all = True  # a deleted custom object may be what a terminating CRD waits for

    def keys_for(self, event: StoreEvent) -> Iterable[Hashable]:
        if event.gr == CRDS:
            return [event.name] if event.type != "DELETED" else ()
        if event.type == "DELETED":
            t = self.cluster.types.for_group_resource(event.gr)
            if t is not None and t.custom:
                crd = self.store.get(CRDS, "", f"{t.plural}.{t.group}")
                if crd is not None and crd["metadata"].get("deletionTimestamp"):
                    return [crd["metadata"]["name"]]
        return ()

    def initial_keys(self) -> Iterable[Hashable]:
        return [c["metadata"]["name"] for c in self.store.list(CRDS)[0]]

    def sync(self, name: str) -> None:
        crd = self.store.get(CRDS, "", name)
        if crd is None:
            return
        spec = crd.get("spec") or {}
        if crd["metadata"].get("deletionTimestamp"):
            self._cleanup(crd)
            return
        if CRD_FINALIZER not in (crd["metadata"].get("finalizers") or []):
            updated = clone(crd)
            updated["metadata"]["finalizers"] = [*(crd["metadata"].get("finalizers") or []), CRD_FINALIZER]
            crd = self.api.update(CRDS, updated).obj
        status = clone(crd.get("status") or {})
        conditions = status.get("conditions") or []
        conditions = set_condition(conditions, "NamesAccepted", "True", "NoConflicts", "no conflicts found")
        conditions = set_condition(conditions, "Established", "True", "InitialNamesAccepted", "the initial names have been accepted")
        status["conditions"] = conditions
        names = dict(spec.get("names") or {})
        names.setdefault("singular", str(names.get("kind", "")).lower())
        names.setdefault("listKind", f"{names.get('kind', '')}List")
        status["acceptedNames"] = names
        stored = [v.get("name") for v in spec.get("versions") or [] if v.get("storage")]
        status["storedVersions"] = sorted(set(status.get("storedVersions") or []) | set(stored))
        write_status(self.cluster, CRDS, crd, status)

    def _cleanup(self, crd: Obj) -> None:
        types = types_from_crd(crd)
        remaining = 0
        if types:
            gr = types[0].group_resource
            for obj in self.store.list(gr)[0]:
                remaining += 1
                if not obj["metadata"].get("deletionTimestamp"):
                    _delete_quietly(self, gr, obj["metadata"].get("namespace") or "", obj["metadata"]["name"])
            if remaining:
                return  # custom objects with finalizers hold the CRD until they go
        updated = clone(crd)
        updated["metadata"]["finalizers"] = [f for f in crd["metadata"].get("finalizers") or [] if f != CRD_FINALIZER]
        self.api.update(CRDS, updated)
