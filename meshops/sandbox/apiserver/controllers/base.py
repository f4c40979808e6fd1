"""Event-driven controllers: a deduplicating work queue with delays, fed by the store.

Each controller maps store events to keys (cheaply, under the store lock) and reconciles one
key at a time on the manager's worker thread. Nothing polls: waiting (a pod becoming Ready, a
grace period ending) is a delayed re-queue of the key.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Hashable, Iterable
from typing import TYPE_CHECKING, Any

from ..errors import ApiError
from ..kinds import GroupResource
from ..store import StoreEvent

if TYPE_CHECKING:
    from .host import ControllerHost

log = logging.getLogger("meshops.sandbox.controllers")

Obj = dict[str, Any]
Item = tuple["Controller", Hashable]


class WorkQueue:
    """Items wait at most once in the ready queue; delayed items join it when due."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._ready: deque[Item] = deque()
        self._queued: set[Item] = set()
        self._processing: set[Item] = set()
        self._dirty: set[Item] = set()  # re-added while being processed: run again afterwards
        self._delayed: list[tuple[float, int, Item]] = []
        self._seq = itertools.count()
        self._closed = False

    def add(self, item: Item) -> None:
        with self._cond:
            if item in self._processing:
                self._dirty.add(item)
            elif item not in self._queued:
                self._queued.add(item)
                self._ready.append(item)
                self._cond.notify()

    def add_after(self, item: Item, delay: float) -> None:
        if delay <= 0:
            self.add(item)
            return
        with self._cond:
            heapq.heappush(self._delayed, (time.monotonic() + delay, next(self._seq), item))
            self._cond.notify()

    def get(self) -> Item | None:
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                while self._delayed and self._delayed[0][0] <= now:
                    _, _, item = heapq.heappop(self._delayed)
                    if item in self._processing:
                        self._dirty.add(item)
                    elif item not in self._queued:
                        self._queued.add(item)
                        self._ready.append(item)
                if self._ready:
                    item = self._ready.popleft()
                    self._queued.discard(item)
                    self._processing.add(item)
                    return item
                wait = self._delayed[0][0] - now if self._delayed else None
                self._cond.wait(wait)
            return None

    def done(self, item: Item) -> None:
        with self._cond:
            self._processing.discard(item)
            if item in self._dirty:
                self._dirty.discard(item)
                if item not in self._queued:
                    self._queued.add(item)
                    self._ready.append(item)
                    self._cond.notify()

    def idle(self) -> bool:
        """Nothing ready or running (delayed items may still be waiting)."""
        with self._cond:
            return not self._ready and not self._processing

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class Controller:
    """Subclasses set ``watches`` and implement ``keys_for`` and ``sync``."""

    name = "controller"
    watches: tuple[GroupResource, ...] = ()
    watch_all = False  # True: every resource's events (garbage collection, namespaces)

    def __init__(self, cluster: ControllerHost) -> None:
        self.cluster = cluster
        self.store = cluster.store
        self.api = cluster.api
        self.queue: WorkQueue | None = None

    def keys_for(self, event: StoreEvent) -> Iterable[Hashable]:
        """Keys to reconcile after ``event``. Runs under the store lock: no writes, no waiting."""
        return ()

    def initial_keys(self) -> Iterable[Hashable]:
        """Keys to reconcile when the controller starts (objects that already exist)."""
        return ()

    def sync(self, key: Any) -> None:
        raise NotImplementedError

    def enqueue(self, key: Hashable, delay: float = 0.0) -> None:
        assert self.queue is not None
        self.queue.add_after((self, key), delay)


class ControllerManager:
    def __init__(self, cluster: ControllerHost, controllers: list[Controller]) -> None:
        self.cluster = cluster
        self.controllers = controllers
        self.queue = WorkQueue()
        self._by_gr: dict[GroupResource, list[Controller]] = {}
        self._everything = [c for c in controllers if c.watch_all]
        for controller in controllers:
            controller.queue = self.queue
            for gr in controller.watches:
                self._by_gr.setdefault(gr, []).append(controller)
        self._thread: threading.Thread | None = None
        self._unsubscribe: Any = None
        self._failures: dict[Item, int] = {}

    def _dispatch(self, event: StoreEvent) -> None:
        for controller in (*self._everything, *self._by_gr.get(event.gr, ())):
            if controller.watch_all and controller not in self._everything:
                continue
            try:
                keys = list(controller.keys_for(event))
            except Exception:  # runs inside a store write: a bug here must not fail the write
                log.exception("controller %s could not map %s %s/%s", controller.name, event.type, event.namespace, event.name)
                continue
            for key in keys:
                self.queue.add((controller, key))

    def start(self) -> None:
        with self.cluster.store.lock:
            resources = None if self._everything else list(self._by_gr)
            self._unsubscribe = self.cluster.store.subscribe(self._dispatch, resources)
            for controller in self.controllers:
                for key in controller.initial_keys():
                    self.queue.add((controller, key))
        self._thread = threading.Thread(target=self._run, name=f"controllers-{self.cluster.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        self.queue.close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            controller, key = item
            try:
                controller.sync(key)
                self._failures.pop(item, None)
            except ApiError as e:
                # Conflicts and vanished objects are routine: retry soon with the fresh state.
                self._retry(item, quiet=e.code in (404, 409), error=e)
            except Exception as e:
                self._retry(item, quiet=False, error=e)
            finally:
                self.queue.done(item)

    def _retry(self, item: Item, *, quiet: bool, error: Exception) -> None:
        failures = self._failures.get(item, 0) + 1
        self._failures[item] = failures
        if not quiet:
            log.warning("controller %s failed on %s (attempt %d): %r", item[0].name, item[1], failures, error)
        self.queue.add_after(item, min(5.0, 0.005 * 2**failures))

    def kick(self, name: str) -> None:
        """Re-reconcile everything one controller owns (e.g. after a readiness gate changed)."""
        for controller in self.controllers:
            if controller.name == name:
                for key in controller.initial_keys():
                    self.queue.add((controller, key))

    def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.queue.idle():
                return True
            time.sleep(0.005)
        return False
