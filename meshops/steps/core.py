"""Steps that need nothing but the engine: no-op, log, wait, fail."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from meshops.domain.durations import parse_duration
from meshops.domain.errors import PermanentStepError, TemporaryStepError
from meshops.steps.base import (
    Change,
    Duration,
    NoOutputs,
    Step,
    StepContext,
    StepInputs,
    StepOutputs,
    StepPlan,
)
from meshops.steps.registry import register


class NoopInputs(StepInputs):
    note: str = ""
    values: dict[str, Any] = Field(default_factory=dict)


class NoopOutputs(StepOutputs):
    values: dict[str, Any] = Field(default_factory=dict)


@register
class Noop(Step[NoopInputs, NoopOutputs]):
    """Does nothing; passes ``values`` through as outputs (handy for wiring and tests)."""

    name = "core.noop"
    Inputs = NoopInputs
    Outputs = NoopOutputs
    side_effect_free = True
    read_only = True

    def plan(self, inputs: NoopInputs, ctx: StepContext) -> StepPlan:
        return StepPlan(changes=(Change(action="none", target="-", detail=inputs.note),))

    def run(self, inputs: NoopInputs, ctx: StepContext) -> NoopOutputs:
        return NoopOutputs(values=inputs.values)

    def undo(self, inputs: NoopInputs, outputs: NoopOutputs | None, ctx: StepContext) -> None:
        return None


class LogInputs(StepInputs):
    message: Annotated[str, Field(min_length=1)]
    level: Annotated[str, Field(pattern="^(info|warning|error)$")] = "info"


@register
class Log(Step[LogInputs, NoOutputs]):
    name = "core.log"
    Inputs = LogInputs
    side_effect_free = True
    read_only = True

    def plan(self, inputs: LogInputs, ctx: StepContext) -> StepPlan:
        return StepPlan(changes=(Change(action="none", target="log", detail=inputs.message),))

    def run(self, inputs: LogInputs, ctx: StepContext) -> NoOutputs:
        getattr(ctx.log, inputs.level)("playbook.message", message=inputs.message)
        return NoOutputs()

    def undo(self, inputs: LogInputs, outputs: NoOutputs | None, ctx: StepContext) -> None:
        return None


class WaitInputs(StepInputs):
    duration: Duration


@register
class Wait(Step[WaitInputs, NoOutputs]):
    """Waits (a soak or a bake). Interruptible; a resumed run waits the full time again."""

    name = "core.wait"
    Inputs = WaitInputs
    side_effect_free = True

    def plan(self, inputs: WaitInputs, ctx: StepContext) -> StepPlan:
        return StepPlan(changes=(Change(action="wait", target="-", detail=f"{inputs.duration}"),))

    def run(self, inputs: WaitInputs, ctx: StepContext) -> NoOutputs:
        ctx.sleep(parse_duration(inputs.duration))
        return NoOutputs()

    def undo(self, inputs: WaitInputs, outputs: NoOutputs | None, ctx: StepContext) -> None:
        return None


class FailInputs(StepInputs):
    message: str = "failed on purpose"
    temporary: bool = False


@register
class Fail(Step[FailInputs, NoOutputs]):
    """Fails: for playbooks that must stop on a condition (``when``) with a clear message."""

    name = "core.fail"
    Inputs = FailInputs
    side_effect_free = True

    def plan(self, inputs: FailInputs, ctx: StepContext) -> StepPlan:
        return StepPlan(changes=(Change(action="none", target="-", detail=f"would fail: {inputs.message}"),))

    def run(self, inputs: FailInputs, ctx: StepContext) -> NoOutputs:
        if inputs.temporary:
            raise TemporaryStepError(inputs.message)
        raise PermanentStepError(inputs.message)

    def undo(self, inputs: FailInputs, outputs: NoOutputs | None, ctx: StepContext) -> None:
        return None
