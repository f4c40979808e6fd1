"""Switchover on the injected clock: a strict FakeRoute53 with PENDING -> INSYNC timing, fake probes,
FakePrometheus gates. Hours of bakes and propagation run in milliseconds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from meshops.cli.switchover_cmds import preflight
from meshops.domain.errors import RunFailed
from meshops.domain.weights import RecordSet
from meshops.drivers.http_probe import ProbeResult
from meshops.drivers.prometheus import Sample
from meshops.drivers.prometheus_fake import FakePrometheus
from meshops.drivers.route53_fake import FakeRoute53
from meshops.engine.journal import LocalStateStore
from meshops.engine.playbook import load_playbook, resolve_params
from meshops.engine.runner import Engine, EngineOptions, RunResult, StopFlag
from tests.support.fakeclock import FakeClock
from tests.support.switchover import (
    PLAYBOOK,
    check_batches,
    cluster_objects,
    drivers_for,
    journal,
    params,
    seeded,
)

BLUE_LB, GREEN_LB = "blue-lb.example.net", "green-lb.example.net"
ORIGINAL = RecordSet(name="app.example.com.", type="CNAME", ttl=60, values=(BLUE_LB,))
PROMETHEUS_URL = "http://prom:9090"
ERRORS = 'sum(rate(istio_requests_total{response_code=~"5.."}[1m])) / sum(rate(istio_requests_total[1m])) < 0.01'


class FakeProber:
    """Answers every probe 200, except for addresses in ``failing``; records (time, address)."""

    def __init__(self, clock: FakeClock, on_probe: Callable[[str], None] | None = None) -> None:
        self.clock, self.failing, self.seen = clock, set[str](), list[tuple[float, str]]()
        self.on_probe = on_probe

    def probe(self, url: str, *, connect_to: str | None = None, timeout: float = 5.0,
              expect_status: tuple[int, int] = (200, 399), expect_text: str | None = None) -> ProbeResult:
        address = connect_to or url
        self.seen.append((self.clock(), address))
        if self.on_probe is not None:
            self.on_probe(address)
        ok = address not in self.failing
        return ProbeResult(url=url, ok=ok, status=200 if ok else 503, latency=0.01, address=address,
                           error="" if ok else "HTTP 503 (expected 200-399)")


class World:
    def __init__(self, tmp_path: Path, *, propagation: float = 20.0, record: RecordSet = ORIGINAL,
                 prometheus: FakePrometheus | None = None) -> None:
        self.clock = FakeClock()
        self.r53 = FakeRoute53(clock=self.clock, propagation=propagation)
        self.zone = self.r53.add_zone("example.com")
        self.r53.put(self.zone, record)
        self.start = [record]
        self.prober = FakeProber(self.clock)
        self.prometheus = prometheus
        self.kube = {"blue": seeded("blue", cluster_objects(ingress=BLUE_LB)),
                     "green": seeded("green", cluster_objects(ingress=GREEN_LB))}
        self.state = tmp_path
        # The playbook names its Prometheus by URL; the fake answers at that URL.
        self.drivers = drivers_for(self.kube, route53=self.r53, http=self.prober,
                                   prometheus={PROMETHEUS_URL: prometheus} if prometheus is not None else None)
        self.stop = StopFlag()

    def engine(self) -> Engine:
        return Engine(store=LocalStateStore(self.state), drivers=self.drivers, stop=self.stop,
                      options=EngineOptions(clock=self.clock, sleep=self.clock.sleep))

    def run(self, **given: Any) -> RunResult:
        loaded = load_playbook(str(PLAYBOOK))
        p = resolve_params(loaded.playbook, params(**{"probes": ["http://app.example.com/"], "probe_interval": "10s",
                                                      **given}))
        engine = self.engine()
        preflight(engine, loaded, p)
        return engine.start(loaded, p)

    def records(self) -> list[RecordSet]:
        return [r for r in self.r53.records(self.zone) if r.name == "app.example.com."]

    def weights(self) -> dict[str, int | None]:
        return {str(r.set_identifier): r.weight for r in self.records()}

    def checked(self) -> list[RecordSet]:
        return check_batches([b for _, b in self.r53.batches], zone="example.com.", start=self.start,
                             health_checks=[h.id for h in self.r53.list_health_checks()] + self.deleted_checks())

    def deleted_checks(self) -> list[str]:
        return [f"hc-{i:08d}" for i in range(1, 100)]


def shifts(world: World) -> list[dict[str, int]]:
    return [{c["ResourceRecordSet"]["SetIdentifier"]: c["ResourceRecordSet"]["Weight"] for c in b["Changes"]}
            for _, b in world.r53.batches
            if all(c["Action"] == "UPSERT" and "Weight" in c["ResourceRecordSet"] for c in b["Changes"])]


def test_each_bake_starts_at_insync_and_lasts_ttl_plus_allowance(tmp_path: Path) -> None:
    """Changes stay PENDING 20 s; each step polls GetChange until INSYNC, then bakes max(bake, TTL + allowance)."""
    w = World(tmp_path, propagation=20.0)
    result = w.run(bake="30s", propagation_allowance="60s", steps=[10, 50, 100])
    assert result.status == "succeeded"
    assert w.weights() == {"blue": 0, "green": 100}
    w.checked()
    outputs = [r["outputs"] for r in journal(tmp_path, result.run_id)
               if r["type"] == "step_succeeded" and r["step"].startswith("shift[")]
    assert [o["bake_seconds"] for o in outputs] == [120.0, 120.0, 120.0]  # TTL 60 + allowance 60 > bake 30
    polls = [t for t, op, _ in w.r53.log.entries if op == "get_change"]
    changes = [t for t, op, _ in w.r53.log.entries if op == "change_resource_record_sets"]
    assert len(changes) == 4 and len(polls) <= 4 * 5  # 1, 2, 4, 8, 15 s gaps reach 20 s in 5 polls
    for i, sent in enumerate(changes[1:]):
        insync = min(t for t in polls if t >= sent + 20.0)
        # The target is probed while the change is PENDING (some resolvers already have it) ...
        assert [t for t, _ in w.prober.seen if sent < t < insync]
        # ... and the hold of TTL + allowance starts only once Route53 says INSYNC.
        if i + 2 < len(changes):
            assert changes[i + 2] >= insync + 120.0


def test_promql_gate_failing_rolls_back_and_waits_out_the_window(tmp_path: Path) -> None:
    """A PromQL condition that stops holding at 50% rolls back; it is first evaluated a window after each shift."""
    w = World(tmp_path, propagation=0.0, prometheus=FakePrometheus())
    assert w.prometheus is not None
    holds = {"now": True}
    w.prometheus.add(ERRORS, lambda expr, p: [Sample(labels={}, value=0.001)] if holds["now"] else [])

    def tripwire(address: str) -> None:
        if w.weights().get("green") == 50:
            holds["now"] = False

    w.prober.on_probe = tripwire
    with pytest.raises(RunFailed, match="the condition is false"):
        w.run(prometheus=PROMETHEUS_URL, gates=[ERRORS], gate_window="90s", bake="30s",
              propagation_allowance="0s")
    assert shifts(w) == [{"blue": 90, "green": 10}, {"blue": 75, "green": 25}, {"blue": 50, "green": 50},
                         {"blue": 100, "green": 0}]
    assert w.records() == [ORIGINAL]
    w.checked()
    gate_times = [p["at"] for expr, p in w.prometheus.calls if expr == ERRORS and p["at"] is not None]
    change_times = [t for t, op, _ in w.r53.log.entries if op == "change_resource_record_sets"][1:4]
    for sent in change_times:
        after = [t for t in gate_times if t > sent]
        assert after and min(after) >= sent + 90.0  # the range vectors only saw post-shift traffic


def test_lower_ttl_waits_out_the_old_ttl_and_rollback_restores_it(tmp_path: Path) -> None:
    """--ttl 30 on a 300 s record: one TTL batch, a 300 s wait, a pair at TTL 30; rollback restores TTL 300."""
    record = RecordSet(name="app.example.com.", type="CNAME", ttl=300, values=(BLUE_LB,))
    w = World(tmp_path, propagation=0.0, record=record)
    # The target fails once it has traffic (at 0 % it passed): roll everything back.
    w.prober.on_probe = lambda _: w.prober.failing.add(f"{GREEN_LB}:80") if w.weights().get("green") else None
    started = w.clock()
    with pytest.raises(RunFailed):
        w.run(ttl=30, bake="0s", propagation_allowance="0s", steps=[100])
    sent = [(t, b) for (t, op, _), b in zip([e for e in w.r53.log.entries if e[1] == "change_resource_record_sets"],
                                            [b for _, b in w.r53.batches], strict=True)]
    assert [c["ResourceRecordSet"]["TTL"] for c in sent[0][1]["Changes"]] == [30]
    assert sent[1][0] - sent[0][0] >= 300  # waited out the old TTL before converting
    assert all(c["ResourceRecordSet"].get("TTL") == 30 for c in sent[1][1]["Changes"] if c["Action"] == "CREATE")
    assert w.records() == [record]
    assert w.clock() - started >= 300
    w.checked()


def test_interrupted_mid_bake_resumes_without_repeating_a_batch(tmp_path: Path) -> None:
    """SIGTERM during the 25% bake stops at a safe point; resume re-bakes 25% and sends only what is left."""
    w = World(tmp_path, propagation=5.0)
    probes = {"n": 0}

    def stop_at_25(address: str) -> None:
        if w.weights().get("green") == 25:
            probes["n"] += 1
            if probes["n"] == 3:
                w.stop.set()

    w.prober.on_probe = stop_at_25
    with pytest.raises(Exception, match="resume"):
        w.run(bake="60s", steps=[10, 25, 100])
    assert shifts(w) == [{"blue": 90, "green": 10}, {"blue": 75, "green": 25}]
    run_id = next(p.name for p in (tmp_path / "runs").iterdir())
    w.stop = StopFlag()
    result = w.engine().resume(run_id)
    assert result.status == "succeeded"
    assert shifts(w) == [{"blue": 90, "green": 10}, {"blue": 75, "green": 25}, {"blue": 0, "green": 100}]
    w.checked()


def test_an_existing_weighted_pair_is_reused_and_restored_exactly(tmp_path: Path) -> None:
    """Moving back from green to blue on a pair left by an earlier switchover: no conversion, exact restore."""
    blue = RecordSet(name="app.example.com.", type="CNAME", ttl=60, values=(BLUE_LB,), set_identifier="blue", weight=0)
    green = RecordSet(name="app.example.com.", type="CNAME", ttl=60, values=(GREEN_LB,), set_identifier="green",
                      weight=100)
    w = World(tmp_path, propagation=0.0, record=blue)
    w.r53.put(w.zone, green)
    w.start = [blue, green]
    # The new target passes at 0 % and fails at its first step.
    w.prober.on_probe = lambda _: w.prober.failing.add(f"{BLUE_LB}:80") if w.weights().get("blue") else None
    with pytest.raises(RunFailed):
        w.run(from_context="green", to_context="blue", health_checks=False, steps=[50, 100], bake="0s")
    assert shifts(w) == [{"green": 50, "blue": 50}, {"green": 100, "blue": 0}]
    assert sorted(w.records(), key=lambda r: str(r.set_identifier)) == [blue, green]
    w.checked()


def test_a_health_check_that_would_start_unhealthy_is_refused_before_any_change(tmp_path: Path) -> None:
    """The target's :15021/healthz/ready does not answer 2xx/3xx: exit 2 naming the check; nothing created or sent."""
    from meshops.domain.errors import BadInput

    w = World(tmp_path)
    w.prober.failing.add(f"http://{GREEN_LB}:15021/healthz/ready")
    with pytest.raises(BadInput, match=r"HTTP green-lb.example.net:15021/healthz/ready .* would start unhealthy"):
        w.run(steps=[100])
    assert w.r53.batches == [] and w.r53.list_health_checks() == [] and w.records() == [ORIGINAL]
    # --health-check TCP:80 overrides the discovered check (and is probed the same way, on its port).
    w.prober.failing.clear()
    result = w.run(steps=[100], health_check_type="TCP", health_check_port=80, bake="0s")
    assert result.status == "succeeded"
    assert sorted((h.config["Type"], h.config["Port"]) for h in w.r53.list_health_checks()) == [("TCP", 80), ("TCP", 80)]


def test_the_target_is_proven_at_zero_percent_before_any_weight_moves(tmp_path: Path) -> None:
    """A target whose probe fails while it has 0 %: refused in the preflight (exit 2), no batch sent."""
    from meshops.domain.errors import BadInput

    w = World(tmp_path)
    w.prober.failing.add(f"{GREEN_LB}:80")
    with pytest.raises(BadInput, match="fails at 0 % traffic"):
        w.run(steps=[10, 100])
    assert w.r53.batches == [] and w.records() == [ORIGINAL]
