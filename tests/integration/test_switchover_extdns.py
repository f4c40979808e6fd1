"""Switchover with ``--dns-owner external-dns``: meshops drives the gateway Services' annotations and waits
for a (fake, lagging) external-dns controller in each cluster to write Route53."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest

from meshops.cli.switchover_cmds import preflight
from meshops.domain.errors import RunFailed
from meshops.domain.weights import Change, ChangeBatch, RecordSet, fqdn
from meshops.drivers.route53_fake import FakeAwsError, FakeRoute53
from meshops.engine.journal import LocalStateStore
from meshops.engine.playbook import load_playbook, resolve_params
from meshops.engine.runner import Engine, EngineOptions, RunResult
from tests.integration.test_switchover_fakes import FakeProber
from tests.support.fakeclock import FakeClock
from tests.support.switchover import PLAYBOOK, FakeKube, cluster_objects, drivers_for, params, seeded

PREFIX = "external-dns.alpha.kubernetes.io/"
BLUE_LB, GREEN_LB = "blue-lb.example.net", "green-lb.example.net"
NAME = "app.example.com."
TXT_NAME = "cname-app.example.com."


class ExternalDns:
    """One external-dns per cluster, owner id = context, syncing ``lag`` seconds after it last looked."""

    def __init__(self, r53: FakeRoute53, zone: str, clusters: dict[str, FakeKube], clock: FakeClock, lag: float) -> None:
        self.r53, self.zone, self.clusters, self.clock, self.lag = r53, zone, clusters, clock, lag
        self.last = clock()
        self.weights_seen: list[dict[str, int | None]] = []
        self.sent = 0

    def maybe_sync(self) -> None:
        if self.clock() - self.last < self.lag:
            return
        self.last = self.clock()
        for owner, kube in self.clusters.items():
            with contextlib.suppress(FakeAwsError):  # as external-dns: log, retry on the next loop
                self._sync(owner, kube)
        self.weights_seen.append({str(r.set_identifier): r.weight for r in self._records(NAME) if r.type == "CNAME"})

    def _records(self, name: str) -> list[RecordSet]:
        return [r for r in self.r53.records(self.zone) if r.name == name]

    def _sync(self, owner: str, kube: FakeKube) -> None:
        svc = kube.get("v1", "Service", "istio-ingressgateway", "istio-system") or {}
        ann = (svc.get("metadata") or {}).get("annotations") or {}
        lb = svc["status"]["loadBalancer"]["ingress"][0]["hostname"]
        hosts = [fqdn(h) for h in ann.get(PREFIX + "hostname", "").split(",") if h.strip()]
        set_id, weight = ann.get(PREFIX + "set-identifier"), ann.get(PREFIX + "aws-weight")
        txt_value = f'"heritage=external-dns,external-dns/owner={owner},external-dns/resource=service/istio-system/gw"'
        mine_txt = [r for r in self._records(TXT_NAME) if f"owner={owner}," in r.values[0]]
        mine_ids = {t.set_identifier for t in mine_txt}
        mine = [r for r in self._records(NAME) if r.type == "CNAME" and r.set_identifier in mine_ids]
        want: list[RecordSet] = []
        if NAME in hosts:
            if set_id:
                want = [RecordSet(name=NAME, type="CNAME", ttl=60, values=(lb,), set_identifier=set_id, weight=int(weight or 0)),
                        RecordSet(name=TXT_NAME, type="TXT", ttl=300, values=(txt_value,), set_identifier=set_id, weight=1)]
            else:
                want = [RecordSet(name=NAME, type="CNAME", ttl=60, values=(lb,)),
                        RecordSet(name=TXT_NAME, type="TXT", ttl=300, values=(txt_value,))]
        have = mine + mine_txt
        gone = [r for r in have if r not in want]
        new = [r for r in want if r not in have]
        if gone or new:
            changes = [Change(action="DELETE", record=r) for r in gone] + [Change(action="CREATE", record=r) for r in new]
            self.sent += 1
            checked, self.r53.validate_client_side = self.r53.validate_client_side, False  # not meshops: no validator
            try:
                self.r53.change(self.zone, ChangeBatch(changes=tuple(changes)), current=[])
            finally:
                self.r53.validate_client_side = checked


class LaggingRoute53(FakeRoute53):
    controller: ExternalDns | None = None

    def list_records(self, zone_id: str, name: str) -> list[RecordSet]:
        if self.controller is not None:
            self.controller.maybe_sync()
        return super().list_records(zone_id, name)


@pytest.fixture
def world(tmp_path: Path) -> Any:
    clock = FakeClock()
    r53 = LaggingRoute53(clock=clock, validate_client_side=False)
    zone = r53.add_zone("example.com")
    clusters = {
        "blue": seeded("blue", cluster_objects(ingress=BLUE_LB, annotations={PREFIX + "hostname": "app.example.com"})),
        "green": seeded("green", cluster_objects(ingress=GREEN_LB)),
    }
    controller = ExternalDns(r53, zone, clusters, clock, lag=15.0)
    controller.last -= 100
    controller.maybe_sync()  # the world as external-dns left it: a simple record and its TXT owner
    r53.controller = controller
    r53.validate_client_side = True  # meshops's own requests are validated as the real driver does
    prober = FakeProber(clock)
    drivers = drivers_for(clusters, route53=r53, http=prober)
    return {"clock": clock, "r53": r53, "zone": zone, "kube": clusters, "controller": controller,
            "prober": prober, "drivers": drivers, "state": tmp_path}


def run(world: dict[str, Any], **given: Any) -> RunResult:
    loaded = load_playbook(str(PLAYBOOK))
    p = resolve_params(loaded.playbook, params(**{"dns_owner": "external-dns", "probes": ["http://app.example.com/"],
                                                  "probe_interval": "10s", "external_dns_timeout": "5m",
                                                  "bake": "30s", **given}))
    engine = Engine(store=LocalStateStore(world["state"]), drivers=world["drivers"],
                    options=EngineOptions(clock=world["clock"], sleep=world["clock"].sleep))
    preflight(engine, loaded, p)
    return engine.start(loaded, p)


def cname(world: dict[str, Any]) -> list[RecordSet]:
    return [r for r in world["r53"].records(world["zone"]) if r.name == NAME and r.type == "CNAME"]


def test_annotations_drive_the_switchover_and_weights_never_all_zero(world: dict[str, Any]) -> None:
    """Set identifiers and weights go through the annotations, target up before source down, to 0/100."""
    result = run(world, steps=[10, 50, 100])
    assert result.status == "succeeded"
    assert {r.set_identifier: r.weight for r in cname(world)} == {"blue": 0, "green": 100}
    blue_ann = world["kube"]["blue"].get("v1", "Service", "istio-ingressgateway", "istio-system")["metadata"]["annotations"]
    assert blue_ann[PREFIX + "set-identifier"] == "blue" and blue_ann[PREFIX + "aws-weight"] == "0"
    for seen in world["controller"].weights_seen:
        weights = [w for w in seen.values() if w is not None]
        assert not weights or sum(weights) > 0, f"every weight at 0: {seen}"
    steps = [s for s in world["controller"].weights_seen if len(s) == 2]
    assert {"blue": 100, "green": 10} in steps and {"blue": 50, "green": 100} in steps  # target up, then source down
    assert len(world["r53"].batches) == world["controller"].sent  # meshops itself wrote no record


def test_external_dns_refused_without_the_flag(world: dict[str, Any]) -> None:
    """The ownership TXT makes a meshops-owned switchover refuse before any change."""
    from meshops.domain.errors import BadInput

    with pytest.raises(BadInput, match="owned by external-dns"):
        run(world, dns_owner="meshops")
    assert [w for w in world["kube"]["green"].writes if w[0] == "patch"] == []


def test_failing_target_goes_back_through_the_annotations(world: dict[str, Any]) -> None:
    """A failing target: source up, then target down, then both Services' annotations as they were."""
    green = world["kube"]["green"]

    def fail_with_traffic(_: str) -> None:  # passes at 0 %, fails once its annotation gives it a weight
        ann = green.get("v1", "Service", "istio-ingressgateway", "istio-system")["metadata"].get("annotations", {})
        if int(ann.get(PREFIX + "aws-weight") or 0) > 0:
            world["prober"].failing.add(f"{GREEN_LB}:80")

    world["prober"].on_probe = fail_with_traffic
    before = {ctx: k.get("v1", "Service", "istio-ingressgateway", "istio-system")["metadata"].get("annotations", {})
              for ctx, k in world["kube"].items()}
    with pytest.raises(RunFailed):
        run(world, steps=[25, 100])
    after = {ctx: k.get("v1", "Service", "istio-ingressgateway", "istio-system")["metadata"].get("annotations", {})
             for ctx, k in world["kube"].items()}
    assert after == before
    assert [(r.set_identifier, r.weight, r.target) for r in cname(world)] == [(None, None, BLUE_LB)]
    for seen in world["controller"].weights_seen:
        weights = [w for w in seen.values() if w is not None]
        assert not weights or sum(weights) > 0, f"every weight at 0: {seen}"
