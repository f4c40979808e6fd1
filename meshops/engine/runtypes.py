"""The values the engine takes and gives: options, results, plans, the stop flag, approvals."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from meshops.domain.errors import MeshopsError
from meshops.engine.journal import RunState, StateStore
from meshops.steps.base import Change, Progress


class StepFailed(MeshopsError):
    def __init__(self, key: str, message: str, *, refused: bool = False, hint: str | None = None) -> None:
        super().__init__(f"step {key} failed: {message}", hint=hint)
        self.key = key
        self.reason = message
        # The step refused its input (BadInput) before acting: if nothing before it changed
        # anything either, the run ends as bad input (exit 2), not as a failure to roll back.
        self.refused = refused


@dataclass(frozen=True, kw_only=True)
class RunResult:
    run_id: str
    status: str  # succeeded | rolled_back | frozen | failed | rollback_failed | interrupted
    message: str = ""
    failed_step: str | None = None


@dataclass(frozen=True, kw_only=True)
class PlannedStep:
    step_id: str
    uses: str
    inputs: dict[str, Any] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)
    predictable: bool = True
    skipped: bool = False
    note: str = ""
    error: str | None = None
    # What a read-only step found when it ran to plan (the CLI tells "nothing to do" from it).
    outputs: dict[str, Any] | None = None


@dataclass(kw_only=True)
class EngineOptions:
    assume_yes: bool = False
    interactive: bool = False
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    # Real elapsed time, for the lock fence (the lease is renewed in real time whatever `clock` says).
    monotonic: Callable[[], float] = time.monotonic
    rng: random.Random = field(default_factory=random.Random)
    progress: Callable[[str], Progress] | None = None
    confirm: Callable[[str], bool] | None = None
    # Told the run id once the run exists (the CLI prints it at once, whatever the outcome).
    on_started: Callable[[str], None] | None = None


class StopFlag:
    """Set by SIGINT/SIGTERM; the engine stops at the next safe point."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def __call__(self) -> bool:
        return self._event.is_set()


class JournalApprovals:
    """Approvals recorded in the journal by ``meshops approve`` (possibly from another process)."""

    def __init__(self, store: StateStore, run_id: str, sleep: Callable[[float], None], clock: Callable[[], float]) -> None:
        self.store, self.run_id, self._sleep, self._clock = store, run_id, sleep, clock

    def is_approved(self, step_key: str) -> bool:
        return step_key in RunState.replay(self.run_id, self.store.records(self.run_id)).approvals

    def wait(self, step_key: str, *, deadline: float, check: Callable[[], None]) -> bool:
        # The journal is a file or a ConfigMap written by another process; a short poll of
        # it is the only signal there is, and approvals are human-scale events.
        while True:
            if self.is_approved(step_key):
                return True
            check()
            left = deadline - self._clock()
            if left <= 0:
                return False
            self._sleep(min(1.0, left))
