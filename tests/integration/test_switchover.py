"""Switchover end to end: the playbook on the engine, Route53 from moto in server mode (over HTTP,
through a recording proxy), real HTTP probes against local ingress servers, fake clusters."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from meshops.cli.switchover_cmds import preflight
from meshops.domain.errors import BadInput, ExitCode, RunFailed
from meshops.domain.weights import RecordSet
from meshops.drivers.route53 import Route53Client
from meshops.engine.journal import LocalStateStore
from meshops.engine.playbook import load_playbook, resolve_params
from meshops.engine.runner import Engine, RunResult
from tests.support.switchover import (
    PLAYBOOK,
    ROOT,
    FakeKube,
    Ingress,
    Route53Proxy,
    burst_of,
    check_batches,
    cluster_objects,
    drivers_for,
    journal,
    params,
    seeded,
)

BLUE_LB, GREEN_LB = "blue-lb.example.net", "green-lb.example.net"
ORIGINAL = RecordSet(name="app.example.com.", type="CNAME", ttl=1, values=(BLUE_LB,))


@pytest.fixture(scope="module")
def moto() -> Any:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws(moto: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    urllib.request.urlopen(urllib.request.Request(f"{moto}/moto-api/reset", method="POST"))
    proxy = Route53Proxy(upstream=moto)
    for key, value in {"AWS_ENDPOINT_URL_ROUTE_53": proxy.url, "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                       "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(key, value)
    # The load balancers' status port (15021) for the Route53 health checks, probed before they are
    # created; the names do not resolve, so they are mapped as DIR/env maps the sandbox's.
    status = Ingress("status-port")
    monkeypatch.setenv("MESHOPS_CONNECT_TO", f"{BLUE_LB}:15021:127.0.0.1:{status.port} "
                                             f"{GREEN_LB}:15021:127.0.0.1:{status.port}")
    yield proxy
    proxy.close()
    status.close()


def moto_client(moto: str) -> Any:
    return boto3.client("route53", endpoint_url=moto, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def make_zone(moto: str, record: RecordSet = ORIGINAL) -> str:
    """The zone and the simple record on blue, created straight in moto (not through meshops's proxy)."""
    c = moto_client(moto)
    zone_id = c.create_hosted_zone(Name="example.com.", CallerReference=str(time.time()))["HostedZone"]["Id"]
    c.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": [
        {"Action": "CREATE", "ResourceRecordSet": record.to_aws()}]})
    return str(zone_id).rsplit("/", 1)[-1]


def moto_records(moto: str, zone_id: str) -> list[RecordSet]:
    data = moto_client(moto).list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]
    return [RecordSet.from_aws(r) for r in data if r["Name"] == "app.example.com."]


@pytest.fixture
def ingresses() -> Any:
    blue, green = Ingress("blue"), Ingress("green")
    yield blue, green
    blue.close()
    green.close()


def clusters(**green: Any) -> dict[str, FakeKube]:
    return {"blue": seeded("blue", cluster_objects(ingress=BLUE_LB)),
            "green": seeded("green", cluster_objects(ingress=GREEN_LB, **green))}


def probe_params(blue: Ingress, green: Ingress, **extra: Any) -> dict[str, Any]:
    return params(probes=["http://app.example.com/"],
                  connect_to=[f"{BLUE_LB}:80:127.0.0.1:{blue.port}", f"{GREEN_LB}:80:127.0.0.1:{green.port}"], **extra)


def run(state: Path, kube: dict[str, FakeKube], given: dict[str, Any], r53: Route53Client | None = None) -> RunResult:
    loaded = load_playbook(str(PLAYBOOK))
    p = resolve_params(loaded.playbook, given)
    engine = Engine(store=LocalStateStore(state),
                    drivers=drivers_for(kube, route53=r53))
    preflight(engine, loaded, p)
    return engine.start(loaded, p)


def weights(records: list[RecordSet]) -> dict[str, int | None]:
    return {str(r.set_identifier): r.weight for r in records}


def shift_weights(batches: list[dict[str, Any]]) -> list[dict[str, int]]:
    return [{c["ResourceRecordSet"]["SetIdentifier"]: c["ResourceRecordSet"]["Weight"] for c in b["Changes"]}
            for b in batches if all(c["Action"] == "UPSERT" and "Weight" in c["ResourceRecordSet"] for c in b["Changes"])]


def test_full_switchover_moves_all_traffic_in_checked_batches(aws: Route53Proxy, moto: str, ingresses: Any,
                                                             tmp_path: Path) -> None:
    """0 -> 100 in four steps: every batch passes Route53's rules and meshops's invariants."""
    blue, green = ingresses
    zone_id = make_zone(moto)
    r53 = Route53Client()
    result = run(tmp_path, clusters(), probe_params(blue, green), r53)
    assert result.status == "succeeded"
    batches = aws.batches()
    final = check_batches(batches, zone="example.com.", start=[ORIGINAL], health_checks=aws.created_health_checks())
    assert weights(final) == {"blue": 0, "green": 100}
    assert weights(moto_records(moto, zone_id)) == {"blue": 0, "green": 100}
    assert [a["Action"] for a in (c for c in batches[0]["Changes"])] == ["DELETE", "CREATE", "CREATE"]
    assert shift_weights(batches) == [{"blue": 90, "green": 10}, {"blue": 75, "green": 25},
                                      {"blue": 50, "green": 50}, {"blue": 0, "green": 100}]
    assert all(r.health_check_id in aws.created_health_checks() for r in final)
    assert green.requests >= 4 and blue.requests >= 4  # both clusters probed at every step
    assert burst_of([at for at, _, _ in r53.log.entries], 10) <= 10.5 and r53.requests == len(aws.exchanges)
    assert not any("/status" in e.path for e in aws.exchanges)  # never GetHealthCheckStatus
    shifts = [r for r in journal(tmp_path, result.run_id) if r["type"] == "step_succeeded"
              and r["step"].startswith("shift[")]
    assert [s["outputs"]["percent"] for s in shifts] == [10, 25, 50, 100]
    assert all(s["outputs"]["bake_seconds"] >= 1 for s in shifts)  # max(bake 0.3 s, TTL 1 s + 0 s)


def test_target_failing_at_25_percent_rolls_back_in_one_batch(aws: Route53Proxy, moto: str, ingresses: Any,
                                                              tmp_path: Path) -> None:
    """green starts failing once it gets 25%: one batch back to 100/0, then the record as it was; exit 1."""
    blue, green = ingresses
    zone_id = make_zone(moto)

    def on_change(batch: dict[str, Any]) -> None:
        if any(c["ResourceRecordSet"].get("SetIdentifier") == "green" and c["ResourceRecordSet"].get("Weight") == 25
               for c in batch["Changes"]):
            green.fail(503)

    aws.on_change = on_change
    with pytest.raises(RunFailed) as failed:
        run(tmp_path, clusters(), probe_params(blue, green))
    assert failed.value.exit_code == ExitCode.FAILED
    assert "HTTP 503" in str(failed.value)
    batches = aws.batches()
    assert shift_weights(batches) == [{"blue": 90, "green": 10}, {"blue": 75, "green": 25},
                                      {"blue": 100, "green": 0}]
    final = check_batches(batches, zone="example.com.", start=[ORIGINAL], health_checks=aws.created_health_checks())
    assert final == [ORIGINAL]
    assert moto_records(moto, zone_id) == [ORIGINAL]
    assert moto_client(moto).list_health_checks()["HealthChecks"] == []  # the ones it created are gone


def test_throttling_is_survived_within_the_rate_bound(aws: Route53Proxy, moto: str, ingresses: Any,
                                                      tmp_path: Path) -> None:
    """Every 4th request answers Throttling; twenty quick steps still finish within the client's
    token bucket, retries included (a small one here, burst 2 and 8/s, so that it holds some back)."""
    blue, green = ingresses
    make_zone(moto, RecordSet(name="app.example.com.", type="CNAME", ttl=0, values=(BLUE_LB,)))
    aws.throttle_every = 4
    steps = list(range(5, 101, 5))
    r53 = Route53Client(max_rps=8, burst=2)
    result = run(tmp_path, clusters(), probe_params(blue, green, steps=steps, bake="0s", health_checks=False), r53)
    assert result.status == "succeeded"
    throttled = [e for e in aws.exchanges if e.status == 400 and b"Throttling" in e.response]
    assert len(throttled) >= 10 and r53.retries == len(throttled)
    # The bound holds where meshops sends (arrival at the proxy adds this test process's scheduling jitter).
    assert burst_of([at for at, _, _ in r53.log.entries], 8) <= 2.5  # the log stamps each request just after the bucket let it go
    assert r53.limiter.waited > 0 and len(aws.exchanges) >= 60  # enough requests that the limiter held some back
    assert shift_weights(aws.batches())[-1] == {"blue": 0, "green": 100}


def test_prior_request_not_complete_is_retried(aws: Route53Proxy, moto: str, ingresses: Any, tmp_path: Path) -> None:
    """PriorRequestNotComplete on every 3rd request is retried with backoff, and the run finishes."""
    blue, green = ingresses
    make_zone(moto)
    aws.throttle_every, aws.throttle_code = 3, "PriorRequestNotComplete"
    result = run(tmp_path, clusters(), probe_params(blue, green, steps=[50, 100]))
    assert result.status == "succeeded"
    assert any(b"PriorRequestNotComplete" in e.response for e in aws.exchanges)
    assert weights(moto_records(moto, aws_zone(moto))) == {"blue": 0, "green": 100}


def aws_zone(moto: str) -> str:
    return str(moto_client(moto).list_hosted_zones()["HostedZones"][0]["Id"]).rsplit("/", 1)[-1]


def test_run_killed_mid_bake_resumes_and_finishes(aws: Route53Proxy, moto: str, ingresses: Any, tmp_path: Path) -> None:
    """SIGKILL during the 25% bake, then resume: no step repeats its batch and the switchover completes."""
    blue, green = ingresses
    zone_id = make_zone(moto)
    config = {"state_dir": str(tmp_path / "state"),
              "clusters": {"blue": {"ingress": BLUE_LB}, "green": {"ingress": GREEN_LB}},
              "params": probe_params(blue, green, bake="3s", steps=[10, 25, 100])}
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(config))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-m", "tests.support.switchover_child", str(cfg), "start"],
                             cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    run_id = child.stdout.readline().strip()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if len(shift_weights(aws.batches())) == 2:  # the 25% batch went out: the bake has begun
            break
        time.sleep(0.05)
    time.sleep(1.0)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    assert weights(moto_records(moto, zone_id)) == {"blue": 75, "green": 25}
    before = len(aws.batches())
    done = subprocess.run([sys.executable, "-m", "tests.support.switchover_child", str(cfg), "resume", run_id],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("succeeded")
    after = shift_weights(aws.batches()[before:])
    assert after == [{"blue": 0, "green": 100}]  # 25% was not sent again; only the last step
    check_batches(aws.batches(), zone="example.com.", start=[ORIGINAL], health_checks=aws.created_health_checks())
    assert weights(moto_records(moto, zone_id)) == {"blue": 0, "green": 100}
    records = journal(tmp_path / "state", run_id)
    assert any(r["type"] == "run_resumed" for r in records)
    assert [r["step"] for r in records if r["type"] == "step_succeeded" and r["step"].startswith("shift[")] == [
        "shift[0]", "shift[1]", "shift[2]"]


def test_rollback_after_a_finished_switchover(aws: Route53Proxy, moto: str, ingresses: Any, tmp_path: Path) -> None:
    """`meshops rollback RUN_ID` after success: one batch to the old weights, then the record as it was."""
    blue, green = ingresses
    zone_id = make_zone(moto)
    kube = clusters()
    result = run(tmp_path, kube, probe_params(blue, green, steps=[100]))
    assert weights(moto_records(moto, zone_id)) == {"blue": 0, "green": 100}
    n = len(aws.batches())
    back = Engine(store=LocalStateStore(tmp_path), drivers=drivers_for(kube)).rollback(result.run_id)
    assert back.status == "rolled_back"
    assert shift_weights(aws.batches()[n:]) == [{"blue": 100, "green": 0}]
    assert moto_records(moto, zone_id) == [ORIGINAL]


# ---- bad input: exit 2 before any change ----------------------------------------------------------


def _refused(aws: Route53Proxy, tmp_path: Path, kube: dict[str, FakeKube], given: dict[str, Any], match: str) -> None:
    with pytest.raises(BadInput, match=match) as refused:
        run(tmp_path, kube, given)
    assert refused.value.exit_code == ExitCode.BAD_INPUT
    assert aws.batches() == [] and aws.created_health_checks() == []
    assert not (tmp_path / "runs").exists()  # no run was even started


@pytest.mark.parametrize(("given", "match"), [
    ({"zone": "nope.org"}, "no such hosted zone"),
    ({"record": "missing.example.com"}, "no A, AAAA or CNAME record"),
    ({"steps": [10, 150]}, "outside 0-100"),
    ({"to_context": "blue"}, "both 'blue'"),
    ({"to_context": "purple"}, "context 'purple'"),
])
def test_bad_input_exits_2_before_any_change(aws: Route53Proxy, moto: str, tmp_path: Path, given: dict[str, Any],
                                             match: str) -> None:
    """Unknown zone, missing record, a step outside 0-100, from == to, an unknown context: BadInput, no write."""
    make_zone(moto)
    _refused(aws, tmp_path, clusters(), params(**given), match)


def test_unreachable_context_exits_2(aws: Route53Proxy, moto: str, tmp_path: Path) -> None:
    """A context whose API server does not answer is refused before any change."""
    make_zone(moto)
    kube = clusters()
    kube["green"].reachable = False
    _refused(aws, tmp_path, kube, params(), "cannot reach context 'green'")


def test_no_credentials_exits_2(aws: Route53Proxy, moto: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without AWS credentials the switchover is refused before any change."""
    make_zone(moto)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    _refused(aws, tmp_path, clusters(), params(), "no usable AWS credentials")


def test_target_not_ready_or_weaker_mtls_is_refused(aws: Route53Proxy, moto: str, tmp_path: Path) -> None:
    """A target with an unready workload, or PERMISSIVE where the source is STRICT, is refused (exit 2)."""
    make_zone(moto)
    _refused(aws, tmp_path, clusters(app_ready=False), params(), "Deployment shop/frontend is not ready")
    _refused(aws, tmp_path, clusters(mesh_mtls="PERMISSIVE"), params(), "mesh-wide: STRICT on the source, PERMISSIVE")


def test_external_dns_owned_record_is_refused_without_the_flag(aws: Route53Proxy, moto: str, tmp_path: Path) -> None:
    """TXT ownership records of external-dns make a meshops-owned switchover refuse (exit 2)."""
    zone_id = make_zone(moto)
    moto_client(moto).change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": [{
        "Action": "CREATE", "ResourceRecordSet": {"Name": "cname-app.example.com.", "Type": "TXT", "TTL": 300,
        "ResourceRecords": [{"Value": '"heritage=external-dns,external-dns/owner=blue,external-dns/resource=service/x/y"'}]}}]})
    _refused(aws, tmp_path, clusters(), params(), "owned by external-dns")
