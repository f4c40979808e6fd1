"""Switchover steps that change Route53 when meshops owns the record.

- ``switchover.lower_ttl``: optionally lower the TTL first (one batch), then wait out the old one.
- ``switchover.prepare_dns``: health checks created or reused, then the simple record becomes
  a weighted pair (DELETE + CREATE in ONE batch; source keeps the traffic, target weight 0).
- ``switchover.shift``: one step of the schedule: both weights in ONE batch, INSYNC, then bake
  while the gates watch. Its undo is one batch back to the weights from before the switchover.

Every step reads the record group before it acts and sends only what is still missing, so a
resumed run repeats nothing; every undo works from ``switchover.read_dns``'s snapshot, so
it copes with a run that never finished. Each batch is validated before it is sent.

A shift resumed after its batch went out finds the weights in place and bakes at once: the
earlier attempt's change id is not journaled (Route53 cannot list pending changes), and the
bake's TTL + propagation allowance covers a change still propagating.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Annotated, Any

from pydantic import Field

from meshops.domain.durations import parse_duration
from meshops.domain.errors import DriverError, PermanentStepError
from meshops.domain.weights import Change as RChange
from meshops.domain.weights import ChangeBatch, RecordSet, replace_batch, shift_batch
from meshops.drivers.route53_api import HealthCheck, HealthCheckSpec, Route53Api
from meshops.ops.health import GateFailed, watch
from meshops.ops.switchover_common import (
    bake,
    bake_seconds,
    build_gates,
    describe,
    read_group,
    records_of,
    send,
    weighted_pair,
)
from meshops.steps.base import Change, Step, StepContext, StepInputs, StepOutputs, StepPlan
from meshops.steps.registry import register
from meshops.steps.switchover_inputs import ShiftSettings

RUN_TAG = "meshops-run"


class _DnsTarget(StepInputs):
    zone_id: str
    name: str
    type: str
    original: list[dict[str, Any]]
    insync_timeout: str | float = "10m"


# ---- switchover.lower_ttl ------------------------------------------------------------------


class LowerTtlInputs(_DnsTarget):
    ttl: Annotated[int, Field(ge=0)]


class LowerTtlOutputs(StepOutputs):
    old_ttl: int
    lowered: bool


def _ttl_batch(current: list[RecordSet], ttl_of: dict[tuple[str, str, str | None], int]) -> ChangeBatch | None:
    changes = [RChange(action="UPSERT", record=replace(r, ttl=ttl_of[r.key]))
               for r in current if r.alias is None and r.key in ttl_of and r.ttl != ttl_of[r.key]]
    return ChangeBatch(changes=tuple(changes), comment="meshops: TTL") if changes else None


@register
class LowerTtl(Step[LowerTtlInputs, LowerTtlOutputs]):
    """Lowers the record's TTL in one batch and waits out the old TTL, so later steps take effect sooner."""

    name = "switchover.lower_ttl"
    Inputs = LowerTtlInputs
    Outputs = LowerTtlOutputs
    needs = frozenset({"route53"})

    def _old(self, inputs: LowerTtlInputs) -> int:
        return max((r.ttl or 0 for r in records_of(inputs.original) if r.alias is None), default=0)

    def plan(self, inputs: LowerTtlInputs, ctx: StepContext) -> StepPlan:
        old = self._old(inputs)
        if old <= inputs.ttl:
            return StepPlan(note=f"TTL is already {old}s")
        return StepPlan(changes=(Change(action="update", target=f"{inputs.name} {inputs.type}", detail=f"TTL {old}s -> {inputs.ttl}s"),
                                 Change(action="wait", target="-", detail=f"{old}s for the old TTL to expire")))

    def run(self, inputs: LowerTtlInputs, ctx: StepContext) -> LowerTtlOutputs:
        old = self._old(inputs)
        if old <= inputs.ttl:
            return LowerTtlOutputs(old_ttl=old, lowered=False)
        r53 = ctx.drivers.route53()
        everything, current = read_group(r53, inputs.zone_id, inputs.name, inputs.type)
        batch = _ttl_batch(current, {r.key: inputs.ttl for r in current})
        if batch is not None:
            send(r53, inputs.zone_id, batch, everything, ctx, timeout=parse_duration(inputs.insync_timeout))
        # Resolvers may hold the old answer for the old TTL; a resumed run waits it out again.
        ctx.log.info("switchover.ttl_wait", old_ttl=old, new_ttl=inputs.ttl)
        ctx.sleep(old)
        return LowerTtlOutputs(old_ttl=old, lowered=True)

    def undo(self, inputs: LowerTtlInputs, outputs: LowerTtlOutputs | None, ctx: StepContext) -> None:
        r53 = ctx.drivers.route53()
        everything, current = read_group(r53, inputs.zone_id, inputs.name, inputs.type)
        original = {r.key: int(r.ttl or 0) for r in records_of(inputs.original) if r.alias is None}
        batch = _ttl_batch([r for r in current if r.ttl == inputs.ttl], original)
        if batch is not None:
            send(r53, inputs.zone_id, batch, everything, ctx, timeout=parse_duration(inputs.insync_timeout))


# ---- switchover.prepare_dns ----------------------------------------------------------------


class PrepareInputs(_DnsTarget):
    pair: Annotated[list[dict[str, Any]], Field(min_length=2, max_length=2)]
    source_ingress: str
    target_ingress: str
    health_checks: bool = True
    # "source"/"target" -> HealthCheckSpec fields, as switchover.plan_health_checks chose and proved them
    health_check_specs: dict[str, dict[str, Any]] = Field(default_factory=dict)


class PrepareOutputs(StepOutputs):
    health_checks: dict[str, str]  # set identifier -> health check id
    created_health_checks: list[str]
    converted: bool
    pair: list[dict[str, Any]]


def _spec(inputs: PrepareInputs, side: str) -> HealthCheckSpec:
    raw = inputs.health_check_specs.get(side)
    if raw is None:
        raise PermanentStepError(f"no health check was planned for the {side} ingress")
    return HealthCheckSpec(type=raw["type"], fqdn=raw.get("fqdn"), ip=raw.get("ip"), port=int(raw["port"]),
                           path=raw.get("path") or "/", interval=int(raw["interval"]), threshold=int(raw["threshold"]))


def _caller_reference(run_id: str, set_id: str) -> str:
    return f"meshops-{run_id}-{set_id}"[:64]


def _ours(checks: list[HealthCheck], run_id: str) -> list[str]:
    """Health checks this run created, known by their CallerReference: found again after a crash
    (even one between creating a check and tagging it)."""
    prefix = _caller_reference(run_id, "")
    return sorted(h.id for h in checks if h.caller_reference.startswith(prefix))


@register
class PrepareDns(Step[PrepareInputs, PrepareOutputs]):
    """Health checks for both ingresses, then the simple record becomes a weighted pair in ONE batch."""

    name = "switchover.prepare_dns"
    Inputs = PrepareInputs
    Outputs = PrepareOutputs
    needs = frozenset({"route53"})

    def plan(self, inputs: PrepareInputs, ctx: StepContext) -> StepPlan:
        original, pair = records_of(inputs.original), records_of(inputs.pair)
        changes = []
        if inputs.health_checks:
            for r, side in zip(pair, ("source", "target"), strict=True):
                spec = _spec(inputs, side)
                where = f"{spec.fqdn or spec.ip}:{spec.port}{spec.path if spec.type != 'TCP' else ''}"
                changes.append(Change(action="create", target=f"health check {r.set_identifier}",
                                      detail=f"{spec.type} {where} (or reuse a matching one)"))
        if any(not r.weighted for r in original):
            changes.append(Change(action="update", target=f"{inputs.name} {inputs.type}",
                                  detail=f"one batch: DELETE simple, CREATE {describe(pair)}"))
        return StepPlan(changes=tuple(changes))

    def run(self, inputs: PrepareInputs, ctx: StepContext) -> PrepareOutputs:
        r53 = ctx.drivers.route53()
        pair = records_of(inputs.pair)
        checks: dict[str, str] = {}
        created: list[str] = []
        if inputs.health_checks:
            checks, created = self._health_checks(r53, inputs, pair, ctx)
        everything, current = read_group(r53, inputs.zone_id, inputs.name, inputs.type)
        wanted = self._wanted(pair, current, checks)
        converted = False
        if set(current) != set(wanted):
            if any(not r.weighted for r in current):
                batch = replace_batch(current, wanted, comment="meshops: simple to weighted")
                converted = True
            else:
                batch = ChangeBatch(comment="meshops: weighted pair", changes=tuple(
                    RChange(action="UPSERT", record=r) for r in wanted if r not in current))
            send(r53, inputs.zone_id, batch, everything, ctx, timeout=parse_duration(inputs.insync_timeout))
        return PrepareOutputs(health_checks=checks, created_health_checks=created, converted=converted,
                              pair=[r.to_aws() for r in wanted])

    @staticmethod
    def _wanted(pair: list[RecordSet], current: list[RecordSet], checks: dict[str, str]) -> list[RecordSet]:
        """The pair as it should be now: weights as Route53 has them (if weighted), TTL as it is now."""
        now = {r.set_identifier: r for r in current}
        simple = [r for r in current if not r.weighted]
        out = []
        for r in pair:
            cur = now.get(r.set_identifier)
            w = cur.weight if cur is not None and cur.weight is not None else r.weight
            ttl = simple[0].ttl if simple and r.alias is None else (cur.ttl if cur is not None else r.ttl)
            out.append(replace(r, weight=w, ttl=ttl if r.alias is None else None,
                               health_check_id=checks.get(str(r.set_identifier), r.health_check_id)))
        return out

    def _health_checks(self, r53: Route53Api, inputs: PrepareInputs, pair: list[RecordSet],
                       ctx: StepContext) -> tuple[dict[str, str], list[str]]:
        existing = r53.list_health_checks()
        mine = set(_ours(existing, ctx.run_id))
        checks: dict[str, str] = {}
        created: list[str] = []
        missing: list[tuple[str, HealthCheckSpec]] = []
        for r, side in ((pair[0], "source"), (pair[1], "target")):
            spec = _spec(inputs, side)
            set_id = str(r.set_identifier)
            match = sorted((h for h in existing if spec.matches(h.config)), key=lambda h: (h.id not in mine, h.id))
            if match:
                checks[set_id] = match[0].id
                if match[0].id in mine:
                    created.append(match[0].id)
                ctx.log.info("switchover.health_check", set_identifier=set_id, id=match[0].id,
                             reused=match[0].id not in mine)
            else:
                missing.append((set_id, spec))

        def create(item: tuple[str, HealthCheckSpec]) -> HealthCheck:
            set_id, spec = item
            return r53.create_health_check(_caller_reference(ctx.run_id, set_id), spec, tags={
                RUN_TAG: ctx.run_id, "meshops-record": inputs.name, "Name": f"meshops {inputs.name} {set_id}"})

        # Both checks at once: each is two requests (create, tag), and the driver's limiter keeps
        # the pair within Route53's rate; one after the other only adds round trips.
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="healthcheck") as pool:
            made = list(pool.map(create, missing))
        for (set_id, _), hc in zip(missing, made, strict=True):
            checks[set_id] = hc.id
            created.append(hc.id)
            ctx.log.info("switchover.health_check", set_identifier=set_id, id=hc.id, created=True)
        return checks, sorted(created)

    def undo(self, inputs: PrepareInputs, outputs: PrepareOutputs | None, ctx: StepContext) -> None:
        r53 = ctx.drivers.route53()
        everything, current = read_group(r53, inputs.zone_id, inputs.name, inputs.type)
        original = records_of(inputs.original)
        if set(current) != set(original):
            batch = replace_batch(current, original, comment="meshops: restore the record", create="UPSERT")
            send(r53, inputs.zone_id, batch, everything, ctx, timeout=parse_duration(inputs.insync_timeout))
        if inputs.health_checks:
            for hc in self._claimed(r53, inputs, ctx):
                try:
                    r53.delete_health_check(hc)
                except DriverError as exc:
                    ctx.log.warning("switchover.health_check_kept", id=hc, error=exc.message)

    @staticmethod
    def _claimed(r53: Route53Api, inputs: PrepareInputs, ctx: StepContext) -> list[str]:
        """This run's health checks, including one whose create may still be in flight.

        A run killed between sending a CreateHealthCheck and its answer can have that create
        land after this undo listed the checks (chaos seed 33, run 49): it would be left behind.
        So each of the run's CallerReferences not seen in the list is asked for once more: that
        returns the check if it landed, or creates it; deleting it then retires the reference,
        and Route53 refuses a later create with a deleted check's reference, whatever its
        settings (HealthCheckAlreadyExists: CreateHealthCheck API reference, CallerReference).
        """
        listed = r53.list_health_checks()
        mine = set(_ours(listed, ctx.run_id))
        seen = {h.caller_reference for h in listed}
        for r, side in zip(records_of(inputs.pair), ("source", "target"), strict=True):
            ref = _caller_reference(ctx.run_id, str(r.set_identifier))
            if ref in seen or side not in inputs.health_check_specs:
                continue
            try:
                mine.add(r53.create_health_check(ref, _spec(inputs, side), tags={}).id)
            except DriverError as exc:  # retired by an earlier undo: nothing can land any more
                ctx.log.debug("switchover.health_check_reference_retired", reference=ref, error=exc.message)
        return sorted(mine)


# ---- switchover.shift ----------------------------------------------------------------------


class ShiftInputs(ShiftSettings):
    zone_id: str
    name: str
    type: str
    source_id: str
    target_id: str
    source_label: str
    target_label: str
    insync_timeout: str | float = "10m"


class ShiftOutputs(StepOutputs):
    percent: int
    weights: list[int]
    changed: bool
    bake_seconds: float
    report: dict[str, Any]


@register
class Shift(Step[ShiftInputs, ShiftOutputs]):
    """Both weights in ONE batch, INSYNC, then a bake watched by probes and gates."""

    name = "switchover.shift"
    Inputs = ShiftInputs
    Outputs = ShiftOutputs
    needs = frozenset({"route53", "http"})

    def plan(self, inputs: ShiftInputs, ctx: StepContext) -> StepPlan:
        return StepPlan(changes=(
            Change(action="update", target=f"{inputs.name} {inputs.type}",
                   detail=f"one batch: {inputs.source_id}={inputs.source_weight} {inputs.target_id}={inputs.target_weight} "
                          f"({inputs.percent}% to {inputs.target_label})"),
            Change(action="wait", target="-", detail=f"INSYNC, then bake >= {inputs.bake} with "
                                                     f"{len(inputs.probes) * 2 + len(inputs.gates)} gate(s)"),
        ))

    def run(self, inputs: ShiftInputs, ctx: StepContext) -> ShiftOutputs:
        r53 = ctx.drivers.route53()
        everything, current = read_group(r53, inputs.zone_id, inputs.name, inputs.type)
        pair = weighted_pair(current, inputs.source_id, inputs.target_id)
        wanted = (inputs.source_weight, inputs.target_weight)
        changed = (pair[0].weight, pair[1].weight) != wanted
        gates = build_gates(ctx, probes=inputs.probes, connect_to=inputs.connect_to,
                            source_ingress=inputs.source_ingress, target_ingress=inputs.target_ingress,
                            source_label=inputs.source_label, target_label=inputs.target_label,
                            probe_timeout=parse_duration(inputs.probe_timeout), expect_text=inputs.expect_text,
                            prometheus=inputs.prometheus, gate_exprs=inputs.gates,
                            gate_window=parse_duration(inputs.gate_window))
        interval = parse_duration(inputs.probe_interval)
        if changed:
            batch = shift_batch(pair, wanted, comment=f"meshops: {inputs.percent}% to {inputs.target_id}")
            # The probes run while the change is PENDING: some resolvers already have it.
            probes_only = [g for g in gates if g.window <= 0]

            def pending(seconds: float) -> None:
                try:
                    watch(probes_only, duration=seconds, interval=interval, clock=ctx.clock, sleep=ctx.sleep,
                          failure_threshold=inputs.failure_threshold)
                except GateFailed as exc:
                    ctx.log.error("switchover.gate_tripped", percent=inputs.percent, gate=exc.report.failed_gate,
                                  error=exc.message, pending=True)
                    raise

            send(r53, inputs.zone_id, batch, everything, ctx, timeout=parse_duration(inputs.insync_timeout),
                 pause=pending if probes_only else None)
        ttl = max(r.effective_ttl for r in pair)
        seconds = bake_seconds(bake=inputs.bake, ttl=ttl, allowance=inputs.propagation_allowance,
                               gate_window=inputs.gate_window, has_gates=bool(inputs.gates))
        # The hold starts at INSYNC: only then may every resolver have the new weights.
        report = bake(ctx, gates, seconds=seconds, interval=interval,
                      failure_threshold=inputs.failure_threshold, percent=inputs.percent)
        return ShiftOutputs(percent=inputs.percent, weights=list(wanted), changed=changed, bake_seconds=seconds,
                            report=report.as_dict())

    def undo(self, inputs: ShiftInputs, outputs: ShiftOutputs | None, ctx: StepContext) -> None:
        """One batch back to the weights from before the switchover (later undos then find nothing to do)."""
        r53 = ctx.drivers.route53()
        everything, current = read_group(r53, inputs.zone_id, inputs.name, inputs.type)
        ids = {r.set_identifier for r in current}
        if any(not r.weighted for r in current) or not {inputs.source_id, inputs.target_id} <= ids:
            return  # not (or no longer) the weighted pair: prepare_dns's undo restores the record
        pair = weighted_pair(current, inputs.source_id, inputs.target_id)
        initial = (inputs.initial_weights[0], inputs.initial_weights[1])
        if (pair[0].weight, pair[1].weight) == initial:
            return
        ctx.log.warning("switchover.rollback_batch", weights=list(initial))
        batch = shift_batch(pair, initial, comment="meshops: back to the weights from before the switchover")
        send(r53, inputs.zone_id, batch, everything, ctx, timeout=parse_duration(inputs.insync_timeout))
