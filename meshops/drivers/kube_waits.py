"""Waiting on a cluster through watches, never by polling it.

``Informer`` lists one kind once, then keeps an in-memory copy current from a watch (in a
background thread), resuming from the last resourceVersion when the server ends the
stream and re-listing after 410 Gone, as client-go's informers do. ``Cache`` groups a few
informers behind one condition variable, so a waiter sleeps until *any* of them changes
and then re-evaluates its predicate against memory. Thousands of rollouts therefore cost
one list and one watch per kind, not one request per workload per second.

The rollout predicates mirror ``kubectl rollout status``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from meshops.domain.errors import Conflict, DriverError
from meshops.domain.mesh import Pod, as_int, pod_from_object
from meshops.drivers.kube_api import KubeApi, Obj

API_VERSIONS = {"Deployment": "apps/v1", "StatefulSet": "apps/v1", "DaemonSet": "apps/v1", "Pod": "v1"}
WATCH_SECONDS = 120.0


def _trim_workload(obj: Obj) -> Obj:
    """What rollout checks and injection analysis read; the rest of a workload is dropped to
    keep memory flat on large fleets."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    template = spec.get("template") or {}
    t_meta = template.get("metadata") or {}
    containers = [{"name": c.get("name"), "image": c.get("image")}
                  for c in (template.get("spec") or {}).get("containers") or []]
    return {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "metadata": {k: meta.get(k) for k in ("name", "namespace", "generation", "resourceVersion", "annotations",
                                              "labels")},
        "spec": {"replicas": spec.get("replicas"), "updateStrategy": spec.get("updateStrategy"),
                 "strategy": spec.get("strategy"),
                 "template": {"metadata": {"labels": t_meta.get("labels"), "annotations": t_meta.get("annotations")},
                              "spec": {"containers": containers}}},
        "status": obj.get("status") or {},
    }


def _owner(pod: Pod) -> Hashable:
    return (pod.owner_kind, pod.namespace, pod.owner_name)


class Informer:
    """One kind, cluster-wide or in one namespace, kept current by a watch."""

    def __init__(self, kube: KubeApi, kind: str, *, namespace: str | None = None, label_selector: str | None = None,
                 transform: Callable[[Obj], Any], cond: threading.Condition, watch_seconds: float = WATCH_SECONDS,
                 index: Callable[[Any], Hashable] | None = None, on_change: Callable[[Any], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.kube, self.kind = kube, kind
        self.api_version = API_VERSIONS.get(kind, "v1")
        self.namespace, self.label_selector = namespace, label_selector
        self._transform, self._cond = transform, cond
        self._watch_seconds, self._sleep = watch_seconds, sleep
        self.items: dict[tuple[str, str], Any] = {}
        # Optional secondary index (e.g. pods by owning workload): index key -> {item key: item}.
        self._index_fn = index
        self.index: dict[Hashable, dict[tuple[str, str], Any]] = {}
        # Called (under the lock) with every item that appears, changes or goes.
        self._on_change = on_change
        self.error: Exception | None = None
        self._rv = ""
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._relist()
        self._thread = threading.Thread(target=self._loop, name=f"informer-{self.kind}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def _key(self, obj: Obj) -> tuple[str, str]:
        meta = obj.get("metadata") or {}
        return (str(meta.get("namespace", "")), str(meta.get("name", "")))

    def _relist(self) -> None:
        listed = self.kube.list(self.api_version, self.kind, self.namespace, label_selector=self.label_selector)
        with self._cond:
            self.items = {}
            self.index = {}
            for o in listed.items:
                self._put(self._key(o), self._transform(o))
            self._rv = listed.resource_version
            self._cond.notify_all()

    def _put(self, key: tuple[str, str], item: Any) -> None:
        self._drop(key)
        self.items[key] = item
        if self._index_fn is not None:
            self.index.setdefault(self._index_fn(item), {})[key] = item
        if self._on_change is not None:
            self._on_change(item)

    def _drop(self, key: tuple[str, str]) -> None:
        old = self.items.pop(key, None)
        if old is None:
            return
        if self._index_fn is not None:
            bucket = self.index.get(self._index_fn(old))
            if bucket is not None:
                bucket.pop(key, None)
        if self._on_change is not None:
            self._on_change(old)

    def _loop(self) -> None:
        failures = 0
        while not self._stopped.is_set():
            try:
                for event in self.kube.watch(self.api_version, self.kind, self.namespace,
                                             label_selector=self.label_selector, resource_version=self._rv or None,
                                             timeout=self._watch_seconds):
                    if self._stopped.is_set():
                        return
                    obj = event.object
                    rv = str((obj.get("metadata") or {}).get("resourceVersion", ""))
                    with self._cond:
                        if event.type == "DELETED":
                            self._drop(self._key(obj))
                        elif event.type in ("ADDED", "MODIFIED"):
                            self._put(self._key(obj), self._transform(obj))
                        if rv:
                            self._rv = rv
                        self._cond.notify_all()
                    failures = 0
            except Conflict:
                # 410 Gone: the server no longer has our resourceVersion. Start over.
                self._safe_relist()
            except DriverError as exc:
                failures += 1
                if not exc.temporary or failures > 20:
                    with self._cond:
                        self.error = exc
                        self._cond.notify_all()
                    return
                self._sleep(min(5.0, 0.2 * 2 ** failures))
            except Exception as exc:  # a bug or an unexpected client error: surface it to waiters
                with self._cond:
                    self.error = exc
                    self._cond.notify_all()
                return

    def _safe_relist(self) -> None:
        try:
            self._relist()
        except DriverError as exc:
            with self._cond:
                self.error = exc
                self._cond.notify_all()


class Cache:
    """Informers for workloads and their pods behind one condition variable.

    A waiter ``subscribe()``s and gets the keys ``(kind, namespace, name)`` of the workloads
    whose object or pods changed since it last looked, so each event costs one check of one
    workload, however many rollouts are in flight.
    """

    def __init__(self, kube: KubeApi, kinds: tuple[str, ...] = ("Deployment", "StatefulSet", "DaemonSet"), *,
                 namespace: str | None = None, watch_seconds: float = WATCH_SECONDS) -> None:
        self.cond = threading.Condition()
        self._subscribers: list[set[Hashable]] = []
        self.workloads = {k: Informer(kube, k, namespace=namespace, transform=_trim_workload, cond=self.cond,
                                      watch_seconds=watch_seconds, on_change=self._touch_workload)
                          for k in kinds}
        self.pods = Informer(kube, "Pod", namespace=namespace, transform=pod_from_object, cond=self.cond,
                             watch_seconds=watch_seconds, index=_owner, on_change=self._touch_pod)
        self._started = False

    def _touch_workload(self, obj: Obj) -> None:
        meta = obj.get("metadata") or {}
        key = (obj.get("kind"), meta.get("namespace", ""), meta.get("name", ""))
        for sub in self._subscribers:
            sub.add(key)

    def _touch_pod(self, pod: Pod) -> None:
        key = _owner(pod)
        for sub in self._subscribers:
            sub.add(key)

    def subscribe(self) -> set[Hashable]:
        """A set that fills with the keys of changed workloads; pass it to ``wait_changes``."""
        sub: set[Hashable] = set()
        with self.cond:
            self._subscribers.append(sub)
        return sub

    def unsubscribe(self, sub: set[Hashable]) -> None:
        with self.cond:
            self._subscribers = [s for s in self._subscribers if s is not sub]

    def start(self) -> Cache:
        with self.cond:
            if self._started:
                return self
            self._started = True
        for inf in (*self.workloads.values(), self.pods):
            inf.start()
        return self

    def stop(self) -> None:
        for inf in (*self.workloads.values(), self.pods):
            inf.stop()

    def workload(self, kind: str, namespace: str, name: str) -> Obj | None:
        inf = self.workloads.get(kind)
        return None if inf is None else inf.items.get((namespace, name))

    def pods_of(self, kind: str, namespace: str, name: str) -> list[Pod]:
        return list(self.pods.index.get((kind, namespace, name), {}).values())

    def _raise_errors(self) -> None:
        for inf in (*self.workloads.values(), self.pods):
            if inf.error is not None:
                raise DriverError(f"watching {inf.kind}s failed: {inf.error}", temporary=True)

    def wait_changes(self, sub: set[Hashable], *, timeout: float, check: Callable[[], None],
                     clock: Callable[[], float] = time.monotonic) -> set[Hashable]:
        """Block until ``sub`` has keys (returned, and cleared) or ``timeout`` passes (empty set).
        Call with ``cond`` held. ``check`` (stop/deadline) runs between wake-ups; no API calls."""
        end = clock() + timeout
        while not sub:
            self._raise_errors()
            left = end - clock()
            if left <= 0:
                return set()
            self.cond.wait(min(left, 0.5))
            self.cond.release()
            try:
                check()
            finally:
                self.cond.acquire()
        self._raise_errors()
        out = set(sub)
        sub.clear()
        return out

    def wait_until(self, predicate: Callable[[], bool], *, timeout: float, check: Callable[[], None],
                   clock: Callable[[], float] = time.monotonic) -> bool:
        """Block until ``predicate()`` (run under the lock, on memory only) holds, or ``timeout``."""
        sub = self.subscribe()
        try:
            end = clock() + timeout
            with self.cond:
                while not predicate():
                    left = end - clock()
                    if left <= 0:
                        return False
                    self.wait_changes(sub, timeout=left, check=check, clock=clock)
                return True
        finally:
            self.unsubscribe(sub)


@dataclass(frozen=True, kw_only=True)
class RolloutState:
    done: bool
    failed: str = ""  # why the rollout cannot finish (progress deadline exceeded), else ""
    detail: str = ""


def rollout_state(obj: Obj | None, generation: int) -> RolloutState:
    """Whether a workload finished rolling out ``generation`` (kubectl rollout status' rules)."""
    if obj is None:
        return RolloutState(done=False, failed="the workload was deleted")
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    if int(status.get("observedGeneration") or 0) < generation or int(meta.get("generation") or 0) < generation:
        return RolloutState(done=False, detail="waiting for the controller to see the change")
    kind = obj.get("kind")
    if kind == "Deployment":
        for cond in status.get("conditions") or []:
            if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
                return RolloutState(done=False, failed=f"progress deadline exceeded: {cond.get('message', '')}")
        want = as_int(spec.get("replicas"), 1)
        updated = int(status.get("updatedReplicas") or 0)
        total = int(status.get("replicas") or 0)
        available = int(status.get("availableReplicas") or 0)
        if updated < want:
            return RolloutState(done=False, detail=f"{updated} of {want} updated")
        if total > updated:
            return RolloutState(done=False, detail=f"{total - updated} old replicas pending termination")
        if available < updated:
            return RolloutState(done=False, detail=f"{available} of {updated} updated replicas available")
        return RolloutState(done=True)
    if kind == "StatefulSet":
        want = as_int(spec.get("replicas"), 1)
        if int(status.get("readyReplicas") or 0) < want:
            return RolloutState(done=False, detail=f"{status.get('readyReplicas') or 0} of {want} ready")
        if int(status.get("updatedReplicas") or 0) < want or status.get("updateRevision") != status.get("currentRevision"):
            return RolloutState(done=False, detail="waiting for pods to update")
        return RolloutState(done=True)
    if kind == "DaemonSet":
        want = int(status.get("desiredNumberScheduled") or 0)
        if int(status.get("updatedNumberScheduled") or 0) < want:
            return RolloutState(done=False, detail="waiting for pods to update")
        if int(status.get("numberAvailable") or 0) < want:
            return RolloutState(done=False, detail=f"{status.get('numberAvailable') or 0} of {want} available")
        return RolloutState(done=True)
    return RolloutState(done=False, failed=f"cannot follow a rollout of a {kind}")
