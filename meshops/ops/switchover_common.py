"""What the switchover steps share: reading the weighted pair, sends, INSYNC waits, the bake.

A switchover moves a DNS name from the ``source`` cluster to the ``target`` cluster by
Route53 weights (see ``playbooks/switchover.yaml``). The record
group is one name and type; its weighted records carry SetIdentifiers named after the
clusters. ``preflight`` records the group exactly as it was before anything changed, so
every undo can restore it even when the step that changed it never finished.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from meshops.domain.durations import parse_duration
from meshops.domain.errors import PermanentStepError, PreconditionFailed, TemporaryStepError
from meshops.domain.redact import REDACTED
from meshops.domain.weights import InvalidBatch, RecordSet, apply_batch, fqdn
from meshops.drivers.http_api import parse_connect_to, split_url
from meshops.drivers.route53_api import ChangeInfo, ChangeOutcomeUnknown, Route53Api
from meshops.ops.context import StepContext
from meshops.ops.health import (
    Gate,
    GateFailed,
    ProbeTarget,
    WatchReport,
    http_gate,
    promql_gate,
    watch,
)

INSYNC_FIRST_POLL = 1.0
INSYNC_MAX_POLL = 15.0


def group(records: Sequence[RecordSet], rtype: str) -> list[RecordSet]:
    return [r for r in records if r.type == rtype]


def read_group(r53: Route53Api, zone_id: str, name: str, rtype: str) -> tuple[list[RecordSet], list[RecordSet]]:
    """(every record at the name, those of the switched type): the snapshot a batch is validated against."""
    everything = r53.list_records(zone_id, name)
    return everything, group(everything, rtype)


def weighted_pair(records: Sequence[RecordSet], source_id: str, target_id: str) -> tuple[RecordSet, RecordSet]:
    by_id = {r.set_identifier: r for r in records if r.weighted}
    missing = [i for i in (source_id, target_id) if i not in by_id]
    if missing or any(not r.weighted for r in records):
        raise PermanentStepError(f"{records[0].name if records else 'the record'} is not the weighted pair "
                                 f"{source_id}/{target_id} any more (found: {describe(records)}); "
                                 "someone else changed it")
    return by_id[source_id], by_id[target_id]


def describe(records: Sequence[RecordSet]) -> str:
    if not records:
        return "nothing"
    return ", ".join(f"{r.type}{'/' + r.set_identifier if r.set_identifier else ''}"
                     f"{'=' + str(r.weight) if r.weight is not None else ''}->{r.target}" for r in records)


def records_of(raw: Sequence[dict[str, Any]]) -> list[RecordSet]:
    """Records from a journaled snapshot; refuses one that redaction has altered (it would be restored wrong)."""
    unredacted(raw, "the recorded DNS snapshot")
    return [RecordSet.from_aws(r) for r in raw]


def unredacted(value: Any, what: str) -> None:
    """Raise when a journaled value was scrubbed (a secret registered in this process appears in it):
    acting on ``<redacted>`` would write a wrong record or probe a wrong host."""
    if REDACTED in repr(value):
        raise PermanentStepError(f"{what} contains {REDACTED} (a value registered as secret appears in it); "
                                 "meshops will not act on it. Restore by hand from `meshops runs show`")


def send(r53: Route53Api, zone_id: str, batch: Any, current: Sequence[RecordSet], ctx: StepContext,
         *, timeout: float, pause: Callable[[float], None] | None = None) -> ChangeInfo:
    """Validate and send one batch, then wait until Route53 reports it INSYNC.

    A request whose answer was lost (read timeout, dropped connection) may or may not have been
    applied; it is never simply sent again. The records are read back first: already as the
    batch leaves them -> applied (its change id is lost, so the INSYNC wait is left to the bake's
    TTL + propagation allowance); still as they were -> sent again; anything else -> someone
    else changed them, and meshops stops.
    """
    try:
        expected = apply_batch(current, batch)
    except InvalidBatch as exc:
        raise PermanentStepError(f"meshops refused its own change batch: {exc.message}") from None
    names = sorted({fqdn(c.record.name) for c in batch.changes})
    for attempt in range(1, 4):
        try:
            info = r53.change(zone_id, batch, current=current)
            break
        except ChangeOutcomeUnknown as exc:
            now = [r for n in names for r in r53.list_records(zone_id, n)]
            before = [r for r in current if fqdn(r.name) in names]
            after = [r for r in expected if fqdn(r.name) in names]
            if set(now) == set(after):
                ctx.log.warning("route53.change_applied_answer_lost", batch=batch.describe(), error=exc.message)
                return ChangeInfo(id="", status="UNKNOWN")
            if set(now) != set(before):
                raise PermanentStepError(f"a change batch's answer was lost and the records are now neither as "
                                         f"before nor as the batch leaves them ({describe(now)}): someone else "
                                         "changed them") from None
            ctx.log.warning("route53.change_not_applied_resending", attempt=attempt, error=exc.message)
    else:
        raise TemporaryStepError("Route53 lost the answer to the same change batch 3 times; it was not applied")
    ctx.log.info("route53.change", change=info.id, batch=batch.describe())
    return wait_insync(r53, info, ctx, timeout=timeout, pause=pause)


def wait_insync(r53: Route53Api, info: ChangeInfo, ctx: StepContext, *, timeout: float,
                pause: Callable[[float], None] | None = None) -> ChangeInfo:
    """Poll GetChange with growing gaps (1 s, 2 s, 4 s ... 15 s) until INSYNC, bounded by ``timeout``.

    ``pause`` replaces the sleep between polls: a shift passes its gates' watch, so the target is
    probed while a change is PENDING (resolvers that already have it send traffic there).
    """
    deadline = ctx.clock() + timeout
    delay = INSYNC_FIRST_POLL
    wait = pause or ctx.sleep
    while info.status != "INSYNC":
        if ctx.clock() + delay > deadline:
            raise TemporaryStepError(f"Route53 change {info.id} is still {info.status} after {timeout:g}s")
        wait(delay)
        info = r53.get_change(info.id)
        delay = min(INSYNC_MAX_POLL, delay * 2)
    return info


def bake_seconds(*, bake: str | float, ttl: int, allowance: str | float, gate_window: str | float,
                 has_gates: bool) -> float:
    """max(--bake, TTL + propagation allowance, the gate window): long enough for clients to move."""
    window = parse_duration(gate_window) if has_gates else 0.0
    return max(parse_duration(bake), ttl + parse_duration(allowance), window)


def connect_address(url: str, ingress: str, mapping: dict[tuple[str, int], tuple[str, int]]) -> str:
    """Where a probe of ``url`` for one cluster connects: its ingress at the URL's port, or a --connect-to override."""
    _, _, port, _ = split_url(url)
    host, port = mapping.get((ingress.lower().rstrip("."), port), (ingress, port))
    return f"{host}:{port}"


def build_gates(ctx: StepContext, *, probes: Sequence[str], connect_to: Sequence[str], source_ingress: str,
                target_ingress: str, source_label: str, target_label: str, probe_timeout: float,
                expect_text: str | None, prometheus: str | None, gate_exprs: Sequence[str],
                gate_window: float) -> list[Gate]:
    """Target probes (critical), source probes (reported only: moving traffic back to a failing source
    would not help) and PromQL gates (critical)."""
    unredacted([*probes, *connect_to, source_ingress, target_ingress], "a probe address")
    mapping = parse_connect_to(list(connect_to))
    gates: list[Gate] = []
    if probes:
        prober = ctx.drivers.http()
        for url in probes:
            for label, ingress, critical in ((target_label, target_ingress, True), (source_label, source_ingress, False)):
                target = ProbeTarget(url=url, connect_to=connect_address(url, ingress, mapping), label=label,
                                     timeout=probe_timeout, expect_text=expect_text)
                gates.append(http_gate(prober, target, critical=critical))
    if gate_exprs:
        if not prometheus:
            raise PreconditionFailed("--gate-promql needs --prometheus URL")
        client = ctx.drivers.prometheus(prometheus)
        gates += [promql_gate(client, expr, window=gate_window) for expr in gate_exprs]
    return gates


def bake(ctx: StepContext, gates: Sequence[Gate], *, seconds: float, interval: float, failure_threshold: int,
         percent: int) -> WatchReport:
    """Hold ``seconds`` while the gates are watched; a failure raises GateFailed (the engine rolls back)."""
    ctx.log.info("switchover.bake", percent=percent, seconds=round(seconds, 3), gates=len(gates))

    def seen(result: Any) -> None:
        if not result.ok:
            ctx.log.warning("switchover.gate_failed", percent=percent, gate=result.name, detail=result.detail,
                            critical=result.critical)

    try:
        return watch(gates, duration=seconds, interval=interval, clock=ctx.clock, sleep=ctx.sleep,
                     failure_threshold=failure_threshold, on_result=seen)
    except GateFailed as exc:
        ctx.log.error("switchover.gate_tripped", percent=percent, gate=exc.report.failed_gate, error=exc.message)
        raise
