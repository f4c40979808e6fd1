"""DaemonSet controller: one pod per eligible node, rolled within maxUnavailable/maxSurge."""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any

from ..errors import ApiError
from ..kinds import DAEMONSETS, NODES, PODS
from ..store import StoreEvent
from .base import Controller
from .deployment import resolve_int_or_percent
from .kubelet import _fits, _node_ready
from .util import (
    EventRecorder,
    Key,
    ensure_revision,
    is_active_pod,
    owner_keys,
    pod_available,
    pod_from_template,
    pod_ready,
    template_hash,
    trim_revisions,
    write_status,
)

Obj = dict[str, Any]
REVISION_LABEL = "controller-revision-hash"


def _target_node(pod: Obj) -> str | None:
    """The node a daemon pod is for: its nodeName, or the node its affinity pins it to."""
    spec = pod.get("spec") or {}
    if spec.get("nodeName"):
        return str(spec["nodeName"])
    terms = (((spec.get("affinity") or {}).get("nodeAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution") or {}).get("nodeSelectorTerms") or []
    for term in terms:
        for field in term.get("matchFields") or []:
            if field.get("key") == "metadata.name" and field.get("operator") == "In" and field.get("values"):
                return str(field["values"][0])
    return None


def _pinned(template: Obj, node_name: str) -> Obj:
    """The template with kube's node affinity for one node, and the daemon tolerations."""
    spec = dict(template.get("spec") or {})
    affinity = dict(spec.get("affinity") or {})
    affinity["nodeAffinity"] = {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node_name]}]}]
        }
    }
    spec["affinity"] = affinity
    tolerations = list(spec.get("tolerations") or [])
    for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
        if not any(t.get("key") == key for t in tolerations):
            tolerations.append({"key": key, "operator": "Exists", "effect": "NoExecute"})
    spec["tolerations"] = tolerations
    return {**template, "spec": spec}


class DaemonSetController(Controller):
    name = "daemonset"
    watches = (DAEMONSETS, PODS, NODES)

    def __init__(self, cluster: Any) -> None:
        super().__init__(cluster)
        self.events = EventRecorder(cluster, "daemonset-controller")

    def keys_for(self, event: StoreEvent) -> Iterable[Hashable]:
        if event.gr == DAEMONSETS:
            return [(event.namespace, event.name)]
        if event.gr == NODES:
            return self.initial_keys()
        return owner_keys(event, "DaemonSet")

    def initial_keys(self) -> Iterable[Hashable]:
        return [(d["metadata"]["namespace"], d["metadata"]["name"]) for d in self.store.list(DAEMONSETS)[0]]

    def sync(self, key: Key) -> None:
        namespace, name = key
        ds = self.store.get(DAEMONSETS, namespace, name)
        if ds is None or ds["metadata"].get("deletionTimestamp"):
            return
        spec = ds.get("spec") or {}
        template = spec.get("template") or {}
        update_hash = template_hash(template)
        revision = ensure_revision(self.cluster, ds, template, update_hash, name=f"{name}-{update_hash}")
        nodes = [n for n in self.store.list(NODES)[0] if _node_ready(n)]
        eligible = {n["metadata"]["name"] for n in nodes if _fits({"spec": template.get("spec") or {}}, n)}
        by_node: dict[str, list[Obj]] = {}
        for pod in self.store.dependent_objects(ds["metadata"]["uid"], PODS):
            node = _target_node(pod)
            if node is not None and is_active_pod(pod):
                by_node.setdefault(node, []).append(pod)
        for node_name, pods in by_node.items():
            if node_name not in eligible:
                for pod in pods:
                    self._delete(ds, pod)
        for node_name in sorted(eligible):
            if not by_node.get(node_name):
                self._create(ds, node_name, template, update_hash)
        strategy = spec.get("updateStrategy") or {}
        if strategy.get("type", "RollingUpdate") == "RollingUpdate":
            self._roll(ds, strategy.get("rollingUpdate") or {}, {n: p for n, p in by_node.items() if n in eligible}, len(eligible), template, update_hash)
        trim_revisions(self.cluster, ds, {revision["metadata"]["name"]}, int(spec.get("revisionHistoryLimit", 10)))
        self._update_status(key, eligible, update_hash)

    def _roll(self, ds: Obj, ru: Obj, by_node: dict[str, list[Obj]], desired: int, template: Obj, update_hash: str) -> None:
        max_unavailable = resolve_int_or_percent(ru.get("maxUnavailable", 1), desired, round_up=False)
        max_surge = resolve_int_or_percent(ru.get("maxSurge", 0), desired, round_up=True)
        if max_unavailable == 0 and max_surge == 0:
            max_unavailable = 1
        outdated = {n: [p for p in pods if (p["metadata"].get("labels") or {}).get(REVISION_LABEL) != update_hash] for n, pods in by_node.items()}
        updated = {n: [p for p in pods if p not in outdated[n]] for n, pods in by_node.items()}
        if max_surge > 0:
            surging = sum(1 for n in by_node if outdated[n] and updated[n])
            for node, old in sorted(outdated.items()):
                if not old:
                    continue
                if updated[node]:
                    if all(pod_ready(p) for p in updated[node]):
                        for pod in old:
                            self._delete(ds, pod)
                elif surging < max_surge:
                    self._create(ds, node, template, update_hash)
                    surging += 1
            return
        unavailable = sum(1 for pods in by_node.values() if not any(pod_ready(p) for p in pods))
        budget = max_unavailable - unavailable
        # Outdated pods that are not ready go first: removing them costs no availability.
        for _node, old in sorted(outdated.items(), key=lambda kv: any(pod_ready(p) for p in kv[1])):
            if not old:
                continue
            if any(pod_ready(p) for p in old):
                if budget <= 0:
                    break
                budget -= 1
            for pod in old:
                self._delete(ds, pod)

    def _create(self, ds: Obj, node_name: str, template: Obj, update_hash: str) -> None:
        pod = pod_from_template(ds, _pinned(template, node_name))
        labels = pod["metadata"]["labels"]
        labels[REVISION_LABEL] = update_hash
        labels["pod-template-generation"] = str(ds["metadata"].get("generation", 1))
        try:
            created = self.api.create(PODS, pod, namespace=ds["metadata"]["namespace"], owned=True).obj
        except ApiError as e:
            if e.code == 409:
                return
            self.events.record(ds, "Warning", "FailedCreate", f"Error creating: {e.message}")
            raise
        self.events.record(ds, "Normal", "SuccessfulCreate", f"Created pod: {created['metadata']['name']}")

    def _delete(self, ds: Obj, pod: Obj) -> None:
        try:
            self.api.delete(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"])
        except ApiError as e:
            if e.code != 404:
                raise
        self.events.record(ds, "Normal", "SuccessfulDelete", f"Deleted pod: {pod['metadata']['name']}")

    def _update_status(self, key: Key, eligible: set[str], update_hash: str) -> None:
        ds = self.store.get(DAEMONSETS, *key)
        if ds is None:
            return
        min_ready = int((ds.get("spec") or {}).get("minReadySeconds", 0) or 0)
        by_node: dict[str, list[Obj]] = {}
        for pod in self.store.dependent_objects(ds["metadata"]["uid"], PODS):
            node = _target_node(pod)
            if node is not None and is_active_pod(pod):
                by_node.setdefault(node, []).append(pod)
        scheduled = [n for n in by_node if n in eligible]
        ready_nodes = [n for n in scheduled if any(pod_ready(p) for p in by_node[n])]
        available = [n for n in scheduled if any(pod_available(p, min_ready)[0] for p in by_node[n])]
        updated = [n for n in scheduled if any((p["metadata"].get("labels") or {}).get(REVISION_LABEL) == update_hash for p in by_node[n])]
        status: Obj = {
            "currentNumberScheduled": len(scheduled),
            "desiredNumberScheduled": len(eligible),
            "numberMisscheduled": len([n for n in by_node if n not in eligible]),
            "numberReady": len(ready_nodes),
            "numberAvailable": len(available),
            "updatedNumberScheduled": len(updated),
            "observedGeneration": ds["metadata"].get("generation", 1),
        }
        if len(eligible) - len(available) > 0:
            status["numberUnavailable"] = len(eligible) - len(available)
        if not status["numberAvailable"]:
            del status["numberAvailable"]
        write_status(self.cluster, DAEMONSETS, ds, status)
