"""Helpers shared by the controllers: owner references, pod predicates, conditions, events."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from ..errors import ApiError
from ..jsonutil import age_seconds, clone, now_rfc3339
from ..kinds import EVENTS, GroupResource
from ..store import StoreEvent

if TYPE_CHECKING:
    from .host import ControllerHost

log = logging.getLogger("meshops.sandbox.controllers")

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace, name)

_SAFE = "bcdfghjklmnpqrstvwxz2456789"


def key_of(obj: Obj) -> Key:
    meta = obj["metadata"]
    return (meta.get("namespace") or "", meta["name"])


def owner_ref(owner: Obj, *, controller: bool = True) -> Obj:
    meta = owner["metadata"]
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": controller,
        "blockOwnerDeletion": True,
    }


def controller_ref(obj: Obj) -> Obj | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or ():
        if ref.get("controller"):
            return dict(ref)
    return None


def owner_keys(event: StoreEvent, kind: str) -> list[Key]:
    """(namespace, name) of the controlling owner of ``kind``, before and after the event."""
    keys = []
    for obj in (event.obj, event.old):
        ref = controller_ref(obj) if obj else None
        if ref and ref.get("kind") == kind:
            key = (event.namespace, ref["name"])
            if key not in keys:
                keys.append(key)
    return keys


def template_hash(template: Any, collision_count: int = 0) -> str:
    """A stable, kube-looking hash of a pod template (``pod-template-hash`` style)."""
    raw = json.dumps(template, sort_keys=True, separators=(",", ":")) + str(collision_count)
    value = int.from_bytes(hashlib.sha1(raw.encode(), usedforsecurity=False).digest()[:5], "big")
    out = []
    for _ in range(10):
        value, digit = divmod(value, len(_SAFE))
        out.append(_SAFE[digit])
    return "".join(out)


def is_terminating(obj: Obj) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def is_active_pod(pod: Obj) -> bool:
    """Counts towards a controller's replicas: not finished and not being deleted."""
    phase = (pod.get("status") or {}).get("phase")
    return phase not in ("Succeeded", "Failed") and not is_terminating(pod)


def condition(obj: Obj, kind: str) -> Obj | None:
    for c in (obj.get("status") or {}).get("conditions") or ():
        if c.get("type") == kind:
            return dict(c)
    return None


def pod_ready(pod: Obj) -> bool:
    c = condition(pod, "Ready")
    return bool(c and c.get("status") == "True")


def pod_available(pod: Obj, min_ready_seconds: int) -> tuple[bool, float]:
    """(available?, seconds until it will be) for a Ready pod under minReadySeconds."""
    c = condition(pod, "Ready")
    if not c or c.get("status") != "True":
        return False, 0.0
    if min_ready_seconds <= 0:
        return True, 0.0
    waited = age_seconds(c.get("lastTransitionTime"))
    return waited >= min_ready_seconds, max(0.0, min_ready_seconds - waited)


def set_condition(
    conditions: list[Obj], kind: str, status: str, reason: str, message: str, *, update_time: bool = False
) -> list[Obj]:
    """Set one condition, keeping lastTransitionTime unless the status flips."""
    now = now_rfc3339()
    out = [dict(c) for c in conditions]
    for c in out:
        if c.get("type") == kind:
            if c.get("status") != status:
                c["lastTransitionTime"] = now
                if "lastUpdateTime" in c or update_time:
                    c["lastUpdateTime"] = now
            elif update_time and (c.get("reason") != reason or c.get("message") != message):
                c["lastUpdateTime"] = now
            c["status"], c["reason"], c["message"] = status, reason, message
            return out
    new: Obj = {"type": kind, "status": status}
    if update_time:
        new["lastUpdateTime"] = now
    new.update({"lastTransitionTime": now, "reason": reason, "message": message})
    out.append(new)
    return out


def remove_condition(conditions: list[Obj], kind: str) -> list[Obj]:
    return [dict(c) for c in conditions if c.get("type") != kind]


def write_status(cluster: ControllerHost, gr: GroupResource, obj: Obj, status: Obj) -> Obj:
    """Store a new status if it differs; returns the object as stored."""
    if obj.get("status") == status:
        return obj
    new = dict(obj)
    new["status"] = status
    meta = obj["metadata"]
    return cluster.api.update(gr, new, namespace=meta.get("namespace"), subresource="status").obj


class EventRecorder:
    """Writes core/v1 Events as kube components do; failures never break a controller."""

    def __init__(self, cluster: ControllerHost, component: str) -> None:
        self.cluster = cluster
        self.component = component

    def record(self, involved: Obj, event_type: str, reason: str, message: str) -> None:
        meta = involved["metadata"]
        namespace = meta.get("namespace") or "default"
        now = now_rfc3339()
        body: Obj = {
            "metadata": {"name": f"{meta['name']}.{time.time_ns():x}", "namespace": namespace},
            "involvedObject": {
                "kind": involved.get("kind"),
                "namespace": meta.get("namespace"),
                "name": meta["name"],
                "uid": meta.get("uid"),
                "apiVersion": involved.get("apiVersion"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "reason": reason,
            "message": message,
            "source": {"component": self.component},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "type": event_type,
            "eventTime": None,
            "reportingComponent": self.component,
            "reportingInstance": "",
        }
        if not meta.get("namespace"):
            body["involvedObject"].pop("namespace")
        try:
            self.cluster.api.create(EVENTS, body, namespace=namespace, owned=True)
        except ApiError as e:
            log.debug("event not recorded (%s): %s %s", e.reason, reason, message)


def pod_from_template(owner: Obj, template: Obj, *, name: str | None = None, generate_name: str | None = None) -> Obj:
    """A pod as a workload controller creates it: the template, an owner reference, a name."""
    tmeta = template.get("metadata") or {}
    meta: Obj = {
        "labels": dict(tmeta.get("labels") or {}),
        "ownerReferences": [owner_ref(owner)],
    }
    if tmeta.get("annotations"):
        meta["annotations"] = dict(tmeta["annotations"])
    if tmeta.get("finalizers"):
        meta["finalizers"] = list(tmeta["finalizers"])
    if name:
        meta["name"] = name
    else:
        meta["generateName"] = generate_name or f"{owner['metadata']['name']}-"
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": clone(template.get("spec") or {})}


def ensure_revision(cluster: ControllerHost, owner: Obj, template: Obj, hash_value: str, *, name: str) -> Obj:
    """The ControllerRevision holding ``template`` for a StatefulSet or DaemonSet (created if new)."""
    from ..kinds import CONTROLLERREVISIONS

    namespace = owner["metadata"]["namespace"]
    existing = cluster.store.get(CONTROLLERREVISIONS, namespace, name)
    if existing is not None:
        return existing
    revisions = cluster.store.dependent_objects(owner["metadata"]["uid"], CONTROLLERREVISIONS)
    number = max((int(r.get("revision", 0)) for r in revisions), default=0) + 1
    labels = dict(((template.get("metadata") or {}).get("labels")) or {})
    labels["controller.kubernetes.io/hash"] = hash_value
    body = {
        "metadata": {"name": name, "labels": labels, "ownerReferences": [owner_ref(owner)]},
        "data": {"spec": {"template": {**clone(template), "$patch": "replace"}}},
        "revision": number,
    }
    try:
        return cluster.api.create(CONTROLLERREVISIONS, body, namespace=namespace, owned=True).obj
    except ApiError as e:
        if e.reason != "AlreadyExists":
            raise
        return cluster.api.get(CONTROLLERREVISIONS, namespace, name).obj


def revision_template(revision: Obj) -> Obj:
    template: Obj = clone(((revision.get("data") or {}).get("spec") or {}).get("template") or {})
    template.pop("$patch", None)
    return template


def trim_revisions(cluster: ControllerHost, owner: Obj, keep: set[str], limit: int) -> None:
    """Delete the oldest unused ControllerRevisions beyond ``revisionHistoryLimit``."""
    from ..kinds import CONTROLLERREVISIONS

    revisions = cluster.store.dependent_objects(owner["metadata"]["uid"], CONTROLLERREVISIONS)
    unused = sorted((r for r in revisions if r["metadata"]["name"] not in keep), key=lambda r: int(r.get("revision", 0)))
    for revision in unused[: max(0, len(unused) - limit)]:
        try:
            cluster.api.delete(CONTROLLERREVISIONS, revision["metadata"]["namespace"], revision["metadata"]["name"])
        except ApiError as e:
            if e.code != 404:
                raise
