"""Deployment controller: ReplicaSets per pod template, rolled as the strategy says.

Follows kube's ``pkg/controller/deployment``: a new ReplicaSet per template (named with its
pod-template-hash), rolling updates bounded by maxSurge/maxUnavailable, Recreate, revision
annotations and history cleanup, and the status ``kubectl rollout status`` reads
(observedGeneration, updatedReplicas, availableReplicas, Available/Progressing conditions).
"""

from __future__ import annotations

import math
import time
from collections.abc import Hashable, Iterable
from typing import Any

from ..errors import ApiError
from ..jsonutil import age_seconds, clone, now_rfc3339
from ..kinds import DEPLOYMENTS, PODS, REPLICASETS
from ..store import StoreEvent
from .base import Controller
from .util import (
    EventRecorder,
    Key,
    condition,
    controller_ref,
    is_active_pod,
    owner_keys,
    owner_ref,
    set_condition,
    template_hash,
    write_status,
)

Obj = dict[str, Any]

REVISION = "deployment.kubernetes.io/revision"
DESIRED = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
HASH_LABEL = "pod-template-hash"
# Annotations kube does not copy from a Deployment onto its ReplicaSets.
_NOT_COPIED = {REVISION, DESIRED, MAX_REPLICAS, "kubectl.kubernetes.io/last-applied-configuration", "deployment.kubernetes.io/revision-history"}


def resolve_int_or_percent(value: Any, total: int, *, round_up: bool) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    text = str(value)
    if text.endswith("%"):
        fraction = float(text[:-1]) * total / 100
        return math.ceil(fraction) if round_up else math.floor(fraction)
    return int(text)


def surge_and_unavailable(deployment: Obj) -> tuple[int, int]:
    spec = deployment.get("spec") or {}
    replicas = int(spec.get("replicas", 1))
    strategy = spec.get("strategy") or {}
    if strategy.get("type") == "Recreate":
        return 0, replicas
    ru = strategy.get("rollingUpdate") or {}
    surge = resolve_int_or_percent(ru.get("maxSurge", "25%"), replicas, round_up=True)
    unavailable = resolve_int_or_percent(ru.get("maxUnavailable", "25%"), replicas, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1  # kube's rule: a rollout must be able to make progress
    return surge, unavailable


def _without_hash(template: Obj) -> Obj:
    t: Obj = clone(template)
    labels = (t.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(HASH_LABEL, None)
    return t


def _revision(rs: Obj) -> int:
    try:
        return int((rs["metadata"].get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


def _replicas(rs: Obj) -> int:
    return int((rs.get("spec") or {}).get("replicas", 0))


def _status(rs: Obj, field: str) -> int:
    return int((rs.get("status") or {}).get(field, 0) or 0)


class DeploymentController(Controller):
    name = "deployment"
    watches = (DEPLOYMENTS, REPLICASETS, PODS)

    def __init__(self, cluster: Any) -> None:
        super().__init__(cluster)
        self.events = EventRecorder(cluster, "deployment-controller")
        self._deadline_checks: dict[Key, float] = {}

    def keys_for(self, event: StoreEvent) -> Iterable[Hashable]:
        if event.gr == DEPLOYMENTS:
            return [(event.namespace, event.name)]
        if event.gr == PODS:
            # Recreate waits for old pods to be gone, which no ReplicaSet status change reports.
            if event.type != "DELETED":
                return ()
            ref = controller_ref(event.obj)
            rs = self.store.get(REPLICASETS, event.namespace, ref["name"]) if ref and ref.get("kind") == "ReplicaSet" else None
            owner = controller_ref(rs) if rs else None
            return [(event.namespace, owner["name"])] if owner and owner.get("kind") == "Deployment" else ()
        return owner_keys(event, "Deployment")

    def initial_keys(self) -> Iterable[Hashable]:
        objs, _ = self.store.list(DEPLOYMENTS)
        return [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in objs]

    def sync(self, key: Key) -> None:
        namespace, name = key
        d = self.store.get(DEPLOYMENTS, namespace, name)
        if d is None or d["metadata"].get("deletionTimestamp"):
            return
        uid = d["metadata"]["uid"]
        all_rs = sorted(
            (rs for rs in self.store.dependent_objects(uid, REPLICASETS) if _owned(rs, uid)),
            key=lambda rs: (rs["metadata"].get("creationTimestamp", ""), rs["metadata"]["name"]),
        )
        spec = d.get("spec") or {}
        template = spec.get("template") or {}
        new_rs = next((rs for rs in all_rs if _without_hash((rs.get("spec") or {}).get("template") or {}) == _without_hash(template)), None)
        old_rs = [rs for rs in all_rs if rs is not new_rs]
        created_new = False
        if spec.get("paused"):
            self._sync_status(d, new_rs, all_rs, created_new)
            return
        if new_rs is None:
            new_rs = self._create_new_rs(d, old_rs)
            created_new = True
            all_rs = [*old_rs, new_rs]
        else:
            new_rs = self._bump_revision(d, new_rs, old_rs)
        d = self._annotate_revision(d, new_rs)
        replicas = int(spec.get("replicas", 1))
        if (spec.get("strategy") or {}).get("type") == "Recreate":
            self._recreate(d, new_rs, old_rs, replicas)
        else:
            self._rolling(d, new_rs, old_rs, replicas)
        self._cleanup(d, old_rs)
        fresh = [self.store.get(REPLICASETS, namespace, rs["metadata"]["name"]) for rs in [*old_rs, new_rs]]
        current = [rs for rs in fresh if rs is not None]
        new_now = self.store.get(REPLICASETS, namespace, new_rs["metadata"]["name"])
        self._sync_status(d, new_now, current, created_new)

    # ---- ReplicaSets -------------------------------------------------------------------------

    def _create_new_rs(self, d: Obj, old_rs: list[Obj]) -> Obj:
        meta, spec = d["metadata"], d.get("spec") or {}
        template = clone(spec.get("template") or {})
        pod_hash = template_hash(template)
        template.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = pod_hash
        selector = clone(spec.get("selector") or {})
        selector.setdefault("matchLabels", {})[HASH_LABEL] = pod_hash
        revision = max((_revision(rs) for rs in old_rs), default=0) + 1
        surge, _ = surge_and_unavailable(d)
        replicas = int(spec.get("replicas", 1))
        annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k not in _NOT_COPIED}
        annotations.update({REVISION: str(revision), DESIRED: str(replicas), MAX_REPLICAS: str(replicas + surge)})
        has_old_pods = any(_replicas(rs) > 0 for rs in old_rs)
        strategy_type = (spec.get("strategy") or {}).get("type")
        # A first rollout starts at full size; later ones grow within maxSurge (rolling) or
        # wait for the old pods to go (Recreate).
        start = replicas if not has_old_pods and strategy_type != "Recreate" else 0
        if has_old_pods and strategy_type != "Recreate":
            total = sum(_replicas(rs) for rs in old_rs)
            start = max(0, min(replicas, replicas + surge - total))
        labels = dict(template["metadata"]["labels"])
        body = {
            "metadata": {
                "name": f"{meta['name']}-{pod_hash}",
                "labels": labels,
                "annotations": annotations,
                "ownerReferences": [owner_ref(d)],
            },
            "spec": {
                "replicas": start,
                "minReadySeconds": int(spec.get("minReadySeconds", 0) or 0),
                "selector": selector,
                "template": template,
            },
        }
        try:
            rs = self.api.create(REPLICASETS, body, namespace=meta["namespace"], owned=True).obj
        except ApiError as e:
            if e.reason != "AlreadyExists":
                raise
            rs = self.api.get(REPLICASETS, meta["namespace"], body["metadata"]["name"]).obj
        if start:
            self.events.record(d, "Normal", "ScalingReplicaSet", f"Scaled up replica set {rs['metadata']['name']} from 0 to {start}")
        return rs

    def _bump_revision(self, d: Obj, new_rs: Obj, old_rs: list[Obj]) -> Obj:
        """A template seen before (rollout undo) becomes the newest revision again."""
        max_old = max((_revision(rs) for rs in old_rs), default=0)
        if _revision(new_rs) > max_old:
            return new_rs
        updated = clone(new_rs)
        updated["metadata"].setdefault("annotations", {})[REVISION] = str(max_old + 1)
        return self.api.update(REPLICASETS, updated, namespace=d["metadata"]["namespace"]).obj

    def _check_deadline_later(self, key: Key, deadline: float) -> None:
        """Look again when the progress deadline could pass; one pending check per Deployment."""
        due = time.monotonic() + deadline + 0.5
        pending = self._deadline_checks.get(key)
        if pending is not None and pending > time.monotonic():
            return
        self._deadline_checks[key] = due
        self.enqueue(key, deadline + 0.5)

    def _annotate_revision(self, d: Obj, new_rs: Obj) -> Obj:
        """The Deployment carries its current revision too (``kubectl describe`` shows it)."""
        revision = str(_revision(new_rs))
        if (d["metadata"].get("annotations") or {}).get(REVISION) == revision:
            return d
        updated = clone(d)
        updated["metadata"].setdefault("annotations", {})[REVISION] = revision
        return self.api.update(DEPLOYMENTS, updated, namespace=d["metadata"]["namespace"], owned=True).obj

    def _scale(self, d: Obj, rs: Obj, replicas: int) -> Obj:
        current = _replicas(rs)
        if current == replicas:
            return rs
        surge, _ = surge_and_unavailable(d)
        desired = int((d.get("spec") or {}).get("replicas", 1))
        updated = clone(rs)
        updated["spec"]["replicas"] = replicas
        annotations = updated["metadata"].setdefault("annotations", {})
        annotations[DESIRED] = str(desired)
        annotations[MAX_REPLICAS] = str(desired + surge)
        rs = self.api.update(REPLICASETS, updated, namespace=d["metadata"]["namespace"]).obj
        direction = "up" if replicas > current else "down"
        self.events.record(
            d, "Normal", "ScalingReplicaSet", f"Scaled {direction} replica set {rs['metadata']['name']} from {current} to {replicas}"
        )
        return rs

    def _rolling(self, d: Obj, new_rs: Obj, old_rs: list[Obj], replicas: int) -> None:
        surge, max_unavailable = surge_and_unavailable(d)
        # Scale the new ReplicaSet up within maxSurge.
        all_rs = [*old_rs, new_rs]
        total = sum(_replicas(rs) for rs in all_rs)
        new_count = _replicas(new_rs)
        if new_count > replicas:
            new_rs = self._scale(d, new_rs, replicas)
        elif new_count < replicas:
            room = replicas + surge - total
            if room > 0:
                new_rs = self._scale(d, new_rs, new_count + min(room, replicas - new_count))
        # Scale old ReplicaSets down while keeping replicas - maxUnavailable available.
        old_total = sum(_replicas(rs) for rs in old_rs)
        if old_total == 0:
            return
        min_available = replicas - max_unavailable
        all_total = sum(_replicas(rs) for rs in [*old_rs, new_rs])
        new_unavailable = _replicas(new_rs) - _status(new_rs, "availableReplicas")
        budget = all_total - min_available - new_unavailable
        if budget <= 0:
            return
        # First drop old pods that are not available anyway (they count against nothing).
        remaining_old = []
        for rs in old_rs:
            unhealthy = _replicas(rs) - _status(rs, "availableReplicas")
            if budget > 0 and unhealthy > 0 and _replicas(rs) > 0:
                cut = min(budget, unhealthy)
                rs = self._scale(d, rs, _replicas(rs) - cut)
                budget -= cut
            remaining_old.append(rs)
        available = sum(_status(rs, "availableReplicas") for rs in [*remaining_old, new_rs])
        budget = available - min_available
        for rs in remaining_old:  # oldest first
            if budget <= 0:
                break
            if _replicas(rs) == 0:
                continue
            cut = min(_replicas(rs), budget)
            self._scale(d, rs, _replicas(rs) - cut)
            budget -= cut

    def _recreate(self, d: Obj, new_rs: Obj, old_rs: list[Obj], replicas: int) -> None:
        for rs in old_rs:
            if _replicas(rs) > 0:
                self._scale(d, rs, 0)
        # Wait until every old pod is gone (terminating ones included) before starting new ones.
        for rs in old_rs:
            if self.store.dependent_objects(rs["metadata"]["uid"], PODS):
                return
        self._scale(d, new_rs, replicas)

    def _cleanup(self, d: Obj, old_rs: list[Obj]) -> None:
        limit = int((d.get("spec") or {}).get("revisionHistoryLimit", 10))
        idle = [rs for rs in old_rs if _replicas(rs) == 0 and _status(rs, "replicas") == 0]
        idle.sort(key=_revision)
        for rs in idle[: max(0, len(idle) - limit)]:
            try:
                self.api.delete(REPLICASETS, rs["metadata"]["namespace"], rs["metadata"]["name"])
            except ApiError as e:
                if e.code != 404:
                    raise

    # ---- status ------------------------------------------------------------------------------

    def _sync_status(self, d: Obj, new_rs: Obj | None, all_rs: list[Obj], created_new: bool) -> None:
        spec = d.get("spec") or {}
        replicas = int(spec.get("replicas", 1))
        _, max_unavailable = surge_and_unavailable(d)
        total = sum(_status(rs, "replicas") for rs in all_rs)
        updated = _status(new_rs, "replicas") if new_rs else 0
        ready = sum(_status(rs, "readyReplicas") for rs in all_rs)
        available = sum(_status(rs, "availableReplicas") for rs in all_rs)
        old = d.get("status") or {}
        conditions = list(old.get("conditions") or [])
        if available >= replicas - max_unavailable:
            conditions = set_condition(conditions, "Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.", update_time=True)
        else:
            conditions = set_condition(conditions, "Available", "False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability.", update_time=True)
        rs_name = new_rs["metadata"]["name"] if new_rs else ""
        complete = new_rs is not None and updated == replicas and available >= replicas and total == replicas and _replicas(new_rs) == replicas
        progressing = condition(d, "Progressing")
        deadline = spec.get("progressDeadlineSeconds")
        if spec.get("paused"):
            conditions = set_condition(conditions, "Progressing", "Unknown", "DeploymentPaused", "Deployment is paused", update_time=True)
        elif complete:
            conditions = set_condition(conditions, "Progressing", "True", "NewReplicaSetAvailable", f'ReplicaSet "{rs_name}" has successfully progressed.', update_time=True)
        elif created_new:
            conditions = set_condition(conditions, "Progressing", "True", "NewReplicaSetCreated", f'Created new replica set "{rs_name}"', update_time=True)
        elif new_rs is not None:
            before = tuple(int(old.get(k, 0) or 0) for k in ("updatedReplicas", "availableReplicas", "replicas", "readyReplicas"))
            moved = before != (updated, available, total, ready)
            if moved or progressing is None or progressing.get("reason") == "NewReplicaSetAvailable":
                conditions = set_condition(conditions, "Progressing", "True", "ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.', update_time=True)
                if moved:  # progress restarts the deadline clock
                    for c in conditions:
                        if c.get("type") == "Progressing":
                            c["lastUpdateTime"] = now_rfc3339()
            elif (
                deadline is not None
                and progressing.get("reason") != "ProgressDeadlineExceeded"
                and age_seconds(progressing.get("lastUpdateTime")) >= int(deadline)
            ):
                conditions = set_condition(conditions, "Progressing", "False", "ProgressDeadlineExceeded", f'ReplicaSet "{rs_name}" has timed out progressing.', update_time=True)
        if not complete and deadline is not None and not spec.get("paused"):
            self._check_deadline_later((d["metadata"]["namespace"], d["metadata"]["name"]), float(deadline))
        status: Obj = {
            "observedGeneration": d["metadata"].get("generation", 1),
            "replicas": total,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": available,
            "conditions": sorted(conditions, key=lambda c: c.get("type") != "Available"),
        }
        if replicas - available > 0:
            status["unavailableReplicas"] = replicas - available
        for field in ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas"):
            if not status[field]:
                del status[field]  # omitted when zero, as kube's omitempty does
        write_status(self.cluster, DEPLOYMENTS, d, status)


def _owned(rs: Obj, uid: str) -> bool:
    return any(ref.get("uid") == uid and ref.get("controller") for ref in rs["metadata"].get("ownerReferences") or ())


def active_pods(pods: list[Obj]) -> list[Obj]:
    return [p for p in pods if is_active_pod(p)]
