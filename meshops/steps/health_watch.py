"""Step types ``health.http_probe`` and ``health.promql``: a watch of gates as a playbook step.

The gates and the watch itself are ``meshops.ops.health``.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator

from meshops.domain.durations import parse_duration
from meshops.ops.health import ProbeTarget, check_promql, http_gate, promql_gate, watch
from meshops.steps.base import Change, Step, StepContext, StepInputs, StepOutputs, StepPlan
from meshops.steps.registry import register


def _duration(v: str | float) -> str | float:
    parse_duration(v)
    return v


class _WatchInputs(StepInputs):
    duration: str | float = "60s"
    interval: str | float = "10s"
    failure_threshold: Annotated[int, Field(ge=1)] = 1

    @field_validator("duration", "interval")
    @classmethod
    def _is_duration(cls, v: str | float) -> str | float:
        return _duration(v)


class HttpProbeInputs(_WatchInputs):
    urls: Annotated[list[str], Field(min_length=1)]
    connect_to: str | None = None  # host:port every probe is sent to
    timeout: str | float = "5s"
    expect_text: str | None = None


class WatchOutputs(StepOutputs):
    report: dict[str, Any]


@register
class HttpProbeStep(Step[HttpProbeInputs, WatchOutputs]):
    """Probes URLs every ``interval`` for ``duration``; fails on ``failure_threshold`` failures in a row."""

    name = "health.http_probe"
    Inputs = HttpProbeInputs
    Outputs = WatchOutputs
    needs = frozenset({"http"})
    side_effect_free = True

    def plan(self, inputs: HttpProbeInputs, ctx: StepContext) -> StepPlan:
        return StepPlan(changes=(Change(action="wait", target=", ".join(inputs.urls),
                                        detail=f"probe for {inputs.duration} every {inputs.interval}"),))

    def run(self, inputs: HttpProbeInputs, ctx: StepContext) -> WatchOutputs:
        prober = ctx.drivers.http()
        gates = [http_gate(prober, ProbeTarget(url=u, connect_to=inputs.connect_to, expect_text=inputs.expect_text,
                                               timeout=parse_duration(inputs.timeout))) for u in inputs.urls]
        report = watch(gates, duration=parse_duration(inputs.duration), interval=parse_duration(inputs.interval),
                       clock=ctx.clock, sleep=ctx.sleep, failure_threshold=inputs.failure_threshold,
                       on_result=lambda r: None if r.ok else ctx.log.warning("gate.failed", gate=r.name, detail=r.detail))
        return WatchOutputs(report=report.as_dict())

    def undo(self, inputs: HttpProbeInputs, outputs: WatchOutputs | None, ctx: StepContext) -> None:
        return None


class PromQLInputs(_WatchInputs):
    prometheus: Annotated[str, Field(min_length=1)]
    exprs: Annotated[list[str], Field(min_length=1)]
    window: str | float = "0s"

    @field_validator("exprs")
    @classmethod
    def _valid(cls, v: list[str]) -> list[str]:
        for expr in v:
            check_promql(expr)
        return v


@register
class PromQLStep(Step[PromQLInputs, WatchOutputs]):
    """Evaluates PromQL conditions every ``interval`` for ``duration``, the first after ``window``."""

    name = "health.promql"
    Inputs = PromQLInputs
    Outputs = WatchOutputs
    needs = frozenset({"prometheus"})
    side_effect_free = True

    def plan(self, inputs: PromQLInputs, ctx: StepContext) -> StepPlan:
        return StepPlan(changes=(Change(action="wait", target=inputs.prometheus,
                                        detail=f"{len(inputs.exprs)} condition(s) for {inputs.duration}"),))

    def run(self, inputs: PromQLInputs, ctx: StepContext) -> WatchOutputs:
        client = ctx.drivers.prometheus(inputs.prometheus)
        window = parse_duration(inputs.window)
        gates = [promql_gate(client, e, window=window) for e in inputs.exprs]
        report = watch(gates, duration=max(parse_duration(inputs.duration), window),
                       interval=parse_duration(inputs.interval), clock=ctx.clock, sleep=ctx.sleep,
                       failure_threshold=inputs.failure_threshold,
                       on_result=lambda r: None if r.ok else ctx.log.warning("gate.failed", gate=r.name, detail=r.detail))
        return WatchOutputs(report=report.as_dict())

    def undo(self, inputs: PromQLInputs, outputs: WatchOutputs | None, ctx: StepContext) -> None:
        return None
