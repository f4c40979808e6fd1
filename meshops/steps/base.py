"""What a step type is, and what the engine hands it when it runs.

A step type is a class with typed ``Inputs`` and ``Outputs`` (pydantic models), and
``run``, ``plan`` and ``undo``. Steps are idempotent: they look before they act, because
a resumed run executes the interrupted step again. A step that cannot be undone says so
with ``irreversible = True``; the engine then records that rollback passed over it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict

from meshops.domain.errors import Interrupted, StepError


class StepInputs(BaseModel):
    """Base for a step's inputs: unknown keys are errors. A templated number given to a
    text input becomes text (``"{{ index }}"`` renders to an int)."""

    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True, defer_build=True)


class StepOutputs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class NoInputs(StepInputs):
    pass


class NoOutputs(StepOutputs):
    pass


InT = TypeVar("InT", bound=StepInputs)
OutT = TypeVar("OutT", bound=StepOutputs)


@dataclass(frozen=True, kw_only=True)
class Change:
    """One thing a step would change, for ``meshops plan`` and ``--dry-run``."""

    action: str  # "create" | "update" | "patch" | "delete" | "restart" | "call" | "wait" | "none"
    target: str
    detail: str = ""


@dataclass(frozen=True, kw_only=True)
class StepPlan:
    changes: tuple[Change, ...] = ()
    predictable: bool = True
    note: str = ""

    @classmethod
    def unpredictable(cls, why: str) -> StepPlan:
        return cls(predictable=False, note=why)


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
    def update(self, *, done: int, total: int, label: str = "") -> None: ...


class _NoProgress:
    def update(self, *, done: int, total: int, label: str = "") -> None:
        return None


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
    drivers: Any  # meshops.drivers.DriverSet; typed loosely so steps need not import drivers to be tested
    approvals: Approvals
    interactive: bool = False
    assume_yes: bool = False
    dry_run: bool = False
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


class Step(Generic[InT, OutT]):
    """Base class of every step type. Subclasses set ``name``, ``Inputs``, ``Outputs``."""

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    Inputs: ClassVar[type[StepInputs]] = NoInputs
    Outputs: ClassVar[type[StepOutputs]] = NoOutputs
    irreversible: ClassVar[bool] = False
    # Which drivers the step uses ("kube", "istioctl", "route53", "prometheus", "http").
    # A playbook that needs "kube" locks its cluster and mirrors its journal there.
    needs: ClassVar[frozenset[str]] = frozenset()
    # Steps that touch nothing outside the process (no-op, log) need no "started" journal
    # record before they act: the outcome record alone makes them resumable.
    side_effect_free: ClassVar[bool] = False
    # Steps that only read (discover, precheck) really run during `meshops plan`, so the
    # steps after them can be planned from what they found.
    read_only: ClassVar[bool] = False

    def plan(self, inputs: InT, ctx: StepContext) -> StepPlan:
        return StepPlan.unpredictable(f"{self.name} does not predict its changes")

    def run(self, inputs: InT, ctx: StepContext) -> OutT:
        raise NotImplementedError

    def undo(self, inputs: InT, outputs: OutT | None, ctx: StepContext) -> None:
        """Reverse what ``run`` did. ``outputs`` is None when ``run`` did not finish. Must be idempotent."""
        if not self.irreversible:
            raise NotImplementedError(f"{self.name} declares no undo")
