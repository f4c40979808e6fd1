"""Switchover steps when external-dns owns the record (``--dns-owner external-dns``).

external-dns would revert any weight meshops wrote into Route53, so meshops drives what
external-dns reads instead: the ``external-dns.alpha.kubernetes.io/set-identifier`` and
``aws-weight`` annotations on each cluster's gateway Service, and waits until Route53 shows
the result. Two clusters and two controllers make two separate changes, so every move
raises a weight before it lowers the other (target up before source down; on the way
back, source up before target down): the weights never all reach zero.

- ``switchover.extdns_read`` (read-only) records the annotations as they were;
- ``switchover.extdns_prepare`` names the sets (the source's record becomes weighted first,
  then the target joins at weight 0); its undo puts the annotations back as they were;
- ``switchover.extdns_shift`` moves one step of the schedule and bakes like ``switchover.shift``.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from meshops.domain.durations import parse_duration
from meshops.domain.errors import DriverError, PermanentStepError, TemporaryStepError
from meshops.domain.weights import RecordSet
from meshops.ops.switchover_common import (
    bake,
    bake_seconds,
    build_gates,
    describe,
)
from meshops.steps.base import Change, Step, StepContext, StepInputs, StepOutputs, StepPlan
from meshops.steps.registry import register
from meshops.steps.switchover_inputs import ShiftSettings

PREFIX = "external-dns.alpha.kubernetes.io/"
HOSTNAME, SET_ID, WEIGHT = PREFIX + "hostname", PREFIX + "set-identifier", PREFIX + "aws-weight"
MANAGED = (HOSTNAME, SET_ID, WEIGHT)


class _Services(StepInputs):
    from_context: str
    to_context: str
    namespace: str = "istio-system"
    service: str = "istio-ingressgateway"


class _Route53Wait(_Services):
    zone_id: str
    name: str
    type: str
    source_id: str
    target_id: str
    wait_timeout: str | float = "5m"
    poll_interval: str | float = "5s"


def _service(ctx: StepContext, context: str, inputs: _Services) -> dict[str, Any]:
    svc: dict[str, Any] | None = ctx.drivers.kube_for(context).get("v1", "Service", inputs.service, inputs.namespace)
    if svc is None:
        raise PermanentStepError(f"context {context!r} has no Service {inputs.namespace}/{inputs.service}")
    return svc


def _annotations(svc: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in ((svc.get("metadata") or {}).get("annotations") or {}).items() if k in MANAGED}


def _hostnames(value: str | None) -> list[str]:
    return [h.strip().lower().rstrip(".") for h in (value or "").split(",") if h.strip()]


def _annotate(ctx: StepContext, context: str, inputs: _Services, values: dict[str, str | None]) -> bool:
    """Merge-patch the managed annotations (None removes one); False when they already are so."""
    current = _annotations(_service(ctx, context, inputs))
    if all(current.get(k) == v for k, v in values.items()):
        return False
    ctx.drivers.kube_for(context).patch("v1", "Service", inputs.service, {"metadata": {"annotations": values}},
                                        inputs.namespace)
    ctx.log.info("switchover.annotated", context=context, annotations=values)
    return True


def _wait_route53(ctx: StepContext, inputs: _Route53Wait, want: dict[str, int | None], *, simple_ok: bool = False) -> None:
    """Poll Route53 until each set identifier has the wanted weight (None: the record is gone)."""
    r53 = ctx.drivers.route53()
    deadline = ctx.clock() + parse_duration(inputs.wait_timeout)
    poll = parse_duration(inputs.poll_interval)
    while True:
        records = [r for r in r53.list_records(inputs.zone_id, inputs.name) if r.type == inputs.type]
        if _shows(records, want, simple_ok=simple_ok):
            return
        if ctx.clock() + poll > deadline:
            raise TemporaryStepError(f"Route53 does not show {want} for {inputs.name} after {inputs.wait_timeout} "
                                     f"(it shows {describe(records)}); is external-dns running in both clusters?")
        ctx.sleep(poll)


def _shows(records: list[RecordSet], want: dict[str, int | None], *, simple_ok: bool) -> bool:
    by_id = {r.set_identifier: r for r in records if r.weighted}
    if any(not r.weighted for r in records) and not simple_ok:
        return False
    for set_id, weight in want.items():
        if weight is None:
            if set_id in by_id:
                return False
        elif set_id not in by_id or by_id[set_id].weight != weight:
            return False
    return True


# ---- switchover.extdns_read ----------------------------------------------------------------


class ReadOutputs(StepOutputs):
    source: dict[str, str]
    target: dict[str, str]


@register
class ExtDnsRead(Step[_Services, ReadOutputs]):
    """The external-dns annotations of both gateway Services, as they were before the switchover."""

    name = "switchover.extdns_read"
    Inputs = _Services
    Outputs = ReadOutputs
    read_only = True
    side_effect_free = True
    needs = frozenset({"kube"})

    def run(self, inputs: _Services, ctx: StepContext) -> ReadOutputs:
        return ReadOutputs(source=_annotations(_service(ctx, inputs.from_context, inputs)),
                           target=_annotations(_service(ctx, inputs.to_context, inputs)))

    def undo(self, inputs: _Services, outputs: ReadOutputs | None, ctx: StepContext) -> None:
        return None


# ---- switchover.extdns_prepare --------------------------------------------------------------


class ExtPrepareInputs(_Route53Wait):
    original_source: dict[str, str]
    original_target: dict[str, str]
    initial_weights: Annotated[list[int], Field(min_length=2, max_length=2)]


class ExtPrepareOutputs(StepOutputs):
    changed: bool


@register
class ExtDnsPrepare(Step[ExtPrepareInputs, ExtPrepareOutputs]):
    """Source annotated as weighted set first, then the target joins at weight 0; waits for Route53 each time."""

    name = "switchover.extdns_prepare"
    Inputs = ExtPrepareInputs
    Outputs = ExtPrepareOutputs
    needs = frozenset({"kube", "route53"})

    def plan(self, inputs: ExtPrepareInputs, ctx: StepContext) -> StepPlan:
        s, t = inputs.initial_weights
        return StepPlan(changes=(
            Change(action="patch", target=f"Service {inputs.namespace}/{inputs.service} in {inputs.from_context}",
                   detail=f"set-identifier={inputs.source_id} aws-weight={s}"),
            Change(action="patch", target=f"Service {inputs.namespace}/{inputs.service} in {inputs.to_context}",
                   detail=f"hostname+={inputs.name} set-identifier={inputs.target_id} aws-weight={t}"),
            Change(action="wait", target="Route53", detail="until external-dns has written both"),
        ))

    def run(self, inputs: ExtPrepareInputs, ctx: StepContext) -> ExtPrepareOutputs:
        s, t = inputs.initial_weights
        name = inputs.name.rstrip(".")
        changed = _annotate(ctx, inputs.from_context, inputs, {SET_ID: inputs.source_id, WEIGHT: str(s)})
        _wait_route53(ctx, inputs, {inputs.source_id: s})
        hosts = _hostnames(_annotations(_service(ctx, inputs.to_context, inputs)).get(HOSTNAME))
        hostname = ",".join([*hosts, name]) if name not in hosts else ",".join(hosts)
        changed |= _annotate(ctx, inputs.to_context, inputs, {HOSTNAME: hostname, SET_ID: inputs.target_id,
                                                              WEIGHT: str(t)})
        _wait_route53(ctx, inputs, {inputs.source_id: s, inputs.target_id: t})
        return ExtPrepareOutputs(changed=changed)

    def undo(self, inputs: ExtPrepareInputs, outputs: ExtPrepareOutputs | None, ctx: StepContext) -> None:
        # The target leaves first: a simple source record cannot come back beside weighted ones.
        restore_t: dict[str, str | None] = {k: inputs.original_target.get(k) for k in MANAGED}
        restore_s: dict[str, str | None] = {k: inputs.original_source.get(k) for k in MANAGED}
        _annotate(ctx, inputs.to_context, inputs, restore_t)
        target_weight = restore_t.get(WEIGHT)
        target_stays = restore_t.get(SET_ID) == inputs.target_id and target_weight is not None
        _wait_route53(ctx, inputs, {inputs.target_id: int(target_weight) if target_stays and target_weight else None},
                      simple_ok=True)
        _annotate(ctx, inputs.from_context, inputs, restore_s)
        if restore_s.get(SET_ID) is None:
            _wait_route53(ctx, inputs, {inputs.source_id: None}, simple_ok=True)


# ---- switchover.extdns_shift ----------------------------------------------------------------


class ExtShiftInputs(ShiftSettings, _Route53Wait):
    ttl: Annotated[int, Field(ge=0)] = 60


class ExtShiftOutputs(StepOutputs):
    percent: int
    weights: list[int]
    bake_seconds: float
    report: dict[str, Any]


def _move(ctx: StepContext, inputs: ExtShiftInputs, weights: tuple[int, int], *, raise_first: str) -> None:
    """Set both weights through the annotations, raising one before lowering the other."""
    s, t = weights
    order = [(inputs.from_context, inputs.source_id, s), (inputs.to_context, inputs.target_id, t)]
    if raise_first == "target":
        order.reverse()
    want: dict[str, int | None] = {}
    r53 = ctx.drivers.route53()
    now = {r.set_identifier: r.weight for r in r53.list_records(inputs.zone_id, inputs.name) if r.weighted}
    for context, set_id, weight in order:
        if _annotate(ctx, context, inputs, {SET_ID: set_id, WEIGHT: str(weight)}) or now.get(set_id) != weight:
            want[set_id] = weight
            _wait_route53(ctx, inputs, {**{k: v for k, v in now.items() if k in (inputs.source_id, inputs.target_id)},
                                        **want})


@register
class ExtDnsShift(Step[ExtShiftInputs, ExtShiftOutputs]):
    """One step through the annotations (target up, then source down), then a bake watched by the gates."""

    name = "switchover.extdns_shift"
    Inputs = ExtShiftInputs
    Outputs = ExtShiftOutputs
    needs = frozenset({"kube", "route53", "http"})

    def plan(self, inputs: ExtShiftInputs, ctx: StepContext) -> StepPlan:
        return StepPlan(changes=(
            Change(action="patch", target=f"{inputs.to_context} aws-weight", detail=str(inputs.target_weight)),
            Change(action="patch", target=f"{inputs.from_context} aws-weight", detail=str(inputs.source_weight)),
            Change(action="wait", target="-", detail=f"Route53 shows it, then bake >= {inputs.bake}"),
        ))

    def run(self, inputs: ExtShiftInputs, ctx: StepContext) -> ExtShiftOutputs:
        _move(ctx, inputs, (inputs.source_weight, inputs.target_weight), raise_first="target")
        seconds = bake_seconds(bake=inputs.bake, ttl=inputs.ttl, allowance=inputs.propagation_allowance,
                               gate_window=inputs.gate_window, has_gates=bool(inputs.gates))
        gates = build_gates(ctx, probes=inputs.probes, connect_to=inputs.connect_to,
                            source_ingress=inputs.source_ingress, target_ingress=inputs.target_ingress,
                            source_label=inputs.from_context, target_label=inputs.to_context,
                            probe_timeout=parse_duration(inputs.probe_timeout), expect_text=inputs.expect_text,
                            prometheus=inputs.prometheus, gate_exprs=inputs.gates,
                            gate_window=parse_duration(inputs.gate_window))
        report = bake(ctx, gates, seconds=seconds, interval=parse_duration(inputs.probe_interval),
                      failure_threshold=inputs.failure_threshold, percent=inputs.percent)
        return ExtShiftOutputs(percent=inputs.percent, weights=[inputs.source_weight, inputs.target_weight],
                               bake_seconds=seconds, report=report.as_dict())

    def undo(self, inputs: ExtShiftInputs, outputs: ExtShiftOutputs | None, ctx: StepContext) -> None:
        try:
            _move(ctx, inputs, (inputs.initial_weights[0], inputs.initial_weights[1]), raise_first="source")
        except DriverError as exc:
            raise PermanentStepError(f"could not move the weights back through external-dns: {exc.message}") from None
