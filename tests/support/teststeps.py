"""Step types for engine tests. Loaded through MESHOPS_STEP_MODULES, like any outside plugin."""

from __future__ import annotations

import os
import time
from pathlib import Path

from meshops.domain.errors import PermanentStepError, TemporaryStepError
from meshops.steps.base import Change, NoOutputs, Step, StepContext, StepInputs, StepOutputs, StepPlan
from meshops.steps.registry import register


class WriteInputs(StepInputs):
    path: str
    content: str = "x"
    pause: float = 0.0  # real seconds to dwell after writing, so a test can kill the process mid-step
    pause_before: float = 0.0  # real seconds to dwell before acting


class WriteOutputs(StepOutputs):
    path: str
    created: bool


@register
class WriteFile(Step[WriteInputs, WriteOutputs]):
    """Writes a file if it is not already right (idempotent); undo removes it."""

    name = "test.write_file"
    Inputs = WriteInputs
    Outputs = WriteOutputs

    def plan(self, inputs: WriteInputs, ctx: StepContext) -> StepPlan:
        p = Path(inputs.path)
        if p.exists() and p.read_text() == inputs.content:
            return StepPlan()
        return StepPlan(changes=(Change(action="create", target=inputs.path),))

    def run(self, inputs: WriteInputs, ctx: StepContext) -> WriteOutputs:
        p = Path(inputs.path)
        _dwell(inputs.pause_before, ctx)
        created = not (p.exists() and p.read_text() == inputs.content)
        if created:
            tmp = p.with_suffix(".tmp")
            tmp.write_text(inputs.content)
            tmp.replace(p)
        # A log of every real action, so tests can count side effects across resumes.
        with open(p.parent / "actions.log", "a") as fh:
            fh.write(f"write {p.name} created={created}\n")
        _dwell(inputs.pause, ctx)
        return WriteOutputs(path=str(p), created=created)

    def undo(self, inputs: WriteInputs, outputs: WriteOutputs | None, ctx: StepContext) -> None:
        p = Path(inputs.path)
        if not p.parent.is_dir():
            return  # never written: nothing to undo
        if p.exists():
            p.unlink()
        with open(p.parent / "actions.log", "a") as fh:
            fh.write(f"undo {p.name}\n")


def _dwell(seconds: float, ctx: StepContext) -> None:
    end = time.time() + seconds
    while time.time() < end:
        ctx.check()
        time.sleep(0.005)


class FlakyInputs(StepInputs):
    failures: int = 1  # temporary failures before success
    permanent: bool = False
    delay: float | None = None


class FlakyOutputs(StepOutputs):
    attempts: int


@register
class Flaky(Step[FlakyInputs, FlakyOutputs]):
    name = "test.flaky"
    Inputs = FlakyInputs
    Outputs = FlakyOutputs

    def run(self, inputs: FlakyInputs, ctx: StepContext) -> FlakyOutputs:
        if ctx.attempt <= inputs.failures:
            if inputs.permanent:
                raise PermanentStepError(f"permanent failure on attempt {ctx.attempt}")
            raise TemporaryStepError(f"temporary failure on attempt {ctx.attempt}", delay=inputs.delay)
        return FlakyOutputs(attempts=ctx.attempt)

    def undo(self, inputs: FlakyInputs, outputs: FlakyOutputs | None, ctx: StepContext) -> None:
        return None


class SlowInputs(StepInputs):
    seconds: float


@register
class Slow(Step[SlowInputs, NoOutputs]):
    """Sleeps through the context (the injected clock), so timeouts are testable without waiting."""

    name = "test.slow"
    Inputs = SlowInputs

    def run(self, inputs: SlowInputs, ctx: StepContext) -> NoOutputs:
        ctx.sleep(inputs.seconds)
        return NoOutputs()

    def undo(self, inputs: SlowInputs, outputs: NoOutputs | None, ctx: StepContext) -> None:
        return None


class UndoFailsInputs(StepInputs):
    marker: str = ""


@register
class UndoFails(Step[UndoFailsInputs, NoOutputs]):
    name = "test.undo_fails"
    Inputs = UndoFailsInputs

    def run(self, inputs: UndoFailsInputs, ctx: StepContext) -> NoOutputs:
        return NoOutputs()

    def undo(self, inputs: UndoFailsInputs, outputs: NoOutputs | None, ctx: StepContext) -> None:
        raise PermanentStepError("cannot undo this one")


class UndoFlakyInputs(StepInputs):
    marker: str
    failures: int = 1  # temporary failures of the undo before it works


@register
class UndoFlaky(Step[UndoFlakyInputs, NoOutputs]):
    """Its undo fails with a temporary error ``failures`` times (counted in the marker file)."""

    name = "test.undo_flaky"
    Inputs = UndoFlakyInputs

    def run(self, inputs: UndoFlakyInputs, ctx: StepContext) -> NoOutputs:
        return NoOutputs()

    def undo(self, inputs: UndoFlakyInputs, outputs: NoOutputs | None, ctx: StepContext) -> None:
        marker = Path(inputs.marker)
        tries = int(marker.read_text()) if marker.exists() else 0
        marker.write_text(str(tries + 1))
        if tries < inputs.failures:
            raise TemporaryStepError(f"API blip {tries + 1}")


@register
class OneWay(Step[UndoFailsInputs, NoOutputs]):
    name = "test.one_way"
    Inputs = UndoFailsInputs
    irreversible = True

    def run(self, inputs: UndoFailsInputs, ctx: StepContext) -> NoOutputs:
        return NoOutputs()


class EchoInputs(StepInputs):
    value: object = None
    count: int = 0


class EchoOutputs(StepOutputs):
    value: object = None
    count: int = 0
    pid: int = 0


@register
class Echo(Step[EchoInputs, EchoOutputs]):
    name = "test.echo"
    Inputs = EchoInputs
    Outputs = EchoOutputs

    def plan(self, inputs: EchoInputs, ctx: StepContext) -> StepPlan:
        return StepPlan(changes=(Change(action="call", target="echo", detail=repr(inputs.value)),))

    def run(self, inputs: EchoInputs, ctx: StepContext) -> EchoOutputs:
        return EchoOutputs(value=inputs.value, count=inputs.count, pid=os.getpid())

    def undo(self, inputs: EchoInputs, outputs: EchoOutputs | None, ctx: StepContext) -> None:
        return None


class RefuseInputs(StepInputs):
    message: str = "refused"


@register
class Refuse(Step[RefuseInputs, NoOutputs]):
    """A read-only check that refuses (BadInput), as a precheck does."""

    name = "test.refuse"
    Inputs = RefuseInputs
    read_only = True

    def run(self, inputs: RefuseInputs, ctx: StepContext) -> NoOutputs:
        from meshops.domain.errors import BadInput

        raise BadInput(inputs.message)

    def undo(self, inputs: RefuseInputs, outputs: NoOutputs | None, ctx: StepContext) -> None:
        return None


class SneakyInputs(StepInputs):
    name: str = "sneaky"


class SneakyOutputs(StepOutputs):
    existed: bool


@register
class SneakyRead(Step[SneakyInputs, SneakyOutputs]):
    """Claims to only read but writes to Kubernetes and runs istioctl install: a bug that
    ``meshops plan`` must keep harmless (its drivers record writes instead of making them)."""

    name = "test.sneaky_read"
    Inputs = SneakyInputs
    Outputs = SneakyOutputs
    read_only = True

    def run(self, inputs: SneakyInputs, ctx: StepContext) -> SneakyOutputs:
        kube = ctx.drivers.kube
        existed = kube.get("v1", "ConfigMap", inputs.name, "default") is not None
        kube.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": inputs.name, "namespace": "default"}})
        ctx.drivers.istioctl("1.24.1").run(["install", "-y", "--revision", "x"])
        ctx.drivers.istioctl("1.24.1").run(["version", "--remote=false"])
        return SneakyOutputs(existed=existed)
