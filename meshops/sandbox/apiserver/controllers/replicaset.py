"""ReplicaSet controller: keep ``spec.replicas`` pods, report ready and available counts.

Pods are created through ``ResourceApi`` so admission plugins see them; a refusal becomes a
``FailedCreate`` Event and a ``ReplicaFailure`` condition, and the ReplicaSet is retried with
backoff, as kube's controller does.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any

from ..errors import ApiError
from ..kinds import PODS, REPLICASETS
from ..store import StoreEvent
from .base import Controller
from .util import (
    EventRecorder,
    Key,
    condition,
    is_active_pod,
    owner_keys,
    pod_available,
    pod_from_template,
    pod_ready,
    remove_condition,
    set_condition,
    write_status,
)

Obj = dict[str, Any]

_MAX_BACKOFF = 10.0


def _deletion_rank(pod: Obj) -> tuple[int, int, int, str]:
    """Pods to delete first: unscheduled, then pending, then not ready, then the newest."""
    status = pod.get("status") or {}
    scheduled = 1 if (pod.get("spec") or {}).get("nodeName") else 0
    running = 1 if status.get("phase") == "Running" else 0
    ready = 1 if pod_ready(pod) else 0
    created = (pod.get("metadata") or {}).get("creationTimestamp") or ""
    # Newest first among equals: invert the timestamp's sort order by negating characters.
    return (scheduled, running, ready, "".join(chr(0x10FFFF - ord(c)) for c in created))


class ReplicaSetController(Controller):
    name = "replicaset"
    watches = (REPLICASETS, PODS)

    def __init__(self, cluster: Any) -> None:
        super().__init__(cluster)
        self.events = EventRecorder(cluster, "replicaset-controller")
        self._failures: dict[Key, int] = {}

    def keys_for(self, event: StoreEvent) -> Iterable[Hashable]:
        if event.gr == REPLICASETS:
            return [(event.namespace, event.name)]
        return owner_keys(event, "ReplicaSet")

    def initial_keys(self) -> Iterable[Hashable]:
        objs, _ = self.store.list(REPLICASETS)
        return [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in objs]

    def sync(self, key: Key) -> None:
        namespace, name = key
        rs = self.store.get(REPLICASETS, namespace, name)
        if rs is None:
            self._failures.pop(key, None)
            return
        uid = rs["metadata"]["uid"]
        pods = [p for p in self.store.dependent_objects(uid, PODS) if _controlled_by(p, uid)]
        active = [p for p in pods if is_active_pod(p)]
        wanted = int((rs.get("spec") or {}).get("replicas", 1))
        failure: str | None = None
        if not rs["metadata"].get("deletionTimestamp"):
            if len(active) < wanted:
                failure = self._create_pods(rs, wanted - len(active))
            elif len(active) > wanted:
                doomed = sorted(active, key=_deletion_rank)[: len(active) - wanted]
                for pod in doomed:
                    try:
                        self.api.delete(PODS, namespace, pod["metadata"]["name"])
                    except ApiError as e:
                        if e.code != 404:
                            raise
                    self.events.record(rs, "Normal", "SuccessfulDelete", f"Deleted pod: {pod['metadata']['name']}")
        self._update_status(key, failure)
        if failure is not None:
            failures = self._failures.get(key, 0) + 1
            self._failures[key] = failures
            self.enqueue(key, min(_MAX_BACKOFF, 0.05 * 2**failures))
        else:
            self._failures.pop(key, None)

    def _create_pods(self, rs: Obj, count: int) -> str | None:
        namespace = rs["metadata"]["namespace"]
        template = (rs.get("spec") or {}).get("template") or {}
        for _ in range(count):
            pod = pod_from_template(rs, template)
            try:
                created = self.api.create(PODS, pod, namespace=namespace, owned=True).obj
            except ApiError as e:
                if e.code == 409:
                    continue  # a generated name collided: the next sync tries again
                message = f"Error creating: {e.message}"
                self.events.record(rs, "Warning", "FailedCreate", message)
                return message
            self.events.record(rs, "Normal", "SuccessfulCreate", f"Created pod: {created['metadata']['name']}")
        return None

    def _update_status(self, key: Key, failure: str | None) -> None:
        namespace, name = key
        rs = self.store.get(REPLICASETS, namespace, name)
        if rs is None:
            return
        uid = rs["metadata"]["uid"]
        spec = rs.get("spec") or {}
        min_ready = int(spec.get("minReadySeconds", 0) or 0)
        pods = [p for p in self.store.dependent_objects(uid, PODS) if _controlled_by(p, uid)]
        active = [p for p in pods if is_active_pod(p)]
        labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        ready = [p for p in active if pod_ready(p)]
        available = 0
        wait = 0.0
        for pod in ready:
            ok, remaining = pod_available(pod, min_ready)
            if ok:
                available += 1
            elif remaining:
                wait = remaining if not wait else min(wait, remaining)
        if wait:
            self.enqueue(key, wait + 0.01)
        old = rs.get("status") or {}
        conditions = list(old.get("conditions") or [])
        if failure is not None:
            conditions = set_condition(conditions, "ReplicaFailure", "True", "FailedCreate", failure)
        elif condition(rs, "ReplicaFailure") is not None:
            conditions = remove_condition(conditions, "ReplicaFailure")
        status: Obj = {
            "replicas": len(active),
            "fullyLabeledReplicas": sum(
                1 for p in active if all(((p["metadata"].get("labels") or {}).get(k) == v) for k, v in labels.items())
            ),
            "readyReplicas": len(ready),
            "availableReplicas": available,
            "observedGeneration": rs["metadata"].get("generation", 1),
        }
        if conditions:
            status["conditions"] = conditions
        write_status(self.cluster, REPLICASETS, rs, status)


def _controlled_by(pod: Obj, uid: str) -> bool:
    return any(ref.get("uid") == uid and ref.get("controller") for ref in pod["metadata"].get("ownerReferences") or ())
