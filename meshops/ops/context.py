"""What a running step may use, and so what the operations it calls on its behalf may use.

The engine builds one ``StepContext`` per attempt and hands it to the step, which passes it
down to the shared operations in this layer (restarts, waits, DNS sends, gate watches): its
drivers, its injected clock and sleep, its deadline and stop flag, its log.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Protocol

from meshops.domain.errors import Interrupted, StepError
from meshops.drivers.api import Drivers


class StepTimeout(StepError):
    def __init__(self, message: str) -> None:
        super().__init__(message, temporary=False)


class Logger(Protocol):
    def info(self, event: str, **kw: Any) -> Any: ...
    def warning(self, event: str, **kw: Any) -> Any: ...
    def error(self, event: str, **kw: Any) -> Any: ...
    def debug(self, event: str, **kw: Any) -> Any: ...


class Approvals(Protocol):
    """How a gate learns that a human said yes (``meshops approve RUN STEP``)."""

    def is_approved(self, step_key: str) -> bool: ...
    def wait(self, step_key: str, *, deadline: float, check: Callable[[], None]) -> bool: ...


class Progress(Protocol):
    # deadline: when the wait gives up (the clock's seconds), for heartbeats that say how long is left.
    def update(self, *, done: int, total: int, label: str = "", deadline: float | None = None) -> None: ...


class _NoProgress:
    def update(self, *, done: int, total: int, label: str = "", deadline: float | None = None) -> None:
        return None


class RunCache:
    """What one step of a run may leave for a later step of the same run and session to reuse
    (a mesh snapshot discover took, which precheck may read again if it is fresh enough).

    It belongs to the run: the engine makes one per run and shares it among that run's steps;
    nothing is kept at module level, so no run (or test) sees another's values. Never journaled:
    a resumed session starts empty and reads afresh.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[Hashable, tuple[float, Any]] = {}

    def get(self, key: Hashable, *, now: float, max_age: float) -> Any | None:
        """The value stored under ``key`` at most ``max_age`` seconds before ``now``, else None."""
        with self._lock:
            hit = self._entries.get(key)
        if hit is None or now - hit[0] > max_age:
            return None
        return hit[1]

    def put(self, key: Hashable, value: Any, *, now: float) -> None:
        with self._lock:
            self._entries[key] = (now, value)


@dataclass(kw_only=True)
class StepContext:
    """Everything a running step may use. Built by the engine, one per attempt."""

    run_id: str
    step_id: str
    step_key: str  # step id, plus ``[i]`` for a foreach item
    attempt: int
    item: Any
    log: Logger
    clock: Callable[[], float]
    sleep_fn: Callable[[float], None]
    deadline: float | None
    stop_requested: Callable[[], bool]
    drivers: Drivers
    approvals: Approvals
    interactive: bool = False
    assume_yes: bool = False
    progress: Progress = field(default_factory=_NoProgress)
    # When this step (or foreach item) was first started, across resumes: gates expire from it.
    first_started: float | None = None
    # Asks the person at the terminal; None when there is nobody to ask.
    confirm: Callable[[str], bool] | None = None
    # Filled by the engine on resume: what an earlier attempt recorded as done.
    notes: dict[str, Any] = field(default_factory=dict)
    # Facts this step recorded in earlier attempts or sessions (latest value per name), and how
    # to record one: durably, before the step goes on. "install begun" before acting and
    # "installed" after, so a retry, a resume or an undo knows what this run itself created.
    facts: dict[str, Any] = field(default_factory=dict)
    record_fact: Callable[[str, Any], None] | None = None
    # A private directory under the run's state dir for files handed to subprocesses; the
    # engine empties it when the run resumes. None: use the system's temp directory.
    temp_dir: str | None = None
    # Raises when the run no longer holds its lock (the engine's fence): checked in check().
    fence: Callable[[], None] | None = None
    # Shared by the run's steps (the engine hands the same one to each); see RunCache.
    cache: RunCache = field(default_factory=RunCache)

    def fact(self, name: str, value: Any) -> None:
        """Record ``name = value`` for this step (journaled by the engine before returning)."""
        if self.record_fact is not None:
            self.record_fact(name, value)
        else:
            self.facts[name] = value

    def remaining(self) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - self.clock())

    def check(self) -> None:
        """Raise if the run is being stopped or this step is out of time. Call it between actions."""
        if self.fence is not None:
            self.fence()
        if self.stop_requested():
            raise Interrupted(f"stopped during {self.step_key}; resume with: meshops resume {self.run_id}")
        if self.deadline is not None and self.clock() >= self.deadline:
            raise StepTimeout(f"{self.step_key} ran out of time")

    def sleep(self, seconds: float) -> None:
        """Sleep, but never past the deadline, and wake early enough to notice a stop request."""
        end = self.clock() + seconds
        if self.deadline is not None and end > self.deadline:
            end = self.deadline
        while True:
            self.check()
            left = end - self.clock()
            if left <= 0:
                break
            self.sleep_fn(min(left, 0.5))
        self.check()

    def wait_budget(self, default: float) -> float:
        """How long a wait may block: the step's remaining time, or ``default`` without a timeout."""
        left = self.remaining()
        return default if left is None else left


