"""Disruption controller: PodDisruptionBudget status from the healthy pods it selects."""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable
from typing import Any

from ..kinds import PODDISRUPTIONBUDGETS, PODS
from ..selectors import labels_match, requirements_from_label_selector
from ..store import StoreEvent
from .base import Controller
from .util import Key, is_active_pod, pod_ready, set_condition, write_status

Obj = dict[str, Any]


def _resolve(value: Any, total: int) -> int:
    if isinstance(value, str) and value.endswith("%"):
        return math.ceil(float(value[:-1]) * total / 100)
    return int(value)


class DisruptionController(Controller):
    name = "disruption"
    watches = (PODDISRUPTIONBUDGETS, PODS)

    def keys_for(self, event: StoreEvent) -> Iterable[Hashable]:
        if event.gr == PODDISRUPTIONBUDGETS:
            return [(event.namespace, event.name)] if event.type != "DELETED" else ()
        if event.type == "MODIFIED" and pod_ready(event.obj) == pod_ready(event.old or {}) and bool(
            event.obj["metadata"].get("deletionTimestamp")
        ) == bool((event.old or {}).get("metadata", {}).get("deletionTimestamp")):
            return ()
        return [(event.namespace, v.obj["metadata"]["name"]) for v in self.store.iter_versions(PODDISRUPTIONBUDGETS, event.namespace)]

    def initial_keys(self) -> Iterable[Hashable]:
        return [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in self.store.list(PODDISRUPTIONBUDGETS)[0]]

    def sync(self, key: Key) -> None:
        pdb = self.store.get(PODDISRUPTIONBUDGETS, *key)
        if pdb is None:
            return
        spec = pdb.get("spec") or {}
        requirements = requirements_from_label_selector(spec.get("selector"))
        pods = [] if requirements is None else [
            p for p in self.store.list(PODS, key[0])[0] if is_active_pod(p) and labels_match(p["metadata"].get("labels"), requirements)
        ]
        expected = len(pods)
        healthy = sum(1 for p in pods if pod_ready(p))
        if spec.get("minAvailable") is not None:
            desired = _resolve(spec["minAvailable"], expected)
        elif spec.get("maxUnavailable") is not None:
            desired = max(0, expected - _resolve(spec["maxUnavailable"], expected))
        else:
            desired = expected
        allowed = max(0, healthy - desired)
        old = pdb.get("status") or {}
        conditions = set_condition(
            list(old.get("conditions") or []), "DisruptionAllowed", "True" if allowed else "False",
            "SufficientPods" if allowed else "InsufficientPods", "",
        )
        status = {
            "observedGeneration": pdb["metadata"].get("generation", 1),
            "disruptionsAllowed": allowed,
            "currentHealthy": healthy,
            "desiredHealthy": desired,
            "expectedPods": expected,
            "conditions": conditions,
        }
        write_status(self.cluster, PODDISRUPTIONBUDGETS, pdb, status)
