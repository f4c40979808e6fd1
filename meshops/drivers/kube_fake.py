"""``FakeKube``: an in-memory ``KubeApi`` for unit tests of steps and waits.

It keeps what the steps rely on: label and field selectors, resourceVersions that only
increase (409 on a stale replace), ``metadata.generation`` bumped on spec changes, merge,
strategic (lists of named items merged by name) and JSON patches, and watches served
from an event log (resume from a resourceVersion; 410 once the log is trimmed).
Controllers are out of scope; a test adds ``reactors`` (called after every write) to play
one, e.g. ``InstantRollouts``. Integration tests use the sandbox over HTTP instead.
"""

from __future__ import annotations

import builtins
import copy
import itertools
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator
from typing import Any

from meshops.domain.errors import Conflict, DriverError, NotFound
from meshops.domain.patches import PatchConflict, PatchInvalid, json_patch, merge_patch
from meshops.domain.selectors import selector_matches
from meshops.drivers.kube_api import Obj, ObjectList, PatchType, WatchEvent

CLUSTER_SCOPED = frozenset({
    "Namespace", "Node", "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration",
    "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "PersistentVolume",
})
_GENERATION_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"})

Reactor = Callable[["FakeKube", str, Obj], None]


def label_selector_matches(selector: str | None, labels: dict[str, str]) -> bool:
    try:
        return selector_matches(selector, labels)
    except ValueError as exc:
        raise DriverError(str(exc), temporary=False) from None


def _field_matches(selector: str | None, obj: Obj) -> bool:
    for part in filter(None, (selector or "").split(",")):
        key, op, value = re.split(r"(!=|==|=)", part, maxsplit=1)
        cur: Any = obj
        for piece in key.strip().split("."):
            cur = cur.get(piece) if isinstance(cur, dict) else None
        eq = str(cur if cur is not None else "") == value.strip()
        if (op == "!=" and eq) or (op != "!=" and not eq):
            return False
    return True


def strategic_patch(target: Any, patch: Any) -> Any:
    """Strategic merge as far as steps need it: maps merge, lists of named maps merge by name."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, list) and isinstance(out.get(key), list) and all(
                isinstance(v, dict) and "name" in v for v in value + out[key]):
            merged = {item["name"]: item for item in out[key]}
            order = [item["name"] for item in out[key]]
            for item in value:
                if item.get("$patch") == "delete":
                    merged.pop(item["name"], None)
                    continue
                if item["name"] not in merged:
                    order.append(item["name"])
                merged[item["name"]] = strategic_patch(merged.get(item["name"]), item)
            out[key] = [merged[n] for n in order if n in merged]
        else:
            out[key] = strategic_patch(out.get(key), value)
    return out


class FakeKube:
    """In-memory ``KubeApi``. Thread-safe; ``writes`` records every mutating call."""

    def __init__(self, *, context: str = "fake", version: str = "v1.30.2", history: int = 100_000,
                 served: Collection[str] | None = None) -> None:
        self.context = context
        self.version = version
        # The API versions this cluster serves (None: all); others are NotFound, as for a missing CRD.
        self.served = None if served is None else frozenset(served)
        # False: every request fails as a refused connection does (temporary).
        self.reachable = True
        self._objects: dict[tuple[str, str, str, str], Obj] = {}
        self._events: list[tuple[int, str, Obj]] = []
        self._history = history
        self._rv = itertools.count(1)
        self._last_rv = 0
        self._cond = threading.Condition(threading.RLock())
        self._closed = False
        self.reactors: list[Reactor] = []
        self.writes: list[tuple[str, str, str, str]] = []  # (verb, kind, namespace, name)
        self.requests = 0
        # Raise this error from the next matching requests: (verb or "*", kind or "*", error, count)
        self.faults: list[list[Any]] = []

    # ---- helpers -----------------------------------------------------------------------

    def _key(self, api_version: str, kind: str, name: str, namespace: str | None) -> tuple[str, str, str, str]:
        ns = "" if kind in CLUSTER_SCOPED else (namespace or "default")
        return (api_version, kind, ns, name)

    def _count(self, verb: str, kind: str, api_version: str | None = None) -> None:
        self.requests += 1
        if not self.reachable:
            raise DriverError(f"cannot reach the API server of {self.context}: ConnectionRefusedError", temporary=True)
        if api_version is not None and self.served is not None and api_version not in self.served:
            raise NotFound(f"the cluster {self.context} serves no {kind} in {api_version}")
        for fault in self.faults:
            if fault[3] > 0 and fault[0] in ("*", verb) and fault[1] in ("*", kind):
                fault[3] -= 1
                raise fault[2]

    def _record(self, type_: str, obj: Obj) -> None:
        rv = next(self._rv)
        self._last_rv = rv
        obj["metadata"]["resourceVersion"] = str(rv)
        self._events.append((rv, type_, copy.deepcopy(obj)))
        if len(self._events) > self._history:
            del self._events[: len(self._events) - self._history]
        self._cond.notify_all()

    def _react(self, verb: str, obj: Obj) -> None:
        for reactor in list(self.reactors):
            reactor(self, verb, copy.deepcopy(obj))

    def close(self) -> None:
        """Ends every open watch (tests call it to release watcher threads)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # ---- KubeApi ------------------------------------------------------------------------

    def server_version(self) -> str:
        self._count("get", "Version")
        return self.version

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        with self._cond:
            self._count("get", kind, api_version)
            obj = self._objects.get(self._key(api_version, kind, name, namespace))
            return copy.deepcopy(obj) if obj is not None else None

    def list(self, api_version: str, kind: str, namespace: str | None = None, *,
             label_selector: str | None = None, field_selector: str | None = None) -> ObjectList:
        with self._cond:
            self._count("list", kind, api_version)
            items = [copy.deepcopy(o) for (av, k, ns, _), o in sorted(self._objects.items())
                     if av == api_version and k == kind and (namespace is None or ns == namespace)
                     and label_selector_matches(label_selector, o["metadata"].get("labels") or {})
                     and _field_matches(field_selector, o)]
            return ObjectList(items=items, resource_version=str(self._last_rv))

    def create(self, obj: Obj) -> Obj:
        with self._cond:
            self._count("create", obj["kind"], obj["apiVersion"])
            obj = copy.deepcopy(obj)
            meta = obj.setdefault("metadata", {})
            if obj["kind"] in CLUSTER_SCOPED:
                meta.pop("namespace", None)
            else:
                meta.setdefault("namespace", "default")
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            key = self._key(obj["apiVersion"], obj["kind"], meta["name"], meta.get("namespace"))
            if key in self._objects:
                raise Conflict(f"{obj['kind']} {meta['name']} already exists (AlreadyExists)")
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            if obj["kind"] in _GENERATION_KINDS:
                meta["generation"] = 1
            self._objects[key] = obj
            self.writes.append(("create", obj["kind"], meta.get("namespace", ""), meta["name"]))
            self._record("ADDED", obj)
            self._react("create", obj)
            return copy.deepcopy(self._objects.get(key, obj))

    def _store(self, key: tuple[str, str, str, str], old: Obj, new: Obj, verb: str) -> Obj:
        if old.get("spec") != new.get("spec") and new["kind"] in _GENERATION_KINDS:
            new["metadata"]["generation"] = int(old["metadata"].get("generation", 1)) + 1
        for f in ("uid", "creationTimestamp"):
            new["metadata"][f] = old["metadata"].get(f)
        self._objects[key] = new
        self.writes.append((verb, new["kind"], key[2], key[3]))
        self._record("MODIFIED", new)
        self._react(verb, new)
        return copy.deepcopy(self._objects.get(key, new))

    def replace(self, obj: Obj) -> Obj:
        with self._cond:
            self._count("replace", obj["kind"], obj["apiVersion"])
            meta = obj["metadata"]
            key = self._key(obj["apiVersion"], obj["kind"], meta["name"], meta.get("namespace"))
            old = self._objects.get(key)
            if old is None:
                raise NotFound(f"{obj['kind']} {meta['name']} not found")
            if meta.get("resourceVersion") and meta["resourceVersion"] != old["metadata"]["resourceVersion"]:
                raise Conflict(f"{obj['kind']} {meta['name']}: the object has been modified (Conflict)")
            new = copy.deepcopy(obj)
            if new["kind"] not in CLUSTER_SCOPED:
                new["metadata"]["namespace"] = key[2]
            if "generation" in old["metadata"]:
                new["metadata"]["generation"] = old["metadata"]["generation"]
            return self._store(key, old, new, "replace")

    def patch(self, api_version: str, kind: str, name: str, patch: Any, namespace: str | None = None, *,
              patch_type: PatchType = "merge", subresource: str | None = None) -> Obj:
        with self._cond:
            self._count("patch", kind, api_version)
            key = self._key(api_version, kind, name, namespace)
            old = self._objects.get(key)
            if old is None:
                raise NotFound(f"{kind} {name} not found")
            if patch_type == "merge":
                new = merge_patch(old, patch)
            elif patch_type == "strategic":
                new = strategic_patch(old, patch)
            elif patch_type == "json":
                try:
                    new = json_patch(old, patch)
                except (PatchInvalid, PatchConflict) as exc:  # the API server's 400/422
                    raise DriverError(f"{kind} {name}: {exc}", temporary=False) from None
            else:
                raise DriverError("FakeKube does not serve apply patches", temporary=False)
            want_rv = (patch.get("metadata") or {}).get("resourceVersion") if isinstance(patch, dict) else None
            if want_rv and want_rv != old["metadata"]["resourceVersion"]:
                raise Conflict(f"{kind} {name}: the object has been modified (Conflict)")
            new["metadata"]["generation"] = old["metadata"].get("generation", 1)
            if "generation" not in old["metadata"]:
                new["metadata"].pop("generation", None)
            return self._store(key, old, new, "patch")

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None, *,
               propagation: str = "Background") -> bool:
        with self._cond:
            self._count("delete", kind, api_version)
            key = self._key(api_version, kind, name, namespace)
            obj = self._objects.pop(key, None)
            if obj is None:
                return False
            self.writes.append(("delete", kind, key[2], name))
            self._record("DELETED", obj)
            self._react("delete", obj)
            return True

    def watch(self, api_version: str, kind: str, namespace: str | None = None, *, label_selector: str | None = None,
              field_selector: str | None = None, resource_version: str | None = None,
              timeout: float | None = None) -> Iterator[WatchEvent]:
        with self._cond:
            self._count("watch", kind, api_version)

        def wanted(obj: Obj) -> bool:
            meta = obj["metadata"]
            return (obj["apiVersion"] == api_version and obj["kind"] == kind
                    and (namespace is None or meta.get("namespace", "") == namespace)
                    and label_selector_matches(label_selector, meta.get("labels") or {})
                    and _field_matches(field_selector, obj))

        end = time.monotonic() + (timeout or 300)
        with self._cond:
            if resource_version:
                since = int(resource_version)
                if self._events and since < self._events[0][0] - 1:
                    raise Conflict(f"watch of {kind}: resourceVersion {resource_version} is too old (410 Gone)")
                backlog: list[WatchEvent] = []
            else:
                since = self._last_rv
                backlog = [WatchEvent(type="ADDED", object=copy.deepcopy(o)) for o in self._objects.values() if wanted(o)]
        yield from backlog
        while True:
            with self._cond:
                pending = [(rv, t, o) for rv, t, o in self._events if rv > since]
                while not pending and not self._closed:
                    left = end - time.monotonic()
                    if left <= 0:
                        return
                    self._cond.wait(left)
                    pending = [(rv, t, o) for rv, t, o in self._events if rv > since]
                if not pending:
                    return
                since = pending[-1][0]
            for _, type_, obj in pending:
                if wanted(obj):
                    yield WatchEvent(type=type_, object=copy.deepcopy(obj))

    # ---- test conveniences ------------------------------------------------------------------

    def apply(self, *objs: Obj) -> None:
        """Create or overwrite objects as given (seeding a test cluster)."""
        for obj in objs:
            meta = obj["metadata"]
            current = self.get(obj["apiVersion"], obj["kind"], meta["name"], meta.get("namespace"))
            if current is None:
                self.create(obj)
            else:
                new = copy.deepcopy(obj)
                new["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
                self.replace(new)

    def dump(self, kind: str | None = None) -> builtins.list[Obj]:
        with self._cond:
            return [copy.deepcopy(o) for (_, k, _, _), o in sorted(self._objects.items()) if kind in (None, k)]

    def as_json(self) -> str:
        return json.dumps(self.dump(), sort_keys=True)
