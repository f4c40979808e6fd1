"""The reusable health gates (meshops.ops.health): the watch schedule, thresholds, windows, the HTTP
prober against real local servers, and the gate step types in a playbook."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from meshops.domain.errors import BadInput, RunFailed
from meshops.drivers.http_probe import HttpProber
from meshops.drivers.live import LiveDrivers
from meshops.drivers.prometheus import Sample
from meshops.drivers.prometheus_fake import FakePrometheus
from meshops.engine.journal import LocalStateStore
from meshops.engine.playbook import load_playbook_text
from meshops.engine.runner import Engine, EngineOptions
from meshops.ops.health import (
    GateFailed,
    GateResult,
    ProbeTarget,
    check_promql,
    http_gate,
    promql_gate,
    watch,
)
from tests.support.fakeclock import FakeClock
from tests.support.switchover import Ingress


@dataclass
class ScriptedGate:
    """A gate whose answers are scripted per evaluation; each check costs ``cost`` seconds of clock."""

    clock: FakeClock
    answers: list[bool]
    name: str = "scripted"
    window: float = 0.0
    critical: bool = True
    cost: float = 0.0
    at: list[float] = field(default_factory=list)

    def check(self, now: float) -> GateResult:
        self.at.append(now - 1_800_000_000.0)
        self.clock.sleep(self.cost)
        ok = self.answers.pop(0) if self.answers else True
        return GateResult(name=self.name, ok=ok, detail="ok" if ok else "bad", at=now, critical=self.critical)


def test_watch_keeps_an_absolute_schedule_even_when_checks_are_slow() -> None:
    """Interval 10 s over 35 s: evaluations at 0, 10, 20, 30 and 35 although each check takes 3 s."""
    clock = FakeClock()
    gate = ScriptedGate(clock, [], cost=3.0)
    report = watch([gate], duration=35, interval=10, clock=clock, sleep=clock.sleep)
    assert gate.at == [0.0, 10.0, 20.0, 30.0, 35.0]
    assert report.evaluations == 5 and report.ended - report.started == pytest.approx(38.0)


def test_failure_threshold_counts_failures_in_a_row() -> None:
    """With threshold 2 one failure is forgiven; two in a row fail at once, dated from the first."""
    clock = FakeClock()
    forgiven = ScriptedGate(clock, [True, False, True, False, True])
    watch([forgiven], duration=40, interval=10, clock=clock, sleep=clock.sleep, failure_threshold=2)
    clock = FakeClock()
    tripped = ScriptedGate(clock, [True, False, False, True])
    with pytest.raises(GateFailed, match="2 times in a row") as failed:
        watch([tripped], duration=100, interval=10, clock=clock, sleep=clock.sleep, failure_threshold=2)
    assert failed.value.report.first_failure_at == 1_800_000_010.0
    assert tripped.at == [0.0, 10.0, 20.0]  # stopped at once, not at the end of the watch


def test_non_critical_gates_are_reported_never_fatal() -> None:
    """A failing non-critical gate (the source cluster) is counted but the watch passes."""
    clock = FakeClock()
    source = ScriptedGate(clock, [False] * 10, name="source", critical=False)
    report = watch([source, ScriptedGate(clock, [])], duration=20, interval=10, clock=clock, sleep=clock.sleep)
    assert report.failures == {"source": 3} and report.failed_gate is None


def test_promql_gate_waits_for_its_window_and_treats_empty_as_false() -> None:
    """A PromQL gate is first evaluated after its window; an empty answer fails it."""
    clock = FakeClock()
    prom = FakePrometheus({"up < 1": [Sample(labels={}, value=0.0)]})
    gate = promql_gate(prom, "up < 1", window=25)
    watch([gate], duration=40, interval=10, clock=clock, sleep=clock.sleep)
    assert [p["at"] - 1_800_000_000.0 for _, p in prom.calls] == [30.0, 40.0]
    empty = promql_gate(FakePrometheus({"up < 1": []}), "up < 1")
    assert not empty.check(clock()).ok and "condition is false" in empty.check(clock()).detail
    with pytest.raises(BadInput, match="without `bool`"):
        check_promql("errors > bool 0.01")


class _Slow(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        time.sleep(2)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *a: Any) -> None:
        return None


def test_http_prober_uses_connect_to_host_header_status_and_timeouts() -> None:
    """Probes reach the ingress at connect_to with the URL's Host; 503, refusals and timeouts are failures."""
    ingress = Ingress("green")
    prober = HttpProber()
    try:
        ok = prober.probe("http://app.example.com/x", connect_to=f"127.0.0.1:{ingress.port}", expect_text="app.example.com")
        assert ok.ok and ok.status == 200
        ingress.fail(503)
        bad = prober.probe("http://app.example.com/x", connect_to=f"127.0.0.1:{ingress.port}")
        assert not bad.ok and bad.status == 503 and "HTTP 503" in bad.error
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            closed = s.getsockname()[1]
        refused = prober.probe("http://app.example.com/", connect_to=f"127.0.0.1:{closed}", timeout=1)
        assert not refused.ok and refused.status is None
        slow = ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
        threading.Thread(target=slow.serve_forever, daemon=True).start()
        started = time.monotonic()
        late = prober.probe("http://app.example.com/", connect_to=f"127.0.0.1:{slow.server_address[1]}", timeout=0.3)
        assert not late.ok and time.monotonic() - started < 1.5
        slow.shutdown()
        gate = http_gate(prober, ProbeTarget(url="http://app.example.com/", connect_to=f"127.0.0.1:{ingress.port}"))
        assert not gate.check(0.0).ok
    finally:
        ingress.close()
        prober.close()


def test_gate_step_types_run_in_a_playbook(tmp_path: Path) -> None:
    """health.http_probe passes against a healthy server and fails the run against a 503 one."""
    ingress = Ingress("blue")
    text = f"""apiVersion: meshops.dev/v1
kind: Playbook
metadata: {{name: gates, lock: false}}
steps:
  - id: probe
    uses: health.http_probe
    with: {{urls: ["http://127.0.0.1:{ingress.port}/"], duration: 30s, interval: 10s}}
"""
    clock = FakeClock()
    engine = Engine(store=LocalStateStore(tmp_path), drivers=LiveDrivers(),
                    options=EngineOptions(clock=clock, sleep=clock.sleep))
    try:
        assert engine.start(load_playbook_text(text, path="gates.yaml"), {}).status == "succeeded"
        assert ingress.requests == 4
        ingress.fail(503)
        with pytest.raises(RunFailed, match="HTTP 503"):
            engine.start(load_playbook_text(text, path="gates.yaml"), {})
    finally:
        ingress.close()
