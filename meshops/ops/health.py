"""Health gates: HTTP probes and PromQL conditions, evaluated on a schedule while a change bakes.

The switchover bakes each traffic step with these gates; the canary upgrade uses the same
ones for its wave gates. The public API, stable for other steps:

``ProbeTarget(url, connect_to=None, label="", expect_status=(200, 399), expect_text=None, timeout=5.0)``
    One HTTP GET. ``connect_to`` ("host:port") sends it to one cluster's ingress while keeping
    the URL's Host header (``curl --connect-to``).
``http_gate(prober, target, *, critical=True) -> Gate``
    Passes when the probe answers an expected status (and body text) in time.
``promql_gate(client, expr, *, window=0.0) -> Gate``
    ``expr`` states the healthy condition in PromQL's filter form (``error_ratio < 0.01``): the
    gate passes when the query returns at least one series. An empty answer (the condition is
    false for every series, or there is no data) fails it; a query error fails it. The ``bool``
    modifier is refused (a 0/1 answer is never empty). The gate is first evaluated ``window``
    seconds after the watch starts, so its range vectors cover only what came after the change.
``check_promql(expr) -> str``
    The syntax rule above, raising ``BadInput``; run it on user input before any change.
``watch(gates, *, duration, interval, clock, sleep, failure_threshold=1, on_result=None) -> WatchReport``
    Evaluates every gate at start, then every ``interval`` on an absolute schedule (no drift),
    and once more at ``duration``; gates run concurrently so one slow probe delays no other.
    ``failure_threshold`` consecutive failures of one critical gate raise ``GateFailed`` at
    once (carrying the report, with the time of the first failure). Non-critical gates (e.g.
    the cluster traffic is moving away from) are reported, never fatal. ``sleep`` should be
    ``StepContext.sleep`` so a watch honours step timeouts and SIGINT/SIGTERM.
The prober and the Prometheus clients come from ``ctx.drivers.http()`` and
``ctx.drivers.prometheus(url)`` (one client per URL, with that URL's token).

Step types ``health.http_probe`` and ``health.promql`` (``meshops.steps.health_watch``) run a watch as a
playbook step.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from meshops.domain.errors import BadInput, DriverError, PermanentStepError
from meshops.drivers.http_api import HttpProbeApi, ProbeResult, parse_address, split_url
from meshops.drivers.prometheus_api import NoData


class SampleLike(Protocol):
    @property
    def labels(self) -> dict[str, str]: ...
    @property
    def value(self) -> float: ...


class PromQLApi(Protocol):
    """What a PromQL gate needs: ``meshops.drivers.prometheus.PrometheusClient`` fits."""

    def query(self, expr: str, *, at: float | None = None) -> Sequence[SampleLike]: ...


@dataclass(frozen=True, kw_only=True)
class GateResult:
    name: str
    ok: bool
    detail: str
    at: float
    critical: bool = True


class Gate(Protocol):
    name: str
    window: float  # seconds after the watch starts before the first evaluation
    critical: bool

    def check(self, now: float) -> GateResult: ...


@dataclass(frozen=True, kw_only=True)
class ProbeTarget:
    url: str
    connect_to: str | None = None
    label: str = ""
    expect_status: tuple[int, int] = (200, 399)
    expect_text: str | None = None
    timeout: float = 5.0

    def __post_init__(self) -> None:
        split_url(self.url)
        if self.connect_to is not None:
            parse_address(self.connect_to)


@dataclass(kw_only=True)
class HttpGate:
    prober: HttpProbeApi
    target: ProbeTarget
    critical: bool = True
    window: float = 0.0
    name: str = ""
    last: ProbeResult | None = None

    def __post_init__(self) -> None:
        if not self.name:
            via = f" via {self.target.connect_to}" if self.target.connect_to else ""
            self.name = f"probe {self.target.label + ' ' if self.target.label else ''}{self.target.url}{via}"

    def check(self, now: float) -> GateResult:
        t = self.target
        self.last = r = self.prober.probe(t.url, connect_to=t.connect_to, timeout=t.timeout,
                                          expect_status=t.expect_status, expect_text=t.expect_text)
        detail = f"HTTP {r.status} in {r.latency * 1000:.0f} ms" if r.ok else r.error
        return GateResult(name=self.name, ok=r.ok, detail=detail, at=now, critical=self.critical)


@dataclass(kw_only=True)
class PromQLGate:
    client: PromQLApi
    expr: str
    window: float = 0.0
    critical: bool = True
    name: str = ""

    def __post_init__(self) -> None:
        check_promql(self.expr)
        if not self.name:
            self.name = f"promql {' '.join(self.expr.split())[:80]}"

    def check(self, now: float) -> GateResult:
        try:
            samples = list(self.client.query(self.expr, at=now))
        except NoData:
            samples = []
        except DriverError as exc:
            return GateResult(name=self.name, ok=False, detail=exc.message, at=now, critical=self.critical)
        if not samples:
            return GateResult(name=self.name, ok=False, at=now, critical=self.critical,
                              detail="no series: the condition is false (or there is no data)")
        values = ", ".join(f"{s.value:g}" for s in samples[:5])
        return GateResult(name=self.name, ok=True, detail=f"{len(samples)} series hold ({values})", at=now,
                          critical=self.critical)


_BOOL = re.compile(r"\bbool\b")


def check_promql(expr: str) -> str:
    if not expr or not expr.strip():
        raise BadInput("a PromQL gate needs an expression")
    if _BOOL.search(expr):
        raise BadInput(f"PromQL gate {expr!r}: write the condition without `bool` (e.g. `errors_ratio < 0.01`); "
                       "the gate passes when the condition returns at least one series")
    return expr


def http_gate(prober: HttpProbeApi, target: ProbeTarget, *, critical: bool = True) -> HttpGate:
    return HttpGate(prober=prober, target=target, critical=critical)


def promql_gate(client: PromQLApi, expr: str, *, window: float = 0.0) -> PromQLGate:
    return PromQLGate(client=client, expr=expr, window=window)


@dataclass(kw_only=True)
class WatchReport:
    started: float
    ended: float = 0.0
    evaluations: int = 0
    failures: dict[str, int] = field(default_factory=dict)  # gate name -> failed evaluations
    first_failure_at: float | None = None
    failed_gate: str | None = None
    last: dict[str, str] = field(default_factory=dict)  # gate name -> last detail

    def as_dict(self) -> dict[str, Any]:
        return {"started": round(self.started, 3), "ended": round(self.ended, 3), "evaluations": self.evaluations,
                "failures": dict(self.failures), "failed_gate": self.failed_gate,
                "first_failure_at": None if self.first_failure_at is None else round(self.first_failure_at, 3),
                "last": dict(self.last)}


class GateFailed(PermanentStepError):
    def __init__(self, message: str, report: WatchReport) -> None:
        super().__init__(message)
        self.report = report


def _check(gate: Gate, *, now: float) -> GateResult:
    return gate.check(now)


def watch(gates: Sequence[Gate], *, duration: float, interval: float, clock: Callable[[], float],
          sleep: Callable[[float], None], failure_threshold: int = 1,
          on_result: Callable[[GateResult], None] | None = None) -> WatchReport:
    """Evaluate ``gates`` for ``duration`` seconds (see the module docstring); raise GateFailed on failure."""
    if interval <= 0:
        raise BadInput("a gate interval must be > 0")
    if failure_threshold < 1:
        raise BadInput("a failure threshold must be >= 1")
    start = clock()
    report = WatchReport(started=start)
    end = start + max(0.0, duration)
    streak: dict[str, int] = {}
    first_fail: dict[str, float] = {}
    tick = 0
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(gates))), thread_name_prefix="gate") as pool:
        while True:
            now = clock()
            final = now >= end
            due = [g for g in gates if final or now - start >= g.window]
            results = list(pool.map(functools.partial(_check, now=now), due)) if due else []
            for g, r in zip(due, results, strict=True):
                report.evaluations += 1
                report.last[g.name] = r.detail
                if on_result is not None:
                    on_result(r)
                if r.ok:
                    streak[g.name] = 0
                    first_fail.pop(g.name, None)
                    continue
                report.failures[g.name] = report.failures.get(g.name, 0) + 1
                streak[g.name] = streak.get(g.name, 0) + 1
                first_fail.setdefault(g.name, r.at)
                if g.critical and streak[g.name] >= failure_threshold:
                    report.ended = clock()
                    report.failed_gate = g.name
                    report.first_failure_at = first_fail[g.name]
                    raise GateFailed(f"{g.name}: {r.detail}"
                                     + (f" ({streak[g.name]} times in a row)" if streak[g.name] > 1 else ""), report)
            if final:
                report.ended = clock()
                return report
            # The next tick on the absolute schedule that is still ahead; never past the end.
            tick += 1
            nxt = start + tick * interval
            while nxt <= clock():
                tick += 1
                nxt = start + tick * interval
            sleep(max(0.0, min(nxt, end) - clock()))


# ---- checks before any change -------------------------------------------------------------------


def check_prometheus(client: PromQLApi, exprs: Sequence[str]) -> None:
    """Before any change: every expression is valid and the server answers (BadInput otherwise)."""
    for expr in exprs:
        check_promql(expr)
        try:
            client.query(expr)
        except NoData:
            continue  # valid; the condition may hold once traffic flows
        except DriverError as exc:
            raise BadInput(f"PromQL gate {expr!r}: {exc.message}") from None
