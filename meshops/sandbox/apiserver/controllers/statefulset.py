"""StatefulSet controller: ordinal pods, OrderedReady or Parallel, RollingUpdate and OnDelete.

Rolling updates replace pods from the highest ordinal down to the partition, one at a time and
only while every pod is Running and Ready; status carries current/update revisions the way
``kubectl rollout status`` reads them.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any

from ..errors import ApiError
from ..jsonutil import clone
from ..kinds import CONTROLLERREVISIONS, PODS, STATEFULSETS
from ..store import StoreEvent
from .base import Controller
from .util import (
    EventRecorder,
    Key,
    ensure_revision,
    is_terminating,
    owner_keys,
    pod_available,
    pod_from_template,
    pod_ready,
    revision_template,
    template_hash,
    trim_revisions,
    write_status,
)

Obj = dict[str, Any]
REVISION_LABEL = "controller-revision-hash"


def _ordinal(pod: Obj, set_name: str) -> int | None:
    name = pod["metadata"]["name"]
    prefix, _, suffix = name.rpartition("-")
    return int(suffix) if prefix == set_name and suffix.isdigit() else None


def _healthy(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") == "Running" and pod_ready(pod) and not is_terminating(pod)


class StatefulSetController(Controller):
    name = "statefulset"
    watches = (STATEFULSETS, PODS)

    def __init__(self, cluster: Any) -> None:
        super().__init__(cluster)
        self.events = EventRecorder(cluster, "statefulset-controller")

    def keys_for(self, event: StoreEvent) -> Iterable[Hashable]:
        if event.gr == STATEFULSETS:
            return [(event.namespace, event.name)]
        return owner_keys(event, "StatefulSet")

    def initial_keys(self) -> Iterable[Hashable]:
        return [(s["metadata"]["namespace"], s["metadata"]["name"]) for s in self.store.list(STATEFULSETS)[0]]

    def sync(self, key: Key) -> None:
        namespace, name = key
        sts = self.store.get(STATEFULSETS, namespace, name)
        if sts is None or sts["metadata"].get("deletionTimestamp"):
            return
        spec = sts.get("spec") or {}
        template = spec.get("template") or {}
        update_hash = template_hash(template)
        update_rev = ensure_revision(self.cluster, sts, template, update_hash, name=f"{name}-{update_hash}")
        status = sts.get("status") or {}
        current_name = status.get("currentRevision") or update_rev["metadata"]["name"]
        current_rev = self.store.get(CONTROLLERREVISIONS, namespace, current_name) or update_rev
        replicas = int(spec.get("replicas", 1))
        strategy = spec.get("updateStrategy") or {}
        rolling = strategy.get("type", "RollingUpdate") == "RollingUpdate"
        partition = int((strategy.get("rollingUpdate") or {}).get("partition", 0) or 0) if rolling else 0
        parallel = spec.get("podManagementPolicy") == "Parallel"
        uid = sts["metadata"]["uid"]
        pods: dict[int, Obj] = {}
        for pod in self.store.dependent_objects(uid, PODS):
            ordinal = _ordinal(pod, name)
            if ordinal is not None:
                pods[ordinal] = pod
        self._reconcile(sts, pods, replicas, partition, rolling, parallel, current_rev, update_rev)
        trim_revisions(self.cluster, sts, {current_rev["metadata"]["name"], update_rev["metadata"]["name"]},
                       int(spec.get("revisionHistoryLimit", 10)))
        self._update_status(key, current_rev["metadata"]["name"], update_rev["metadata"]["name"], rolling)

    def _reconcile(
        self, sts: Obj, pods: dict[int, Obj], replicas: int, partition: int, rolling: bool, parallel: bool,
        current_rev: Obj, update_rev: Obj,
    ) -> None:
        # Create missing pods in ordinal order; OrderedReady waits for each to be healthy.
        for ordinal in range(replicas):
            pod = pods.get(ordinal)
            if pod is None:
                revision = current_rev if rolling and ordinal < partition else update_rev
                self._create(sts, ordinal, revision)
                if not parallel:
                    return
            elif not parallel and not _healthy(pod):
                return
        # Remove pods beyond replicas, highest first; OrderedReady one at a time.
        condemned = sorted((o for o in pods if o >= replicas), reverse=True)
        for ordinal in condemned:
            pod = pods[ordinal]
            if is_terminating(pod):
                if not parallel:
                    return
                continue
            self._delete(sts, pod)
            if not parallel:
                return
        if condemned or not rolling:
            return
        # Rolling update: every pod healthy, then replace the highest outdated one at/above partition.
        update_name = update_rev["metadata"]["name"]
        if any(not _healthy(pods[o]) for o in range(replicas) if o in pods):
            return
        for ordinal in range(replicas - 1, partition - 1, -1):
            pod = pods.get(ordinal)
            if pod is not None and (pod["metadata"].get("labels") or {}).get(REVISION_LABEL) != update_name:
                self._delete(sts, pod)
                return

    def _create(self, sts: Obj, ordinal: int, revision: Obj) -> None:
        name = sts["metadata"]["name"]
        pod_name = f"{name}-{ordinal}"
        template = revision_template(revision)
        pod = pod_from_template(sts, template, name=pod_name)
        labels = pod["metadata"]["labels"]
        labels[REVISION_LABEL] = revision["metadata"]["name"]
        labels["statefulset.kubernetes.io/pod-name"] = pod_name
        labels["apps.kubernetes.io/pod-index"] = str(ordinal)
        pod["spec"]["hostname"] = pod_name
        if (sts.get("spec") or {}).get("serviceName"):
            pod["spec"]["subdomain"] = sts["spec"]["serviceName"]
        try:
            self.api.create(PODS, pod, namespace=sts["metadata"]["namespace"], owned=True)
        except ApiError as e:
            if e.code == 409:
                return
            self.events.record(sts, "Warning", "FailedCreate", f"create Pod {pod_name} in StatefulSet {name} failed error: {e.message}")
            raise
        self.events.record(sts, "Normal", "SuccessfulCreate", f"create Pod {pod_name} in StatefulSet {name} successful")

    def _delete(self, sts: Obj, pod: Obj) -> None:
        pod_name = pod["metadata"]["name"]
        try:
            self.api.delete(PODS, pod["metadata"]["namespace"], pod_name)
        except ApiError as e:
            if e.code != 404:
                raise
        self.events.record(sts, "Normal", "SuccessfulDelete", f"delete Pod {pod_name} in StatefulSet {sts['metadata']['name']} successful")

    def _update_status(self, key: Key, current_name: str, update_name: str, rolling: bool) -> None:
        sts = self.store.get(STATEFULSETS, *key)
        if sts is None:
            return
        spec = sts.get("spec") or {}
        min_ready = int(spec.get("minReadySeconds", 0) or 0)
        pods = [p for p in self.store.dependent_objects(sts["metadata"]["uid"], PODS) if _ordinal(p, key[1]) is not None]
        revision_of = [(p["metadata"].get("labels") or {}).get(REVISION_LABEL) for p in pods]
        ready = [p for p in pods if pod_ready(p) and not is_terminating(p)]
        status: Obj = {
            "observedGeneration": sts["metadata"].get("generation", 1),
            "replicas": len(pods),
            "readyReplicas": len(ready),
            "availableReplicas": sum(1 for p in ready if pod_available(p, min_ready)[0]),
            "currentReplicas": sum(1 for r in revision_of if r == current_name),
            "updatedReplicas": sum(1 for r in revision_of if r == update_name),
            "currentRevision": current_name,
            "updateRevision": update_name,
            "collisionCount": 0,
        }
        replicas = int(spec.get("replicas", 1))
        if rolling and status["updatedReplicas"] == replicas == status["replicas"] and status["readyReplicas"] == replicas:
            status["currentRevision"] = update_name
            status["currentReplicas"] = status["updatedReplicas"]
        old = clone(sts.get("status") or {})
        if old.get("conditions"):
            status["conditions"] = old["conditions"]
        write_status(self.cluster, STATEFULSETS, sts, status)
