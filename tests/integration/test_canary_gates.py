"""The wave gates `meshops upgrade --max-error-rate/--max-p99-ms` writes, evaluated by a real Prometheus.

Istio's standard metrics are backfilled for two namespaces: `calm` (no 5xx, fast) and `burning`
(10% 5xx, slow). Each generated condition must hold for the one and not for the other, and hold
for a namespace with no traffic at all (no traffic is no failure).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshops.cli.upgrade_cmds import ERROR_RATE_GATE, P99_GATE
from meshops.drivers.prometheus import PrometheusClient
from meshops.ops.health import promql_gate
from tests.integration.prom_fixture import OpenMetrics, PromServer, running

NOW = float(int(time.time()) // 60 * 60)


def _metrics() -> str:
    om = OpenMetrics()
    points = [NOW - 600 + 15 * i for i in range(41)]
    for ns, errors_per_s in (("calm", 0.0), ("burning", 1.0)):
        for code, per_s in (("200", 9.0), ("503", errors_per_s)):
            om.counter("istio_requests", {"reporter": "destination", "destination_workload_namespace": ns,
                                          "response_code": code}, [(t, per_s * (t - points[0])) for t in points])
    for ns, slow in (("calm", False), ("burning", True)):
        for le, share in (("100", 0.2 if slow else 0.99), ("1000", 0.3 if slow else 1.0), ("+Inf", 1.0)):
            om.gauge("istio_request_duration_milliseconds_bucket",
                     {"reporter": "destination", "destination_workload_namespace": ns, "le": le},
                     [(t, 10.0 * share * (t - points[0])) for t in points])
    return om.text()


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PromServer]:
    with running(_metrics(), Path(tmp_path_factory.mktemp("prom"))) as server:
        yield server


@pytest.mark.parametrize(("template", "namespace", "holds"), [
    (ERROR_RATE_GATE.format(rate=0.01), "calm", True),
    (ERROR_RATE_GATE.format(rate=0.01), "burning", False),
    (ERROR_RATE_GATE.format(rate=0.2), "burning", True),
    (ERROR_RATE_GATE.format(rate=0.01), "idle", True),
    (P99_GATE.format(ms=500), "calm", True),
    (P99_GATE.format(ms=500), "burning", False),
    (P99_GATE.format(ms=500), "idle", True),
])
def test_generated_gates(prometheus: PromServer, template: str, namespace: str, holds: bool) -> None:
    """The error-rate and p99 conditions hold exactly when the wave's namespaces are healthy."""
    gate = promql_gate(PrometheusClient(prometheus.url), template.replace("{namespaces}", namespace))
    result = gate.check(NOW)
    assert result.ok is holds, result.detail
