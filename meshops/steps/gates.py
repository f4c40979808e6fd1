"""``gate.approve``: a human says yes before the run goes on.

Answered by ``--yes``, by the person at the terminal, or by ``meshops approve RUN STEP``
from anywhere that reaches the run's journal (another shell, a later CI job). A gate
expires ``timeout`` after it first opened, across resumes; ``on_timeout`` says what then.
With nobody to ask, the gate waits ``wait`` for an approval and then pauses the run
(exit 130, resumable) instead of hanging.
"""

from __future__ import annotations

from typing import Literal

from meshops.domain.durations import parse_duration
from meshops.domain.errors import AwaitingApproval, PermanentStepError
from meshops.steps.base import Change, Duration, Step, StepContext, StepInputs, StepOutputs, StepPlan
from meshops.steps.registry import register


class ApproveInputs(StepInputs):
    message: str = "approve to continue"
    timeout: Duration = "24h"
    wait: Duration = "0s"
    on_timeout: Literal["fail", "continue"] = "fail"


class ApproveOutputs(StepOutputs):
    approved: bool
    by: str


@register
class Approve(Step[ApproveInputs, ApproveOutputs]):
    name = "gate.approve"
    Inputs = ApproveInputs
    Outputs = ApproveOutputs

    def plan(self, inputs: ApproveInputs, ctx: StepContext) -> StepPlan:
        return StepPlan(changes=(Change(action="wait", target="approval", detail=inputs.message),))

    def run(self, inputs: ApproveInputs, ctx: StepContext) -> ApproveOutputs:
        opened = ctx.first_started if ctx.first_started is not None else ctx.clock()
        expires = opened + parse_duration(inputs.timeout)
        if ctx.approvals.is_approved(ctx.step_key):
            return ApproveOutputs(approved=True, by="meshops approve")
        if ctx.assume_yes:
            return ApproveOutputs(approved=True, by="--yes")
        if ctx.clock() >= expires:
            return self._expired(inputs, ctx)
        if ctx.interactive and ctx.confirm is not None:
            if ctx.confirm(f"{inputs.message} [{ctx.step_key}]"):
                return ApproveOutputs(approved=True, by="terminal")
            raise PermanentStepError(f"approval refused at {ctx.step_key}")
        how = f"meshops approve {ctx.run_id} {ctx.step_key}"
        ctx.log.warning("gate.waiting", message=inputs.message, approve_with=how, expires_in=round(expires - ctx.clock()))
        wait_until = min(expires, ctx.clock() + parse_duration(inputs.wait))
        if ctx.approvals.wait(ctx.step_key, deadline=wait_until, check=ctx.check):
            return ApproveOutputs(approved=True, by="meshops approve")
        if ctx.clock() >= expires:
            return self._expired(inputs, ctx)
        raise AwaitingApproval(
            f"{ctx.step_key} needs approval ({inputs.message}). Approve with `{how}`, then "
            f"`meshops resume {ctx.run_id}`; or pass --yes. The gate expires {inputs.timeout} after it opened.",
            step_key=ctx.step_key,
        )

    def _expired(self, inputs: ApproveInputs, ctx: StepContext) -> ApproveOutputs:
        if inputs.on_timeout == "continue":
            ctx.log.warning("gate.expired", on_timeout="continue")
            return ApproveOutputs(approved=False, by="timeout")
        raise PermanentStepError(f"approval for {ctx.step_key} expired after {inputs.timeout}")

    def undo(self, inputs: ApproveInputs, outputs: ApproveOutputs | None, ctx: StepContext) -> None:
        return None
