"""``switchover.plan_health_checks``: Route53 health checks that mean "this gateway serves".

Route53's default check (``HTTP:80:/``) asks an Istio ingress for ``/`` without a routed host
and gets 404, so it would mark a healthy gateway unhealthy. What the gateway itself reports is
its readiness on the status port, ``:15021/healthz/ready``, which both Istio charts put first in
the Service so that AWS load balancers health-check it (istio-reality.md §8, istio/istio#12503).
A Route53 checker reaches it only through a load balancer listener on that port, so:

- when the Service has the status port and the load balancer (as ELB describes it, when it is
  an AWS one) listens on it: ``HTTP:15021:/healthz/ready``;
- otherwise a ``TCP`` check on the serving port (``http2``/``http``, else ``https``, else the
  first port the load balancer listens on);
- ``--health-check TYPE:PORT:PATH`` overrides the choice; ``none`` creates no checks.

Each check's target is probed once, here, before anything is created: a check that would start
unhealthy would make Route53 answer around the very cluster it guards (an unhealthy non-zero
record is skipped), so it is refused as bad input (exit 2, nothing changed). Read-only: it runs
in the switchover's preflight.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from meshops.domain.durations import parse_duration
from meshops.domain.errors import PreconditionFailed
from meshops.drivers.http_api import HttpProbeApi
from meshops.ops.switchover_common import unredacted
from meshops.steps.base import Step, StepContext, StepInputs, StepOutputs
from meshops.steps.registry import register

STATUS_PORT = 15021
READY_PATH = "/healthz/ready"
SERVING_NAMES = ("http2", "http", "https")
# A failure to connect at all: what a TCP check would see as unhealthy.
_CONNECT_ERRORS = ("NewConnectionError", "ConnectTimeoutError", "NameResolutionError", "ConnectionRefused",
                   "Connection refused", "MaxRetryError", "ConnectError")


class HealthPlanInputs(StepInputs):
    source_ingress: str
    target_ingress: str
    source_kind: Literal["hostname", "ip"]
    target_kind: Literal["hostname", "ip"]
    source_ports: list[dict[str, Any]] = Field(default_factory=list)
    target_ports: list[dict[str, Any]] = Field(default_factory=list)
    source_lb: dict[str, Any] | None = None
    target_lb: dict[str, Any] | None = None
    health_checks: bool = True
    type: Literal["AUTO", "HTTP", "HTTPS", "TCP"] = "AUTO"
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    path: str | None = None
    interval: Literal[10, 30] = 30
    threshold: Annotated[int, Field(ge=1, le=10)] = 3
    probe_timeout: str | float = "5s"


class HealthPlanOutputs(StepOutputs):
    specs: dict[str, dict[str, Any]]  # "source"/"target" -> HealthCheckSpec fields
    reasons: dict[str, str]


def discover(ports: list[dict[str, Any]], lb: dict[str, Any] | None) -> tuple[str, int, str, str]:
    """(type, port, path, why) for one ingress, from its Service ports and its load balancer's listeners."""
    listening = set(int(p) for p in (lb or {}).get("listener_ports") or []) if lb else None
    exposed = [p for p in ports if listening is None or int(p["port"]) in listening]
    if any(int(p["port"]) == STATUS_PORT or p.get("name") == "status-port" for p in exposed):
        status = next(int(p["port"]) for p in exposed if int(p["port"]) == STATUS_PORT or p.get("name") == "status-port")
        return "HTTP", status, READY_PATH, "the load balancer exposes the gateway's status port"
    named = {str(p.get("name", "")): int(p["port"]) for p in exposed}
    for name in SERVING_NAMES:
        if name in named:
            return "TCP", named[name], "", f"no status port on the load balancer; TCP on the {name} port"
    if exposed:
        return "TCP", int(exposed[0]["port"]), "", "no status port on the load balancer; TCP on its first port"
    if listening:
        return "TCP", min(listening), "", "no Service port matches a listener; TCP on the first listener"
    raise PreconditionFailed("the ingress Service has no ports a health check could use")


def probe_once(prober: HttpProbeApi, spec: dict[str, Any], *, timeout: float) -> tuple[bool, str]:
    """What a Route53 checker would see first: HTTP(S) 2xx/3xx, or a TCP connection."""
    host = spec.get("fqdn") or spec.get("ip")
    host_part = f"[{host}]" if ":" in str(host) else str(host)
    if spec["type"] == "TCP":
        result = prober.probe(f"http://{host_part}:{spec['port']}/", timeout=timeout, expect_status=(100, 599))
        connected = result.ok or result.status is not None or not any(e in result.error for e in _CONNECT_ERRORS)
        return connected, result.error
    scheme = "https" if spec["type"] == "HTTPS" else "http"
    result = prober.probe(f"{scheme}://{host_part}:{spec['port']}{spec['path']}", timeout=timeout,
                          expect_status=(200, 399))
    return result.ok, result.error


def describe_spec(spec: dict[str, Any]) -> str:
    return f"{spec['type']} {spec.get('fqdn') or spec.get('ip')}:{spec['port']}{spec.get('path') or ''}"


@register
class PlanHealthChecks(Step[HealthPlanInputs, HealthPlanOutputs]):
    """Chooses each ingress's Route53 health check and proves its target answers before one exists."""

    name = "switchover.plan_health_checks"
    Inputs = HealthPlanInputs
    Outputs = HealthPlanOutputs
    read_only = True
    side_effect_free = True
    needs = frozenset({"http"})

    def run(self, inputs: HealthPlanInputs, ctx: StepContext) -> HealthPlanOutputs:
        if not inputs.health_checks:
            return HealthPlanOutputs(specs={}, reasons={})
        unredacted([inputs.source_ingress, inputs.target_ingress], "an ingress address")
        prober = ctx.drivers.http()
        timeout = min(parse_duration(inputs.probe_timeout), 4.0)  # Route53 allows 4 s per attempt
        specs, reasons = {}, {}
        for side, address, kind, ports, lb in (
                ("source", inputs.source_ingress, inputs.source_kind, inputs.source_ports, inputs.source_lb),
                ("target", inputs.target_ingress, inputs.target_kind, inputs.target_ports, inputs.target_lb)):
            if inputs.type == "AUTO":
                rtype, port, path, why = discover(ports, lb)
            else:
                rtype = inputs.type
                port = inputs.port or (443 if rtype == "HTTPS" else 80)
                path, why = ("" if rtype == "TCP" else inputs.path or "/"), "--health-check"
            spec: dict[str, Any] = {"type": rtype, "port": port, "path": path or "/",
                                    "interval": inputs.interval, "threshold": inputs.threshold,
                                    "fqdn": address if kind == "hostname" else None,
                                    "ip": address if kind == "ip" else None}
            ok, error = probe_once(prober, {**spec, "path": path}, timeout=timeout)
            if not ok:
                raise PreconditionFailed(
                    f"a Route53 health check {describe_spec({**spec, 'path': path})} for the {side} ingress would "
                    f"start unhealthy ({error or 'no answer'}); fix the gateway, or pass --health-check "
                    "TYPE:PORT:PATH (or none)")
            ctx.log.info("switchover.health_check_planned", side=side, check=describe_spec({**spec, "path": path}),
                         why=why)
            specs[side], reasons[side] = spec, why
        return HealthPlanOutputs(specs=specs, reasons=reasons)

    def undo(self, inputs: HealthPlanInputs, outputs: HealthPlanOutputs | None, ctx: StepContext) -> None:
        return None


# ---- switchover.prove_at_zero ------------------------------------------------------------------


class ZeroInputs(StepInputs):
    source_ingress: str
    target_ingress: str
    source_label: str
    target_label: str
    probes: list[str] = Field(default_factory=list)
    connect_to: list[str] = Field(default_factory=list)
    expect_text: str | None = None
    probe_timeout: str | float = "5s"
    prometheus: str | None = None
    gates: list[str] = Field(default_factory=list)


class ZeroOutputs(StepOutputs):
    proof: dict[str, Any]  # the one evaluation of every gate (not "report": that names a bake)


@register
class ProveAtZero(Step[ZeroInputs, ZeroOutputs]):
    """Every probe of the target and every PromQL gate passes while the target still has 0 %.

    The first weight step would otherwise be the first time anything looked at the target with
    the switchover's own probes: a broken target would take that step's share of live traffic
    before a probe noticed. Read-only, so it also runs in the preflight (exit 2, nothing changed);
    the run repeats it just before the first shift, after the record became weighted.
    """

    name = "switchover.prove_at_zero"
    Inputs = ZeroInputs
    Outputs = ZeroOutputs
    read_only = True
    side_effect_free = True
    needs = frozenset({"http", "prometheus"})

    def run(self, inputs: ZeroInputs, ctx: StepContext) -> ZeroOutputs:
        from meshops.ops.health import GateFailed, watch
        from meshops.ops.switchover_common import build_gates

        gates = build_gates(ctx, probes=inputs.probes, connect_to=inputs.connect_to,
                            source_ingress=inputs.source_ingress, target_ingress=inputs.target_ingress,
                            source_label=inputs.source_label, target_label=inputs.target_label,
                            probe_timeout=parse_duration(inputs.probe_timeout), expect_text=inputs.expect_text,
                            prometheus=inputs.prometheus, gate_exprs=inputs.gates, gate_window=0.0)
        try:
            report = watch(gates, duration=0.0, interval=1.0, clock=ctx.clock, sleep=ctx.sleep)
        except GateFailed as exc:
            raise PreconditionFailed(f"the target {inputs.target_label!r} fails at 0 % traffic, before any weight "
                                     f"moved: {exc.message}") from None
        ctx.log.info("switchover.proved_at_zero", gates=len(gates), evaluations=report.evaluations)
        return ZeroOutputs(proof=report.as_dict())

    def undo(self, inputs: ZeroInputs, outputs: ZeroOutputs | None, ctx: StepContext) -> None:
        return None
