"""One run per target at a time.

A run that targets a cluster holds a ``coordination.k8s.io`` Lease there (see
``meshops.drivers.kube_lease``); runs without a cluster hold a lock file in the state
directory. Both follow the Lease rules: the holder renews, and a lock whose holder
stopped renewing for longer than its duration is taken over.
"""

from __future__ import annotations

import fcntl
import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

from meshops.domain.errors import LockHeld
from meshops.domain.locks import LockLost, holder_identity, holder_is_dead, paused_holder, run_of

__all__ = ["BasicLock", "FileLock", "LockLost", "LockRenewer", "RunLock", "holder_identity", "paused_holder"]


class BasicLock(Protocol):
    """What any lock does: take, renew, give back."""

    name: str
    duration: float

    def acquire(self, holder: str) -> None: ...
    def renew(self) -> None: ...  # raises LockLost when another holder has it
    def release(self) -> None: ...


@runtime_checkable
class RunLock(BasicLock, Protocol):
    """A run's lock: also looked at by the fence, and kept (paused) for a run that exits 130."""

    def verify(self) -> None: ...  # raises LockLost when another holder has it; changes nothing
    # Keep the lock for a run that stopped to wait (exit 130): marked paused with its run id,
    # so no other run takes it until that run resumes or is abandoned.
    def pause(self, run_id: str) -> None: ...
    def abandon(self, run_id: str) -> bool: ...


class FileLock:
    """A lease kept in a JSON file; ``flock`` makes the check-and-take atomic."""

    def __init__(self, path: str | Path, *, duration: float = 30.0, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.name = str(self.path)
        self.duration = duration
        self._clock = clock
        self._holder: str | None = None

    def _update(self, fn: Callable[[dict[str, object] | None], dict[str, object] | None]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".flock"), "a+") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            try:
                current = json.loads(self.path.read_text()) if self.path.exists() else None
            except (json.JSONDecodeError, OSError):
                current = None
            new = fn(current)
            if new is None:
                self.path.unlink(missing_ok=True)
            elif new is not current:
                tmp = self.path.with_suffix(".tmp")
                tmp.write_text(json.dumps(new))
                tmp.replace(self.path)

    def acquire(self, holder: str) -> None:
        now = self._clock()

        def take(cur: dict[str, object] | None) -> dict[str, object]:
            paused = str(cur.get("paused_run") or "") if cur else ""
            if paused and paused != run_of(holder):
                at = float(str(cur.get("paused_at", 0))) if cur else 0.0
                raise LockHeld(holder=paused_holder(paused), lock=self.name,
                               since=datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds") if at else "?")
            if cur and not paused and cur.get("holder") != holder and not holder_is_dead(str(cur.get("holder"))):
                renewed = float(str(cur.get("renewed", 0)))
                if renewed + float(str(cur.get("duration", self.duration))) > now:
                    since = datetime.fromtimestamp(float(str(cur.get("acquired", renewed))), UTC)
                    raise LockHeld(holder=str(cur.get("holder")), since=since.isoformat(timespec="seconds"), lock=self.name)
            acquired = cur.get("acquired", now) if cur and cur.get("holder") == holder else now
            return {"holder": holder, "acquired": acquired, "renewed": now, "duration": self.duration}

        self._update(take)
        self._holder = holder

    def renew(self) -> None:
        if self._holder is None:
            return
        now, holder = self._clock(), self._holder

        lost: list[str] = []

        def bump(cur: dict[str, object] | None) -> dict[str, object] | None:
            if cur is None or cur.get("holder") != holder:
                lost.append(str(cur.get("holder")) if cur else "nobody")
                return cur
            return {**cur, "renewed": now}

        self._update(bump)
        if lost:
            raise LockLost(f"{self.name} is now held by {lost[0]}")

    def verify(self) -> None:
        holder = self._holder
        if holder is None:
            return
        try:
            cur = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError):
            cur = None
        if not cur or cur.get("holder") != holder:
            raise LockLost(f"{self.name} is now held by {cur.get('holder') if cur else 'nobody'}")

    def pause(self, run_id: str) -> None:
        holder, self._holder = self._holder, None
        if holder is None:
            return
        now = self._clock()
        self._update(lambda cur: {**cur, "paused_run": run_id, "paused_at": now}
                     if cur and cur.get("holder") == holder else cur)

    def abandon(self, run_id: str) -> bool:
        found: list[bool] = []

        def drop(cur: dict[str, object] | None) -> dict[str, object] | None:
            if cur and (cur.get("paused_run") == run_id or run_of(str(cur.get("holder"))) == run_id):
                found.append(True)
                return None
            return cur

        self._update(drop)
        return bool(found)

    def release(self) -> None:
        holder = self._holder
        self._holder = None
        if holder is None:
            return
        self._update(lambda cur: None if cur and cur.get("holder") == holder else cur)


class LockRenewer:
    """Renews a lock in the background every third of its duration until stopped."""

    def __init__(self, lock: RunLock, *, on_error: Callable[[Exception], None],
                 on_renewed: Callable[[], None] = lambda: None) -> None:
        self.lock = lock
        self._stop = threading.Event()
        self._on_error = on_error
        self._on_renewed = on_renewed
        self._thread = threading.Thread(target=self._loop, name="lock-renewer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        interval = max(0.5, self.lock.duration / 4)
        while not self._stop.wait(interval):
            try:
                self.lock.renew()
            except Exception as exc:  # the fence decides: a changed holder at once, a failure once late
                self._on_error(exc)
            else:
                self._on_renewed()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
