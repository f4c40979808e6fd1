"""The object store: versioned objects per (group, resource), watch history and change feeds.

Stored objects are immutable by convention: every write stores a new dict, so readers (list,
watch, controllers) can hold references without copying and each version's JSON is encoded at
most once. Anything that wants to change an object clones it first (``jsonutil.clone``).

One lock guards the store. Subscribers are called under it, in commit order, so they see every
change exactly once and in order; they must only enqueue work, never block or write.
"""

from __future__ import annotations

import bisect
import builtins
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from . import errors
from .jsonutil import dumps
from .kinds import GroupResource

Obj = dict[str, Any]
ObjectKey = tuple[GroupResource, str, str]  # (group resource, namespace or "", name)


class StoredVersion:
    """One version of one object, with its JSON encoded on first use."""

    __slots__ = ("_json", "obj", "rv")

    def __init__(self, obj: Obj, rv: int) -> None:
        self.obj = obj
        self.rv = rv
        self._json: bytes | None = None

    def json(self) -> bytes:
        data = self._json
        if data is None:
            data = self._json = dumps(self.obj)
        return data

    def forget_json(self) -> None:
        """Superseded versions live on only in watch history: re-encode there if ever needed."""
        self._json = None


class StoreEvent:
    """A committed change: ADDED, MODIFIED or DELETED; ``old`` is the previous version."""

    __slots__ = ("gr", "name", "namespace", "old", "type", "version")

    def __init__(
        self, type_: str, gr: GroupResource, namespace: str, name: str, version: StoredVersion, old: Obj | None
    ) -> None:
        self.type = type_
        self.gr = gr
        self.namespace = namespace
        self.name = name
        self.version = version
        self.old = old

    @property
    def obj(self) -> Obj:
        return self.version.obj

    @property
    def rv(self) -> int:
        return self.version.rv


Subscriber = Callable[[StoreEvent], None]


# A watcher this far behind is dropped (its stream ends; clients watch again from their last
# resourceVersion), as kube-apiserver drops watchers that cannot keep up.
MAX_WATCHER_BACKLOG = 100_000


class Watcher:
    """A live feed of one resource's events, for a watch stream or an in-process reader."""

    def __init__(self, store: Store, gr: GroupResource) -> None:
        self.store = store
        self.gr = gr
        self.queue: queue.SimpleQueue[StoreEvent | None] = queue.SimpleQueue()
        self.overflowed = False

    def next(self, timeout: float | None) -> StoreEvent | None:
        """The next event, or None after ``timeout`` seconds (or when stopped or overflowed)."""
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def stop(self) -> None:
        self.store._remove_watcher(self)
        self.queue.put(None)

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Store:
    def __init__(self, *, history_size: int = 10_000) -> None:
        self.lock = threading.RLock()
        self.history_size = history_size
        self._rv = 1
        self._data: dict[GroupResource, dict[str, dict[str, StoredVersion]]] = {}
        # Sorted names per (resource, namespace), rebuilt lazily after creates and deletes.
        self._sorted: dict[tuple[GroupResource, str], builtins.list[str]] = {}
        self._by_uid: dict[str, ObjectKey] = {}
        self._dependents: dict[str, set[ObjectKey]] = {}  # owner uid -> keys of dependents
        self._history: dict[GroupResource, deque[StoreEvent]] = {}
        self._trimmed_rv: dict[GroupResource, int] = {}  # newest RV dropped from each history
        self._watchers: dict[GroupResource, set[Watcher]] = {}
        self._subscribers: builtins.list[tuple[Subscriber, frozenset[GroupResource] | None]] = []

    # ---- reads -------------------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        return self._rv

    def get(self, gr: GroupResource, namespace: str, name: str) -> Obj | None:
        """The stored object (do not mutate it), or None."""
        version = self.get_version(gr, namespace, name)
        return version.obj if version else None

    def get_version(self, gr: GroupResource, namespace: str, name: str) -> StoredVersion | None:
        return self._data.get(gr, {}).get(namespace, {}).get(name)

    def namespaces_of(self, gr: GroupResource) -> builtins.list[str]:
        with self.lock:
            return sorted(ns for ns, names in self._data.get(gr, {}).items() if names)

    def _sorted_names(self, gr: GroupResource, namespace: str) -> builtins.list[str]:
        key = (gr, namespace)
        names = self._sorted.get(key)
        if names is None:
            names = self._sorted[key] = sorted(self._data.get(gr, {}).get(namespace, {}))
        return names

    def iter_versions(
        self,
        gr: GroupResource,
        namespace: str | None = None,
        *,
        after: tuple[str, str] | None = None,
        matcher: Callable[[Obj], bool] | None = None,
    ) -> Iterator[StoredVersion]:
        """Versions in (namespace, name) order, optionally after a key; call with the lock held."""
        by_ns = self._data.get(gr, {})
        if namespace is not None:
            namespaces = [namespace]
        else:
            namespaces = sorted(ns for ns, objs in by_ns.items() if objs)
        for ns in namespaces:
            if after is not None and ns < after[0]:
                continue
            objs = by_ns.get(ns)
            if not objs:
                continue
            names = self._sorted_names(gr, ns)
            start = 0
            if after is not None and ns == after[0]:
                start = bisect.bisect_right(names, after[1])
            for name in names[start:]:
                version = objs.get(name)
                if version is not None and (matcher is None or matcher(version.obj)):
                    yield version

    def list(
        self, gr: GroupResource, namespace: str | None = None, matcher: Callable[[Obj], bool] | None = None
    ) -> tuple[builtins.list[Obj], int]:
        """(objects, resourceVersion of the snapshot). The objects are shared: do not mutate."""
        with self.lock:
            return [v.obj for v in self.iter_versions(gr, namespace, matcher=matcher)], self._rv

    def count(self, gr: GroupResource, namespace: str | None = None) -> int:
        with self.lock:
            by_ns = self._data.get(gr, {})
            if namespace is not None:
                return len(by_ns.get(namespace, {}))
            return sum(len(objs) for objs in by_ns.values())

    def key_for_uid(self, uid: str) -> ObjectKey | None:
        return self._by_uid.get(uid)

    def dependents(self, owner_uid: str) -> builtins.list[ObjectKey]:
        with self.lock:
            return sorted(self._dependents.get(owner_uid, ()))

    def dependent_objects(self, owner_uid: str, gr: GroupResource | None = None) -> builtins.list[Obj]:
        """Stored objects whose ownerReferences name ``owner_uid`` (optionally of one resource)."""
        with self.lock:
            out = []
            for key in self._dependents.get(owner_uid, ()):
                if gr is not None and key[0] != gr:
                    continue
                obj = self.get(*key)
                if obj is not None:
                    out.append(obj)
            return out

    # ---- writes ------------------------------------------------------------------------------

    def create(self, gr: GroupResource, obj: Obj) -> StoredVersion:
        """Store a new object; the store now owns ``obj``. Raises AlreadyExists."""
        meta = obj["metadata"]
        namespace, name = meta.get("namespace") or "", meta["name"]
        with self.lock:
            objs = self._data.setdefault(gr, {}).setdefault(namespace, {})
            if name in objs:
                raise errors.already_exists(gr[1], gr[0], name)
            version = self._stamp(obj)
            objs[name] = version
            self._sorted.pop((gr, namespace), None)
            self._index(gr, namespace, name, None, obj)
            self._commit(StoreEvent("ADDED", gr, namespace, name, version, None))
            return version

    def _current(
        self, gr: GroupResource, namespace: str, name: str, expect_rv: int | None
    ) -> tuple[dict[str, StoredVersion], StoredVersion]:
        """The namespace's objects and the stored version of ``name`` (held lock); NotFound, or
        Conflict when ``expect_rv`` is given and is not the stored one."""
        objs = self._data.get(gr, {}).get(namespace, {})
        current = objs.get(name)
        if current is None:
            raise errors.not_found(gr[1], gr[0], name)
        if expect_rv is not None and current.rv != expect_rv:
            raise errors.conflict(
                gr[1], gr[0], name, "the object has been modified; please apply your changes to the latest version and try again"
            )
        return objs, current

    def update(self, gr: GroupResource, obj: Obj, *, expect_rv: int | None = None) -> StoredVersion:
        """Replace a stored object; the store now owns ``obj``. Raises NotFound or Conflict."""
        meta = obj["metadata"]
        namespace, name = meta.get("namespace") or "", meta["name"]
        with self.lock:
            objs, current = self._current(gr, namespace, name, expect_rv)
            version = self._stamp(obj)
            objs[name] = version
            current.forget_json()
            self._index(gr, namespace, name, current.obj, obj)
            self._commit(StoreEvent("MODIFIED", gr, namespace, name, version, current.obj))
            return version

    def delete(self, gr: GroupResource, namespace: str, name: str, *, expect_rv: int | None = None) -> StoredVersion:
        """Remove an object; returns its final version, stamped with the deletion's RV."""
        with self.lock:
            objs, current = self._current(gr, namespace, name, expect_rv)
            del objs[name]
            current.forget_json()
            self._sorted.pop((gr, namespace), None)
            final = dict(current.obj)
            final["metadata"] = dict(final.get("metadata") or {})
            version = self._stamp(final)
            self._index(gr, namespace, name, current.obj, None)
            self._commit(StoreEvent("DELETED", gr, namespace, name, version, current.obj))
            return version

    def drop_resource(self, gr: GroupResource) -> builtins.list[Obj]:
        """Delete every object of a resource (its CRD went away); returns what was removed."""
        with self.lock:
            removed = []
            for namespace in list(self._data.get(gr, {})):
                for name in list(self._data[gr][namespace]):
                    removed.append(self.delete(gr, namespace, name).obj)
            return removed

    def _stamp(self, obj: Obj) -> StoredVersion:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        version = StoredVersion(obj, self._rv)
        # Encode now: lists and watches then only join bytes, even the first time (a cold
        # namespace list of 50 pods otherwise costs ~2 ms of encoding).
        version.json()
        return version

    def _index(self, gr: GroupResource, namespace: str, name: str, old: Obj | None, new: Obj | None) -> None:
        key = (gr, namespace, name)
        old_meta = (old or {}).get("metadata") or {}
        new_meta = (new or {}).get("metadata") or {}
        old_uid, new_uid = old_meta.get("uid"), new_meta.get("uid")
        if old_uid and old_uid != new_uid:
            self._by_uid.pop(old_uid, None)
        if new_uid:
            self._by_uid[new_uid] = key
        old_owners = {ref.get("uid") for ref in old_meta.get("ownerReferences") or ()}
        new_owners = {ref.get("uid") for ref in new_meta.get("ownerReferences") or ()}
        if old_owners == new_owners:
            return
        for uid in old_owners - new_owners:
            deps = self._dependents.get(uid)
            if deps is not None:
                deps.discard(key)
                if not deps:
                    del self._dependents[uid]
        for uid in new_owners - old_owners:
            if uid:
                self._dependents.setdefault(uid, set()).add(key)

    def _commit(self, event: StoreEvent) -> None:
        history = self._history.get(event.gr)
        if history is None:
            history = self._history[event.gr] = deque(maxlen=self.history_size)
        if len(history) == history.maxlen:
            self._trimmed_rv[event.gr] = history[0].rv
        history.append(event)
        for watcher in self._watchers.get(event.gr, ()):
            if watcher.overflowed:
                continue
            if watcher.queue.qsize() >= MAX_WATCHER_BACKLOG:
                watcher.overflowed = True
                watcher.queue.put(None)
                continue
            watcher.queue.put(event)
        for callback, grs in self._subscribers:
            if grs is None or event.gr in grs:
                callback(event)

    # ---- change feeds ------------------------------------------------------------------------

    def subscribe(self, callback: Subscriber, resources: Iterable[GroupResource] | None = None) -> Callable[[], None]:
        """Call ``callback(event)`` for every committed change (under the store lock: be quick).

        Returns a function that unsubscribes.
        """
        entry = (callback, frozenset(resources) if resources is not None else None)
        with self.lock:
            self._subscribers.append(entry)

        def unsubscribe() -> None:
            with self.lock:
                if entry in self._subscribers:
                    self._subscribers.remove(entry)

        return unsubscribe

    def watch(self, gr: GroupResource, since_rv: int | None = None) -> tuple[Watcher, builtins.list[StoreEvent]]:
        """Start a live feed; returns it with the backlog to deliver first.

        ``since_rv`` None or 0 means "current state": the backlog is every stored object as
        ADDED. Otherwise the backlog is the history after that RV; 410 Expired if it was trimmed.
        """
        with self.lock:
            watcher = Watcher(self, gr)
            if not since_rv:
                backlog = [
                    StoreEvent("ADDED", gr, v.obj["metadata"].get("namespace") or "", v.obj["metadata"]["name"], v, None)
                    for v in self.iter_versions(gr)
                ]
            else:
                backlog = self.events_since(gr, since_rv)
            self._watchers.setdefault(gr, set()).add(watcher)
            return watcher, backlog

    def events_since(self, gr: GroupResource, since_rv: int) -> builtins.list[StoreEvent]:
        with self.lock:
            if since_rv < self._trimmed_rv.get(gr, 0):
                raise errors.gone(f"too old resource version: {since_rv} ({self._trimmed_rv[gr] + 1})")
            history = self._history.get(gr, ())
            rvs = [e.rv for e in history] if history else []
            start = bisect.bisect_right(rvs, since_rv)
            return list(history)[start:] if history else []

    def _remove_watcher(self, watcher: Watcher) -> None:
        with self.lock:
            watchers = self._watchers.get(watcher.gr)
            if watchers is not None:
                watchers.discard(watcher)
