"""What a step type is, and what the engine hands it when it runs.

A step type is a class with typed ``Inputs`` and ``Outputs`` (pydantic models), and
``run``, ``plan`` and ``undo``. Steps are idempotent: they look before they act, because
a resumed run executes the interrupted step again. A step that cannot be undone says so
with ``irreversible = True``; the engine then records that rollback passed over it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict

from meshops.domain.durations import duration_value
from meshops.ops.context import Approvals as Approvals
from meshops.ops.context import Logger as Logger
from meshops.ops.context import Progress as Progress
from meshops.ops.context import StepContext as StepContext
from meshops.ops.context import StepTimeout as StepTimeout


class StepInputs(BaseModel):
    """Base for a step's inputs: unknown keys are errors. A templated number given to a
    text input becomes text (``"{{ index }}"`` renders to an int)."""

    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True, defer_build=True)


# A duration input (``30s``, ``5m``, ``1h30m`` or seconds). Steps use this one type rather than
# their own validator, so the step catalog knows the field and the quick validation path checks it.
Duration = Annotated[str | float, AfterValidator(duration_value)]


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
